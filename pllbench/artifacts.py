"""Content-addressed artifacts (docs/spec/candidates.md §4): `<root>/<kind>/<h>`, meta.json with the full key and
checksums.

`ArtifactStore` is the one view of that layout the rest of the code uses (teachers, candidates, edits, entangled
subsets): an artifact is asked for by kind and key, never by path; a method reaches the store of its run through
`MethodContext.artifacts`.

Builders write into `<h>.tmp-<pid>` and rename it into place; a lock file serialises concurrent builders (so the
lock holder may delete the `<h>.tmp-*` folders of killed ones); loading refuses an artifact whose stored key or file
checksums differ from what is asked for.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
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


@dataclass(frozen=True)
class Artifact:
    """One verified artifact: its folder, content hash, key and meta; `file(name)` is one of its checked files."""

    path: Path
    kind: str
    key: dict
    meta: dict

    @property
    def hash(self) -> str:
        return self.path.name

    def file(self, name: str) -> Path:
        if name not in self.meta.get("files", {}):
            raise PllbenchError(f"{self.kind} artifact {self.path} has no file {name!r}")
        return self.path / name


@dataclass(frozen=True)
class ArtifactStore:
    """The content-addressed cache (`<root>/<kind>/<hash>`) as a method and a command see it: artifacts are asked
    for by kind and key (or by the fields of their key that the asker knows), never by path.

    A store bound to a run (`for_run`) also knows the run's candidate artifact (`candidates`, the hash that keys
    artifacts made for those candidates, e.g. CAD's edits) and how that artifact is made (`origin`: dataset text,
    preset, candidate seed), so a missing artifact can be reported with the command that builds it."""

    root: Path
    candidates: str = ""
    origin: dict = field(default_factory=dict)

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))

    @classmethod
    def of(cls, where: ArtifactStore | str | os.PathLike) -> ArtifactStore:
        """A store from a store or a cache root."""
        return where if isinstance(where, ArtifactStore) else cls(Path(where))

    @classmethod
    def holding(cls, artifact_path: str | os.PathLike) -> ArtifactStore:
        """The store an artifact folder (`<root>/<kind>/<hash>`) belongs to."""
        return cls(Path(artifact_path).parent.parent)

    def for_run(self, run) -> ArtifactStore:
        """This store bound to a run (a `RunConfig` with its artifacts)."""
        return ArtifactStore(self.root, run.candidates_hash,
                             {"dataset": run.dataset_text, "preset": run.preset_name,
                              "candidate_seed": run.candidate_seed})

    def address(self, kind: str, key: dict) -> Path:
        """Where the artifact of `key` lives (present or not); for builders that keep resumable work beside it."""
        return artifact_dir(self.root, kind, key)

    def load_or_build(self, kind: str, key: dict, build: Callable[[Path], dict]) -> Artifact:
        path, meta = load_or_build(self.root, kind, key, build)
        return Artifact(path, kind, meta["key"], meta)

    def get(self, kind: str, key: dict) -> Artifact | None:
        """The verified artifact of exactly this key, or None when it was never built."""
        path = artifact_dir(self.root, kind, key)
        if not path.exists():
            return None
        meta = verify(path, kind, key)
        return Artifact(path, kind, meta["key"], meta)

    def by_hash(self, kind: str, digest: str) -> Artifact | None:
        """The verified artifact whose content hash is `digest` (the hash a run config records), or None."""
        if not digest or "/" in digest or digest.startswith("."):
            return None
        path = self.root / kind / digest
        if not (path / "meta.json").is_file():
            return None
        meta = verify(path, kind)
        return Artifact(path, kind, meta["key"], meta)

    def find(self, kind: str, pin: str = "", **fields) -> list[Artifact]:
        """Every finished artifact of `kind` whose key has these field values (and whose hash starts with `pin`), in
        hash order; not yet checksummed (large artifacts): `verified()` the one you use."""
        found = []
        for meta_path in sorted((self.root / kind).glob("*/meta.json")):
            folder = meta_path.parent
            if "." in folder.name or not folder.name.startswith(pin):  # .tmp-<pid> and .partial folders
                continue
            try:
                meta = json.loads(meta_path.read_text())
                key = meta.get("key", {})
            except (OSError, ValueError, AttributeError):
                raise PllbenchError(f"{kind} artifact {folder} has no readable meta.json; delete the folder to "
                                    f"rebuild it") from None
            if isinstance(key, dict) and all(key.get(k) == v for k, v in fields.items()):
                found.append(Artifact(folder, kind, key, meta))
        return found

    def verified(self, artifact: Artifact) -> Artifact:
        """The artifact after checking its key and every file's checksum (one-line error otherwise)."""
        meta = verify(artifact.path, artifact.kind, artifact.key)
        return Artifact(artifact.path, artifact.kind, artifact.key, meta)
