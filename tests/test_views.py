"""Batched views: per-sample randomness, shapes, ranges, determinism under a seed."""

from __future__ import annotations

import pytest
import torch

from pllbench.data.registry import DatasetInfo
from pllbench.views.maker import ViewMaker, erase_square, hflip, pad_crop, random_resized_crop


def maker(family="28", size=28, channels=1):
    return ViewMaker(DatasetInfo("t", 10, channels, size, (0.5,) * 3, (0.25,) * 3, family))


def images(n=64, channels=1, size=28):
    gen = torch.Generator().manual_seed(0)
    one = torch.randint(0, 256, (1, channels, size, size), generator=gen, dtype=torch.uint8)
    return one.repeat(n, 1, 1, 1)


@pytest.mark.parametrize("family,size,channels", [("28", 28, 1), ("32", 16, 3), ("32", 32, 3), ("224", 256, 3)])
@pytest.mark.parametrize("view", ["cls", "weak", "strong"])
def test_identical_images_get_different_views(family, size, channels, view):
    m = maker(family, 224 if family == "224" else size, channels)
    n = 8 if family == "224" else 64
    out = m(images(n, channels, size), view, torch.Generator().manual_seed(1))
    assert out.shape == (n, 3, m.size, m.size) and out.dtype == torch.float32
    assert len({tuple(o.flatten()[:64].tolist()) for o in out}) > n // 2


def test_base_view_is_normalisation_only():
    m = maker()
    x = images(4)
    out = m(x, "base", None)
    assert torch.allclose(out, (x.float().expand(-1, 3, -1, -1) / 255 - 0.5) / 0.25)


def test_views_are_deterministic_under_a_seed():
    m = maker("32", 16, 3)
    x = images(16, 3, 16)
    a = m(x, "strong", torch.Generator().manual_seed(5))
    b = m(x, "strong", torch.Generator().manual_seed(5))
    c = m(x, "strong", torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_flip_is_per_sample():
    x = torch.arange(16.0).view(1, 1, 4, 4).repeat(400, 1, 1, 1)
    out = hflip(x, torch.Generator().manual_seed(0))
    flipped = (out[:, 0, 0, 0] == 3).float().mean()
    assert 0.4 < float(flipped) < 0.6


def test_pad_crop_offsets_cover_the_range():
    x = torch.zeros(500, 1, 8, 8)
    x[:, :, 0, 0] = 1.0
    out = pad_crop(x, torch.Generator().manual_seed(0), 8, 2, "constant")
    rows, cols = torch.nonzero(out[:, 0] == 1.0, as_tuple=True)[1:]
    assert set(rows.tolist()) == {0, 1, 2} and set(cols.tolist()) == {0, 1, 2}  # shifts −2..2, marker kept in view


def test_random_resized_crop_full_box_is_identity():
    x = torch.rand(3, 3, 8, 8)
    out = random_resized_crop(x, torch.Generator().manual_seed(0), 8, (1.0, 1.0), (1.0, 1.0))
    assert torch.allclose(out, x, atol=1e-5)


def test_erase_square_fixed_side():
    out = erase_square(torch.ones(50, 3, 28, 28), torch.Generator().manual_seed(0), side=16)
    assert ((out == 0).sum(dim=(1, 2, 3)) == 3 * 256).all()
