"""Augmentation views (protocols.md §3), batched on the data's device with per-sample random parameters.

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

import functools
import math

import torch
import torch.nn.functional as F

from .dataset import DatasetInfo
from .view_families import view_family

VIEW_NAMES = ("base", "cls", "weak", "strong")


def _rand(n, gen, device):
    return torch.rand(n, generator=gen, device=device)


def _uniform(n, low, high, gen, device):
    return low + (high - low) * _rand(n, gen, device)


def _randint(n, high, gen, device):
    """Integers in [0, high_b) per sample (high may be a tensor)."""
    return (_rand(n, gen, device) * high).long()


def _per_sample(mask: torch.Tensor) -> torch.Tensor:
    return mask[:, None, None, None]


# Devices where reading a mask on the host is free: there an op runs on its picked samples only.
SUBSET_DEVICES = ("cpu",)


def _apply_where(pick, fn, x, *params):
    """x with fn(x, *params) in the samples where `pick` (params are per-sample tensors). On accelerators fn runs on
    the whole batch and torch.where selects (no host sync); on the CPU only the picked samples are computed, and x
    is updated in place (callers pass a tensor they own). Every op here is per sample, so both agree."""
    if x.device.type not in SUBSET_DEVICES:
        return torch.where(_per_sample(pick), fn(x, *params), x)
    rows = pick.nonzero().squeeze(1)
    if len(rows):
        x.index_copy_(0, rows, fn(x.index_select(0, rows), *(p.index_select(0, rows) for p in params)))
    return x


def hflip(x, gen, p=0.5):
    flip = _rand(len(x), gen, x.device) < p
    return torch.where(_per_sample(flip), x.flip(-1), x)


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
    """torchvision's luma (B×1×H×W); a one-channel image is its own gray."""
    if x.shape[1] == 1:
        return x
    r, g, b = x.unbind(1)
    return torch.add(torch.add(r * 0.2989, g, alpha=0.587), b, alpha=0.114)[:, None]


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
    return _blend_toward(x, factor, _gray(x).mean(dim=(1, 2, 3), keepdim=True))


def _saturation(x, factor):
    return _blend_toward(x, factor, _gray(x))


def color_jitter(x, gen, brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1, p=0.8):
    """RandomApply(ColorJitter, p): per-sample factors and per-sample op order, as torchvision per image
    (saturation and hue are the identity on one-channel images, so they are skipped there)."""
    n, device = len(x), x.device
    apply = _rand(n, gen, device) < p
    factors = [_uniform(n, 1 - brightness, 1 + brightness, gen, device),
               _uniform(n, 1 - contrast, 1 + contrast, gen, device),
               _uniform(n, 1 - saturation, 1 + saturation, gen, device),
               _uniform(n, -hue, hue, gen, device)]
    order = torch.argsort(_rand(n * 4, gen, device).view(n, 4), dim=1)
    ops = (_brightness, _contrast) + ((_saturation, _shift_hue) if x.shape[1] == 3 else ())
    x = x.clone()
    for slot in range(4):
        op = torch.where(apply, order[:, slot], -1)
        for k, fn in enumerate(ops):
            x = _apply_where(op == k, fn, x, factors[k])
    return x


def random_grayscale(x, gen, p=0.2):
    pick = _rand(len(x), gen, x.device) < p
    return torch.where(_per_sample(pick), _gray(x).expand_as(x), x)


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


# ---- AutoAugment / RandAugment: torchvision's v2 ops on uint8 levels (floats 0..255), one op per sample ----

AUG_OPS = ("Identity", "ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Brightness", "Color", "Contrast",
           "Sharpness", "Posterize", "Solarize", "AutoContrast", "Equalize", "Invert")
OP = {name: i for i, name in enumerate(AUG_OPS)}
RAND_AUGMENT_OPS = AUG_OPS[:-1]  # torchvision's RandAugment space has every op but Invert
SIGNED_OPS = ("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Brightness", "Color", "Contrast", "Sharpness")


def magnitude_bins(num_bins: int, height: int, width: int) -> torch.Tensor:
    """(ops × bins) float64 magnitudes of torchvision's augmentation space (zeros for ops without one); the values
    come from float32 linspaces, as in torchvision."""
    table = torch.zeros(len(AUG_OPS), num_bins, dtype=torch.float64)

    def linspace(start, end):
        return torch.linspace(start, end, num_bins).double()

    table[OP["ShearX"]] = table[OP["ShearY"]] = linspace(0.0, 0.3)
    table[OP["TranslateX"]] = linspace(0.0, 150.0 / 331.0 * width)
    table[OP["TranslateY"]] = linspace(0.0, 150.0 / 331.0 * height)
    table[OP["Rotate"]] = linspace(0.0, 30.0)
    for name in ("Brightness", "Color", "Contrast", "Sharpness"):
        table[OP[name]] = linspace(0.0, 0.9)
    table[OP["Posterize"]] = (8 - (torch.arange(num_bins) / ((num_bins - 1) / 4))).round().double()
    table[OP["Solarize"]] = linspace(1.0, 0.0)
    return table


@functools.lru_cache(maxsize=16)
def _tables(num_bins: int, height: int, width: int, device: torch.device):
    signed = torch.tensor([name in SIGNED_OPS for name in AUG_OPS], device=device)
    return magnitude_bins(num_bins, height, width).to(device), signed


@functools.lru_cache(maxsize=8)
def _policy(policy: str, device: torch.device):
    """torchvision's AutoAugment sub-policies as (P×2 op ids, P×2 probabilities, P×2 magnitude bins)."""
    from torchvision.transforms import AutoAugment, AutoAugmentPolicy

    subs = AutoAugment(AutoAugmentPolicy[policy]).policies
    ops = torch.tensor([[OP[name] for name, _, _ in sub] for sub in subs], device=device)
    probs = torch.tensor([[p for _, p, _ in sub] for sub in subs], device=device)
    bins = torch.tensor([[b or 0 for _, _, b in sub] for sub in subs], device=device)
    return ops, probs, bins


def _signed(magnitude, op, flip, signed):
    """torchvision negates a signed op's magnitude when its draw is ≤ 0.5."""
    return torch.where(signed[op] & flip, -magnitude, magnitude)


def auto_augment_params(n, gen, device, policy, height, width):
    """Per sample: a sub-policy, then per slot whether it applies (U ≤ p) and its signed magnitude.
    Returns (op ids n×2, Identity where skipped; magnitudes n×2 float64)."""
    ops, probs, bins = _policy(policy, device)
    table, signed = _tables(10, height, width, device)
    u = _rand(n * 5, gen, device).view(n, 5)
    sub = (u[:, 0] * len(ops)).long()
    op, applied = ops[sub], u[:, 1:3] <= probs[sub]
    magnitude = _signed(table[op, bins[sub]], op, u[:, 3:5] <= 0.5, signed)
    return torch.where(applied, op, OP["Identity"]), magnitude


def rand_augment_params(n, gen, device, num_ops, height, width, num_bins=31):
    """Per sample: one magnitude bin ~ U{0..num_bins−1} (D13), then num_ops uniform ops with random signs.
    Returns (op ids n×num_ops, magnitudes n×num_ops float64)."""
    table, signed = _tables(num_bins, height, width, device)
    u = _rand(n * (1 + 2 * num_ops), gen, device).view(n, -1)
    level = (u[:, :1] * num_bins).long()
    op = (u[:, 1:1 + num_ops] * len(RAND_AUGMENT_OPS)).long()
    return op, _signed(table[op, level], op, u[:, 1 + num_ops:] <= 0.5, signed)


def _affine_matrices(op, magnitude, height, width):
    """torchvision's inverse affine matrices (B×2×3, float32) of the geometric ops, identity for the other ops.
    Shears turn about the top-left corner (center=[0, 0]), translations are truncated to whole pixels, rotations
    turn about the centre by −(angle mod 360)."""
    zero = torch.zeros_like(magnitude)

    def pick(names, value):
        return torch.where(sum(op == OP[name] for name in names).bool(), value, zero)

    shear_deg = torch.rad2deg(torch.atan(magnitude))
    rot = torch.deg2rad(pick(["Rotate"], -torch.remainder(magnitude, 360.0)))
    sx = torch.deg2rad(pick(["ShearX"], shear_deg))
    sy = torch.deg2rad(pick(["ShearY"], shear_deg))
    tx, ty = pick(["TranslateX"], torch.trunc(magnitude)), pick(["TranslateY"], torch.trunc(magnitude))
    cx = pick(["ShearX", "ShearY"], torch.full_like(magnitude, -0.5 * width))
    cy = pick(["ShearX", "ShearY"], torch.full_like(magnitude, -0.5 * height))
    a = torch.cos(rot - sy) / torch.cos(sy)
    b = -(a * torch.tan(sx) + torch.sin(rot))
    c = torch.sin(rot - sy) / torch.cos(sy)
    d = torch.cos(rot) - c * torch.tan(sx)
    m0, m1, m3, m4 = d, -b, -c, a
    m2 = cx - m0 * (cx + tx) - m1 * (cy + ty)
    m5 = cy - m3 * (cx + tx) - m4 * (cy + ty)
    return torch.stack([m0, m1, m2, m3, m4, m5], 1).view(-1, 2, 3).float()


def _affine_nearest(v, theta):
    """Nearest-neighbour warp by per-sample inverse matrices on torchvision's centred pixel grid, zero fill."""
    n, _, height, width = v.shape
    xs = torch.linspace((1.0 - width) * 0.5, (width - 1.0) * 0.5, width, device=v.device)
    ys = torch.linspace((1.0 - height) * 0.5, (height - 1.0) * 0.5, height, device=v.device)
    base = torch.stack([xs.expand(height, width), ys[:, None].expand(height, width),
                        torch.ones(height, width, device=v.device)], -1)
    scaled = theta.transpose(1, 2).clone()  # divided by the half sizes as Python scalars: no host-to-device copy
    scaled[..., 0] /= 0.5 * width
    scaled[..., 1] /= 0.5 * height
    grid = base.view(1, height * width, 3).expand(n, -1, -1).bmm(scaled).view(n, height, width, 2)
    return F.grid_sample(v, grid.to(v.dtype), mode="nearest", padding_mode="zeros", align_corners=False)


def _blend(v, op, magnitude):
    """Brightness (toward black), Color (toward the floored luma) and Contrast (toward its mean): the factor is
    1 + magnitude, the result clamped and truncated like torchvision's uint8 _blend; factor 1 elsewhere."""
    is_color = (op == OP["Color"]) & (v.shape[1] == 3)  # Color is the identity on one-channel images
    is_contrast = op == OP["Contrast"]
    chosen = is_color | is_contrast | (op == OP["Brightness"])
    ratio64 = torch.where(chosen, 1.0 + magnitude, torch.ones_like(magnitude))
    ratio, rest = ratio64.float()[:, None, None, None], (1.0 - ratio64).float()[:, None, None, None]
    gray = _gray(v).floor()
    degenerate = torch.where(_per_sample(is_contrast), gray.mean(dim=(1, 2, 3), keepdim=True),
                             torch.where(_per_sample(is_color), gray, torch.zeros_like(gray)))
    return torch.addcmul(v * ratio, degenerate, rest).clamp(0, 255).floor()  # a + α·b fused, as torch.add(alpha=)


def _sharpen(v, op, magnitude):
    """Sharpness: the interior moves toward the rounded 3×3 smoothing (1s around a 5, /13) by 1 − factor."""
    height, width = v.shape[-2:]
    if height <= 2 or width <= 2:
        return v
    rest = torch.where(op == OP["Sharpness"], 1.0 - (1.0 + magnitude), torch.zeros_like(magnitude)).float()
    rows = v[..., :-2, :] + v[..., 1:-1, :] + v[..., 2:, :]
    box = rows[..., :-2] + rows[..., 1:-1] + rows[..., 2:]
    inner = v[..., 1:-1, 1:-1]
    blurred = ((box + 4 * inner) / 13).round()  # exact sums of levels: k/13 is never a tie, so this rounds as conv
    out = v.clone()
    out[..., 1:-1, 1:-1] = torch.addcmul(inner, blurred - inner, rest[:, None, None, None])
    return out.clamp(0, 255).floor()


def _posterize(v, op, magnitude):
    """Posterize keeps the top `bits` bits of each level (bit mask on uint8); 8 bits elsewhere."""
    bits = torch.where(op == OP["Posterize"], magnitude, torch.full_like(magnitude, 8.0)).long()
    mask = ((255 << (8 - bits)) & 255).to(torch.uint8)
    return (v.to(torch.uint8) & _per_sample(mask)).to(v.dtype)


def _solarize(v, op, magnitude):
    """Solarize inverts levels ≥ 255·magnitude, Invert inverts every level (threshold 0); 256 elsewhere."""
    none = torch.full_like(magnitude, 256.0)
    threshold = torch.where(op == OP["Solarize"], 255.0 * magnitude,
                            torch.where(op == OP["Invert"], torch.zeros_like(magnitude), none)).float()
    return torch.where(v >= _per_sample(threshold).to(v.dtype), 255 - v, v)


def _autocontrast(v):
    """Per image and channel: stretch [min, max] to [0, 255] (unchanged when flat), truncated to uint8 levels."""
    low, high = v.amin(dim=(2, 3), keepdim=True), v.amax(dim=(2, 3), keepdim=True)
    flat = high == low
    scale = (high - low) * (1.0 / 255)
    low, scale = low.masked_fill(flat, 0.0), scale.masked_fill(flat, 1.0)
    return ((v - low) / scale).clamp(0, 255).floor()


def _equalize(v):
    """Per image and channel, PIL's equalisation LUT from the cumulative histogram, as torchvision. The cumulative
    histogram is read off the sorted levels with searchsorted: no scatter or bincount (nondeterministic atomics)."""
    n, channels, height, width = v.shape
    flat = v.reshape(n * channels, height * width).to(torch.int16).contiguous()
    ordered = flat.sort(dim=1).values
    levels = torch.arange(256, device=v.device, dtype=torch.int16).expand(n * channels, 256).contiguous()
    cumulative = torch.searchsorted(ordered, levels, right=True)  # pixels ≤ level
    step = torch.searchsorted(ordered, ordered[:, -1:].contiguous()) // 255  # pixels under the top level, / 255
    lut = ((cumulative[:, :-1] + step // 2) // step.clamp_min(1)).clamp(0, 255)
    lut = torch.cat([torch.zeros_like(lut[:, :1]), lut], dim=1)
    equalized = lut.gather(1, flat.long())
    return torch.where(step != 0, equalized, flat).to(v.dtype).view_as(v)


def apply_ops(v: torch.Tensor, op: torch.Tensor, magnitude: torch.Tensor) -> torch.Tensor:
    """Apply op `op[i]` (an AUG_OPS id) with signed magnitude `magnitude[i]` to uint8 levels v[i] (floats 0..255)."""
    def warp(v, op, magnitude):
        return _affine_nearest(v, _affine_matrices(op, magnitude, v.shape[-2], v.shape[-1]))

    v = v.clone()
    blended = (op == OP["Brightness"]) | (op == OP["Color"]) | (op == OP["Contrast"])
    inverted = (op == OP["Solarize"]) | (op == OP["Invert"])
    v = _apply_where((op >= OP["ShearX"]) & (op <= OP["Rotate"]), warp, v, op, magnitude)
    v = _apply_where(blended, _blend, v, op, magnitude)
    v = _apply_where(op == OP["Sharpness"], _sharpen, v, op, magnitude)
    v = _apply_where(op == OP["Posterize"], _posterize, v, op, magnitude)
    v = _apply_where(inverted, _solarize, v, op, magnitude)
    v = _apply_where(op == OP["AutoContrast"], _autocontrast, v)
    return _apply_where(op == OP["Equalize"], _equalize, v)


def _on_levels(x, op, magnitude):
    """Run the per-sample op slots on x in [0,1] through uint8 levels, as torchvision does on uint8 images."""
    v = torch.round(x * 255)
    for slot in range(op.shape[1]):
        v = apply_ops(v, op[:, slot], magnitude[:, slot])
    return v / 255


def auto_augment(x, gen, policy):
    """torchvision AutoAugment(policy) ("CIFAR10", "IMAGENET", "SVHN") with per-image draws."""
    return _on_levels(x, *auto_augment_params(len(x), gen, x.device, policy, x.shape[-2], x.shape[-1]))


def rand_augment(x, gen, num_ops=3, max_magnitude=30):
    """torchvision RandAugment(num_ops, magnitude ~ U{0..max_magnitude} per image, 31 bins) with per-image draws."""
    params = rand_augment_params(len(x), gen, x.device, num_ops, x.shape[-2], x.shape[-1], max_magnitude + 1)
    return _on_levels(x, *params)


class ViewMaker:
    """Turns uint8 image batches into the named, normalised float views of a dataset's family
    (`recipe`: the ViewFamily that `info.view_family` names, pllbench/view_families.py)."""

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
