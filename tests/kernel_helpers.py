"""Shared by the methods' kernel tests: a float comparison and a tiny synthetic method context whose hooks
the stateful checks drive directly."""

from __future__ import annotations

import math

import torch

from pllbench.data.registry import DatasetInfo
from pllbench.method import Batch, MethodContext
from pllbench.views.maker import ViewMaker

LN3 = math.log(3)


def close(actual, expected, tol=1e-6):
    return torch.allclose(torch.as_tensor(actual, dtype=torch.float64),
                          torch.as_tensor(expected, dtype=torch.float64), atol=tol, rtol=0)


def tiny_context(num_train=12, num_classes=4, epochs=3, steps_per_epoch=2, channels=3, side=16):
    gen = torch.Generator().manual_seed(0)
    cands = (torch.rand(num_train, num_classes, generator=gen) < 0.5).float()
    cands[torch.arange(num_train), torch.arange(num_train) % num_classes] = 1
    info = DatasetInfo("synthetic", num_classes, channels, side, (0.5,) * 3, (0.25,) * 3, "32")
    images = torch.randint(0, 256, (num_train, channels, side, side), generator=gen, dtype=torch.uint8)
    return MethodContext(num_classes=num_classes, num_train=num_train, candidates=cands, backbone="cnn-xs",
                         proj_dim=8, epochs=epochs, steps_per_epoch=steps_per_epoch, batch_size=4,
                         dataset="synthetic", views=ViewMaker(info), train_images=images)


def make_batch(ctx, index, step, views=("cls",), epoch=0):
    gen = torch.Generator().manual_seed(step)
    images = ctx.train_images[index]
    return Batch({v: ctx.views(images, v, gen) for v in views}, ctx.candidates[index], index, epoch, step, gen)

