"""CIFAR-10 and CIFAR-100 in torchvision's on-disk layout (the python pickle batches)."""

from __future__ import annotations

import pickle
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


class ForeignPickle(PllbenchError, pickle.UnpicklingError):
    """A CIFAR file that asks for a global other than numpy's array reconstruction (never loaded)."""


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """Loads the CIFAR batches (dicts of bytes, lists and numpy arrays) and refuses any other global."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype")}

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise ForeignPickle(f"refusing to load {module}.{name} from a CIFAR batch")


def _unpickle(path: Path) -> dict:
    with open(path, "rb") as fh:
        try:
            data = _ArrayOnlyUnpickler(fh, encoding="latin1").load()
        except ForeignPickle as exc:
            raise ForeignPickle(f"{path}: {exc}; it is not a CIFAR file: delete it and rerun with --download") \
                from None
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as exc:
            raise corrupt_file_error(path, exc) from None
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in data.items()}


class _Cifar(Dataset):
    folder: str
    train_files: list[str]
    test_files: list[str]
    meta_file: str
    names_key: str
    labels_key: str
    num_classes: int
    mean: tuple
    std: tuple
    torchvision_class: str

    def info(self) -> DatasetInfo:
        return DatasetInfo(self.name, self.num_classes, 3, 32, self.mean, self.std, "32", list(self._classes))

    _classes: list[str] = []

    def load(self, root: Path | None, download: bool) -> tuple[Split, Split]:
        if root is None:
            raise missing_dataset_error(self.name, [])
        base = root / self.folder
        if download:
            torchvision_download(self.name, self.torchvision_class, root, train=True)
        needed = [base / f for f in self.train_files + self.test_files + [self.meta_file]]
        if not all(p.is_file() for p in needed):
            raise missing_dataset_error(self.name, [base])
        self._classes = list(_unpickle(base / self.meta_file)[self.names_key])
        return self._split(base, self.train_files), self._split(base, self.test_files)

    def _split(self, base: Path, files: list[str]) -> Split:
        images, labels = [], []
        for name in files:
            batch = _unpickle(base / name)
            images.append(np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            labels.extend(batch[self.labels_key])
        return Split(torch.from_numpy(np.concatenate(images)), torch.tensor(labels, dtype=torch.long))


@register_dataset("cifar10")
class Cifar10(_Cifar):
    folder = "cifar-10-batches-py"
    train_files = [f"data_batch_{i}" for i in range(1, 6)]
    test_files = ["test_batch"]
    meta_file, names_key, labels_key = "batches.meta", "label_names", "labels"
    num_classes, torchvision_class = 10, "CIFAR10"
    mean, std = (0.4914, 0.4822, 0.4465), (0.247, 0.243, 0.261)
    presets = ("paper", "smoke")  # smoke: the tests of its loader and error messages
    rate = 1.0
    teachers = {"paper": {"arch": "wrn28-10", "epochs": 200, "batch_size": 128, "lr": 0.1, "weight_decay": 5e-4,
                          "augment": "flip-crop", "label_smoothing": 0.0}}
    preset_settings = {"paper": {"backbone": "resnet34c", "batch_size": 64}}
    paper_column = 1


@register_dataset("cifar100")
class Cifar100(_Cifar):
    folder = "cifar-100-python"
    train_files = ["train"]
    test_files = ["test"]
    meta_file, names_key, labels_key = "meta", "fine_label_names", "fine_labels"
    num_classes, torchvision_class = 100, "CIFAR100"
    mean, std = (0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)
    presets = ("paper",)
    rate = 0.1
    teachers = {"paper": {"arch": "wrn50-2", "epochs": 200, "batch_size": 128, "lr": 0.1, "weight_decay": 5e-4,
                          "augment": "flip-crop", "label_smoothing": 0.0}}
    preset_settings = {"paper": {"backbone": "resnet34c", "batch_size": 64}}
    paper_column = 2
