"""Parity check: a method's official training loop, from a local checkout, on the inputs of a pllbench run (the same
train/test split, candidate matrix, encoder, optimiser settings and epochs), beside that pllbench run. See
docs/parity.md.

    python benchmarks/parity/run.py --method able --official ~/src/ABLE --dataset fmnist --preset quick --seed 0 \
        --variant shipped --runs runs --out parity
    python benchmarks/parity/run.py --summary --out parity      # one table row per parity run under parity/

Writes OUT/<dataset>-<preset>/<method>-<variant>-s<seed>/: official.jsonl (per epoch: test accuracy, per-class
recall), official.log (the official code's prints), meta.json (what ran), parity.jsonl and parity.md (beside the
pllbench run's curves.jsonl and final predictions). A finished official run is not trained again: running the
command again refreshes the comparison (after the pllbench run has finished, say). Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import able
import torch
from harness import ParityInputs, check_checkout, checkout_commit, run_official
from report import pllbench_side, summary, write_report

from pllbench.data.prepare import prepare
from pllbench.errors import PllbenchError
from pllbench.method import UNSCOPED, parse_hp_overrides
from pllbench.train.runconfig import RunConfig
from pllbench.train.runs import inside_root, read_json, read_jsonl
from pllbench.util import atomic_write_json, cache_root

ADAPTERS = {"able": able}
# what makes two parity runs the same run (the rest of meta.json describes it)
RUN_KEYS = ("method", "variant", "dataset", "preset", "seed", "epochs", "argv", "candidates", "hparams", "device")


def echo(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--method", choices=sorted(ADAPTERS), help="the method whose official loop runs")
    p.add_argument("--official", help="local checkout of the method's official repository")
    p.add_argument("--variant", help="how the official code runs (able: shipped, index-fix; default: the first)")
    p.add_argument("--dataset", default="fmnist")
    p.add_argument("--preset", default="quick")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, help="override the preset's epochs (both sides)")
    p.add_argument("--hp", action="append", default=[], help="method.key=value or an optimisation key=value, as "
                                                             "`pllbench run --hp` (both sides)")
    p.add_argument("--runs", help="pllbench results root holding the run compared with (else $PLLBENCH_RUNS, ./runs)")
    p.add_argument("--pllbench-run", help="compare with this pllbench run folder instead of the run id's")
    p.add_argument("--out", required=True, help="where parity runs are written")
    p.add_argument("--summary", action="store_true", help="print one markdown row per parity run under --out")
    p.add_argument("--cache-dir", help="pllbench artifact cache (else $PLLBENCH_CACHE, ~/.cache/pllbench)")
    p.add_argument("--data-root", help="dataset folder (else $PLLBENCH_DATA)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    return p.parse_args(argv)


def run_overrides(hp_items: list[str], method: str, variant) -> dict:
    """The --hp overrides plus the variant's pllbench hyperparameters (a contradiction is refused)."""
    overrides = parse_hp_overrides(hp_items)
    scoped = overrides.setdefault(method, {})
    for key, value in variant.pllbench_hp.items():
        given = scoped.get(key, overrides.get(UNSCOPED, {}).get(key, value))
        if given != value:
            raise PllbenchError(f"--hp {key}={given!r} contradicts the variant, which is compared with {key}={value!r}")
        scoped[key] = value
    return overrides


def pllbench_command(run: RunConfig, args, variant) -> str:
    """The `pllbench run` command of the run compared with."""
    items = list(args.hp) + [f"{run.method}.{k}={v}" for k, v in variant.pllbench_hp.items()]
    return " ".join(["pllbench run", f"--methods {run.method}", f"--dataset {args.dataset}",
                     f"--preset {run.preset_name}", f"--seeds {run.seed}",
                     *(f"--hp {item}" for item in dict.fromkeys(items)),
                     *([f"--epochs {args.epochs}"] if args.epochs else []),
                     *([f"--runs {args.runs}"] if args.runs else [])])


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        if args.summary:
            print(summary(Path(args.out)), end="")
            return 0
        return parity(args)
    except PllbenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def parity(args) -> int:
    if not args.method or not args.official:
        raise PllbenchError("--method and --official are required (or pass --summary)")
    adapter = ADAPTERS[args.method]
    variant = args.variant or next(iter(adapter.VARIANTS))
    if variant not in adapter.VARIANTS:
        raise PllbenchError(f"unknown --variant {variant!r} for {args.method}; choose: {', '.join(adapter.VARIANTS)}")
    folder = check_checkout(args.official, adapter.REPO, adapter.REQUIRED_FILES)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    overrides = run_overrides(args.hp, adapter.PLLBENCH_METHOD, adapter.VARIANTS[variant])
    prep = prepare(args.dataset, args.preset, args.seed, root=args.data_root, cache=cache_root(args.cache_dir),
                   device=device, echo=echo)
    run = RunConfig.resolve(adapter.PLLBENCH_METHOD, prep.dataset_key, args.preset, args.seed, overrides=overrides,
                            epochs=args.epochs, candidate_seed=int(prep.candidates.report["seed"])).with_artifacts(prep)
    runs = Path(args.runs or os.environ.get("PLLBENCH_RUNS") or "runs")
    run_dir = Path(args.pllbench_run) if args.pllbench_run else inside_root(runs, run.run_id)
    check_pllbench_run(run_dir, run, prep)
    data, info = prep.data, prep.data.info
    inputs = ParityInputs(run, list(info.classes), data.train.images, data.train.labels,
                          torch.from_numpy(prep.candidates.matrix).float(), data.test.images, data.test.labels, device)
    out = Path(args.out) / f"{run.dataset_name}-{run.preset_name}" / f"{run.method}-{variant}-s{run.seed}"
    meta = {"method": run.method, "variant": variant, "variant_doc": adapter.VARIANTS[variant].doc,
            "dataset": args.dataset, "preset": run.preset_name, "seed": run.seed, "epochs": run.preset["epochs"],
            "repo": adapter.REPO, "checkout": str(folder), "commit": checkout_commit(folder),
            "argv": adapter.official_argv(inputs, adapter.official_dataset(run.dataset_name)),
            "changes": [{"target": c.target, "why": c.why}
                        for c in adapter.CHANGES + adapter.VARIANTS[variant].changes],
            "candidates": prep.candidates.hash, "hparams": run.hparams, "classes": list(info.classes),
            "pllbench_run": str(run_dir), "pllbench_command": pllbench_command(run, args, adapter.VARIANTS[variant]),
            "device": str(device), "threads": args.threads}
    official = official_records(adapter, inputs, variant, folder, out, meta)
    side = pllbench_side(run_dir, len(info.classes))
    meta["pllbench_found"] = side is not None
    write_report(out, meta, official, side, list(info.classes))
    theirs = side["test_acc"][-1] if side else None
    echo(f"{out / 'parity.md'}: official {100 * official[-1]['test_acc']:.2f} %, pllbench "
         + (f"{100 * theirs:.2f} %" if theirs is not None else f"not found ({meta['pllbench_command']})"))
    return 0


def check_pllbench_run(run_dir: Path, run: RunConfig, prep) -> None:
    """A given pllbench run folder must be of the same candidates and seed; a missing one is only announced."""
    config = read_json(run_dir / "config.json")
    if config is None:
        echo(f"pllbench run {run_dir} not found yet; the comparison is written when it exists (run this again)")
        return
    theirs = RunConfig.from_json(config)
    if theirs.candidates_hash != prep.candidates.hash or theirs.seed != run.seed:
        raise PllbenchError(f"pllbench run {run_dir} has candidates {theirs.candidates_hash} seed {theirs.seed}, "
                            f"not this run's {prep.candidates.hash} seed {run.seed}")


def official_records(adapter, inputs, variant: str, folder: Path, out: Path, meta: dict) -> list[dict]:
    """The official run's epochs: trained now, or read back when this folder holds the same finished run."""
    before = read_json(out / "meta.json") or {}
    if before.get("finished"):
        changed = [k for k in RUN_KEYS if before.get(k) != meta[k]]
        if changed:
            raise PllbenchError(f"{out} holds a finished parity run with another {', '.join(changed)}; pass another "
                                "--out")
        echo(f"{out}: the official run is finished; refreshing the comparison only")
        return read_jsonl(out / "official.jsonl")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "meta.json", {**meta, "finished": False})
    records = run_official(adapter, inputs, variant, folder, out, echo)
    if len(records) != meta["epochs"]:
        raise PllbenchError(f"the official loop tested {len(records)} epochs, not {meta['epochs']}")
    atomic_write_json(out / "meta.json", {**meta, "finished": True})
    return records


if __name__ == "__main__":
    sys.exit(main())
