"""pytest-benchmark suites of the hot kernels: candidate sampling, losses, entanglement top-k, batched views.

Not part of the test suite (pyproject's testpaths is tests/). Run, save a baseline, and compare later runs to it:

    OMP_NUM_THREADS=1 .venv/bin/pytest benchmarks/test_kernels_bench.py --benchmark-storage=benchmarks/results/kernels \
        --benchmark-save=cpu-baseline
    OMP_NUM_THREADS=1 .venv/bin/pytest benchmarks/test_kernels_bench.py --benchmark-storage=benchmarks/results/kernels \
        --benchmark-compare --benchmark-compare-fail=median:25%

One thread: on a shared, oversubscribed CPU, OpenMP's multi-thread waits inflate small kernels up to 50×.

Sizes are those of one training step at the paper preset (batch 64, K = 10, queue 4096, 128-d projections,
32-px views) and of one candidate / entanglement pass; tensors live on CUDA when it is available.
"""

from __future__ import annotations

import pytest
import torch

from pllbench.data.candidates import inclusion_probs, sample_candidates
from pllbench.data.registry import DatasetInfo
from pllbench.entangle.pairs import top_cross_class_pairs
from pllbench.losses import moco_loss, remove_self, soft_cross_entropy, weighted_contrastive_loss
from pllbench.methods.cad import posneg_weights, weighted_penalty_loss
from pllbench.methods.dirk import rectify
from pllbench.views import autoaugment
from pllbench.views import maker as views

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
B, K, Q, D = 64, 10, 4096, 128


def run(benchmark, fn, *args):
    """Benchmark fn(*args), synchronising CUDA so the timings include the kernels."""

    def call():
        out = fn(*args)
        if DEVICE.type == "cuda":
            torch.cuda.synchronize()
        return out

    return benchmark(call)


@pytest.fixture(scope="module")
def step_tensors():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(B, K, generator=gen)
    cands = (torch.rand(B, K, generator=gen) < 0.3).float()
    cands[torch.arange(B), torch.randint(0, K, (B,), generator=gen)] = 1
    feats = torch.nn.functional.normalize(torch.randn(2 * B + Q, D, generator=gen), dim=1)
    dists = torch.softmax(torch.randn(2 * B + Q, K, generator=gen), dim=1)
    labels = torch.randint(0, K, (2 * B + Q,), generator=gen)
    out = {"logits": logits, "cands": cands, "feats": feats, "dists": dists, "labels": labels}
    return {k: v.to(DEVICE) for k, v in out.items()}


def test_candidate_sampling(benchmark):
    """Inclusion probabilities and the seeded draw for a CIFAR-sized train split (N = 50,000, K = 10)."""
    gen = torch.Generator().manual_seed(0)
    logits, labels = torch.randn(50_000, K, generator=gen), torch.randint(0, K, (50_000,), generator=gen)
    benchmark(lambda: sample_candidates(inclusion_probs(logits, labels, 1.0), labels, ("bench", 0)))


def test_soft_cross_entropy(benchmark, step_tensors):
    t = step_tensors
    run(benchmark, soft_cross_entropy, t["logits"], torch.softmax(t["logits"], 1))


def test_dirk_rectify(benchmark, step_tensors):
    t = step_tensors
    run(benchmark, rectify, torch.softmax(t["logits"], 1), t["cands"])


def test_cad_weighted_penalty(benchmark, step_tensors):
    t = step_tensors

    def loss():
        return weighted_penalty_loss(t["logits"], posneg_weights(torch.softmax(t["logits"], 1), t["cands"]),
                                     t["cands"])

    run(benchmark, loss)


def test_moco_loss(benchmark, step_tensors):
    t = step_tensors
    run(benchmark, moco_loss, t["feats"][:B], t["feats"][B:2 * B], t["feats"][2 * B:], 0.07)


def test_weighted_contrastive_loss(benchmark, step_tensors):
    t = step_tensors
    mask = remove_self((t["labels"][:B, None] == t["labels"][None, :]).float())
    run(benchmark, weighted_contrastive_loss, t["feats"][:B], t["feats"], mask, t["dists"], 0.07, 0.4)


def test_entangle_top_k(benchmark):
    """Exact top-k cross-class pairs of 4,000 normalised 64-d features (k = 8,000: the 0.1% subset)."""
    gen = torch.Generator().manual_seed(0)
    feats = torch.nn.functional.normalize(torch.randn(4000, 64, generator=gen), dim=1).to(DEVICE)
    labels = torch.randint(0, 10, (4000,), generator=gen).to(DEVICE)
    run(benchmark, top_cross_class_pairs, feats, labels, 8000)


def _images(n, channels, size):
    gen = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (n, channels, size, size), dtype=torch.uint8, generator=gen).to(DEVICE)


@pytest.mark.parametrize("view", ["cls", "weak", "strong"])
@pytest.mark.parametrize("family", ["28", "32"])
def test_views(benchmark, family, view):
    """One batch of a view: Fashion-MNIST (28 px, batch 128, one channel) and CIFAR (32 px, batch 64)."""
    size, channels, n = (28, 1, 128) if family == "28" else (32, 3, B)
    maker = views.ViewMaker(DatasetInfo("bench", 10, channels, size, (0.5,) * 3, (0.25,) * 3, family))
    gen = torch.Generator(device=DEVICE).manual_seed(0)
    run(benchmark, maker, _images(n, channels, size), view, gen)


def test_apply_ops(benchmark):
    """One AutoAugment/RandAugment slot on 64 CIFAR images, every sample its own op and magnitude: every op kernel
    runs on the whole batch and acts as the identity where not picked, so this is the cost of any slot."""
    v = _images(B, 3, 32).float()
    op = torch.arange(B, device=DEVICE) % len(autoaugment.AUG_OPS)
    magnitude = autoaugment.magnitude_bins(31, 32, 32)[op.cpu(), torch.arange(B) % 31].to(DEVICE)
    run(benchmark, autoaugment.apply_ops, v, op, magnitude)
