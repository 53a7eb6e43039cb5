"""PiCO kernels on hand-computed values: each expected number is derived in the comment next to it;
the stateful checks build the method on a tiny synthetic context and drive its hooks directly."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from kernel_helpers import close, tiny_context

from pllbench.methods.pico import PiCO, phi_schedule, prototype_ema, supcon_loss


def test_prototype_ema_hand_values_and_zero_rows():
    # γ = .5; class 0 gets q1 = (0, 1) then q2 = (1, 0): sequentially μ0 = .5(1, 0) + .5(0, 1) = (.5, .5), then
    # .5(.5, .5) + .5(1, 0) = (.75, .25) → normalised (3, 1)/√10. Class 1 (no member) stays (0, 1); class 2 stays 0.
    protos = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
    out = prototype_ema(protos, torch.tensor([[0.0, 1.0], [1.0, 0.0]]), torch.tensor([0, 0]), 0.5)
    assert close(out, [[3 / math.sqrt(10), 1 / math.sqrt(10)], [0.0, 1.0], [0.0, 0.0]])


def test_prototype_ema_equals_the_sequential_official_loop():
    gen = torch.Generator().manual_seed(0)
    protos = F.normalize(torch.randn(5, 4, generator=gen), dim=1)
    feats = F.normalize(torch.randn(12, 4, generator=gen), dim=1)
    labels = torch.randint(0, 5, (12,), generator=gen)
    expected = protos.clone()
    for q, y in zip(feats, labels):
        expected[y] = 0.9 * expected[y] + 0.1 * q
    assert close(prototype_ema(protos, feats, labels, 0.9), F.normalize(expected, dim=1), 1e-6)


def test_supcon_loss_hand_values():
    # q = (e1, e2), F = (e1, e2, e1, e2), labels (0, 1, 0, 1): each anchor's one positive is its key (score 1/τ = 2),
    # the other two columns score 0, so ℓ = 2 − ln(2 + e²) (the row max cancels; the 1e-12 is below tolerance).
    # τ = τ_b: L = ln(2 + e²) − 2.
    e1, e2 = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    mask = torch.tensor([[0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]])
    loss = supcon_loss(torch.stack([e1, e2]), torch.stack([e1, e2, e1, e2]), mask, tau=0.5, tau_base=0.5)
    assert close(loss, math.log(2 + math.e ** 2) - 2)


def test_phi_schedule_runs_from_095_to_08():
    assert close(phi_schedule(0, 100, 0.95, 0.8), 0.95)
    assert close(phi_schedule(50, 100, 0.95, 0.8), 0.875)
    assert close(phi_schedule(100, 100, 0.95, 0.8), 0.8)


def test_pico_key_encoder_is_a_frozen_copy():
    torch.manual_seed(0)
    ctx = tiny_context()
    method = PiCO(ctx, {**PiCO.hparams, "queue_size": 16})
    for q, k in zip(method.query_net.parameters(), method.key_net.parameters()):
        assert torch.equal(q, k) and not k.requires_grad
    assert not any(p is k for p in method.trainable_parameters() for k in method.key_net.parameters())
