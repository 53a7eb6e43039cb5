"""Seeded class-structured images for tests (docs/spec/protocols.md §7) that a cnn-xs learns in the smoke preset's 2
epochs.

Each class is a colour tint plus a grating: classes 2i and 2i+1 (a pair) share the grating's period and differ in its
orientation (horizontal, vertical) and in tint. No view removes both cues: colour jitter and grayscale blur the tint,
crops rescale the grating but keep its orientation, flips and small rotations keep both. So the oracle and PRODEN beat
chance within seconds; a method that stops learning does not (tests/test_smoke_learns.py). Each image also blends
in its pair partner's pattern at a random share below `mix`: pairs are entangled in the images. At the default 0.15
the candidate teacher still tells them apart, and a partner is a candidate about as often as any other false label;
`mix=0.45` makes it twice as likely, at the cost of the slow starters' accuracy in the smoke preset (CEL's).
"""

from __future__ import annotations

import math

import torch

from pllbench.dataset import Dataset, DatasetInfo, Split, register_dataset
from pllbench.util import derive_seed

PERIODS = (2.0, 6.0, 4.0)  # grating period in pixels, per pair (cycled)
GRATING_AMPLITUDE, TINT_SCALE, NOISE = 0.45, 0.6, 0.05
MIX = 0.15  # default largest share of the pair partner's pattern in an image


def class_tints(num_classes: int, channels: int) -> torch.Tensor:
    """K × C colour offsets in [−0.3, 0.3), seeded per class (a class's tint does not depend on K)."""
    rows = [torch.rand(channels, generator=torch.Generator().manual_seed(1000 + c)) for c in range(num_classes)]
    return TINT_SCALE * (torch.stack(rows) - 0.5)


def class_patterns(labels: torch.Tensor, phase: torch.Tensor, num_classes: int, channels: int,
                   size: int) -> torch.Tensor:
    """N × C × size × size: each label's tint plus its grating, shifted by a per-image phase."""
    coords = torch.arange(size, dtype=torch.float32)
    rows, cols = torch.meshgrid(coords, coords, indexing="ij")
    vertical = (labels % 2).float()[:, None, None]
    period = torch.tensor(PERIODS)[(labels // 2) % len(PERIODS)][:, None, None]
    position = vertical * cols + (1 - vertical) * rows
    grating = torch.cos(2 * math.pi * position / period + phase[:, None, None])
    return GRATING_AMPLITUDE * grating[:, None] + class_tints(num_classes, channels)[labels][:, :, None, None]


def make_split(split: str, n: int, num_classes: int, channels: int, size: int, seed: int,
               mix: float = MIX) -> Split:
    labels = torch.arange(n) % num_classes
    partner = labels ^ 1
    partner = torch.where(partner < num_classes, partner, labels)  # an odd K's last class has no partner
    gen = torch.Generator().manual_seed(derive_seed("synthetic", split, seed))
    phase = 2 * math.pi * torch.rand(n, generator=gen)
    share = mix * torch.rand(n, generator=gen)[:, None, None, None]
    noise = torch.randn(n, channels, size, size, generator=gen)
    args = (phase, num_classes, channels, size)
    x = 0.5 + (1 - share) * class_patterns(labels, *args) + share * class_patterns(partner, *args) + NOISE * noise
    return Split(torch.round(255 * x.clamp(0, 1)).to(torch.uint8), labels)


@register_dataset("synthetic")
class Synthetic(Dataset):
    """Options (CLI form `synthetic:size=48,classes=10`): size, classes, channels, train, test, seed, family, mix
    (the largest share of an image's pair partner blended in: how entangled pairs are)."""

    presets = ("smoke",)
    # E|S| = 1 + 4r = 1.8 at K = 4 (nothing clips): ambiguous enough to be partial-label learning, and learnable in
    # the smoke preset's few steps (at 0.5, E|S| ≈ 2.8 and PRODEN, DIRK and CEL end near chance on most seeds).
    rate = 0.2

    def __init__(self, size=16, classes=4, channels=3, train=64, test=32, seed=0, family=None, mix=MIX):
        self.size, self.classes, self.channels = int(size), int(classes), int(channels)
        self.n_train, self.n_test, self.seed, self.mix = int(train), int(test), int(seed), float(mix)
        self.family = family or ("28" if self.channels == 1 else "224" if self.size >= 224 else "32")
        if self.classes < 2 or self.size < 8 or self.channels not in (1, 3) or not 0 <= self.mix <= 0.5:
            raise TypeError("need classes >= 2, size >= 8, channels 1 or 3 and mix in [0, 0.5]")

    def info(self) -> DatasetInfo:
        mean = (0.5,) * 3
        std = (0.25,) * 3
        side = 224 if self.family == "224" else self.size
        return DatasetInfo("synthetic", self.classes, self.channels, side, mean, std, self.family,
                           [f"class {c}" for c in range(self.classes)])

    def options(self) -> dict:
        return {"size": self.size, "classes": self.classes, "channels": self.channels, "train": self.n_train,
                "test": self.n_test, "seed": self.seed, "family": self.family, "mix": self.mix}

    def load(self, root, download) -> tuple[Split, Split]:
        args = (self.classes, self.channels, self.size, self.seed, self.mix)
        return make_split("train", self.n_train, *args), make_split("test", self.n_test, *args)
