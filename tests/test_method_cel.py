"""CEL kernels on hand-computed values: each expected number is derived in the comment next to it."""

from __future__ import annotations

import math

import torch
from kernel_helpers import close

from pllbench.methods.cel import (
    ClassWiseDecoder,
    class_associative_loss,
    prototype_discriminative_loss,
    update_prototypes,
)

E_ROW = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])  # Gram: ⟨e0,e1⟩ = .6, ⟨e0,e2⟩ = 0, ⟨e1,e2⟩ = .8


def test_class_associative_loss_hand_values():
    # γ1 = 2. Sample 0, S = {0, 1}: pm = 2·.6/(2 + 1e-6); pairs with one candidate (0,2),(2,0),(1,2),(2,1) give
    # |0|·2 + .8·2 = 1.6 over 2·2·1 → nm = .4; ℓ = 1 − .6 + 2·.4 = 1.2.
    # Sample 1, S = {2}: no candidate pair → pm = 0; one-candidate pairs (2,0),(0,2),(2,1),(1,2) → 1.6/4 = .4;
    # ℓ = 1 + 2·.4 = 1.8.  Mean 1.5.
    emb = torch.stack([E_ROW, E_ROW])
    cands = torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    assert close(class_associative_loss(emb, cands, 2.0), 1.5, 1e-5)
    # Every label a candidate: nm = 0, pm = 2(.6 + 0 + .8)/6 = 2.8/6 → ℓ = 1 − 2.8/6.
    assert close(class_associative_loss(E_ROW[None], torch.ones(1, 3), 2.0), 1 - 2.8 / 6, 1e-5)


def test_prototype_discriminative_loss_hand_values():
    # ĉ = 0, e_{i,0} = (.6, .8); P = (1,0), (0,1), (.6,.8) → sims (.6, .8, 1).
    # ℓ = (1 − .6/(1 + 1e-6)) + γ2·(.8 + 1)/(3 − 1 + 1e-6) = .4 + .9 = 1.3 with γ2 = 1.
    emb = torch.tensor([[[0.6, 0.8], [1.0, 0.0], [0.0, 1.0]]])
    protos = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    assert close(prototype_discriminative_loss(emb, protos, torch.tensor([0]), 1.0), 1.3, 1e-5)


def test_update_prototypes_touches_only_predicted_classes_once():
    # Two samples predict class 0 with e_{i,0} = (0, 1): P0 = normalise((1, 0) + (0, 2)) = (1, 2)/√5.
    # Class 1 is not predicted and keeps (0, 1); class 2 keeps its zero row (no NaN).
    protos = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
    emb = torch.tensor([[[0.0, 1.0], [1.0, 0.0], [1.0, 0.0]]] * 2)
    out = update_prototypes(protos, emb, torch.tensor([0, 0]))
    assert close(out, [[1 / math.sqrt(5), 2 / math.sqrt(5)], [0.0, 1.0], [0.0, 0.0]])


def test_class_wise_decoder_shapes_frozen_queries_and_group_fc():
    torch.manual_seed(0)
    dec = ClassWiseDecoder(in_dim=8, num_classes=5, dim=6, heads=2, ffn=12, dropout=0.1).eval()
    assert "queries" not in dict(dec.named_parameters()) and "queries" in dec.state_dict()
    captured = {}
    dec.ffn_norm.register_forward_hook(lambda mod, inp, out: captured.setdefault("h", out))
    emb, logits = dec(torch.randn(3, 8, 4, 4))
    assert emb.shape == (3, 5, 6) and logits.shape == (3, 5)
    assert close(emb.norm(dim=2), torch.ones(3, 5), 1e-5)
    # z_k = ⟨H_k, w_k⟩ + b_k: one weight vector per class, applied to that class's own embedding.
    expected = torch.einsum("bkd,kd->bk", captured["h"], dec.class_weight) + dec.class_bias
    assert close(logits.detach(), expected.detach(), 1e-5)
