"""Everything a run needs before training: the data (preset subsets), the cached teacher, the candidates."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import PllbenchError
from ..evaluate import accuracy
from ..presets import resolve_preset
from ..util import key_hash
from .candidates import CandidateSet, get_candidates
from .registry import DatasetInfo, ImageData, Split, data_root, get_dataset, stratified_subset
from .teacher import get_teacher, teacher_logits


@dataclass
class Prepared:
    data: ImageData
    dataset_key: dict
    preset: dict
    candidates: CandidateSet
    teacher_hash: str


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@functools.lru_cache(maxsize=4)
def _load(dataset: str, root: str | None, download: bool):
    loader = get_dataset(dataset)
    train, test = loader.load(data_root(root), download)
    teacher_train = loader.teacher_split(data_root(root), train)
    info = loader.info()
    if info.name != loader.name:
        raise PllbenchError(f"{type(loader).__name__}.info() names the dataset {info.name!r}, but it is registered as "
                            f"{loader.name!r}; use one name")
    return info, train, test, teacher_train, loader.key()


def load_data(dataset: str, preset: str, root=None, download=False) -> tuple[DatasetInfo, ImageData, Split, dict]:
    """(info, preset-subset data, the teacher's train split, dataset key)."""
    info, train, test, teacher_train, dataset_key = _load(dataset, str(root) if root else None, download)
    cfg = resolve_preset(preset, info.name)
    train_index, test_index = np.arange(len(train)), np.arange(len(test))
    if cfg["train_per_class"]:
        train_index = stratified_subset(train.labels, cfg["train_per_class"])
    if cfg["test_per_class"]:
        test_index = stratified_subset(test.labels, cfg["test_per_class"])
    data = ImageData(info, train.subset(train_index), test.subset(test_index), train_index, test_index)
    return info, data, teacher_train, dataset_key


def prepare(dataset: str, preset: str, seed: int, *, root=None, download=False, cache: Path, device=None,
            candidate_seed: int | None = None, candidate_source: str = "id", echo=print) -> Prepared:
    device = device or default_device()
    info, data, teacher_train, dataset_key = load_data(dataset, preset, root, download)
    cfg = resolve_preset(preset, info.name)
    recipe = cfg["teacher"]
    teacher_spec = {"split": "teacher-train", "n": len(teacher_train)}
    model, t_key, t_sha = get_teacher(cache, dataset_key, teacher_train, teacher_spec, info, recipe, device, echo)

    def logits_fn():
        return teacher_logits(model, data.train.images, info, device, recipe["mode"])

    def stats_fn(logits):
        test_logits = teacher_logits(model, data.test.images, info, device, "eval")
        p = torch.softmax(logits.double(), dim=1)
        labels = data.train.labels
        return {"arch": recipe["arch"], "test_acc": float(accuracy(test_logits, data.test.labels)),
                "gen_acc": float(accuracy(logits, labels)),
                "mean_p_true": float(p[torch.arange(len(labels)), labels].mean()),
                "share_argmax_true": float((p.argmax(1) == labels).double().mean()), "mode": recipe["mode"]}

    cands = get_candidates(cache, dataset=dataset_key, train_spec=data.train_spec, teacher_key_hash=key_hash(t_key),
                           teacher_sha=t_sha, teacher_mode=recipe["mode"], rate=cfg["rate"],
                           seed=seed if candidate_seed is None else candidate_seed, logits_fn=logits_fn,
                           labels=data.train.labels, teacher_stats_fn=stats_fn, classes=info.classes,
                           source=candidate_source)
    return Prepared(data, dataset_key, cfg, cands, key_hash(t_key))
