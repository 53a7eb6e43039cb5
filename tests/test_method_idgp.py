"""IDGP (methods/idgp.py): its kernels on hand-computed values, its step on a tiny context (views, banks, detached
cross terms), the warm-up and the ramp in a smoke run, and a bit-identical resume across the warm-up's end."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import assert_resume_is_bit_identical, curves, smoke_run, tiny_batch, tiny_context

from pllbench.losses import renormalize, soft_cross_entropy
from pllbench.methods.idgp import (
    IDGP,
    bernoulli_cross_entropy,
    classifier_consistency,
    flip_consistency,
    flip_loss_from_classifier,
    flip_posterior,
)

LN2, LN3 = math.log(2), math.log(3)


def test_flip_posterior_hand_values():
    # Row 0: u = (0, ln3, −ln2) → σ(u) = (.5, .75, 1/3); d ranks label 1 first, so g̃ = (.5, .25, 1/3).
    #   Official: w = (1 − g̃)/g̃ · Π g̃ = (1, 3, 2)·(1/24), renormalised → (1/6, 1/2, 1/3).
    # Row 1: u = (ln4, 0, 5), S = {0, 1}, d ranks label 0 first: g̃_0 = 1 − .8 = .2 → odds 4; g̃_1 = .5 → odds 1;
    #   label 2 is no candidate → q = (.8, .2, 0).
    u = torch.tensor([[0.0, LN3, -LN2], [math.log(4), 0.0, 5.0]])
    d = torch.tensor([[0.2, 0.5, 0.3], [0.6, 0.4, 0.0]])
    cands = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    expected = torch.tensor([[1 / 6, 1 / 2, 1 / 3], [0.8, 0.2, 0.0]])
    assert torch.allclose(flip_posterior(u, d, cands), expected, atol=1e-6)


def test_flip_posterior_stays_finite_where_the_official_product_underflows():
    # u = −200: σ(u) underflows to 0 in float32, so the official odds are 0/0 → NaN. In log space: d ranks label 0
    # first, its odds are e^(−200), the others' e^(200) each → q = (0, .5, .5)
    q = flip_posterior(torch.full((1, 3), -200.0), torch.tensor([[0.5, 0.3, 0.2]]), torch.ones(1, 3))
    assert torch.allclose(q, torch.tensor([[0.0, 0.5, 0.5]]))


def test_bernoulli_cross_entropy_hand_values():
    # Row 0: σ(u) = (.5, .75), t = (1, 0): −(ln .5 + ln .25) = ln 8. Row 1: σ = (.5, .5), t = (.5, .5): 2·ln 2.
    # Summed over labels, averaged over rows: (3 + 2)·ln2 / 2.
    u = torch.tensor([[0.0, LN3], [0.0, 0.0]])
    t = torch.tensor([[1.0, 0.0], [0.5, 0.5]])
    assert abs(bernoulli_cross_entropy(u, t).item() - 2.5 * LN2) < 1e-6


def test_flip_loss_from_classifier_hand_values():
    # σ(u) = (.5, .75, .5); f = (.2, .6, .2), S = {0, 1} → w = (.25, .75, 0).
    # −Σ w·log(1 − σ) = −(.25·ln .5 + .75·ln .25) = 1.75·ln2;
    # the BCE against S = −(ln .5 + ln .75 + ln .5) = 2·ln2 + ln(4/3)
    u = torch.tensor([[0.0, LN3, 0.0]])
    f_probs = torch.tensor([[0.2, 0.6, 0.2]])
    cands = torch.tensor([[1.0, 1.0, 0.0]])
    expected = 3.75 * LN2 + math.log(4 / 3)
    assert abs(flip_loss_from_classifier(u, f_probs, cands).item() - expected) < 1e-6


def test_classifier_consistency_hand_values():
    # d = (.5, .5, 0), softmax z = (.2, .6, .2): .5·ln(.5/.2) + .5·ln(.5/.6), with 0·log 0 = 0
    value = classifier_consistency(torch.tensor([[0.0, LN3, 0.0]]), torch.tensor([[0.5, 0.5, 0.0]]))
    assert abs(value.item() - (0.5 * math.log(2.5) + 0.5 * math.log(5 / 6))) < 1e-6


def test_flip_consistency_hand_values():
    # b = (.25, .6), σ(h) = (.5, .75): .25·(ln .25 − ln .5) + .6·(ln .6 − ln .75) = .25·ln .5 + .6·ln .8 (negative:
    # σ is not a distribution, as in the official KLDivLoss on log σ)
    value = flip_consistency(torch.tensor([[0.0, LN3]]), torch.tensor([[0.25, 0.6]]))
    assert abs(value.item() - (0.25 * math.log(0.5) + 0.6 * math.log(0.8))) < 1e-6


def hooked(method):
    """(f's, g's) recorded (input, output) per forward."""
    seen = {"f": [], "g": []}
    for name in seen:
        getattr(method, name).register_forward_hook(
            lambda module, args, out, name=name: seen[name].append((args[0], out.detach())))
    return seen


def test_warmup_step_fits_the_banks_and_rewrites_them_from_the_original_view():
    torch.manual_seed(0)
    ctx = tiny_context(density=0.6)
    hp = {**IDGP.hparams, "warmup_epochs": 2, "temp_f": 2.0, "temp_g": 3.0}
    method = IDGP(ctx, hp)
    seen = hooked(method)
    d0, b0 = method.bank_d.clone(), method.bank_b.clone()
    assert torch.allclose(d0, renormalize(ctx.candidates, ctx.candidates)) and torch.equal(b0, ctx.candidates)
    index = torch.tensor([0, 1, 2, 3])
    batch = tiny_batch(ctx, index, IDGP.views, epoch=1)
    out = method.training_step(batch)
    assert set(out) == {"f", "g", "loss"}
    (x0, z0), (x1, z1), (x2, z2) = seen["f"]
    assert all(x is y for (x, _), y in zip(seen["g"], (x0, x1, x2)))  # g sees the same three inputs
    assert torch.equal(x0, batch.views["base"]) and torch.equal(x1, batch.views["cls"])
    assert x2.shape == x1.shape and not torch.equal(x2, x1)  # an independent second cls draw
    h0 = seen["g"][0][1]
    expected_f = sum(soft_cross_entropy(z / 2.0, d0[index]) for z in (z0, z1, z2))
    expected_g = sum(bernoulli_cross_entropy(h / 3.0, b0[index]) for _, h in seen["g"])
    assert torch.allclose(out["f"], expected_f) and torch.allclose(out["g"], expected_g)
    assert torch.allclose(out["loss"], expected_f + expected_g)
    method.after_step(batch)
    cands = ctx.candidates[index]
    assert torch.allclose(method.bank_d[index], renormalize(torch.softmax(z0 / 2.0, dim=1), cands))
    assert torch.allclose(method.bank_b[index], torch.sigmoid(h0 / 3.0) * cands)
    assert torch.equal(method.bank_d[4:], d0[4:]) and torch.equal(method.bank_b[4:], b0[4:])


def test_main_step_weights_the_terms_ramps_and_detaches_the_cross_terms():
    torch.manual_seed(0)
    ctx = tiny_context(density=0.6)
    hp = {**IDGP.hparams, "warmup_epochs": 1, "ramp_epochs": 4.0, "f_bank": 2.0, "f_flip": 3.0,
          "f_consistency": 5.0, "g_bank": 7.0, "g_from_f": 11.0, "g_consistency": 13.0}
    method = IDGP(ctx, hp)
    batch = tiny_batch(ctx, torch.tensor([0, 1, 2, 3]), IDGP.views, epoch=2)
    out = method.training_step(batch)
    ramp = 0.25  # λ = min((2 − 1)/4, 1)
    expected = (2 * out["f"] + 3 * out["fg"] + ramp * 5 * out["cons_f"]
                + 7 * out["g"] + 11 * out["gf"] + ramp * 13 * out["cons_g"])
    assert torch.allclose(out["loss"], expected)
    # f's terms move only f, g's only g: one optimiser over both steps each as the official two do
    for term, other in (("f", method.g), ("fg", method.g), ("cons_f", method.g),
                        ("g", method.f), ("gf", method.f), ("cons_g", method.f)):
        grads = torch.autograd.grad(out[term], list(other.parameters()), retain_graph=True, allow_unused=True)
        assert all(g is None for g in grads), term


def test_a_smoke_run_warms_up_then_ramps_the_consistency_terms(smoke_cache, tmp_path):
    # smoke: W = 1, R = 1 → epoch 0 warm-up (f + g), epoch 1 λ = 0, epochs 2–3 λ = 1; CIFAR-10's weights
    _, run_dir, _ = smoke_run("idgp", smoke_cache, tmp_path / "runs", epochs=4)
    records = curves(run_dir)
    w = IDGP.hparams
    assert set(records[0]) >= {"loss/f", "loss/g"} and "loss/fg" not in records[0]
    assert records[0]["loss/loss"] == pytest.approx(records[0]["loss/f"] + records[0]["loss/g"], rel=1e-5)
    for r, ramp in zip(records[1:], (0.0, 1.0, 1.0)):
        expected = (w["f_bank"] * r["loss/f"] + w["f_flip"] * r["loss/fg"]
                    + ramp * w["f_consistency"] * r["loss/cons_f"] + w["g_bank"] * r["loss/g"]
                    + w["g_from_f"] * r["loss/gf"] + ramp * w["g_consistency"] * r["loss/cons_g"])
        assert r["loss/loss"] == pytest.approx(expected, rel=1e-4)


def test_resume_is_bit_identical_across_the_end_of_the_warmup(smoke_cache, tmp_path, monkeypatch):
    # smoke: W = 1; stopped after epoch 2, so the resumed part is all main phase with λ = 1
    state, _ = assert_resume_is_bit_identical("idgp", smoke_cache, tmp_path, monkeypatch, epochs=4, stop_after=2)
    assert {"bank_d", "bank_b"} <= set(state) and any(k.startswith("g.") for k in state)
