"""A ring buffer of several aligned tensors (features, labels, distributions) with wrap-around enqueue."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class RingQueue(nn.Module):
    """Q rows per field, one write pointer. Empty slots: random unit features, −1 labels, zero rows [ours]."""

    def __init__(self, size: int, fields: dict[str, tuple[tuple[int, ...], torch.dtype, str]]):
        super().__init__()
        self.size = size
        self.names = list(fields)
        for name, (shape, dtype, init) in fields.items():
            if init == "unit":
                value = F.normalize(torch.randn(size, *shape), dim=1).to(dtype)
            elif init == "minus_one":
                value = torch.full((size, *shape), -1, dtype=dtype)
            else:
                value = torch.zeros(size, *shape, dtype=dtype)
            self.register_buffer(name, value)
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))

    def snapshot(self) -> dict[str, torch.Tensor]:
        return {name: getattr(self, name).clone() for name in self.names}

    @torch.no_grad()
    def enqueue(self, **rows: torch.Tensor) -> None:
        n = next(iter(rows.values())).shape[0]
        assert n <= self.size, f"enqueue of {n} rows into a queue of {self.size}"
        slots = (self.ptr + torch.arange(n, device=self.ptr.device)) % self.size
        for name, value in rows.items():
            getattr(self, name)[slots] = value.detach().to(getattr(self, name).dtype)
        self.ptr.copy_((self.ptr + n) % self.size)
