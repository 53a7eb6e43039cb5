"""LWS kernels on hand-computed values: each expected number is derived in the comment next to it."""

from __future__ import annotations

import torch
from kernel_helpers import LN3, close

from pllbench.methods.lws import lws_loss, lws_update


def test_lws_loss_hand_values():
    # z = (0, ln3), Y = (1, 0), w = (.5, .5), λ0 = 1, λ1 = 2: candidate term .5·ψ(0) = .5·.5 = .25;
    # non-candidate term .5·ψ(−ln3) = .5·sigmoid(ln3) = .5·.75 = .375; L = .25 + 2·.375 = 1.0.
    loss = lws_loss(torch.tensor([[0.0, LN3]]), torch.tensor([[1.0, 0.0]]), torch.tensor([[0.5, 0.5]]), 1.0, 2.0)
    assert close(loss, 1.0)


def test_lws_update_renormalises_both_sides_with_plench_epsilon():
    # p = (.2, .6, .2), Y = (1, 0, 1): nS = (.2, 0, .2)/(.4 + 3e-8), nS̄ = (0, .6, 0)/(.6 + 3e-8).
    new = lws_update(torch.tensor([[0.0, LN3, 0.0]]), torch.tensor([[1.0, 0.0, 1.0]]))
    assert close(new, [[0.2 / (0.4 + 3e-8), 0.6 / (0.6 + 3e-8), 0.2 / (0.4 + 3e-8)]])
