"""DIRK's rectification, the shared WCL/MoCo kernels and PRODEN's update on hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from pllbench.losses import contrast_log_prob, log1m_softmax, moco_loss, soft_cross_entropy, weighted_contrastive_loss
from pllbench.methods.dirk import rectify, ref_mask
from pllbench.methods.proden import proden_update


def test_rectify_hand_computed():
    p = torch.tensor([[0.1, 0.5, 0.3, 0.1]])
    y = torch.tensor([[1.0, 0.0, 1.0, 0.0]])
    # P = (0.25, 0, 0.75, 0); N = (0, 5/6, 0, 1/6); c_max = 5/6; s_min = 0.25; M = 1/0.4 = 2.5
    # a = 2.5·(5/6) / (2.5·(5/6) + 0.25) = (25/12)/(28/12) = 25/28
    a = 25 / 28
    expected = torch.tensor([[a * 0.25, (1 - a) * 5 / 6, a * 0.75, (1 - a) / 6]])
    assert torch.allclose(rectify(p, y), expected, atol=1e-7)


def test_rectify_properties():
    gen = torch.Generator().manual_seed(0)
    p = torch.softmax(3 * torch.randn(200, 7, generator=gen), dim=1)
    y = (torch.rand(200, 7, generator=gen) < 0.4).float()
    y[torch.arange(200), torch.randint(0, 7, (200,), generator=gen)] = 1
    y[0] = 1  # every label a candidate: a = 0 → 1
    rec = rectify(p, y)
    assert torch.allclose(rec.sum(1), torch.ones(200), atol=1e-6)
    inside_min = rec.masked_fill(y == 0, float("inf")).min(1).values
    outside_max = rec.masked_fill(y == 1, float("-inf")).max(1).values
    assert (inside_min >= outside_max - 1e-6).all()
    assert torch.allclose(rec[0], p[0], atol=1e-6)


def test_ref_mask():
    ya = torch.tensor([[1.0, 1.0, 0.0]])
    y_all = torch.tensor([[1.0, 1.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    d_all = torch.tensor([[0.6, 0.4, 0.0], [0.2, 0.8, 0.0], [0.9, 0.0, 0.1], [0.7, 0.3, 0.0]])
    mask = ref_mask(ya, y_all, d_all[:1], d_all)
    assert mask.tolist() == [[0.0, 0.0, 0.0, 1.0]]  # self removed; 1: other top; 2: no overlap; 3: positive


def test_contrast_log_prob_and_wcl_hand_computed():
    q = torch.tensor([[1.0, 0.0]])
    feats = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    tau = 0.5
    # s = (2, 0, -2) − 2 = (0, −2, −4); denominator over c' ≠ 0: e^-2 + e^-4
    lp = contrast_log_prob(q, feats, tau)
    denom = math.exp(-2) + math.exp(-4)
    assert torch.allclose(lp, torch.tensor([[-math.log(denom + 1e-12), -2 - math.log(denom + 1e-12),
                                             -4 - math.log(denom + 1e-12)]]), atol=1e-6)
    mask = torch.tensor([[0.0, 1.0, 1.0]])
    dists = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    # cos(D0, D1) = 1, cos(D0, D2) = 0 → w ∝ (e^{1/τd}, e^0), τd = 1
    w1 = math.e / (math.e + 1)
    expected = -(tau / 0.07) * (w1 * float(lp[0, 1]) + (1 - w1) * float(lp[0, 2]))
    assert float(weighted_contrastive_loss(q, feats, mask, dists, tau, 1.0)) == pytest.approx(expected, rel=1e-6)


def test_moco_hand_computed():
    q = torch.tensor([[1.0, 0.0]])
    k = torch.tensor([[1.0, 0.0]])
    queue = torch.tensor([[0.0, 1.0], [-1.0, 0.0]])
    tau = 1.0
    expected = -math.log(math.e / (math.e + 1 + math.exp(-1)))
    assert float(moco_loss(q, k, queue, tau)) == pytest.approx(expected, rel=1e-6)


def test_log1m_softmax_exact():
    z = torch.tensor([[2.0, 0.0, -1.0]], dtype=torch.float64)
    p = torch.softmax(z, 1)
    assert torch.allclose(log1m_softmax(z), torch.log1p(-p), atol=1e-12)


def test_proden_update_and_loss():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.2]]))
    y = torch.tensor([[1.0, 0.0, 1.0]])
    assert torch.allclose(proden_update(logits, y), torch.tensor([[5 / 7, 0.0, 2 / 7]]), atol=1e-6)
    target = torch.tensor([[0.5, 0.0, 0.5]])
    assert float(soft_cross_entropy(logits, target)) == pytest.approx(-(0.5 * math.log(0.5) + 0.5 * math.log(0.2)))
