"""Seeded class-structured images for tests (protocols.md §7): classes (0,1), (2,3), ... are entangled."""

from __future__ import annotations

import torch

from pllbench.dataset import Dataset, DatasetInfo, Split, register_dataset
from pllbench.util import derive_seed


def class_means(num_classes: int, channels: int, size: int) -> torch.Tensor:
    bases = []
    for c in range(num_classes):
        gen = torch.Generator().manual_seed(1000 + c)
        bases.append(torch.sigmoid(2 * torch.randn(channels, size, size, generator=gen)))
    means = []
    for c in range(num_classes):
        means.append(bases[c] if c % 2 == 0 else 0.6 * bases[c - 1] + 0.4 * bases[c])
    return torch.stack(means)


def make_split(split: str, n: int, num_classes: int, channels: int, size: int, seed: int) -> Split:
    labels = torch.arange(n) % num_classes
    gen = torch.Generator().manual_seed(derive_seed("synthetic", split, seed))
    noise = torch.randn(n, channels, size, size, generator=gen)
    x = (class_means(num_classes, channels, size)[labels] + 0.15 * noise).clamp(0, 1)
    return Split(torch.round(255 * x).to(torch.uint8), labels)


@register_dataset("synthetic")
class Synthetic(Dataset):
    """Options (CLI form `synthetic:size=48,classes=10`): size, classes, channels, train, test, seed, family."""

    presets = ("smoke",)
    rate = 0.5

    def __init__(self, size=16, classes=4, channels=3, train=64, test=32, seed=0, family=None):
        self.size, self.classes, self.channels = int(size), int(classes), int(channels)
        self.n_train, self.n_test, self.seed = int(train), int(test), int(seed)
        self.family = family or ("28" if self.channels == 1 else "224" if self.size >= 224 else "32")
        if self.classes < 2 or self.size < 8 or self.channels not in (1, 3):
            raise TypeError("need classes >= 2, size >= 8 and channels 1 or 3")

    def info(self) -> DatasetInfo:
        mean = (0.5,) * 3
        std = (0.25,) * 3
        side = 224 if self.family == "224" else self.size
        return DatasetInfo("synthetic", self.classes, self.channels, side, mean, std, self.family,
                           [f"class {c}" for c in range(self.classes)])

    def options(self) -> dict:
        return {"size": self.size, "classes": self.classes, "channels": self.channels, "train": self.n_train,
                "test": self.n_test, "seed": self.seed, "family": self.family}

    def load(self, root, download) -> tuple[Split, Split]:
        args = (self.classes, self.channels, self.size, self.seed)
        return make_split("train", self.n_train, *args), make_split("test", self.n_test, *args)
