"""Augmentation views (protocols.md §3), batched on the data's device with per-sample random parameters.

Every op draws its parameters per image from the caller's generator, so one call on a batch behaves like the
per-image torchvision op applied image by image. AutoAugment and RandAugment (32/224-px families only) have no
batched form yet and run image by image through torchvision v2 on the same device.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .data import DatasetInfo

VIEW_NAMES = ("base", "cls", "weak", "strong")


def _rand(n, gen, device):
    return torch.rand(n, generator=gen, device=device)


def _uniform(n, low, high, gen, device):
    return low + (high - low) * _rand(n, gen, device)


def _randint(n, high, gen, device):
    """Integers in [0, high_b) per sample (high may be a tensor)."""
    return (_rand(n, gen, device) * high).long()


def hflip(x, gen, p=0.5):
    flip = _rand(len(x), gen, x.device) < p
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


def _crop_at(x, top, left, size):
    """Per-sample size×size crops at (top, left) by one gather."""
    rows = top[:, None] + torch.arange(size, device=x.device)
    cols = left[:, None] + torch.arange(size, device=x.device)
    batch = torch.arange(len(x), device=x.device)[:, None, None]
    return x.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)


def pad_crop(x, gen, size, pad, mode="reflect"):
    """RandomCrop(size, padding=pad, padding_mode=mode)."""
    xp = F.pad(x, (pad, pad, pad, pad), mode=mode) if pad else x
    top = _randint(len(x), xp.shape[-2] - size + 1, gen, x.device)
    left = _randint(len(x), xp.shape[-1] - size + 1, gen, x.device)
    return _crop_at(xp, top, left, size)


def center_crop(x, size):
    top = (x.shape[-2] - size) // 2
    left = (x.shape[-1] - size) // 2
    return x[..., top:top + size, left:left + size]


def rrc_params(n, height, width, scale, ratio, gen, device, attempts=10):
    """torchvision's RandomResizedCrop.get_params, vectorised: first valid of 10 attempts, else centre."""
    area = height * width
    target = area * _uniform(n * attempts, scale[0], scale[1], gen, device).view(n, attempts)
    log_r = _uniform(n * attempts, math.log(ratio[0]), math.log(ratio[1]), gen, device).view(n, attempts)
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
    u_top, u_left = _rand(n, gen, device), _rand(n, gen, device)
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


def _gray(x):
    return (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]).expand_as(x)


def _rgb_to_hsv(x):
    r, g, b = x.unbind(1)
    maxc, _ = x.max(1)
    minc, _ = x.min(1)
    delta = maxc - minc
    s = delta / torch.where(maxc == 0, torch.ones_like(maxc), maxc)
    safe = torch.where(delta == 0, torch.ones_like(delta), delta)
    rc, gc, bc = (maxc - r) / safe, (maxc - g) / safe, (maxc - b) / safe
    h = torch.where(maxc == r, bc - gc, torch.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))
    h = torch.where(delta == 0, torch.zeros_like(h), (h / 6.0) % 1.0)
    return torch.stack([h, s, maxc], 1)


def _hsv_to_rgb(x):
    h, s, v = x.unbind(1)
    i = torch.floor(h * 6.0)
    f = h * 6.0 - i
    i = i.long() % 6
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    choices = torch.stack([torch.stack(c, 1) for c in
                           ((v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q))], 0)
    return torch.gather(choices, 0, i[None, :, None].expand(1, -1, 3, -1, -1)).squeeze(0)


def color_jitter(x, gen, brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1, p=0.8):
    """RandomApply(ColorJitter, p): per-sample factors and per-sample op order, as torchvision per image."""
    n, device = len(x), x.device
    apply = _rand(n, gen, device) < p
    factors = [_uniform(n, 1 - brightness, 1 + brightness, gen, device),
               _uniform(n, 1 - contrast, 1 + contrast, gen, device),
               _uniform(n, 1 - saturation, 1 + saturation, gen, device),
               _uniform(n, -hue, hue, gen, device)]
    order = torch.argsort(_rand(n * 4, gen, device).view(n, 4), dim=1)
    for slot in range(4):
        for op in range(4):
            pick = apply & (order[:, slot] == op)
            f = factors[op][:, None, None, None]
            if op == 0:
                y = (x * f).clamp(0, 1)
            elif op == 1:
                mean = _gray(x)[:, :1].mean(dim=(1, 2, 3), keepdim=True)
                y = (f * x + (1 - f) * mean).clamp(0, 1)
            elif op == 2:
                y = (f * x + (1 - f) * _gray(x)).clamp(0, 1)
            else:
                hsv = _rgb_to_hsv(x)
                hsv = torch.stack([(hsv[:, 0] + f[:, 0]) % 1.0, hsv[:, 1], hsv[:, 2]], 1)
                y = _hsv_to_rgb(hsv)
            x = torch.where(pick[:, None, None, None], y, x)
    return x


def random_grayscale(x, gen, p=0.2):
    pick = _rand(len(x), gen, x.device) < p
    return torch.where(pick[:, None, None, None], _gray(x), x)


def erase_square(x, gen, side=None, area=None):
    """RandomErasing(p=1, ratio=(1,1), value=0): a fixed `side`, or side = round(sqrt(U(area)·H·W))."""
    n, _, height, width = x.shape
    if side is not None:
        sides = torch.full((n,), float(side), device=x.device)
    else:
        sides = torch.round(torch.sqrt(_uniform(n, area[0], area[1], gen, x.device) * height * width))
    sides = sides.clamp(1, min(height, width))
    top = torch.floor(_rand(n, gen, x.device) * (height - sides + 1))
    left = torch.floor(_rand(n, gen, x.device) * (width - sides + 1))
    rows = torch.arange(height, device=x.device)[None, :]
    cols = torch.arange(width, device=x.device)[None, :]
    in_rows = (rows >= top[:, None]) & (rows < (top + sides)[:, None])
    in_cols = (cols >= left[:, None]) & (cols < (left + sides)[:, None])
    mask = (in_rows[:, :, None] & in_cols[:, None, :])[:, None]
    return x.masked_fill(mask, 0.0)


def _per_image_uint8(x, make_op, gen):
    """Apply a torchvision v2 op image by image (fresh parameters each) on uint8 pixels."""
    images = torch.round(x * 255).to(torch.uint8)
    seed = int(torch.randint(0, 2**62, (1,), generator=gen, device=gen.device).item())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        out = torch.stack([make_op()(img) for img in images])
    return out.float() / 255


def auto_augment(x, gen, policy):
    from torchvision.transforms import v2

    return _per_image_uint8(x, lambda: v2.AutoAugment(getattr(v2.AutoAugmentPolicy, policy)), gen)


def rand_augment(x, gen, num_ops=3, max_magnitude=30):
    from torchvision.transforms import v2

    def make():
        magnitude = int(torch.randint(0, max_magnitude + 1, (1,)).item())
        return v2.RandAugment(num_ops=num_ops, magnitude=magnitude)

    return _per_image_uint8(x, make, gen)


class ViewMaker:
    """Turns uint8 image batches into the named, normalised float views of a dataset's family."""

    def __init__(self, info: DatasetInfo):
        self.info = info
        self.family = info.view_family
        self.size = info.input_size
        self.mean = torch.tensor(info.mean).view(1, 3, 1, 1)
        self.std = torch.tensor(info.std).view(1, 3, 1, 1)
        # 32-px settings scale with the image side (smoke's 16 px: pad 2, cutout 8).
        self.pad = max(1, round(4 * self.size / 32)) if self.family != "28" else 4
        self.cutout = round(16 * self.size / 32) if self.family == "32" else 16

    def to_unit(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 N×C×H×W → float RGB in [0,1] at model input size (gray replicated, 224 centre-cropped)."""
        x = images.float() / 255
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        return x

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean.to(x.device)) / self.std.to(x.device)

    def unnormalize(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.std.to(x.device) + self.mean.to(x.device)

    def __call__(self, images: torch.Tensor, view: str, gen: torch.Generator) -> torch.Tensor:
        return self.from_unit(self.to_unit(images), view, gen)

    def from_unit(self, x: torch.Tensor, view: str, gen: torch.Generator) -> torch.Tensor:
        """Apply `view` to float RGB images in [0,1] (any side ≥ the input size) and normalise."""
        size, fam = self.size, self.family
        if view == "base":
            return self.normalize(center_crop(x, size) if x.shape[-1] != size else x)
        if view == "cls":
            if fam == "224":
                x = random_resized_crop(x, gen, size, (0.08, 1.0))
                x = hflip(x, gen)
                return self.normalize(auto_augment(x, gen, "IMAGENET"))
            x = hflip(x, gen)
            x = pad_crop(x, gen, size, self.pad, "reflect")
            if fam == "32":
                x = auto_augment(x, gen, "CIFAR10")
            return erase_square(self.normalize(x), gen, side=self.cutout)
        scale = (0.08, 1.0) if fam == "224" else (0.2, 1.0)
        x = random_resized_crop(x, gen, size, scale)
        x = hflip(x, gen)
        if view == "weak":
            if fam != "28":
                x = random_grayscale(color_jitter(x, gen), gen)
            return self.normalize(x)
        if view == "strong":
            if fam == "28":
                return self.normalize(random_grayscale(color_jitter(x, gen), gen))
            x = rand_augment(x, gen)
            return erase_square(self.normalize(x), gen, area=(0.02, 0.25))
        raise ValueError(f"unknown view {view!r}; known: {', '.join(VIEW_NAMES)}")
