"""Input bundles: a board's exact candidate sets and the teacher they came from, in one hash-checked file.

`pllbench candidates --export FILE` writes the candidate artifacts of some seeds and their teacher's artifact (the
teacher makes the candidate keys: a run finds imported candidates only beside the same teacher); `--import FILE`
puts them into another cache after checking every key and checksum. A cache that already holds a *different*
artifact under one of the bundle's keys (a teacher trained elsewhere) is refused in one line, never overwritten.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import tarfile
from pathlib import Path

from ..artifacts import verify
from ..errors import PllbenchError
from ..util import atomic_write_bytes, key_hash

BUNDLE_FORMAT = "pllbench-inputs-v1"
_MEMBER = re.compile(r"(teacher|candidates)/([0-9a-f]{16})/([A-Za-z0-9_.-]+)")


def export_bundle(cache: Path, candidate_paths: list[Path], out: Path) -> dict:
    """Write the candidate artifacts and their teacher to `out` (a .tar.gz); return the bundle's index."""
    folders = []
    for path in candidate_paths:
        meta = verify(path, "candidates")
        teacher = Path(cache) / "teacher" / meta["key"]["teacher"]
        if not teacher.is_dir():
            raise PllbenchError(f"the teacher {teacher.name} of candidates {path.name} is not in the cache {cache}")
        folders += [("teacher", teacher), ("candidates", path)]
    index = {"format": BUNDLE_FORMAT, "artifacts": []}
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", format=tarfile.PAX_FORMAT) as tar:
        seen = set()
        for kind, folder in folders:
            if folder in seen:
                continue
            seen.add(folder)
            meta = verify(folder, kind)
            index["artifacts"].append({"kind": kind, "hash": folder.name, "files": meta["files"]})
            for name in ["meta.json", *sorted(meta["files"])]:
                tar.add(folder / name, arcname=f"{kind}/{folder.name}/{name}", recursive=False)
        data = json.dumps(index, indent=1, sort_keys=True).encode()
        info = tarfile.TarInfo("bundle.json")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    atomic_write_bytes(out, buffer.getvalue())
    return index


def _read_members(path: Path) -> tuple[dict, dict[tuple[str, str], dict[str, bytes]]]:
    """The bundle's index and its files by (kind, hash); refuses any member outside the bundle's layout."""
    try:
        tar = tarfile.open(path, mode="r:gz")
    except (OSError, tarfile.TarError) as exc:
        raise PllbenchError(f"{path} is not a pllbench input bundle ({exc})") from None
    index, folders = None, {}
    with tar:
        for member in tar.getmembers():
            if not member.isfile():
                raise PllbenchError(f"{path} holds {member.name!r}, which is not a plain file")
            data = tar.extractfile(member).read()
            if member.name == "bundle.json":
                index = json.loads(data)
                continue
            match = _MEMBER.fullmatch(member.name)
            if not match:
                raise PllbenchError(f"{path} holds {member.name!r}, outside a bundle's layout")
            folders.setdefault(match.group(1, 2), {})[match.group(3)] = data
    if not isinstance(index, dict) or index.get("format") != BUNDLE_FORMAT:
        raise PllbenchError(f"{path} is not a pllbench input bundle (no {BUNDLE_FORMAT} bundle.json)")
    return index, folders


def import_bundle(cache: Path, path: Path) -> list[tuple[str, str, str]]:
    """Check every artifact of the bundle and add it to `cache`; returns (kind, hash, "added"/"present") each."""
    index, folders = _read_members(Path(path))
    listed = {(a["kind"], a["hash"]) for a in index.get("artifacts", [])}
    if listed != set(folders):
        raise PllbenchError(f"{path}: its index and its files name different artifacts; the file is damaged")
    done = []
    for (kind, digest), files in sorted(folders.items(), key=lambda item: item[0][0] != "teacher"):
        target = Path(cache) / kind / digest
        tmp = target.with_name(f"{digest}.import-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        try:
            for name, data in files.items():
                (tmp / name).write_bytes(data)
            try:
                key = json.loads(files.get("meta.json", b"{}")).get("key")
            except (ValueError, AttributeError):
                key = None
            meta = verify(tmp, kind, key)
            if key_hash(meta["key"]) != digest:
                raise PllbenchError(f"{path}: the {kind} artifact {digest} has a key of another hash; the file is "
                                    f"damaged or edited")
            if target.exists():
                mine = verify(target, kind, meta["key"])
                if mine["files"] != meta["files"]:
                    raise PllbenchError(
                        f"the cache {cache} holds another {kind} under the key {digest} (made on this machine); "
                        f"move {target} aside or import into another --cache-dir")
                done.append((kind, digest, "present"))
                continue
            os.replace(tmp, target)
            done.append((kind, digest, "added"))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return done
