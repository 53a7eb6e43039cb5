"""Batched AutoAugment / RandAugment / ColorJitter against torchvision's per-image ops (protocols.md §3, D13)."""

from __future__ import annotations

import contextlib
import math

import pytest
import torch
import torch.nn.functional as F
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from pllbench.views import autoaugment, batch_ops
from pllbench.views import maker as views
from pllbench.views.autoaugment import AUG_OPS, OP, RAND_AUGMENT_OPS, SIGNED_OPS, apply_ops, magnitude_bins

CPU = torch.device("cpu")


def structured_images(n, channels, height, width, seed=0):
    """Smooth blobs plus noise as uint8: real histograms for equalize/autocontrast, edges for the warps."""
    gen = torch.Generator().manual_seed(seed)
    smooth = F.interpolate(torch.rand(n, channels, 6, 6, generator=gen), size=(height, width), mode="bilinear")
    noise = torch.rand(n, channels, height, width, generator=gen)
    return (smooth * 200 + noise * 55).round().to(torch.uint8)


def torchvision_op(image, name, magnitude):
    """torchvision's own op dispatch of AutoAugment/RandAugment (nearest, default fill) on one uint8 image."""
    aug = v2.AutoAugment()
    return aug._apply_image_or_video_transform(image, name, magnitude, interpolation=aug.interpolation,
                                               fill=aug._fill)


@pytest.mark.parametrize("name", AUG_OPS)
@pytest.mark.parametrize("shape", [(3, 32, 32), (3, 20, 28), (1, 16, 16)])
def test_each_op_matches_torchvision_per_image(name, shape):
    channels, height, width = shape
    n = 12
    images = structured_images(n, channels, height, width, seed=len(name))
    table = magnitude_bins(31, height, width)
    levels = torch.arange(n) * 30 // (n - 1)  # bins 0..30 across the batch: per-sample magnitudes
    magnitude = table[OP[name], levels]
    if name in SIGNED_OPS:
        magnitude[1::2] *= -1
    ours = apply_ops(images.float(), torch.full((n,), OP[name]), magnitude)
    reference = torch.stack([torchvision_op(images[i], name, float(magnitude[i])) for i in range(n)]).float()
    diff = (ours - reference).abs()
    assert diff.max() <= 1 and (diff > 0).float().mean() < 1e-3, f"{name}: max {diff.max()}"
    assert torch.equal(ours, ours.round()) and ours.min() >= 0 and ours.max() <= 255


def test_magnitude_bins_are_torchvisions():
    for cls, bins in ((v2.AutoAugment, 10), (v2.RandAugment, 31)):
        for name, (fn, signed) in cls._AUGMENTATION_SPACE.items():
            expected = fn(bins, 20, 28)
            got = magnitude_bins(bins, 20, 28)[OP[name]]
            if expected is None:
                assert not got.any(), name
            else:
                assert torch.equal(got, expected.double()), name
            assert signed == (name in SIGNED_OPS), name
    assert set(v2.RandAugment._AUGMENTATION_SPACE) == set(RAND_AUGMENT_OPS)


@pytest.mark.parametrize("policy", ["CIFAR10", "IMAGENET"])
def test_auto_augment_op_frequencies_match_the_policy(policy):
    n = 40000
    op, magnitude = autoaugment.auto_augment_params(n, torch.Generator().manual_seed(0), CPU, policy, 32, 32)
    subs = v2.AutoAugment(getattr(v2.AutoAugmentPolicy, policy))._policies
    table = magnitude_bins(10, 32, 32)
    for slot in range(2):
        expected = torch.zeros(len(AUG_OPS), dtype=torch.float64)
        for sub in subs:
            name, p, _ = sub[slot]
            expected[OP[name]] += p / len(subs)
        expected[OP["Identity"]] += 1 - expected.sum()
        observed = torch.bincount(op[:, slot], minlength=len(AUG_OPS)).double() / n
        sigma = (expected * (1 - expected) / n).sqrt()
        assert ((observed - expected).abs() <= 5 * sigma + 1e-9).all(), (slot, observed, expected)
        for name in ("Rotate", "Brightness", "Solarize", "Posterize"):
            drawn = magnitude[op[:, slot] == OP[name], slot]
            allowed = table[OP[name]]
            assert torch.isin(drawn.abs(), allowed).all(), name
            if name in SIGNED_OPS and len(drawn):
                assert 0.4 < (drawn < 0).double().mean() < 0.6


def test_rand_augment_draws_ops_levels_and_signs_uniformly():
    n = 30000
    op, magnitude = autoaugment.rand_augment_params(n, torch.Generator().manual_seed(1), CPU, 3, 32, 32)
    assert op.shape == (n, 3) and int(op.max()) == len(RAND_AUGMENT_OPS) - 1  # never Invert
    counts = torch.bincount(op.flatten(), minlength=len(RAND_AUGMENT_OPS)).double() / op.numel()
    assert (counts - 1 / 14).abs().max() < 0.01
    table = magnitude_bins(31, 32, 32)
    rotate = op == OP["Rotate"]
    level = (magnitude[rotate].abs() / table[OP["Rotate"], 30] * 30).round().long()
    assert torch.bincount(level, minlength=31).min() > 0.6 * rotate.sum() / 31  # every bin 0..30 drawn
    assert 0.45 < (magnitude[rotate & (magnitude != 0)] < 0).double().mean() < 0.55
    # One magnitude bin per image, shared by its three ops.
    both = (op[:, 0] == OP["Rotate"]) & (op[:, 1] == OP["Brightness"])
    rot_level = magnitude[both, 0].abs() / 30.0
    bright_level = magnitude[both, 1].abs() / 0.9
    assert torch.allclose(rot_level, bright_level, atol=1e-6)


@pytest.mark.parametrize("which", ["auto", "rand"])
def test_policy_output_distribution_matches_torchvision(which):
    """Whole policies on one image, many draws: the same distribution of outcomes as torchvision per image."""
    n = 600
    image = structured_images(1, 3, 16, 16, seed=3)[0]
    gen = torch.Generator().manual_seed(0)
    x = image.float().div(255).expand(n, -1, -1, -1)
    if which == "auto":
        ours = views.auto_augment(x, gen, "CIFAR10")
        make = lambda: v2.AutoAugment(v2.AutoAugmentPolicy.CIFAR10)  # noqa: E731
    else:
        ours = views.rand_augment(x, gen)
        make = lambda: v2.RandAugment(num_ops=3, magnitude=int(torch.randint(0, 31, ())))  # noqa: E731
    torch.manual_seed(0)
    theirs = torch.stack([make()(image) for _ in range(n)]).float() / 255
    for stat in (lambda t: t.mean(dim=(1, 2, 3)), lambda t: (t == 0).float().mean(dim=(1, 2, 3))):
        a, b = stat(ours), stat(theirs)
        assert abs(a.mean() - b.mean()) < 4 * math.sqrt((a.var() + b.var()) / n) + 1e-4
    unchanged_ours = (ours == x).all(dim=(1, 2, 3)).float().mean()
    unchanged_theirs = (theirs == x).all(dim=(1, 2, 3)).float().mean()
    assert abs(unchanged_ours - unchanged_theirs) < 0.06


@pytest.mark.parametrize("fn", [lambda x, g: views.auto_augment(x, g, "CIFAR10"),
                                lambda x, g: views.auto_augment(x, g, "IMAGENET"),
                                lambda x, g: views.rand_augment(x, g)])
def test_policies_shapes_ranges_randomness_determinism(fn):
    x = structured_images(1, 3, 20, 20).float().div(255).expand(64, -1, -1, -1)
    a = fn(x, torch.Generator().manual_seed(5))
    assert a.shape == x.shape and a.dtype == torch.float32
    assert a.min() >= 0 and a.max() <= 1 and torch.equal(a * 255, (a * 255).round())
    assert len({tuple(o.flatten().tolist()) for o in a}) > 16  # identical inputs, per-sample draws
    assert torch.equal(a, fn(x, torch.Generator().manual_seed(5)))
    assert not torch.equal(a, fn(x, torch.Generator().manual_seed(6)))


def test_color_jitter_matches_torchvision_ops_in_the_drawn_order():
    n = 32
    x = structured_images(n, 3, 12, 12).float() / 255
    ours = views.color_jitter(x, torch.Generator().manual_seed(2))
    # Replay the same draws: apply, the four factors, the per-sample order.
    gen = torch.Generator().manual_seed(2)
    apply = torch.rand(n, generator=gen) < 0.8
    factors = [0.6 + 0.8 * torch.rand(n, generator=gen) for _ in range(3)] + [-0.1 + 0.2 * torch.rand(n, generator=gen)]
    order = torch.argsort(torch.rand(n * 4, generator=gen).view(n, 4), dim=1)
    ops = [TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue]
    for i in range(n):
        expected = x[i]
        if apply[i]:
            for op in order[i].tolist():
                expected = ops[op](expected, float(factors[op][i]))
        assert torch.allclose(ours[i], expected, atol=2e-5), i


def test_one_channel_views_equal_replicated_three_channel_views():
    """Fashion-MNIST stays one channel through its views: the same result as on the replicated RGB image."""
    maker = views.ViewMaker(views.DatasetInfo("t", 10, 1, 28, (0.5,) * 3, (0.25,) * 3, "28"))
    gray = structured_images(16, 1, 28, 28)
    for view in ("base", "cls", "weak", "strong"):
        one = maker(gray, view, torch.Generator().manual_seed(0))
        three = maker.from_unit(maker.to_unit(gray), view, torch.Generator().manual_seed(0))
        assert one.shape == three.shape == (16, 3, 28, 28)
        assert (one - three).abs().max() < 1e-3, view  # up to float rounding of the luma (weights sum to 0.9999)


@pytest.mark.parametrize("fn", [lambda x, g: views.auto_augment(x, g, "IMAGENET"), views.rand_augment,
                                views.color_jitter])
def test_subset_and_whole_batch_paths_agree(fn, monkeypatch):
    """The CPU computes each op on its picked samples only; accelerators compute it on the whole batch and select
    (no host sync). Both must give the same images."""
    x = structured_images(48, 3, 24, 24, seed=9).float() / 255
    subset = fn(x, torch.Generator().manual_seed(4))
    monkeypatch.setattr(batch_ops, "SUBSET_DEVICES", ())
    whole = fn(x, torch.Generator().manual_seed(4))
    assert torch.equal(subset, whole)


class HostSync(AssertionError):
    pass


@contextlib.contextmanager
def no_host_reads():
    """Inside: every Python-level device→host read raises (what would stall a CUDA stream once per step), and the
    views take their accelerator path (whole batch + torch.where)."""

    def refuse(name):
        def read(*args, **kwargs):
            raise HostSync(f"host read via {name}")

        return read

    getitem, setitem = torch.Tensor.__getitem__, torch.Tensor.__setitem__

    def masked(index):
        parts = index if isinstance(index, tuple) else (index,)
        return any(isinstance(p, torch.Tensor) and p.dtype == torch.bool for p in parts)

    def checked_get(self, index):
        if masked(index):
            raise HostSync("boolean-mask indexing")
        return getitem(self, index)

    def checked_set(self, index, value):
        if masked(index):
            raise HostSync("boolean-mask assignment")
        return setitem(self, index, value)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(batch_ops, "SUBSET_DEVICES", ())
        for name in ("item", "tolist", "numpy", "nonzero", "__bool__", "__int__", "__float__"):
            patch.setattr(torch.Tensor, name, refuse(name))
        patch.setattr(torch, "nonzero", refuse("torch.nonzero"))
        patch.setattr(torch.Tensor, "__getitem__", checked_get)
        patch.setattr(torch.Tensor, "__setitem__", checked_set)
        yield


@pytest.mark.parametrize("family,size,channels", [("28", 28, 1), ("32", 16, 3), ("224", 240, 3)])
def test_views_read_nothing_back_on_accelerators(family, size, channels):
    info = views.DatasetInfo("t", 10, channels, 224 if family == "224" else size, (0.5,) * 3, (0.25,) * 3, family)
    maker = views.ViewMaker(info)
    images = structured_images(4, channels, size, size)
    with no_host_reads():
        for view in views.VIEW_NAMES:
            maker(images, view, torch.Generator().manual_seed(0))
