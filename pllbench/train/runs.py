"""Run folders as a grid sees them: the claim lock, the attempt log, failure records and the folder's state.

Files a grid adds beside the trainer's (config.json, curves.jsonl, progress.json, final.json):
- `job.lock`: an flock held by the process training the run, with its owner (pid, host, start) written inside.
  The kernel frees an flock when its process dies, so a SIGKILLed or preempted run's claim is taken over by
  the next process; the file itself is never deleted (deleting a lock file lets two processes lock two inodes).
- `attempts.jsonl`: one line per event (start, done, failed, interrupted: Ctrl-C or SIGTERM, with the signal and
  the epochs done) with pid, host, time and the epoch it resumed from.
- `failed.json`: the last attempt's one-line error; removed when the next attempt starts.
- `manifest.json`: written by the trainer right before final.json (`write_finished`): every file of the finished run
  (config.json, curves.jsonl, predictions.parquet, model.pt and final.json itself) with its size and sha256. Readers
  verify a finished run against it (`verify_finished`); a mismatch makes the run `corrupt`, never resumable.

A job that fails before it has a run folder (preparing its data or candidates) is recorded in
`<runs>/_jobs/<job id>.failed.json`, so `pllbench status` counts it as failed, not pending.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import PllbenchError
from ..interrupts import INTERRUPTS, signal_name
from ..util import atomic_write_bytes, atomic_write_json, sha256_file

LOCK = "job.lock"
ATTEMPTS = "attempts.jsonl"
FAILED = "failed.json"
MANIFEST = "manifest.json"
FINAL = "final.json"
FINISHED_FILES = ("config.json", "curves.jsonl", "predictions.parquet", "model.pt")  # + final.json
JOBS_DIR = "_jobs"
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
    """Yield (True, owner) while this process holds the run's lock, or (False, other owner) when another has it. An
    interruption inside (Ctrl-C, SIGTERM) adds an `interrupted` line to attempts.jsonl before the lock is released."""
    run_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(run_dir / LOCK, os.O_RDWR | os.O_CREAT, 0o666)  # less the umask, as any file
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
        except INTERRUPTS as exc:  # Ctrl-C or SIGTERM: the attempt is recorded, then the claim released
            with contextlib.suppress(OSError):
                done = int((read_json(run_dir / "progress.json") or {}).get("epoch", 0))
                log_attempt(run_dir, "interrupted", signal=signal_name(exc), epochs_done=done, **info)
            raise
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


# ---------------------------------------------------------------------------------------- manifest (integrity)


def final_bytes(final: dict) -> bytes:
    """final.json's exact bytes (what `atomic_write_json` writes)."""
    return (json.dumps(final, indent=2, sort_keys=True) + "\n").encode()


def write_finished(run_dir: Path, final: dict) -> None:
    """Commit a finished run: manifest.json (size and sha256 of every file, final.json's from the bytes about to be
    written), then final.json. Both are atomic renames and final.json comes last, so a kill leaves either no
    final.json (the run resumes from its last checkpoint and rewrites both) or a manifest that matches."""
    data = final_bytes(final)
    files = {name: {"bytes": (run_dir / name).stat().st_size, "sha256": sha256_file(run_dir / name)}
             for name in FINISHED_FILES}
    files[FINAL] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    atomic_write_json(run_dir / MANIFEST, {"version": 1, "files": files})
    atomic_write_bytes(run_dir / FINAL, data)


_HASHED: dict[tuple, str] = {}  # (path, inode, size, mtime_ns) → sha256: a file is hashed once per process


def _sha256_cached(path: Path, st: os.stat_result) -> str:
    key = (str(path), st.st_ino, st.st_size, st.st_mtime_ns)
    if key not in _HASHED:
        _HASHED[key] = sha256_file(path)
    return _HASHED[key]


def corrupt_message(run_dir: Path, problem: str) -> str:
    return f"run {run_dir} is corrupt ({problem}); delete {run_dir} to rerun it"


def verify_finished(run_dir: Path) -> tuple[dict | None, str | None]:
    """(final.json's content, None) for a finished run whose files match its manifest, or (None, the one-line
    problem naming the file and the fix). A run finished before manifests existed is checked for a readable
    final.json only."""
    run_dir = Path(run_dir)
    try:
        final = json.loads((run_dir / FINAL).read_text())
        if not isinstance(final, dict):
            raise ValueError("not an object")
    except (OSError, ValueError) as exc:
        why = "cannot be read" if isinstance(exc, OSError) else "is not valid JSON: truncated or overwritten"
        return None, corrupt_message(run_dir, f"{FINAL} {why}")
    manifest_path = run_dir / MANIFEST
    if not manifest_path.exists():
        return final, None  # finished before manifests existed
    try:
        files = json.loads(manifest_path.read_text())["files"]
        entries = [(name, int(info["bytes"]), str(info["sha256"])) for name, info in files.items()]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None, corrupt_message(run_dir, f"{MANIFEST} is unreadable")
    for name, size, digest in entries:
        path = run_dir / name
        if "/" in name or name.startswith("."):
            return None, corrupt_message(run_dir, f"{MANIFEST} names {name!r}")
        try:
            st = path.stat()
        except OSError:
            return None, corrupt_message(run_dir, f"{name} is missing")
        if st.st_size != size:
            return None, corrupt_message(run_dir, f"{name} has {st.st_size} bytes, its manifest says {size}: "
                                                  f"truncated or overwritten")
        if _sha256_cached(path, st) != digest:
            return None, corrupt_message(run_dir, f"{name} fails its sha256 in {MANIFEST}")
    return final, None


# ------------------------------------------------------------------------- failures before a run folder exists


def job_failure_path(runs: Path, job_id: str) -> Path:
    return Path(runs) / JOBS_DIR / f"{job_id}.failed.json"


def record_job_failure(runs: Path, job_id: str, error: str, job: dict) -> None:
    """A job that failed before it had a run folder (best effort: the disk may be what failed)."""
    with contextlib.suppress(OSError):
        atomic_write_json(job_failure_path(runs, job_id), owner_info(error=error, job=job))


def clear_job_failure(runs: Path, job_id: str) -> None:
    with contextlib.suppress(OSError):
        job_failure_path(runs, job_id).unlink(missing_ok=True)


def read_job_failure(runs: Path, job_id: str) -> dict | None:
    data = read_json(job_failure_path(runs, job_id))
    return data if isinstance(data, dict) else None


@dataclass
class RunFolder:
    """What a run folder says about its run. state: done, running, failed, corrupt (finished, but a file fails its
    manifest: never resumable), incomplete (resumable) or new."""

    path: Path
    rel: str
    config: dict
    final: dict | None = None
    failed: dict | None = None
    owner: dict | None = None
    curves: list[dict] = field(default_factory=list)
    corrupt: str | None = None  # the one-line problem of a finished run whose files fail their manifest

    @property
    def state(self) -> str:
        if self.corrupt is not None:
            return "corrupt"
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
        final, corrupt = verify_finished(run_dir) if (run_dir / FINAL).exists() else (None, None)
        out.append(RunFolder(run_dir, f"{run_dir.parent.name}/{run_dir.name}", config, final=final,
                             failed=read_json(run_dir / FAILED), owner=lock_owner(run_dir),
                             curves=read_curves(run_dir), corrupt=corrupt))
    return out
