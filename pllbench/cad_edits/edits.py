"""Class-specific edits (docs/spec/methods.md §1 "Augment artifact"; docs/spec/candidates.md §4): the on-disk format and
its readers.

One edit E_{i,s} per train instance i and candidate label s ∈ S_i (the true label included; it is never known here).

**Artifact** `<cache>/edits/<h>` (built through `pllbench.artifacts.load_or_build`, kind "edits"), keyed by
`edits_key(...)`: {"kind": "edits", "candidates": <candidate artifact hash>, "editor": <editor id>,
"weights_sha256", "prompts_sha256", "params": {every editor parameter, the working resolution included}, "seed",
"version": EDITS_VERSION}. Files:
- `edits.npy`: uint8 N_e×3×H×W RGB at the model input size (H = W; gray sets replicated), a plain .npy that
  `np.load(path, mmap_mode="r")` opens without reading it.
- `offsets.npy`: int64 CSR offsets of length N+1. Instance i owns rows offsets[i]:offsets[i+1], one per candidate
  label j with Y_ij = 1, j ascending ("instance-major, candidates ascending"); `edit_pairs(Y)` lists (i, j) per row.
- `meta.json`: the key, file checksums, and `num_edits`, `size`, `mean_edits` (written by `build_edits`).

**Writing.** `build_edits(cache, key, candidates, size, editor)` calls `editor(instances, labels)` (int64 arrays of
one chunk of rows, in store order) → uint8 n×3×size×size (numpy or torch), and fills the artifact chunk by chunk.
Finished chunks live in `<cache>/edits/<h>.partial/` (an `EditWriter` folder: the preallocated edits.npy plus
progress.json, updated after every flushed chunk), so an interrupted build resumes where it stopped; the finished
files are then hard-linked into the artifact, and the partial folder is removed only once the artifact is in place
(a kill in between costs nothing). A tool that drives its own loop can use `EditWriter` directly.

**Reading.** `EditStore(folder).gather(index, candidate_rows)` → (uint8 A×3×H×W edits, owner position in the batch
(A), class id (A)) by one vectorised CSR gather on the memmap; `IdentityEdits` (editor `identity`, E_{i,s} = the
base image) makes the same triple from the train images in memory. `open_edits(ctx, editor, pin)` is what a method
calls: it picks `identity`, or asks the run's artifact store (`ctx.artifacts`) for the one stored "edits" artifact
of that editor keyed by the run's candidates.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from ..artifacts import ArtifactStore
from ..errors import PllbenchError
from ..util import atomic_write_json, atomic_write_text, canonical_json
from ..views.maker import center_crop

EDITS_VERSION = "edits-v1"


def edits_key(candidates_hash: str, editor: str, *, seed: int, params: dict | None = None,
              weights_sha256: str | None = None, prompts_sha256: str | None = None) -> dict:
    """The content key of an edit artifact (every field that changes a pixel)."""
    return {"kind": "edits", "candidates": candidates_hash, "editor": editor, "weights_sha256": weights_sha256,
            "prompts_sha256": prompts_sha256, "params": dict(params or {}), "seed": int(seed),
            "version": EDITS_VERSION}


def edit_offsets(candidates: np.ndarray) -> np.ndarray:
    """CSR offsets (int64, N+1): instance i owns edit rows offsets[i]:offsets[i+1]."""
    sizes = np.asarray(candidates).astype(bool).sum(axis=1)
    return np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)


def edit_pairs(candidates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(instance, label) of every edit row, in store order (instance-major, labels ascending)."""
    instances, labels = np.nonzero(np.asarray(candidates))
    return instances.astype(np.int64), labels.astype(np.int64)


class EditWriter:
    """Fills `folder/edits.npy` in store order, chunk by chunk; progress.json makes it resumable.

    Use: `while not w.complete: inst, lab = w.pending(n); w.write(edit(inst, lab))`, then `w.finish()`.
    """

    def __init__(self, folder: Path, candidates: np.ndarray, size: int):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.offsets = edit_offsets(candidates)
        self.instances, self.labels = edit_pairs(candidates)
        self.shape = (int(self.offsets[-1]), 3, int(size), int(size))
        path, progress = self.folder / "edits.npy", self.folder / "progress.json"
        self.written = 0
        if path.exists() and progress.exists():
            edits = np.load(path, mmap_mode="r+")
            if edits.shape == self.shape and edits.dtype == np.uint8:
                self.edits, self.written = edits, int(json.loads(progress.read_text())["written"])
        if not self.written:
            self.edits = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=self.shape)
        np.save(self.folder / "offsets.npy", self.offsets)

    @property
    def total(self) -> int:
        return self.shape[0]

    @property
    def complete(self) -> bool:
        return self.written == self.total

    def pending(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """(instances, labels) of the next ≤ n rows to write."""
        stop = min(self.written + n, self.total)
        return self.instances[self.written:stop], self.labels[self.written:stop]

    def write(self, chunk) -> None:
        """Append the next rows (uint8 n×3×H×W), flush them, then record the progress."""
        if isinstance(chunk, torch.Tensor):
            chunk = chunk.cpu().numpy()
        chunk = np.asarray(chunk)
        n = len(chunk)
        if chunk.dtype != np.uint8 or chunk.shape[1:] != self.shape[1:] or self.written + n > self.total:
            raise PllbenchError(f"edit chunk {chunk.dtype} {chunk.shape} does not fit rows {self.written}.."
                                f"{self.written + n} of a uint8 {self.shape} store")
        self.edits[self.written:self.written + n] = chunk
        self.edits.flush()
        self.written += n
        atomic_write_json(self.folder / "progress.json", {"written": self.written})

    def finish(self) -> None:
        if not self.complete:
            raise PllbenchError(f"edit store has {self.written} of {self.total} rows; finish writing first")
        self.edits.flush()
        del self.edits


def build_edits(cache: ArtifactStore | Path, key: dict, candidates: np.ndarray, size: int,
                editor: Callable[[np.ndarray, np.ndarray], np.ndarray | torch.Tensor], chunk: int = 256,
                echo: Callable[[str], None] | None = None) -> EditStore:
    """Load or build the edit artifact for `key` from `editor(instances, labels) -> uint8 n×3×size×size`."""
    store = ArtifactStore.of(cache)
    final = store.address("edits", key)
    partial = final.with_name(final.name + ".partial")

    def build(tmp: Path) -> dict:
        stamp = partial / "key.json"
        if stamp.exists() and stamp.read_text() != canonical_json(key):
            shutil.rmtree(partial)
        if not stamp.exists():  # never rewritten in place: a kill would leave it empty and the next build drop the rows
            atomic_write_text(stamp, canonical_json(key))
        writer = EditWriter(partial, candidates, size)
        while not writer.complete:
            instances, labels = writer.pending(chunk)
            writer.write(editor(instances, labels))
            if echo:
                echo(f"edits: {writer.written}/{writer.total}")
        writer.finish()
        for name in ("edits.npy", "offsets.npy"):  # linked: the partial stays whole until the artifact is in place
            os.link(partial / name, tmp / name)
        n = len(writer.offsets) - 1
        return {"num_edits": writer.total, "size": int(size), "mean_edits": writer.total / max(n, 1)}

    artifact = store.load_or_build("edits", key, build)
    shutil.rmtree(partial, ignore_errors=True)
    return EditStore(artifact.path)


def _pairs(cands: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(owner position in the batch, class id) of every edit of a batch, in store order."""
    return cands.nonzero(as_tuple=True)


class EditStore:
    """A stored edit artifact, memory-mapped; `gather` reads the edits of a batch in one fancy-indexing call."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.meta = json.loads((self.folder / "meta.json").read_text())
        self.edits = np.load(self.folder / "edits.npy", mmap_mode="r")
        self.offsets = np.load(self.folder / "offsets.npy")
        self.size = self.edits.shape[-1]

    def check(self, candidates: torch.Tensor) -> None:
        """The store must hold exactly |S_i| edits per instance of this candidate matrix."""
        sizes = candidates.detach().bool().sum(dim=1).cpu().numpy()
        if len(sizes) != len(self.offsets) - 1 or not np.array_equal(np.diff(self.offsets), sizes):
            raise PllbenchError(f"edit artifact {self.folder} does not match the run's candidate sets; rebuild it")

    def rows(self, index: np.ndarray) -> np.ndarray:
        """Edit rows of the instances `index`, concatenated in batch order (vectorised CSR expansion)."""
        starts = self.offsets[index]
        counts = self.offsets[index + 1] - starts
        ends = np.cumsum(counts)
        return np.repeat(starts - (ends - counts), counts) + np.arange(ends[-1] if len(ends) else 0)

    def gather(self, index: torch.Tensor, cands: torch.Tensor):
        """(uint8 A×3×H×W edits, owner position in the batch (A), class id (A)) on the device of `cands`."""
        owner, label = _pairs(cands)
        edits = torch.from_numpy(self.edits[self.rows(index.cpu().numpy())])
        return edits.to(cands.device, non_blocking=True), owner, label


class IdentityEdits:
    """Editor `identity`: E_{i,s} = the base image (RGB at the model input size), made on the fly."""

    def __init__(self, images: torch.Tensor, size: int):
        base = images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images
        self.base = center_crop(base, size) if base.shape[-1] != size else base

    def gather(self, index: torch.Tensor, cands: torch.Tensor):
        owner, label = _pairs(cands)
        return self.base[index.to(self.base.device)[owner]].to(cands.device), owner, label


def augment_command(dataset: str, preset: str, seed: int, editor: str) -> str:
    """The command that builds the edits of one run's candidates."""
    return f"pllbench augment --dataset {dataset} --preset {preset} --seed {seed} --editor {editor}"


def find_edits(cache: ArtifactStore | Path, candidates_hash: str, editor: str, pin: str = "") -> Path | None:
    """The verified folder of the one edit artifact of `editor` for these candidates (`pin`: a hash prefix);
    None when there is none."""
    store = ArtifactStore.of(cache)
    found = store.find("edits", pin, candidates=candidates_hash, editor=editor, version=EDITS_VERSION)
    if len(found) > 1:
        names = ", ".join(artifact.hash for artifact in found)
        raise PllbenchError(f"several {editor!r} edit artifacts match candidates {candidates_hash} ({names}); "
                            f"pick one with --hp edits=HASH")
    return store.verified(found[0]).path if found else None


def open_edits(ctx, editor: str, pin: str = "") -> EditStore | IdentityEdits:
    """The edit source of a run: `identity` on the fly, else the stored artifact for the run's candidates, found
    through the run's artifact store (`ctx.artifacts`)."""
    if editor == "identity":
        return IdentityEdits(ctx.train_images, ctx.views.size)
    store = ctx.artifacts
    path = find_edits(store, store.candidates, editor, pin) if store is not None and store.candidates else None
    if path is None:
        where = store.root / "edits" if store is not None else "no artifact store"
        origin = store.origin if store is not None else {}
        command = augment_command(origin.get("dataset", ctx.dataset), origin.get("preset", "PRESET"),
                                  origin.get("candidate_seed", 0), editor)
        candidates = store.candidates if store is not None else ""
        raise PllbenchError(f"no {editor!r} edits for candidates {candidates or '(unknown: no run artifacts)'} in "
                            f"{where}; make them with `{command}`, or use --hp editor=identity")
    store = EditStore(path)
    store.check(ctx.candidates)
    if store.size != ctx.views.size:
        raise PllbenchError(f"edit artifact {path} holds {store.size}-px edits but the model input is "
                            f"{ctx.views.size} px; rebuild it")
    return store


def identity_editor_note(spec) -> str | None:
    """One line, at the start of a run, when a CAD-family job of `spec` (a grid.jobs.GridSpec) trains with the
    identity (control) editor."""
    from ..data.registry import get_dataset
    from ..method import get_method, resolve_hparams
    from ..presets import method_overrides, resolve_preset

    labels: dict[str, str] = {}
    where = None
    for dataset in spec.datasets:
        name = get_dataset(dataset).info().name
        cfg = resolve_preset(spec.preset, name)
        for method in spec.methods:
            cls = get_method(method)
            hp = resolve_hparams(cls, name, method_overrides(cfg, cls.name, cls.family), spec.hp)
            if hp.get("editor") == "identity" and hp.get("align_weight", 0) > 0:
                labels.setdefault(method, cls.run_label(hp))
                where = where or dataset
    if not labels:
        return None
    seed = spec.candidate_seed if spec.candidate_seed is not None else spec.seeds[0]
    return (f"CAD uses the identity editor (a control: no InstructPix2Pix edits) for {', '.join(labels)} under "
            f"preset {spec.preset}: every edit is the unedited image, so the results are labelled "
            f"{', '.join(labels.values())} and are not the paper's CAD; for the paper's edits run "
            f"`{augment_command(where, spec.preset, seed, 'ip2p')}` and add --hp editor=ip2p")
