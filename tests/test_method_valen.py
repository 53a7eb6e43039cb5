"""VALEN kernels on hand-computed values: each expected number is derived in the comment next to it;
the stateful checks build the method on a tiny synthetic context and drive its hooks directly."""

from __future__ import annotations

import math

import pytest
import torch
from kernel_helpers import LN3, close, make_batch, tiny_context

from pllbench.methods.valen import (
    VALEN,
    adjacency_block,
    dirichlet_concentration,
    dirichlet_kl_uniform,
    knn_graph,
    reconstruction_loss,
    reconstruction_target,
)

LINE = torch.tensor([[0.0], [1.0], [3.0], [7.0], [8.0]])


# k = 2 nearest others on a line: 0 → (1, 2); 1 → (0, 2); 3 → (1, 0); 7 → (8, 3); 8 → (7, 3).
LINE_NEIGHBOURS = [[1, 2], [0, 2], [1, 0], [4, 2], [3, 2]]


@pytest.mark.parametrize("block_elems", [5, 10, 1 << 24])  # one row per block, two rows, everything at once
def test_knn_graph_blockwise_hand_values(block_elems):
    assert knn_graph(LINE, 2, max_block_elems=block_elems).tolist() == LINE_NEIGHBOURS


def test_knn_graph_matches_brute_force():
    gen = torch.Generator().manual_seed(0)
    feats = torch.randn(300, 16, generator=gen) + 5  # the offset exercises the centring
    dist = torch.cdist(feats.double(), feats.double())
    dist.fill_diagonal_(float("inf"))
    expected = dist.topk(3, largest=False).indices
    assert torch.equal(knn_graph(feats, 3, max_block_elems=300 * 7), expected)


def test_adjacency_block_hand_values():
    # A = (A_kNN + I)/(k + 1), k = 2. Batch idx (0, 3, 1): 0 links to 1 (batch column 2); 3 links to 4 and 2 (not in
    # the batch); 1 links to 0 (column 0).
    idx = torch.tensor([0, 3, 1])
    neighbours = torch.tensor(LINE_NEIGHBOURS)[idx]
    third = 1 / 3
    assert close(adjacency_block(neighbours, idx), [[third, 0, third], [0, third, 0], [third, 0, third]])


def test_dirichlet_kl_uniform_hand_values():
    # KL(Dir(2, 1) ‖ Dir(1, 1)) = lnΓ(3) − lnΓ(2) − lnΓ(1) − lnΓ(2) + 1·(ψ(2) − ψ(3)) = ln 2 − 1/2;
    # KL(Dir(1, 1) ‖ Dir(1, 1)) = 0; the batch mean is (ln 2 − 1/2)/2.
    alpha = torch.tensor([[2.0, 1.0], [1.0, 1.0]], dtype=torch.float64)
    assert close(dirichlet_kl_uniform(alpha), (math.log(2) - 0.5) / 2, 1e-12)
    gen = torch.Generator().manual_seed(0)
    alpha = torch.rand(4, 6, generator=gen, dtype=torch.float64) * 5 + 0.01
    uniform = torch.distributions.Dirichlet(torch.ones(6, dtype=torch.float64))
    reference = torch.distributions.kl_divergence(torch.distributions.Dirichlet(alpha), uniform).mean()
    assert close(dirichlet_kl_uniform(alpha), reference, 1e-9)


def test_dirichlet_concentration_values_and_detached_denominator():
    # a = (0, ln3, 0) → p = (.2, .6, .2); Y = (1, 0, 1) → (.2, 0, .2)/.4 + .01 = (.51, .01, .51).
    logits = torch.tensor([[0.0, LN3, 0.0]], requires_grad=True)
    conc = dirichlet_concentration(logits, torch.tensor([[1.0, 0.0, 1.0]]))
    assert close(conc.detach(), [[0.51, 0.01, 0.51]])
    # With the sum detached, ∂c_0/∂a_j = (∂p_0/∂a_j)/.4 = p_0(δ_0j − p_j)/.4 = (.16, −.12, −.04)/.4.
    conc[0, 0].backward()
    assert close(logits.grad, [[0.4, -0.3, -0.1]])


def test_reconstruction_loss_hand_values():
    # δ = I (B = K = 2), Y = I, dec(δ) = r + .1 → .01·MSE = .01·.01.
    # BCEWithLogits(δ, Y): entries (1 → 1) cost ln(1 + e^−1), (0 → 0) cost ln 2 → mean (ln(1 + e^−1) + ln 2)/2.
    # Graph: sigmoid(δδᵀ) = [[σ(1), .5], [.5, σ(1)]] → row softmax (s, 1 − s), s = 1/(1 + e^(.5 − σ(1)));
    # A[idx, idx] = all .5 (two mutual neighbours, k = 1) → MSE (s − .5)².
    delta = torch.eye(2)
    target = torch.zeros(2, 4)
    s = 1 / (1 + math.exp(0.5 - 1 / (1 + math.exp(-1))))
    expected = 0.01 * 0.01 + 0.01 * (math.log(1 + math.exp(-1)) + math.log(2)) / 2 + (s - 0.5) ** 2
    loss = reconstruction_loss(target + 0.1, target, delta, torch.eye(2), torch.full((2, 2), 0.5))
    assert close(loss, expected)


def test_reconstruction_target_per_family():
    gen = torch.Generator().manual_seed(0)
    gray = torch.randn(2, 3, 28, 28, generator=gen)
    assert torch.equal(reconstruction_target(gray, gray=True), gray[:, 0].flatten(1))  # 784
    small = torch.randn(2, 3, 16, 16, generator=gen)
    assert torch.equal(reconstruction_target(small, gray=False), small.flatten(1))  # 768
    # 224 → 32 is an exact 7×7 box average (area).
    big = torch.randn(2, 3, 224, 224, generator=gen)
    blocks = big.view(2, 3, 32, 7, 32, 7).mean(dim=(3, 5)).flatten(1)
    assert reconstruction_target(big, gray=False).shape == (2, 3072)
    assert close(reconstruction_target(big, gray=False), blocks, 1e-5)


def test_valen_stage_two_switch_graph_and_resume():
    torch.manual_seed(0)
    ctx = tiny_context()
    hp = {**VALEN.hparams, "warmup_epochs": 1, "decoder_dim": 0}
    method = VALEN(ctx, hp)
    warmup_params = len(method.trainable_parameters())
    assert warmup_params == len(list(method.net.parameters()))
    assert method.dec[2].out_features == 768  # 3×16×16
    assert method.on_epoch_start(0) is False
    assert method.on_epoch_start(1) is True  # end of warm-up: graph, enc ← net, d_arr ← o, new optimiser
    assert method.on_epoch_start(1) is False and method.on_epoch_start(2) is False
    neighbours = method.neighbours
    assert neighbours.shape == (12, 3) and not (neighbours == torch.arange(12)[:, None]).any()
    assert torch.equal(method.targets, method.bank)
    assert all(torch.equal(a, b) for a, b in zip(method.enc.state_dict().values(), method.net.state_dict().values()))
    assert len(method.trainable_parameters()) > warmup_params
    batch = make_batch(ctx, torch.tensor([0, 1, 2, 3]), step=2, views=("cls", "base"), epoch=1)
    losses = method.training_step(batch)
    assert set(losses) == {"rec", "kl", "enc", "cls", "loss"} and torch.isfinite(losses["loss"])
    losses["loss"].backward()
    assert method.enc.fc.weight.grad is not None and method.dec[0].weight.grad is not None
    method.after_step(batch)
    assert torch.allclose(method.targets[:4].sum(dim=1), torch.ones(4))
    # A resumed run (fresh object + state_dict) trains the same parameter set and keeps the graph.
    resumed = VALEN(ctx, hp)
    resumed.load_state_dict(method.state_dict())
    assert len(resumed.trainable_parameters()) == len(method.trainable_parameters())
    assert torch.equal(resumed.neighbours, neighbours) and resumed.on_epoch_start(1) is False


def test_valen_gray_target_and_decoder_hidden_width():
    ctx = tiny_context(channels=1, side=28)
    method = VALEN(ctx, {**VALEN.hparams, "decoder_dim": 768})
    assert method.dec[0].out_features == 768 and method.dec[2].out_features == 784
