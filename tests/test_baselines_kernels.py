"""Loss kernels of the baselines (ABLE, PiCO, CEL, VALEN, CC, RC, LWS, CAVL) on hand-computed values.

Each expected number is derived in the comment next to it; the few stateful checks build a method on a tiny
synthetic context and drive its hooks directly.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from pllbench.data.registry import DatasetInfo
from pllbench.losses import candidate_argmax, renormalize
from pllbench.method import Batch, MethodContext
from pllbench.methods.able import able_contrastive_loss, able_weights
from pllbench.methods.cavl import cavl_update
from pllbench.methods.cc import cc_loss
from pllbench.methods.cel import (
    ClassWiseDecoder,
    class_associative_loss,
    prototype_discriminative_loss,
    update_prototypes,
)
from pllbench.methods.lws import lws_loss, lws_update
from pllbench.methods.pico import PiCO, phi_schedule, prototype_ema, supcon_loss
from pllbench.methods.rc import RC
from pllbench.methods.valen import (
    VALEN,
    adjacency_block,
    dirichlet_concentration,
    dirichlet_kl_uniform,
    knn_graph,
    reconstruction_loss,
    reconstruction_target,
)
from pllbench.views.maker import ViewMaker

LN3 = math.log(3)


def close(actual, expected, tol=1e-6):
    return torch.allclose(torch.as_tensor(actual, dtype=torch.float64),
                          torch.as_tensor(expected, dtype=torch.float64), atol=tol, rtol=0)


# ---------------------------------------------------------------- shared


def test_candidate_argmax_ignores_non_candidates_even_when_they_win():
    # Row 0: the official (v·Y).argmax gives [−2, 0, −6] → column 1, a non-candidate; restricted → column 0.
    values = torch.tensor([[-2.0, 5.0, -6.0], [0.1, 0.3, 0.2]])
    cands = torch.tensor([[1.0, 0.0, 1.0], [1.0, 0.0, 1.0]])
    assert candidate_argmax(values, cands).tolist() == [0, 2]


# ---------------------------------------------------------------- CC


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


# ---------------------------------------------------------------- LWS


def test_lws_loss_hand_values():
    # z = (0, ln3), Y = (1, 0), w = (.5, .5), λ0 = 1, λ1 = 2: candidate term .5·ψ(0) = .5·.5 = .25;
    # non-candidate term .5·ψ(−ln3) = .5·sigmoid(ln3) = .5·.75 = .375; L = .25 + 2·.375 = 1.0.
    loss = lws_loss(torch.tensor([[0.0, LN3]]), torch.tensor([[1.0, 0.0]]), torch.tensor([[0.5, 0.5]]), 1.0, 2.0)
    assert close(loss, 1.0)


def test_lws_update_renormalises_both_sides_with_plench_epsilon():
    # p = (.2, .6, .2), Y = (1, 0, 1): nS = (.2, 0, .2)/(.4 + 3e-8), nS̄ = (0, .6, 0)/(.6 + 3e-8).
    new = lws_update(torch.tensor([[0.0, LN3, 0.0]]), torch.tensor([[1.0, 0.0, 1.0]]))
    assert close(new, [[0.2 / (0.4 + 3e-8), 0.6 / (0.6 + 3e-8), 0.2 / (0.4 + 3e-8)]])


# ---------------------------------------------------------------- CAVL


def test_cavl_update_one_hot_at_largest_candidate_activation():
    # z·|1 − z|: row 0 (2, −1, .5) → (2, −2, .25) → 0. Row 1 (−1, 5, −2) → (−2, 20, −6): the non-candidate 1 would win
    # the official (v·Y).argmax over (−2, 0, −6); restricted to S = {0, 2} it is 0.
    logits = torch.tensor([[2.0, -1.0, 0.5], [-1.0, 5.0, -2.0]])
    cands = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 1.0]])
    assert cavl_update(logits, cands).tolist() == [[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]]


# ---------------------------------------------------------------- ABLE

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


# ---------------------------------------------------------------- PiCO


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


# ---------------------------------------------------------------- CEL

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


# ---------------------------------------------------------------- VALEN

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


# ---------------------------------------------------------------- stateful behaviour on a tiny context


def tiny_context(num_train=12, num_classes=4, epochs=3, steps_per_epoch=2, channels=3, side=16):
    gen = torch.Generator().manual_seed(0)
    cands = (torch.rand(num_train, num_classes, generator=gen) < 0.5).float()
    cands[torch.arange(num_train), torch.arange(num_train) % num_classes] = 1
    info = DatasetInfo("synthetic", num_classes, channels, side, (0.5,) * 3, (0.25,) * 3, "32")
    images = torch.randint(0, 256, (num_train, channels, side, side), generator=gen, dtype=torch.uint8)
    return MethodContext(num_classes=num_classes, num_train=num_train, candidates=cands, backbone="cnn-xs",
                         proj_dim=8, epochs=epochs, steps_per_epoch=steps_per_epoch, batch_size=4,
                         dataset="synthetic", views=ViewMaker(info), train_images=images)


def make_batch(ctx, index, step, views=("cls",), epoch=0):
    gen = torch.Generator().manual_seed(step)
    images = ctx.train_images[index]
    return Batch({v: ctx.views(images, v, gen) for v in views}, ctx.candidates[index], index, epoch, step, gen)


def test_rc_bank_takes_the_post_step_outputs():
    """RC's own update (its official `confidence_update`): after the optimiser step, a no-grad forward of the same
    batch through the updated network gives the new rows, nS(softmax(z_after)); unvisited rows keep their value."""
    torch.manual_seed(0)
    ctx = tiny_context(steps_per_epoch=2)
    method = RC(ctx, {})
    before = method.bank.clone()
    batch = make_batch(ctx, torch.tensor([0, 1, 2, 3]), step=0)
    optimizer = torch.optim.SGD(method.trainable_parameters(), lr=0.5)
    with torch.no_grad():  # PRODEN's rows: the pre-step outputs (train mode: batch statistics, as in the step)
        pre_step = renormalize(torch.softmax(method.net(batch.views["cls"]), dim=1), batch.candidates)
    loss = method.training_step(batch)["loss"]
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    method.after_step(batch)
    with torch.no_grad():
        probe = RC(ctx, {})
        probe.load_state_dict(method.state_dict())
        expected = renormalize(torch.softmax(probe.net(batch.views["cls"]), dim=1), batch.candidates)
    rows = torch.arange(4)
    assert torch.allclose(method.bank[rows], expected, atol=1e-6)
    assert not torch.allclose(method.bank[rows], pre_step, atol=1e-4)  # not PRODEN's pre-step rows
    assert torch.equal(method.bank[4:], before[4:])
    assert torch.allclose(method.bank[rows].sum(dim=1), torch.ones(4))


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


def test_pico_key_encoder_is_a_frozen_copy():
    torch.manual_seed(0)
    ctx = tiny_context()
    method = PiCO(ctx, {**PiCO.hparams, "queue_size": 16})
    for q, k in zip(method.query_net.parameters(), method.key_net.parameters()):
        assert torch.equal(q, k) and not k.requires_grad
    assert not any(p is k for p in method.trainable_parameters() for k in method.key_net.parameters())
