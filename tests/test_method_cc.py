"""CC kernels on hand-computed values: each expected number is derived in the comment next to it."""

from __future__ import annotations

import math

import torch
from kernel_helpers import LN3, close

from pllbench.methods.cc import cc_loss


def test_cc_loss_hand_values():
    # Row 0: z = (0, ln3, 0) → p = (.2, .6, .2); S = {0, 2} → Σ p = .4.  Row 1: z = (0, 0, ln2) → p = (.25, .25, .5);
    # S = {2} → .5.  L = −(ln .4 + ln .5)/2 = −ln(.2)/2 = ln(5)/2.
    logits = torch.tensor([[0.0, LN3, 0.0], [0.0, 0.0, math.log(2)]])
    cands = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    assert close(cc_loss(logits, cands), math.log(5) / 2)


def test_cc_loss_is_finite_where_the_candidate_softmax_underflows():
    # −log Σ_{S} p with z = (0, −200, −200), S = {1, 2}: = 200 − ln 2 + log(1 + 2e^−200) ≈ 200 − ln 2.
    loss = cc_loss(torch.tensor([[0.0, -200.0, -200.0]]), torch.tensor([[0.0, 1.0, 1.0]]))
    assert close(loss, 200 - math.log(2), 1e-4)
