"""Helpers of the command-line tests: a smoke `run` argv, golden snapshots (tests/golden/, refreshed with
PLLBENCH_UPDATE_GOLDEN=1 after an intended change), the one-line error check, run folders, a refused fsync."""

from __future__ import annotations

import errno
import os
from pathlib import Path

from pllbench.cli import main

GOLDEN = Path(__file__).parent / "golden"


DATA = "synthetic:train=64,test=32"  # 4 steps of 16 per epoch, seconds per run


def smoke(cache: Path, runs: Path, *extra: str) -> list[str]:
    return ["run", "--dataset", DATA, "--preset", "smoke", "--cache-dir", str(cache), "--runs", str(runs), *extra]


def golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("PLLBENCH_UPDATE_GOLDEN"):
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
    assert text == path.read_text(), f"{name} changed; rerun with PLLBENCH_UPDATE_GOLDEN=1 if that is intended"


def error_line(capsys, argv: list[str], *needles: str) -> str:
    """`argv` fails with exit 2 and exactly one `error: ` line (the last) holding every needle, no traceback."""
    code = main(argv)
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert code == 2, (code, captured.err)
    assert err and err[-1].startswith("error: "), err
    assert sum(line.startswith("error") for line in err) == 1 and "Traceback" not in captured.err
    for needle in needles:
        assert needle in err[-1], (needle, err[-1])
    return err[-1]


def run_dirs(runs: Path, method: str = "*") -> list[Path]:
    return sorted(d for d in runs.glob(f"*/{method}-s*") if d.is_dir())


def fsync_refused(*fragments: str):
    """os.fsync failing with ENOSPC for files whose path holds every fragment (the run stops after an epoch)."""
    real = os.fsync

    def fsync(fd):
        if all(fragment in os.readlink(f"/proc/self/fd/{fd}") for fragment in fragments):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd)

    return fsync


def finished_world(smoke_cache, tmp_path) -> tuple[Path, Path, list[str]]:
    runs = tmp_path / "runs"
    argv = smoke(smoke_cache, runs, "--methods", "cc", "--epochs", "1", "--no-progress")
    assert main(argv) == 0
    (run_dir,) = run_dirs(runs)
    return runs, run_dir, argv
