"""PaPi (methods/papi.py): its kernels on hand-computed values, its step against the official update order on a tiny
context, the α ramp in a smoke run, and a bit-identical resume."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import assert_resume_is_bit_identical, tiny_batch, tiny_context

from pllbench.losses import soft_cross_entropy
from pllbench.methods.papi import PaPi, bank_targets, epoch_schedule, mixup_kl, prototype_log_probs

LN3 = math.log(3)


def test_epoch_schedule_holds_the_first_value_then_runs_linearly_from_the_second_epoch():
    # official: 0.99 during epoch 0; after epoch e it sets start + e/E·(end − start), used during epoch e + 1.
    # E = 10, φ 0.95 → 0.8: epoch 1 → .95, epoch 3 → .95 − .15·2/10 = .92; γ 0.9 → 0.5 at epoch 10: .9 − .4·.9 = .54
    assert epoch_schedule(0, 10, 0.99, 0.95, 0.8) == 0.99
    assert epoch_schedule(1, 10, 0.99, 0.95, 0.8) == pytest.approx(0.95)
    assert epoch_schedule(3, 10, 0.99, 0.95, 0.8) == pytest.approx(0.92)
    assert epoch_schedule(10, 10, 0.99, 0.9, 0.5) == pytest.approx(0.54)


def test_bank_targets_hand_values():
    # s = (.5, .5, 0); z = (0, ln3, 0) → p = (.2, .6, .2), S = {0, 1} → nS(p) = (.25, .75, 0);
    # φ = .9: .9·(.5, .5, 0) + .1·(.25, .75, 0) = (.475, .525, 0)
    rows = bank_targets(torch.tensor([[0.5, 0.5, 0.0]]), torch.tensor([[0.0, LN3, 0.0]]),
                        torch.tensor([[1.0, 1.0, 0.0]]), 0.9)
    assert torch.allclose(rows, torch.tensor([[0.475, 0.525, 0.0]]), atol=1e-6)


def test_prototype_log_probs_hand_values():
    # g = (1, 0), μ = I, τ = .5 → scores (2, 0): log p = (2 − ln(e² + 1), −ln(e² + 1))
    out = prototype_log_probs(torch.tensor([[1.0, 0.0]]), torch.eye(2), 0.5)
    norm = math.log(math.e ** 2 + 1)
    assert torch.allclose(out, torch.tensor([[2 - norm, -norm]]), atol=1e-6)


def test_mixup_kl_hand_values():
    # targets t_0 = (1, 0), t_1 = (.5, .5); p_0 = (.5, .5), p_1 = (.8, .2); π = (1, 0); Λ = .75.
    # own:      KL(t_0‖p_0) = ln 2, KL(t_1‖p_1) = .5·ln(.5/.8) + .5·ln(.5/.2) = .5·ln 1.5625 → mean
    # mixed-in: KL(t_1‖p_0) = 0, KL(t_0‖p_1) = ln(1/.8) → mean;  total = .75·own + .25·mixed-in
    targets = torch.tensor([[1.0, 0.0], [0.5, 0.5]])
    log_probs = torch.log(torch.tensor([[0.5, 0.5], [0.8, 0.2]]))
    own = (math.log(2) + 0.5 * math.log(1.5625)) / 2
    mixed_in = (0 + math.log(1 / 0.8)) / 2
    out = mixup_kl(log_probs, targets, torch.tensor([1, 0]), torch.tensor(0.75))
    assert abs(out.item() - (0.75 * own + 0.25 * mixed_in)) < 1e-6


def official_prototype_loop(prototypes, feats, labels, momentum):
    """The official update: μ_y ← γ·μ_y + (1 − γ)·g for each (g, y) in turn (x_1's, then x_2's), then normalise."""
    protos = prototypes.clone()
    for feat, label in zip(feats, labels):
        protos[label] = momentum * protos[label] + (1 - momentum) * feat
    return F.normalize(protos, dim=1)


def test_step_follows_the_official_order_of_bank_loss_and_prototype_updates():
    torch.manual_seed(0)
    ctx = tiny_context(epochs=10)
    hp = {**PaPi.hparams, "rampup_epochs": 4.0, "alpha_weight": 2.0}
    method = PaPi(ctx, hp)
    method.prototypes.copy_(F.normalize(torch.randn(4, 8), dim=1))
    bank, protos = method.bank.clone(), method.prototypes.clone()
    index = torch.tensor([0, 1, 2, 3])
    batch = tiny_batch(ctx, index, PaPi.views, epoch=3)
    x1, x2, cands = batch.views["weak"], batch.views["cls"], batch.candidates
    with torch.no_grad():  # train mode, so the step's forwards give the same outputs (batch statistics)
        z1, g1 = method.net(x1)
        z2, g2 = method.net(x2)
    torch.manual_seed(5)
    perm = torch.randperm(4)
    lam = torch.distributions.Beta(torch.tensor(hp["alpha_mixup"]), torch.tensor(hp["alpha_mixup"])).sample()
    with torch.no_grad():
        mixed = [method.net.project(lam * x + (1 - lam) * x[perm]) for x in (x1, x2)]
    torch.manual_seed(5)
    out = method.training_step(batch)
    # epoch 3 of 10: φ = .95 − .15·2/10 = .92, γ = .9 − .4·2/10 = .82, α(3) = 2·min(3/4, 1) = 1.5
    targets = bank_targets(bank[index], z1, cands, 0.92)  # the loss reads the rows updated before it
    assert torch.allclose(out["cls"], soft_cross_entropy(z1, targets), atol=1e-6)
    papi = sum(mixup_kl(prototype_log_probs(g, protos, hp["tau_proto"]), targets, perm, lam) for g in mixed)
    assert torch.allclose(out["papi"], papi, atol=1e-6)
    assert torch.allclose(out["loss"], out["cls"] + 1.5 * out["papi"], atol=1e-6)
    method.after_step(batch)
    assert torch.allclose(method.bank[index], targets, atol=1e-6) and torch.equal(method.bank[4:], bank[4:])
    pseudo = [(z.masked_fill(cands == 0, float("-inf"))).argmax(dim=1) for z in (z1, z2)]
    expected = official_prototype_loop(protos, torch.cat([g1, g2]), torch.cat(pseudo), 0.82)
    assert torch.allclose(method.prototypes, expected, atol=1e-6)


def test_resume_is_bit_identical_and_the_papi_weight_ramps(smoke_cache, tmp_path, monkeypatch):
    _, records = assert_resume_is_bit_identical("papi", smoke_cache, tmp_path, monkeypatch)
    # smoke's ramp (0.04 epochs): α = 0 in epoch 0, then 1, so the epoch means are loss = cls, then cls + papi
    assert records[0]["loss/loss"] == pytest.approx(records[0]["loss/cls"], abs=1e-6)
    for r in records[1:]:
        assert r["loss/loss"] == pytest.approx(r["loss/cls"] + r["loss/papi"], abs=1e-5)
    assert all(r["loss/chance/papi"] > 0 and "proj/mean_cos" in r for r in records)
