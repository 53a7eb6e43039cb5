"""PiCO+: its kernels on hand-computed values, its selection and queues on a tiny context, every stage on the
dataset shapes, and a bit-identical resume."""

from __future__ import annotations

import json
import math

import pytest
import torch
from conftest import assert_resume_is_bit_identical, smoke_run, tiny_batch, tiny_context

from pllbench.errors import PllbenchError
from pllbench.losses import masked_mean
from pllbench.methods.pico import prototype_ema, supcon_loss
from pllbench.methods.pico_plus import (
    PiCOPlus,
    guessed_labels,
    knn_mask,
    mixup_lambda,
    reliable_contrast_mask,
    select_reliable,
)
from pllbench.presets import method_overrides, resolve_preset

# ------------------------------------------------------------------------------------------------ kernels


def test_select_reliable_ranks_the_visited_rows_and_keeps_the_others():
    # 4 visited rows → floor(0.6·4) = 2 reliable: the smallest distances −0.5 (row 1) and 0.1 (row 2); the tie
    # below (rows 2 and 3 at 0.1) goes to the first row; row 4 was never visited: reliable.
    distance = torch.tensor([0.3, -0.5, 0.1, 0.1, -9.0])
    seen = torch.tensor([True, True, True, True, False])
    assert select_reliable(distance, seen, 0.6).tolist() == [False, True, True, False, True]
    every = torch.ones(5, dtype=torch.bool)  # 5 visited, ratio 0.4 → 2: rows 4 (−9) and 1 (−0.5)
    assert select_reliable(distance, every, 0.4).tolist() == [False, True, False, False, True]
    assert select_reliable(distance, torch.zeros(5, dtype=torch.bool), 0.6).all()  # nothing measured yet


def test_knn_mask_takes_the_k_most_similar_columns():
    # anchor (1, 0); columns (1, 0), (0, 1), (0.6, 0.8), (−1, 0): cosines 1, 0, 0.6, −1 → k = 2: columns 0 and 2.
    feats = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8], [-1.0, 0.0]])
    assert knn_mask(feats[:1], feats, 2).tolist() == [[1.0, 0.0, 1.0, 0.0]]


def test_reliable_contrast_mask_by_hand():
    # n = 2 anchors (q0, q1), columns q0, q1, k0, k1, one queue row; pseudo-labels 0, 1 and columns' 0, 1, 0, 1, 0.
    same = torch.tensor([[1.0, 0, 1, 0, 1], [0, 1, 0, 1, 0]])
    reliable = torch.tensor([True, False])
    reliable_cols = torch.tensor([True, False, True, False, False])
    # Row 0 (reliable): same label ∧ reliable column → q0, k0; own key k0; self q0 removed → k0 only.
    # Row 1 (unreliable, no kNN yet): nothing but its own key k1.
    mask = reliable_contrast_mask(same, reliable, reliable_cols)
    assert mask.tolist() == [[0, 0, 1, 0, 0], [0, 0, 0, 1, 0]]
    # With kNN: row 1 takes its neighbours (q0, q1, queue), plus its own key, minus itself.
    knn = torch.tensor([[1.0, 0, 1, 0, 0], [1, 1, 0, 0, 1]])
    mask = reliable_contrast_mask(same, reliable, reliable_cols, knn)
    assert mask.tolist() == [[0, 0, 1, 0, 0], [1, 0, 0, 1, 1]]


def test_guessed_labels_are_the_sharpened_prototype_scores():
    # q·μ = (0, ln 2) → s = softmax = (1/3, 2/3); T = 0.5 → s² / Σ s² = (1/9, 4/9)/(5/9) = (0.2, 0.8).
    guess = guessed_labels(torch.tensor([[0.0, math.log(2)]]), 0.5)
    assert torch.allclose(guess, torch.tensor([[0.2, 0.8]]))


def test_prototype_ema_skips_the_rows_not_kept():
    # γ = 0.5, μ_0 = (1, 0), μ_1 = (0, 1). Rows: (0, 1) → class 0 kept, (1, 0) → class 0 skipped, (0, 1) → class 1
    # kept. μ_0 ← normalise(0.5·(1, 0) + 0.5·(0, 1)) = (√½, √½); μ_1 ← normalise(0.5·(0, 1) + 0.5·(0, 1)) = (0, 1).
    protos = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    feats = torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    labels = torch.tensor([0, 0, 1])
    out = prototype_ema(protos, feats, labels, 0.5, keep=torch.tensor([True, False, True]))
    assert torch.allclose(out, torch.tensor([[math.sqrt(0.5), math.sqrt(0.5)], [0.0, 1.0]]))
    # Without `keep` the skipped row counts: μ_0 = 0.5·(0.5·(1, 0) + 0.5·(0, 1)) + 0.5·(1, 0) = (0.75, 0.25).
    unmasked = prototype_ema(protos, feats, labels, 0.5)
    assert torch.allclose(unmasked[0], torch.tensor([0.75, 0.25]) / math.hypot(0.75, 0.25))


def test_supcon_anchor_weights_by_hand():
    # Anchors q0 = (1, 0), q1 = (0, 1); columns q0, q1, k0 = q0, k1 = q1; τ = τ_b = 1; positives: own keys.
    # Row 0: scores (1, 0, 1, 0) − max 1 → (0, −1, 0, −1); denominator over columns ≠ self: e^−1 + 1 + e^−1, so
    # ℓ(k0) = −ln(1 + 2/e); row 1 the same by symmetry. Unweighted: ln(1 + 2/e); weights (0.5, 0.1): 0.3·ln(1 + 2/e).
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    feats = torch.cat([q, q])
    mask = torch.tensor([[0.0, 0, 1, 0], [0, 0, 0, 1]])
    value = math.log(1 + 2 / math.e)
    assert abs(supcon_loss(q, feats, mask, 1.0, tau_base=1.0).item() - value) < 1e-6
    weighted = supcon_loss(q, feats, mask, 1.0, tau_base=1.0, weights=torch.tensor([0.5, 0.1]))
    assert abs(weighted.item() - 0.3 * value) < 1e-6


def test_masked_mean_over_the_kept_rows_and_zero_without_any():
    # (1 + 3)/2 = 2; nothing kept: 0 (the official mean of an empty selection is NaN).
    values = torch.tensor([1.0, 2.0, 3.0])
    assert masked_mean(values, torch.tensor([True, False, True])).item() == 2.0
    assert masked_mean(values, torch.zeros(3, dtype=torch.bool)).item() == 0.0


def test_mixup_lambda_is_kept_at_or_above_one_half():
    torch.manual_seed(0)
    draws = torch.stack([mixup_lambda(4.0, torch.device("cpu")) for _ in range(200)])
    assert (draws >= 0.5).all() and (draws <= 1).all() and draws.std() > 0.01


# ------------------------------------------------------------------------------------------------ the method


def test_selection_queues_and_terms_on_a_tiny_context():
    torch.manual_seed(0)
    ctx = tiny_context()
    hp = {**PiCOPlus.hparams, "queue_size": 8, "prot_start": 1, "knn_start": 1, "knn_neighbors": 3}
    method = PiCOPlus(ctx, hp)
    assert method.on_epoch_start(0) is False and method.reliable.all()
    warm = method.training_step(tiny_batch(ctx, torch.tensor([0, 1, 2, 3]), ("weak", "strong"), epoch=0))
    assert set(warm) == {"cls", "cont", "chance/cont", "loss"}
    assert method.seen.tolist() == [True] * 4 + [False] * 8
    assert method.reliable_queue.ptr == method.queue.ptr == 4
    method.training_step(tiny_batch(ctx, torch.tensor([4, 5, 6, 7]), ("weak", "strong"), epoch=0, step=1))
    method.on_epoch_start(1)  # 8 rows visited → floor(0.6·8) = 4 reliable, plus the 4 never visited
    assert method.reliable.sum() == 8 and method.reliable[8:].all()
    kept, dropped = method.distance[:8][method.reliable[:8]], method.distance[:8][~method.reliable[:8]]
    assert kept.max() <= dropped.min()  # the nearest visited rows (ties, e.g. epoch 0's zero prototypes, by row)
    before = method.bank.clone()
    batch = tiny_batch(ctx, torch.tensor([0, 1, 2, 3]), ("weak", "strong"), epoch=1, step=2)
    out = method.training_step(batch)
    assert set(out) == {"cls", "ur", "mix", "cont", "cont_all", "chance/cont", "loss"}
    assert torch.isfinite(out["loss"]) and out["loss"].requires_grad
    # the queue wrapped: slots 0-3 hold this step's flags, slots 4-7 epoch 0's (all reliable)
    flags = method.reliable_queue.reliable
    assert torch.equal(flags[:4], method.reliable[:4]) and flags[4:].all()
    assert not torch.equal(method.bank[:4], before[:4]) and torch.equal(method.bank[4:], before[4:])
    assert torch.allclose(method.bank[:4].sum(dim=1), torch.ones(4))


def test_hyperparameter_rules_are_checked_when_the_run_is_resolved():
    run = {"batch_size": 4}
    PiCOPlus.check_hparams({**PiCOPlus.hparams, "queue_size": 8, "knn_neighbors": 16}, run)  # 2·4 + 8 columns
    with pytest.raises(PllbenchError, match="knn_neighbors 17 exceeds the 16 contrast columns"):
        PiCOPlus.check_hparams({**PiCOPlus.hparams, "queue_size": 8, "knn_neighbors": 17}, run)
    with pytest.raises(PllbenchError, match="queue_size 2 is below the batch size 4"):  # PiCO's rule, inherited
        PiCOPlus.check_hparams({**PiCOPlus.hparams, "queue_size": 2, "knn_neighbors": 1}, run)


def test_quick_overrides_are_pico_plus_own_and_leave_pico_alone():
    cfg = resolve_preset("quick", "fmnist")
    assert method_overrides(cfg, "pico+", "pico+") == {"queue_size": 2048, "prot_start": 1, "knn_start": 2}
    assert method_overrides(cfg, "pico", "pico") == {"queue_size": 2048}


@pytest.mark.parametrize("shape", ["synthetic:channels=1,size=28,classes=10,train=40,test=20",
                                   "synthetic:size=32,classes=100,train=32,test=20"])
def test_every_stage_in_one_epoch_on_dataset_shapes(shape, smoke_cache, tmp_path):
    """test_method_shapes starts selection at epoch 0 but not the kNN stage: both here, at 28-px gray and N < K."""
    hp = {"prot_start": 0, "knn_start": 0, "queue_size": 2048}
    _, run_dir, _ = smoke_run("pico+", smoke_cache, tmp_path / "runs", hp=hp, dataset=shape, epochs=1)
    (record,) = [json.loads(line) for line in (run_dir / "curves.jsonl").read_text().splitlines()]
    assert {"loss/mix", "loss/ur", "loss/cont_all"} <= set(record)
    assert all(math.isfinite(v) for k, v in record.items() if k.startswith("loss/"))


def test_a_held_out_row_is_never_ranked(smoke_cache, tmp_path):
    _, run_dir, _ = smoke_run("pico+", smoke_cache, tmp_path / "runs", val_fraction=0.25)
    state = torch.load(run_dir / "model.pt", weights_only=True)
    assert state["seen"].sum() == 48  # 64 rows, 16 held out; 3 full batches an epoch visit the other 48
    assert state["reliable"][~state["seen"]].all() and state["reliable"][state["seen"]].sum() == 28  # ⌊0.6·48⌋


# ------------------------------------------------------------------------------------------------ resume


def test_resume_is_bit_identical(smoke_cache, tmp_path, monkeypatch):
    """Crash after epoch 2 of 3: the resumed epoch re-selects from the restored distances and runs the kNN stage."""
    hp = {"prot_start": 1, "knn_start": 2}
    assert_resume_is_bit_identical("pico+", smoke_cache, tmp_path, monkeypatch, hp=hp, epochs=3, stop_after=2)
