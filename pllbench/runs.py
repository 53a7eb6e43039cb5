"""Run folders as a grid sees them: the claim lock, the attempt log, failure records and the folder's state.

Files a grid adds beside the trainer's (config.json, curves.jsonl, progress.json, final.json):
- `job.lock`: an flock held by the process training the run, with its owner (pid, host, start) written inside.
  The kernel frees an flock when its process dies, so a SIGKILLed or preempted run's claim is taken over by
  the next process; the file itself is never deleted (deleting a lock file lets two processes lock two inodes).
- `attempts.jsonl`: one line per event (start, done, failed) with pid, host, time and the epoch it resumed from.
- `failed.json`: the last attempt's one-line error; removed when the next attempt starts.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

from .errors import PllbenchError
from .util import atomic_write_json

LOCK = "job.lock"
ATTEMPTS = "attempts.jsonl"
FAILED = "failed.json"
CLAIM_RETRIES = 10  # a `pllbench status` probe holds the lock for microseconds; do not mistake it for a run
CLAIM_WAIT_S = 0.05


def read_json(path: Path):
    """The parsed file, or None when it is missing or unreadable (a folder another process is still writing)."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def inside_root(root: Path, rel: str | Path) -> Path:
    """`root / rel`, refused when it resolves outside the results root (`..`, an absolute part, a symlink out)."""
    base = Path(root).resolve()
    path = base / rel
    if not path.resolve().is_relative_to(base):
        raise PllbenchError(f"run folder {rel} resolves to {path.resolve()}, outside the results root {base}; "
                            "remove the link or pick another --runs folder")
    return path


def owner_info(**extra) -> dict:
    return {"pid": os.getpid(), "host": socket.gethostname(), "time": round(time.time(), 3), **extra}


def _read_owner(fd: int) -> dict:
    try:
        data = os.pread(fd, 4096, 0)
        return json.loads(data) if data else {}
    except (OSError, ValueError):
        return {}


@contextlib.contextmanager
def claim(run_dir: Path, **info):
    """Yield (True, owner) while this process holds the run's lock, or (False, other owner) when another has it."""
    run_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(run_dir / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        for attempt in range(CLAIM_RETRIES):
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if attempt == CLAIM_RETRIES - 1:
                    yield False, _read_owner(fd)
                    return
                time.sleep(CLAIM_WAIT_S)
        owner = owner_info(**info)
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(owner).encode(), 0)
        remove_leftovers(run_dir)  # any earlier writer is dead now
        try:
            yield True, owner
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def remove_leftovers(run_dir: Path) -> None:
    """Under the run's claim (every earlier writer of the folder is dead): delete the temp files of interrupted atomic
    writes (`.NAME.*.tmp`, one per kill, so they would pile up), and a finished run's resume state."""
    for path in run_dir.glob(".*.tmp"):
        path.unlink(missing_ok=True)
    remove_resume_state(run_dir)


def remove_resume_state(run_dir: Path) -> None:
    """A finished run's checkpoint and progress.json (left by a kill between final.json and their deletion). Safe
    without the claim: nothing writes them once final.json exists (while `pllbench entangle` may be writing there)."""
    if (run_dir / "final.json").exists():
        for path in [*run_dir.glob("checkpoint-*.pt"), run_dir / "progress.json"]:
            path.unlink(missing_ok=True)


def lock_owner(run_dir: Path) -> dict | None:
    """The owner of a held lock ({} if it wrote nothing yet), or None when no live process holds it."""
    try:
        fd = os.open(run_dir / LOCK, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_owner(fd)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def log_attempt(run_dir: Path, event: str, **fields) -> None:
    """Append one line (O_APPEND writes of a short line are atomic on a local filesystem)."""
    line = json.dumps(owner_info(event=event, **fields)) + "\n"
    with open(run_dir / ATTEMPTS, "a") as fh:
        fh.write(line)


def read_jsonl(path: Path) -> list[dict]:
    """The parseable lines of a JSON-lines file (a missing file or a torn last line is skipped)."""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return []
    out = []
    for line in lines:
        with contextlib.suppress(ValueError):
            out.append(json.loads(line))
    return out


def read_attempts(run_dir: Path) -> list[dict]:
    return read_jsonl(run_dir / ATTEMPTS)


def record_failure(run_dir: Path, error: str, kind: str, job: dict | None = None, traceback: str | None = None):
    atomic_write_json(run_dir / FAILED, owner_info(error=error, type=kind, job=job, traceback=traceback))


def read_curves(run_dir: Path) -> list[dict]:
    return read_jsonl(run_dir / "curves.jsonl")


@dataclass
class RunFolder:
    """What a run folder says about its run. state: done, running, failed, incomplete (resumable) or new."""

    path: Path
    rel: str
    config: dict
    final: dict | None = None
    failed: dict | None = None
    owner: dict | None = None
    curves: list[dict] = field(default_factory=list)

    @property
    def state(self) -> str:
        if self.final is not None:
            return "done"
        if self.owner is not None:
            return "running"
        if self.failed is not None:
            return "failed"
        return "incomplete" if self.curves else "new"

    @property
    def epochs(self) -> int:
        return int(self.config.get("preset", {}).get("epochs", 0))

    @property
    def epochs_done(self) -> int:
        return self.epochs if self.final is not None else len(self.curves)

    def extra(self, name: str):
        return read_json(self.path / name)


def scan(root: Path) -> list[RunFolder]:
    """Every `<dataset>-<preset>/<run>` folder with a readable config.json (folders starting with '_' skipped)."""
    root = Path(root)
    out = []
    if not root.is_dir():
        return out
    for config_path in sorted(root.glob("*/*/config.json")):
        run_dir = config_path.parent
        if run_dir.parent.name.startswith("_"):
            continue
        config = read_json(config_path)
        if not isinstance(config, dict) or "method" not in config:
            continue
        out.append(RunFolder(run_dir, f"{run_dir.parent.name}/{run_dir.name}", config,
                             final=read_json(run_dir / "final.json"), failed=read_json(run_dir / FAILED),
                             owner=lock_owner(run_dir), curves=read_curves(run_dir)))
    return out
