"""Content-addressed artifacts (candidates.md §4): `<root>/<kind>/<h>`, meta.json with the full key and checksums.

Builders write into `<h>.tmp-<pid>` and rename it into place; a lock file serialises concurrent builders (so the
lock holder may delete the `<h>.tmp-*` folders of killed ones); loading refuses an artifact whose stored key or file
checksums differ from what is asked for.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from . import __version__
from .errors import PllbenchError
from .util import atomic_write_json, file_lock, key_hash, sha256_file


def git_commit() -> str | None:
    import subprocess

    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent,
                             capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def artifact_dir(root: Path, kind: str, key: dict) -> Path:
    return Path(root) / kind / key_hash(key)


def verify(path: Path, kind: str, key: dict | None = None) -> dict:
    """Check meta.json's key (given, or whichever hashes to the folder's name) and every checksum; return the meta."""
    meta_path = path / "meta.json"
    try:
        meta = json.loads(meta_path.read_text())
        if not isinstance(meta, dict):
            raise ValueError
    except (OSError, ValueError):
        raise PllbenchError(f"{kind} artifact {path} has no readable meta.json; delete the folder to rebuild it") \
            from None
    if key is None and isinstance(meta.get("key"), dict) and key_hash(meta["key"]) == Path(path).name:
        key = meta["key"]
    if meta.get("key") != key:
        raise PllbenchError(f"{kind} artifact {path} was built for another key (hash collision or edited "
                            f"meta.json); delete the folder to rebuild it")
    for name, digest in meta.get("files", {}).items():
        file = path / name
        if not file.is_file() or sha256_file(file) != digest:
            raise PllbenchError(f"{kind} artifact {path} is corrupted ({name} fails its checksum); delete the "
                                f"folder to rebuild it")
    return meta


def load_or_build(root: Path, kind: str, key: dict, build: Callable[[Path], dict]) -> tuple[Path, dict]:
    """Return (folder, meta) of the artifact for `key`, building it with `build(tmp_dir) -> extra meta` if absent."""
    path = artifact_dir(root, kind, key)
    if path.exists():
        return path, verify(path, kind, key)
    with file_lock(path.with_name(path.name + ".lock")):
        if path.exists():
            return path, verify(path, kind, key)
        for stale in path.parent.glob(f"{path.name}.tmp-*"):  # of builders killed before their rename
            shutil.rmtree(stale, ignore_errors=True)
        tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
        tmp.mkdir(parents=True)
        try:
            extra = build(tmp) or {}
            files = {p.name: sha256_file(p) for p in sorted(tmp.iterdir()) if p.is_file()}
            meta = {"kind": kind, "key": key, "hash": path.name, "files": files, "version": __version__,
                    "commit": git_commit(), **extra}
            atomic_write_json(tmp / "meta.json", meta)
            os.replace(tmp, path)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return path, verify(path, kind, key)
