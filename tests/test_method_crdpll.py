"""CRDPLL (methods/crdpll.py): its kernels on hand-computed values, its step on a tiny context, the ramp of the
consistency weight in a smoke run, and a bit-identical resume."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import assert_resume_is_bit_identical, tiny_batch, tiny_context

from pllbench.losses import linear_rampup
from pllbench.methods.crdpll import CRDPLL, conformal_targets, consistency_loss, non_candidate_loss

LN3, LN2 = math.log(3), math.log(2)
TIMING_KEYS = {"seconds", "samples_per_sec", "train_seconds", "peak_mem_mb"}


def test_non_candidate_loss_hand_values():
    # row 0: z = (0, ln3, 0) → p = (.2, .6, .2), S = {0, 1}: −log(1 − .2) = −ln .8
    # row 1: z = 0 → p = 1/3 each, S = {0}: −2·ln(2/3); the loss is the mean of the two rows
    logits = torch.tensor([[0.0, LN3, 0.0], [0.0, 0.0, 0.0]])
    cands = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    expected = (-math.log(0.8) - 2 * math.log(2 / 3)) / 2
    assert abs(non_candidate_loss(logits, cands).item() - expected) < 1e-6


def test_conformal_targets_are_the_renormalised_geometric_mean():
    # views p_a = (.2, .6, .2) (z = (0, ln3, 0)), p_b = (.5, .25, .25) (z = (ln2, 0, 0)), p_c = 1/3 each; S = {0, 1}:
    # q_j ∝ (p_a·p_b·p_c)_j^{1/3}, so q_0/q_1 = (.1/.15)^{1/3} = (2/3)^{1/3}, q_2 = 0
    views = [torch.tensor([[0.0, LN3, 0.0]]), torch.tensor([[LN2, 0.0, 0.0]]), torch.zeros(1, 3)]
    ratio = (2 / 3) ** (1 / 3)
    expected = torch.tensor([[ratio / (1 + ratio), 1 / (1 + ratio), 0.0]])
    assert torch.allclose(conformal_targets(views, torch.tensor([[1.0, 1.0, 0.0]])), expected, atol=1e-6)


def test_conformal_targets_stay_finite_where_the_candidate_products_underflow():
    # p_1 = p_2 = e^-200 underflows to 0 in float32: the official product renormalised is 0/0; in log space the two
    # candidates have the same mean log-probability, so q = (0, .5, .5)
    views = [torch.tensor([[0.0, -200.0, -200.0]])] * 3
    assert torch.equal(conformal_targets(views, torch.tensor([[0.0, 1.0, 1.0]])), torch.tensor([[0.0, 0.5, 0.5]]))


def test_consistency_loss_hand_values():
    # q = (.5, .5, 0). View 1, p = (.2, .6, .2): KL = .5·ln(.5/.2) + .5·ln(.5/.6) = .5·ln(2.5·5/6) (0·log 0 = 0).
    # View 2, p = 1/3 each: KL = ln 1.5. Ψ is their sum.
    targets = torch.tensor([[0.5, 0.5, 0.0]])
    views = [torch.tensor([[0.0, LN3, 0.0]]), torch.zeros(1, 3)]
    expected = 0.5 * math.log(2.5 * 5 / 6) + math.log(1.5)
    assert abs(consistency_loss(views, targets).item() - expected) < 1e-6


def test_linear_rampup_of_the_consistency_weight():
    # λ(t) = min(t/T′, 1)·λ: T′ = 7.5 (quick) → 0 at epoch 0, 3/7.5 = .4 at epoch 3, 1 from epoch 8; T′ = 0 → 1
    assert [linear_rampup(e, 7.5) for e in (0, 3, 8)] == [0.0, 0.4, 1.0]
    assert linear_rampup(0, 0) == 1.0


def test_step_forwards_weak_cls_and_a_second_cls_draw_then_rewrites_the_bank_rows():
    torch.manual_seed(0)
    ctx = tiny_context()
    method = CRDPLL(ctx, {"lam": 2.0, "rampup_epochs": 4.0})
    inputs = []
    method.net.register_forward_hook(lambda module, args, out: inputs.append((args[0], out.detach())))
    before = method.bank.clone()
    index = torch.tensor([0, 1, 2, 3])
    batch = tiny_batch(ctx, index, CRDPLL.views, epoch=1)
    out = method.training_step(batch)
    (x0, z0), (x1, z1), (x2, z2) = inputs
    assert torch.equal(x0, batch.views["weak"]) and torch.equal(x1, batch.views["cls"])
    assert x2.shape == x1.shape and not torch.equal(x2, x1)  # an independent second cls draw
    # λ(1) = 2·min(1/4, 1) = .5; the consistency reads the bank rows as they were (Y/|S|)
    assert torch.allclose(out["cons"], consistency_loss([z0, z1, z2], before[index]))
    assert torch.allclose(out["loss"], out["sup"] + 0.5 * out["cons"])
    method.after_step(batch)
    assert torch.allclose(method.bank[index], conformal_targets([z0, z1, z2], batch.candidates))
    assert torch.equal(method.bank[4:], before[4:])


def test_resume_is_bit_identical_and_the_consistency_weight_ramps(smoke_cache, tmp_path, monkeypatch):
    _, records = assert_resume_is_bit_identical("crdpll", smoke_cache, tmp_path, monkeypatch)
    # smoke's T′ = 1: λ(0) = 0, λ(e ≥ 1) = 1, so the epoch means are loss = sup, then sup + cons
    assert records[0]["loss/loss"] == pytest.approx(records[0]["loss/sup"], abs=1e-6)
    for r in records[1:]:
        assert r["loss/loss"] == pytest.approx(r["loss/sup"] + r["loss/cons"], abs=1e-5)
