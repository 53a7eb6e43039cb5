"""AutoAugment and RandAugment, batched: torchvision's v2 ops on uint8 levels (floats 0..255), one op per sample per
slot, grouped into kernels that act as the identity on the samples that did not pick them (pllbench/views/maker.py's
docstring has the details)."""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from .batch_ops import apply_where, luma, per_sample, rand01

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
    u = rand01(n * 5, gen, device).view(n, 5)
    sub = (u[:, 0] * len(ops)).long()
    op, applied = ops[sub], u[:, 1:3] <= probs[sub]
    magnitude = _signed(table[op, bins[sub]], op, u[:, 3:5] <= 0.5, signed)
    return torch.where(applied, op, OP["Identity"]), magnitude


def rand_augment_params(n, gen, device, num_ops, height, width, num_bins=31):
    """Per sample: one magnitude bin ~ U{0..num_bins−1} (D13), then num_ops uniform ops with random signs.
    Returns (op ids n×num_ops, magnitudes n×num_ops float64)."""
    table, signed = _tables(num_bins, height, width, device)
    u = rand01(n * (1 + 2 * num_ops), gen, device).view(n, -1)
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
    gray = luma(v).floor()
    degenerate = torch.where(per_sample(is_contrast), gray.mean(dim=(1, 2, 3), keepdim=True),
                             torch.where(per_sample(is_color), gray, torch.zeros_like(gray)))
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
    return (v.to(torch.uint8) & per_sample(mask)).to(v.dtype)


def _solarize(v, op, magnitude):
    """Solarize inverts levels ≥ 255·magnitude, Invert inverts every level (threshold 0); 256 elsewhere."""
    none = torch.full_like(magnitude, 256.0)
    threshold = torch.where(op == OP["Solarize"], 255.0 * magnitude,
                            torch.where(op == OP["Invert"], torch.zeros_like(magnitude), none)).float()
    return torch.where(v >= per_sample(threshold).to(v.dtype), 255 - v, v)


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
    v = apply_where((op >= OP["ShearX"]) & (op <= OP["Rotate"]), warp, v, op, magnitude)
    v = apply_where(blended, _blend, v, op, magnitude)
    v = apply_where(op == OP["Sharpness"], _sharpen, v, op, magnitude)
    v = apply_where(op == OP["Posterize"], _posterize, v, op, magnitude)
    v = apply_where(inverted, _solarize, v, op, magnitude)
    v = apply_where(op == OP["AutoContrast"], _autocontrast, v)
    return apply_where(op == OP["Equalize"], _equalize, v)


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
