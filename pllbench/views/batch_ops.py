"""Per-sample primitives of the batched views (pllbench/views/maker.py, pllbench/views/autoaugment.py): draws from the
caller's generator, one per image, and ops applied to the picked samples only."""

from __future__ import annotations

import torch


def rand01(n, gen, device):
    return torch.rand(n, generator=gen, device=device)


def uniform(n, low, high, gen, device):
    return low + (high - low) * rand01(n, gen, device)


def randint_below(n, high, gen, device):
    """Integers in [0, high_b) per sample (high may be a tensor)."""
    return (rand01(n, gen, device) * high).long()


def per_sample(mask: torch.Tensor) -> torch.Tensor:
    return mask[:, None, None, None]


# Devices where reading a mask on the host is free: there an op runs on its picked samples only.
SUBSET_DEVICES = ("cpu",)


def apply_where(pick, fn, x, *params):
    """x with fn(x, *params) in the samples where `pick` (params are per-sample tensors). On accelerators fn runs on
    the whole batch and torch.where selects (no host sync); on the CPU only the picked samples are computed, and x
    is updated in place (callers pass a tensor they own). Every op here is per sample, so both agree."""
    if x.device.type not in SUBSET_DEVICES:
        return torch.where(per_sample(pick), fn(x, *params), x)
    rows = pick.nonzero().squeeze(1)
    if len(rows):
        x.index_copy_(0, rows, fn(x.index_select(0, rows), *(p.index_select(0, rows) for p in params)))
    return x


def luma(x):
    """torchvision's luma (B×1×H×W); a one-channel image is its own gray."""
    if x.shape[1] == 1:
        return x
    r, g, b = x.unbind(1)
    return torch.add(torch.add(r * 0.2989, g, alpha=0.587), b, alpha=0.114)[:, None]
