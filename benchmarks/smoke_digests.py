"""Behaviour check for refactors: every method's weights after 3 smoke epochs, and the leaderboard of those runs.

`record` trains every registered method for 3 epochs of the smoke preset (synthetic data, seed 0, CPU, one thread)
through the command line, hashes each run's model.pt tensors and writes the table to
benchmarks/results/smoke-digests.json; `check` trains again and compares with the table. The table was recorded
with the code of commit 68872e0, before the modules moved into subpackages (`PYTHONPATH` pointing at a copy of that
commit's pllbench/, with methods/ and datasets/ linked inside it). Both keep the run folders (`--runs`), so the
leaderboard rendered from them by one version of the code can be compared byte for byte with the one another version
renders (`pllbench leaderboard --runs R --out A`, then diff). Only the command line and
`pllbench.method.method_names` are used, so the script runs unchanged on either side of a move of the modules.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from pllbench.method import method_names

TABLE = Path(__file__).resolve().parent / "results" / "smoke-digests.json"


def weights_digest(model_file: Path) -> str:
    """sha256 over the state dict's names, dtypes, shapes and bytes, in key order (independent of pickling)."""
    state = torch.load(io.BytesIO(model_file.read_bytes()), map_location="cpu", weights_only=True)
    digest = hashlib.sha256()
    for name in sorted(state):
        value = state[name]
        digest.update(name.encode())
        if isinstance(value, torch.Tensor):
            tensor = value.detach().contiguous().cpu()
            digest.update(f"{tensor.dtype}{tuple(tensor.shape)}".encode())
            digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
        else:
            digest.update(repr(value).encode())
    return digest.hexdigest()


def train_all(runs: Path, cache: Path, epochs: int) -> dict[str, dict]:
    env = dict(os.environ, PLLBENCH_CACHE=str(cache), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    subprocess.run([sys.executable, "-m", "pllbench", "run", "--methods", "all", "--datasets", "synthetic",
                    "--preset", "smoke", "--epochs", str(epochs), "--seeds", "0", "--workers", "1", "--device", "cpu",
                    "--runs", str(runs), "--no-progress"], env=env, check=True)
    table = {}
    for final in sorted(runs.rglob("final.json")):
        info = json.loads(final.read_text())
        table[info["method"]] = {"run": info["run"], "test_acc": info["test_acc"],
                                 "weights": weights_digest(final.parent / "model.pt")}
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("mode", choices=["record", "check"])
    parser.add_argument("--runs", type=Path, default=None, help="Run folder root (default: a temporary folder).")
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    runs = args.runs or Path(tempfile.mkdtemp(prefix="smoke-digests-"))
    table = train_all(runs, runs.parent / f"{runs.name}-cache", args.epochs)
    missing = sorted(set(method_names()) - set(table))
    if missing:
        sys.exit(f"no finished run for {', '.join(missing)}")
    if args.mode == "record":
        TABLE.write_text(json.dumps(table, indent=1, sort_keys=True) + "\n")
        print(f"{len(table)} methods recorded in {TABLE} (runs in {runs})")
        return
    expected = json.loads(TABLE.read_text())
    differ = [m for m in sorted(set(expected) | set(table)) if expected.get(m) != table.get(m)]
    for method in differ:
        print(f"{method}: expected {expected.get(method)}, got {table.get(method)}")
    print(f"{len(table) - len(differ)}/{len(table)} methods identical (runs in {runs})")
    sys.exit(1 if differ else 0)


if __name__ == "__main__":
    main()
