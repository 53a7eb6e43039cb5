"""Fashion-MNIST from a data root, Debian's `dataset-fashion-mnist`, or torchvision's download."""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np
import torch

from pllbench.dataset import (
    Dataset,
    DatasetInfo,
    Split,
    corrupt_file_error,
    missing_dataset_error,
    register_dataset,
    torchvision_download,
)
from pllbench.errors import PllbenchError

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
           "Ankle boot"]
FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
         "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def read_idx(path: Path) -> np.ndarray:
    """Parse an IDX file (optionally gzipped): magic, dims, then big-endian uint8 data."""
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise corrupt_file_error(path, f"damaged gzip data: {exc}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise corrupt_file_error(path, "not a uint8 IDX file")
    ndim = raw[3]
    if len(raw) < 4 + 4 * ndim:
        raise corrupt_file_error(path, "the IDX header is cut short")
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise corrupt_file_error(path, f"expected {int(np.prod(dims))} values, found {data.size}")
    return data.reshape(dims)


def _find(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


@register_dataset("fmnist")
class FashionMNIST(Dataset):
    presets = ("paper", "quick", "demo", "smoke")  # smoke: the tests of its loader and error messages
    rate = 1.0
    teachers = {"paper": {"arch": "mlp", "epochs": 40, "batch_size": 256, "lr": 0.1, "weight_decay": 5e-4,
                          "augment": "none", "label_smoothing": 0.0}}
    preset_settings = {"paper": {"backbone": "resnet18c", "batch_size": 64}}
    paper_column = 0

    def info(self) -> DatasetInfo:
        return DatasetInfo("fmnist", 10, 1, 28, (0.1307,) * 3, (0.3081,) * 3, "28", list(CLASSES))

    def load(self, root: Path | None, download: bool) -> tuple[Split, Split]:
        folders = []
        if root is not None:
            folders += [root / "FashionMNIST" / "raw", root / "fashion-mnist", root]
        folders.append(DEBIAN_DIR)
        if download:
            if root is None:
                raise missing_dataset_error("fmnist", folders, "--download needs --data-root or PLLBENCH_DATA.")
            torchvision_download("fmnist", "FashionMNIST", root, train=True)
            torchvision_download("fmnist", "FashionMNIST", root, train=False)
        for folder in folders:
            paths = {split: [_find(folder, stem) for stem in stems] for split, stems in FILES.items()}
            if all(p is not None for pair in paths.values() for p in pair):
                return tuple(self._split(*paths[s]) for s in ("train", "test"))
        raise missing_dataset_error("fmnist", folders, "On Debian: apt-get install dataset-fashion-mnist.")

    @staticmethod
    def _split(images_path: Path, labels_path: Path) -> Split:
        images = read_idx(images_path)
        labels = read_idx(labels_path)
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise PllbenchError(f"{images_path} and {labels_path} do not form an image/label pair; delete both and "
                                f"rerun with --download")
        return Split(torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.astype(np.int64)))
