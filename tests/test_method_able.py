"""ABLE kernels on hand-computed values: each expected number is derived in the comment next to it."""

from __future__ import annotations

import math

import torch
from kernel_helpers import close

from pllbench.methods.able import able_contrastive_loss, able_weights

S = torch.tensor([[0.5, 0.5, 0.0], [0.2, 0.3, 0.5], [0.0, 0.0, 1.0]])


Y = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0], [0.0, 0.0, 1.0]])


def test_able_weights_read_the_anchor_rows_and_divide_by_class_counts():
    # ŷ = (0, 0, 2): n_0 = 2, n_2 = 1. W_ib = s_{i,ŷ_b}·Y_{i,ŷ_b}/n_{ŷ_b}:
    # row 0: (.5/2, .5/2, 0/1); row 1: (.2/2, .2/2, .5/1); row 2: (0, 0, 1).
    w = able_weights(S, Y, torch.tensor([0, 0, 2]))
    assert close(w, [[0.25, 0.25, 0.0], [0.1, 0.1, 0.5], [0.0, 0.0, 1.0]])


def test_able_contrastive_loss_hand_values():
    # B = 2, f = (e1, e2, e1, e2) (weak = strong), τ = τ_b = .5 so the factor is 1. Scores f_a·f_b/τ ∈ {0, 2}:
    # every anchor has one other row scoring 2 (its other view) and two scoring 0, so with L = ln(2 + e²)
    # ℓ(other view) = 2 − L and ℓ(other instance) = −L. With W = [[1, 0], [.5, .5]] the tiled rows are
    # a0: (0, 0, 1, 0) → 2 − L; a1: (.5, 0, .5, .5) → .5(−L) + .5(−L) + .5(2 − L) = 1 − 1.5L; a2 like a0; a3 like a1.
    # L_con = −(2(2 − L) + 2(1 − 1.5L))/4 = (5L − 6)/4.
    e1, e2 = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    feats = torch.stack([e1, e2, e1, e2])
    loss = able_contrastive_loss(feats, torch.tensor([[1.0, 0.0], [0.5, 0.5]]), tau=0.5, tau_base=0.5)
    big_l = math.log(2 + math.e ** 2)
    assert close(loss, (5 * big_l - 6) / 4)
    # The official τ/τ_b factor: τ = .5 against τ_b = .07 scales the same loss by .5/.07.
    assert close(able_contrastive_loss(feats, torch.tensor([[1.0, 0.0], [0.5, 0.5]]), tau=0.5),
                 (0.5 / 0.07) * (5 * big_l - 6) / 4, 1e-5)
