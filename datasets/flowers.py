"""Oxford Flowers-102 in torchvision's layout: `flowers-102/{jpg/, imagelabels.mat, setid.mat}`.

Runs train on the `train` split (10 per class) and test on `test`, as the CAD code; the candidate teacher
alone also trains on `val` (docs/spec/candidates.md §3).
"""

from __future__ import annotations

from pathlib import Path

import torch

from pllbench.dataset import (
    Dataset,
    DatasetInfo,
    Split,
    corrupt_file_error,
    decode_square,
    missing_dataset_error,
    register_dataset,
    torchvision_download,
)
from pllbench.util import cache_root

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def _read_mat(path: Path) -> dict:
    from scipy.io import loadmat

    try:
        return loadmat(path, squeeze_me=True)
    except Exception as exc:  # noqa: BLE001 — scipy raises OSError, IndexError, MatReadError, ... for a damaged file
        if getattr(exc, "errno", None) is not None:  # a real I/O error (permission, ...)
            raise
        raise corrupt_file_error(path, exc) from None


@register_dataset("flowers")
class Flowers102(Dataset):
    presets = ("paper",)
    rate = 0.05
    teachers = {"paper": {"arch": "wrn50-2", "epochs": 300, "batch_size": 64, "lr": 0.05, "weight_decay": 5e-4,
                          "augment": "rrc-flip-jitter", "label_smoothing": 0.1}}
    preset_settings = {"paper": {"backbone": "resnet34c", "batch_size": 16}}
    paper_column = 3

    def info(self) -> DatasetInfo:
        import torchvision

        return DatasetInfo("flowers", 102, 3, 224, *IMAGENET, "224", list(torchvision.datasets.Flowers102.classes))

    def teacher_split(self, root: Path | None, train: Split) -> Split:
        """train + val (2040 images): the teacher alone trains on val (docs/spec/candidates.md §3)."""
        (val,) = self.load(root, False, splits=("val",))
        return Split(torch.cat([train.images, val.images]), torch.cat([train.labels, val.labels]))

    def load(self, root: Path | None, download: bool, splits=("train", "test")) -> tuple[Split, ...]:
        if root is None:
            raise missing_dataset_error("flowers", [])
        base = root / "flowers-102"
        if download:
            torchvision_download("flowers", "Flowers102", root, split="train")
        needed = [base / "jpg", base / "imagelabels.mat", base / "setid.mat"]
        if not all(p.exists() for p in needed):
            raise missing_dataset_error("flowers", [base])
        set_ids = _read_mat(base / "setid.mat")
        labels = _read_mat(base / "imagelabels.mat")["labels"]
        keys = {"train": "trnid", "val": "valid", "test": "tstid"}
        out = []
        for split in splits:
            ids = [int(i) for i in set_ids[keys[split]].reshape(-1)]
            paths = [base / "jpg" / f"image_{i:05d}.jpg" for i in ids]
            cache = cache_root() / "decoded" / f"flowers-{split}-{len(ids)}.npy"
            images = decode_square(paths, cache_file=cache)
            out.append(Split(images, torch.tensor([int(labels[i - 1]) - 1 for i in ids], dtype=torch.long)))
        return tuple(out)
