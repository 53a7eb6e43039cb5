"""Augmentation views (docs/spec/protocols.md §3), batched on the data's device with per-sample random parameters.

Every op draws its parameters per image from the caller's generator, so one call on a batch behaves like the
per-image torchvision op applied image by image, with no Python loop over images and no host sync.

AutoAugment and RandAugment follow torchvision's v2 ops on uint8 images exactly (same op lists, magnitude bins,
signs and sub-policies; uint8 rounding after each op). Each sample gets its own op per slot; the ops are grouped
into kernels that act as the identity on the samples that did not pick them: one nearest-neighbour grid_sample with
per-sample affine matrices (shears, translations, rotations), one blend toward a per-sample degenerate image
(brightness, colour, contrast), a masked 3×3 sharpening, per-sample bit masks (posterize), per-sample thresholds
(solarize, invert), and per-sample-per-channel autocontrast and equalize (cumulative histograms from sorted levels).

One-channel images (Fashion-MNIST) stay one channel through the ops (colour ops are the identity on them, as in
torchvision) and are replicated to three channels by the final normalisation.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..dataset import DatasetInfo
from .autoaugment import auto_augment, rand_augment
from .batch_ops import apply_where, luma, per_sample, rand01, randint_below, uniform
from .families import view_family

VIEW_NAMES = ("base", "cls", "weak", "strong")

def hflip(x, gen, p=0.5):
    flip = rand01(len(x), gen, x.device) < p
    return torch.where(per_sample(flip), x.flip(-1), x)


def _crop_at(x, top, left, size):
    """Per-sample size×size crops at (top, left) by one gather."""
    rows = top[:, None] + torch.arange(size, device=x.device)
    cols = left[:, None] + torch.arange(size, device=x.device)
    batch = torch.arange(len(x), device=x.device)[:, None, None]
    return x.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)


def pad_crop(x, gen, size, pad, mode="reflect"):
    """RandomCrop(size, padding=pad, padding_mode=mode)."""
    xp = F.pad(x, (pad, pad, pad, pad), mode=mode) if pad else x
    top = randint_below(len(x), xp.shape[-2] - size + 1, gen, x.device)
    left = randint_below(len(x), xp.shape[-1] - size + 1, gen, x.device)
    return _crop_at(xp, top, left, size)


def center_crop(x, size):
    top = (x.shape[-2] - size) // 2
    left = (x.shape[-1] - size) // 2
    return x[..., top:top + size, left:left + size]


def rrc_params(n, height, width, scale, ratio, gen, device, attempts=10):
    """torchvision's RandomResizedCrop.get_params, vectorised: first valid of 10 attempts, else centre."""
    area = height * width
    target = area * uniform(n * attempts, scale[0], scale[1], gen, device).view(n, attempts)
    log_r = uniform(n * attempts, math.log(ratio[0]), math.log(ratio[1]), gen, device).view(n, attempts)
    aspect = torch.exp(log_r)
    w = torch.round(torch.sqrt(target * aspect))
    h = torch.round(torch.sqrt(target / aspect))
    ok = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = torch.argmax(ok.int(), dim=1)
    any_ok = ok.any(dim=1)
    pick = torch.arange(n, device=device)
    w, h = w[pick, first], h[pick, first]
    # Fallback (torchvision): whole image, ratio clamped to the range.
    in_ratio = width / height
    if in_ratio < ratio[0]:
        fw, fh = width, round(width / ratio[0])
    elif in_ratio > ratio[1]:
        fw, fh = round(height * ratio[1]), height
    else:
        fw, fh = width, height
    w = torch.where(any_ok, w, torch.full_like(w, fw))
    h = torch.where(any_ok, h, torch.full_like(h, fh))
    u_top, u_left = rand01(n, gen, device), rand01(n, gen, device)
    top = torch.where(any_ok, torch.floor(u_top * (height - h + 1)), torch.full_like(h, (height - fh) // 2))
    left = torch.where(any_ok, torch.floor(u_left * (width - w + 1)), torch.full_like(w, (width - fw) // 2))
    return top, left, h, w


def resized_crop(x, top, left, h, w, size):
    """Bilinear crop-and-resize of each sample's box to size×size (torchvision's sampling grid)."""
    n, _, height, width = x.shape
    theta = torch.zeros(n, 2, 3, device=x.device, dtype=x.dtype)
    theta[:, 0, 0] = w / width
    theta[:, 1, 1] = h / height
    theta[:, 0, 2] = (2 * left + w) / width - 1
    theta[:, 1, 2] = (2 * top + h) / height - 1
    grid = F.affine_grid(theta, (n, x.shape[1], size, size), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def random_resized_crop(x, gen, size, scale, ratio=(3 / 4, 4 / 3)):
    top, left, h, w = rrc_params(len(x), x.shape[-2], x.shape[-1], scale, ratio, gen, x.device)
    return resized_crop(x, top, left, h.to(x.dtype), w.to(x.dtype), size)



def _shift_hue(x, shift):
    """adjust_hue on RGB in [0,1] with a per-sample shift: RGB → hue sextant, shift, then the closed-form HSV → RGB
    f(n) = V − V·S·clamp(min(k, 4 − k), 0, 1), k = (n + 6h) mod 6 (n = 5, 3, 1 for R, G, B)."""
    r, g, b = x.unbind(1)
    maxc, minc = x.amax(1), x.amin(1)
    delta = maxc - minc
    safe = torch.where(delta == 0, torch.ones_like(delta), delta)
    h6 = torch.where(maxc == r, (g - b) / safe, torch.where(maxc == g, 2.0 + (b - r) / safe, 4.0 + (r - g) / safe))
    h6 = h6 + 6.0 * shift[:, None, None]
    channels = []
    for n in (5.0, 3.0, 1.0):
        k = torch.remainder(n + h6, 6.0)
        channels.append(maxc - delta * torch.minimum(k, 4.0 - k).clamp(0.0, 1.0))
    return torch.stack(channels, 1)


def _blend_toward(x, factor, degenerate):
    f = factor[:, None, None, None]
    return (f * x + (1 - f) * degenerate).clamp(0, 1)


def _brightness(x, factor):
    return _blend_toward(x, factor, torch.zeros_like(x))


def _contrast(x, factor):
    return _blend_toward(x, factor, luma(x).mean(dim=(1, 2, 3), keepdim=True))


def _saturation(x, factor):
    return _blend_toward(x, factor, luma(x))


def color_jitter(x, gen, brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1, p=0.8):
    """RandomApply(ColorJitter, p): per-sample factors and per-sample op order, as torchvision per image
    (saturation and hue are the identity on one-channel images, so they are skipped there)."""
    n, device = len(x), x.device
    apply = rand01(n, gen, device) < p
    factors = [uniform(n, 1 - brightness, 1 + brightness, gen, device),
               uniform(n, 1 - contrast, 1 + contrast, gen, device),
               uniform(n, 1 - saturation, 1 + saturation, gen, device),
               uniform(n, -hue, hue, gen, device)]
    order = torch.argsort(rand01(n * 4, gen, device).view(n, 4), dim=1)
    ops = (_brightness, _contrast) + ((_saturation, _shift_hue) if x.shape[1] == 3 else ())
    x = x.clone()
    for slot in range(4):
        op = torch.where(apply, order[:, slot], -1)
        for k, fn in enumerate(ops):
            x = apply_where(op == k, fn, x, factors[k])
    return x


def random_grayscale(x, gen, p=0.2):
    pick = rand01(len(x), gen, x.device) < p
    return torch.where(per_sample(pick), luma(x).expand_as(x), x)


def erase_square(x, gen, side=None, area=None):
    """RandomErasing(p=1, ratio=(1,1), value=0): a fixed `side`, or side = round(sqrt(U(area)·H·W))."""
    n, _, height, width = x.shape
    if side is not None:
        sides = torch.full((n,), float(side), device=x.device)
    else:
        sides = torch.round(torch.sqrt(uniform(n, area[0], area[1], gen, x.device) * height * width))
    sides = sides.clamp(1, min(height, width))
    top = torch.floor(rand01(n, gen, x.device) * (height - sides + 1))
    left = torch.floor(rand01(n, gen, x.device) * (width - sides + 1))
    rows = torch.arange(height, device=x.device)[None, :]
    cols = torch.arange(width, device=x.device)[None, :]
    in_rows = (rows >= top[:, None]) & (rows < (top + sides)[:, None])
    in_cols = (cols >= left[:, None]) & (cols < (left + sides)[:, None])
    mask = (in_rows[:, :, None] & in_cols[:, None, :])[:, None]
    return x.masked_fill(mask, 0.0)


class ViewMaker:
    """Turns uint8 image batches into the named, normalised float views of a dataset's family
    (`recipe`: the ViewFamily that `info.view_family` names, pllbench/views/families.py)."""

    def __init__(self, info: DatasetInfo, channels_last: bool = False, cutout: int | None = None):
        """`cutout`: the cls view's erase side in pixels (0: no erase); None keeps the family's default."""
        self.info = info
        self.family = info.view_family
        self.recipe = view_family(info.view_family)
        self.size = info.input_size
        self.mean = torch.tensor(info.mean).view(1, 3, 1, 1)
        self.std = torch.tensor(info.std).view(1, 3, 1, 1)
        self._moments_on: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}
        # Views come out channels_last when the networks run channels_last (the trainer sets it on CUDA).
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        # 32-px settings scale with the image side (smoke's 16 px: pad 2, cutout 8).
        self.pad = self.recipe.pad_at(self.size)
        self.cutout = self.recipe.cutout_at(self.size) if cutout is None else int(cutout)

    def to_unit(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 N×C×H×W → float RGB in [0,1] (gray replicated to three channels)."""
        x = images.float() / 255
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        return x

    def _moments(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """mean and std on `device`, copied once (a copy per call would be a host-to-device transfer per step)."""
        if device not in self._moments_on:
            self._moments_on[device] = (self.mean.to(device), self.std.to(device))
        return self._moments_on[device]

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """(x − mean) / std; a one-channel x broadcasts to three channels."""
        mean, std = self._moments(x.device)
        return ((x - mean) / std).contiguous(memory_format=self.memory_format)

    def unnormalize(self, x: torch.Tensor) -> torch.Tensor:
        mean, std = self._moments(x.device)
        return x * std + mean

    def __call__(self, images: torch.Tensor, view: str, gen: torch.Generator) -> torch.Tensor:
        return self.from_unit(images.float() / 255, view, gen)  # gray stays one channel until normalize

    def from_unit(self, x: torch.Tensor, view: str, gen: torch.Generator) -> torch.Tensor:
        """Apply `view` to float images in [0,1] (1 or 3 channels, any side ≥ the input size) and normalise."""
        size, fam = self.size, self.recipe
        if view == "base":
            return self.normalize(center_crop(x, size) if x.shape[-1] != size else x)
        if view == "cls":
            if fam.cls_crop == "rrc":
                x = hflip(random_resized_crop(x, gen, size, fam.crop_scale), gen)
            else:
                x = pad_crop(hflip(x, gen), gen, size, self.pad, "reflect")
            if fam.cls_policy:
                x = auto_augment(x, gen, fam.cls_policy)
            x = self.normalize(x)
            return erase_square(x, gen, side=self.cutout) if fam.cls_cutout and self.cutout else x
        x = hflip(random_resized_crop(x, gen, size, fam.crop_scale), gen)
        if view == "weak":
            return self.normalize(random_grayscale(color_jitter(x, gen), gen) if fam.colour else x)
        if view == "strong":
            if not fam.colour:
                return self.normalize(random_grayscale(color_jitter(x, gen), gen))
            return erase_square(self.normalize(rand_augment(x, gen)), gen, area=(0.02, 0.25))
        raise ValueError(f"unknown view {view!r}; known: {', '.join(VIEW_NAMES)}")


def run_view_maker(info: DatasetInfo, preset_cfg: dict, channels_last: bool = False) -> ViewMaker:
    """The view maker of a run of this preset (its cls-view cutout): the trainer's, and the one that reloads a
    trained run for its features."""
    return ViewMaker(info, channels_last=channels_last, cutout=preset_cfg.get("cls_cutout"))
