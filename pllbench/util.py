"""Seeds, canonical hashing, atomic writes and locks shared by every artifact and run."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import tempfile
from pathlib import Path

import numpy as np


def derive_seed(*parts) -> int:
    """H(a, b, ...): first 8 bytes of sha256("pllbench/a/b/..."), big-endian, masked to 63 bits."""
    text = "pllbench/" + "/".join(str(p) for p in parts)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") & ((1 << 63) - 1)


def canonical_json(obj) -> str:
    """Sorted keys, no whitespace, floats by repr (Python's json already writes repr)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)


def key_hash(key: dict, length: int = 16) -> str:
    return hashlib.sha256(canonical_json(key).encode()).hexdigest()[:length]


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_array(array: np.ndarray) -> str:
    return sha256_bytes(np.ascontiguousarray(array).tobytes())


def current_umask() -> int:
    """The process's umask, read from /proc where it is there (setting the umask to read it back, the portable way,
    would briefly give files that another thread creates meanwhile the wrong mode)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over the target. The file gets the mode an
    ordinary `open` would give it (0666 less the umask), not mkstemp's private 0600."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~current_umask())
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and exc.filename is None:  # a failed write/fsync names no file: name the target
            raise OSError(exc.errno, exc.strerror, str(path)) from exc
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


@contextlib.contextmanager
def file_lock(path: Path):
    """An exclusive advisory lock held for the duration of the block (released if the process dies)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def cache_root(explicit: str | os.PathLike | None = None) -> Path:
    if explicit:
        return Path(explicit)
    env = os.environ.get("PLLBENCH_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "pllbench"


def is_number(value) -> bool:
    """An int or a float, not a bool (a bool is an int to Python, never a number to a hyperparameter)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)
