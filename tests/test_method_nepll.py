"""NEPLL: its kernels on hand-computed values, the epoch-start selection and the in-step expansion on a tiny context,
every stage on the dataset shapes, and a bit-identical resume."""

from __future__ import annotations

import json
import math

import pytest
import torch
from conftest import assert_resume_is_bit_identical, smoke_run, tiny_batch, tiny_context

from pllbench.methods.nepll import (
    NEPLL,
    class_thresholds,
    complementary_rows,
    expansions,
    lowest,
    normalized_entropy,
    sharpen,
    ud_threshold_update,
    within_group_permutation,
)

# ------------------------------------------------------------------------------------------------ kernels


def test_normalized_entropy_by_hand():
    # (½, ½) over S = {0, 1}: ln 2 / ln 2 = 1. (¼, ¼, ½) over all three: (2·¼·ln 4 + ½·ln 2)/ln 3 = 1.5·ln 2/ln 3.
    # |S| = 1: entropy 0, divided by 1 (not by ln 1 = 0).
    scores = torch.tensor([[0.5, 0.5, 0.0], [0.25, 0.25, 0.5], [1.0, 0.0, 0.0]])
    cands = torch.tensor([[1.0, 1, 0], [1, 1, 1], [1, 0, 0]])
    expected = torch.tensor([1.0, 1.5 * math.log(2) / math.log(3), 0.0])
    assert torch.allclose(normalized_entropy(scores, cands), expected)
    assert torch.allclose(normalized_entropy(torch.stack([scores, scores]), cands), torch.stack([expected] * 2))


def test_sharpen_by_hand():
    # (0.2, 0.8), T = 0.5 → (0.04, 0.64)/0.68.
    assert torch.allclose(sharpen(torch.tensor([0.2, 0.8]), 0.5), torch.tensor([0.04, 0.64]) / 0.68)


def test_lowest_breaks_ties_by_position():
    values = torch.tensor([0.3, 0.1, 0.1, 0.9])
    assert lowest(values, 2).tolist() == [False, True, True, False]
    assert lowest(values, 1).tolist() == [False, True, False, False]


def test_class_thresholds_divide_by_every_selected_row():
    # Selected rows 0-2 (NE 0.2, 0.4, 0.6; predictions 0, 1, 0); row 3 not selected. τ_0 = (0.2 + 0.6)/3,
    # τ_1 = 0.4/3, τ_2 = 0 (the official mean over the selected rows of NE·onehot(pred)).
    entropy = torch.tensor([0.2, 0.4, 0.6, 0.8])
    out = class_thresholds(entropy, torch.tensor([0, 1, 0, 1]), torch.tensor([True, True, True, False]), 3)
    assert torch.allclose(out, torch.tensor([0.8 / 3, 0.4 / 3, 0.0]))


def test_expansions_by_hand():
    # Two networks, three rows; row 0 already selected by both. τ = (0.5, 0.1) for network 0 and (0.3, 0.3) for 1.
    # Network 0: row 1 (NE 0.4 < τ_0 = 0.5) joins WD; row 2 (NE 0.2 ≥ τ_1 = 0.1) is in the UD pool and joins as UD
    # (0.2 < u = 0.25, both networks predict class 1). Network 1: row 1 (0.4 ≥ τ_0 = 0.3) stays in the pool and
    # does not join as UD (predictions 0 and 1 disagree); row 2 (0.35 ≥ τ_1 = 0.3) is in the pool, 0.35 ≥ u = 0.3.
    entropy = torch.tensor([[0.1, 0.4, 0.2], [0.1, 0.4, 0.35]])
    pred = torch.tensor([[0, 0, 1], [0, 1, 1]])
    selected = torch.tensor([[True, False, False], [True, False, False]])
    class_threshold = torch.tensor([[0.5, 0.1], [0.3, 0.3]])
    wd, ud, pool = expansions(entropy, pred, selected, class_threshold, torch.tensor([0.25, 0.3]))
    assert wd.tolist() == [[False, True, False], [False, False, False]]
    assert pool.tolist() == [[False, False, True], [False, True, True]]
    assert ud.tolist() == [[False, False, True], [False, False, False]]


def test_ud_threshold_update_by_hand():
    # Network 0: pool NE (0.2, 0.6) → mean 0.4 → 0.99·0.5 + 0.01·0.4 = 0.499. Network 1: empty pool → unchanged 0.2.
    entropy = torch.tensor([[0.2, 0.9, 0.6], [0.1, 0.1, 0.1]])
    pool = torch.tensor([[True, False, True], [False, False, False]])
    out = ud_threshold_update(torch.tensor([0.5, 0.2]), entropy, pool, 0.99)
    assert torch.allclose(out, torch.tensor([0.499, 0.2]))


def test_within_group_permutation_by_hand():
    # Kept rows 0, 2, 3 in batch order; noise (+2 for the others) = (0.9, 2.1, 0.3, 0.5, 2.7) sorts to rows
    # 2, 3, 0, 1, 4, so π(0) = 2, π(2) = 3, π(3) = 0 and π(1) = 1, π(4) = 4.
    keep = torch.tensor([True, False, True, True, False])
    noise = torch.tensor([0.9, 0.1, 0.3, 0.5, 0.7])
    assert within_group_permutation(keep, noise).tolist() == [2, 1, 3, 0, 4]
    keep, noise = torch.rand(64) < 0.6, torch.rand(64)
    perm = within_group_permutation(keep, noise)
    assert sorted(perm.tolist()) == list(range(64)) and torch.equal(keep[perm], keep)


def test_complementary_rows_by_hand():
    # z = (0, ln 3, 0) → p = (0.2, 0.6, 0.2); S = {0, 1} → −ln(1 − 0.2) = −ln 0.8.
    out = complementary_rows(torch.tensor([[0.0, math.log(3), 0.0]]), torch.tensor([[1.0, 1.0, 0.0]]))
    assert torch.allclose(out, torch.tensor([-math.log(0.8)]))


# ------------------------------------------------------------------------------------------------ the method


def test_epoch_start_selects_per_network_and_resets_u():
    torch.manual_seed(0)
    ctx = tiny_context()
    method = NEPLL(ctx, {**NEPLL.hparams, "warmup_epochs": 1})
    method.ud_entropy.fill_(0.7)
    assert method.on_epoch_start(0) is False and not method.selected.any()  # warm-up: nothing yet
    method.on_epoch_start(1)
    assert method.selected.sum(dim=1).tolist() == [8, 8]  # ceil(0.6·12)
    entropy, pred = method.score_train_rows()
    for m in range(2):
        kept, dropped = entropy[m][method.selected[m]], entropy[m][~method.selected[m]]
        assert kept.max() <= dropped.min()
        assert torch.allclose(method.class_entropy[m].sum(), kept.mean())  # Σ_c τ_c = the WD rows' mean NE
    assert not torch.equal(method.selected[0], method.selected[1]) or not torch.equal(pred[0], pred[1])
    assert method.ud_entropy.tolist() == [0.0, 0.0] and method.training  # back in train mode


def test_step_targets_before_and_after_expansion():
    torch.manual_seed(0)
    ctx = tiny_context()
    method = NEPLL(ctx, {**NEPLL.hparams, "warmup_epochs": 0, "expand_epoch": 2})
    idx = torch.tensor([0, 1, 2, 3])
    method.selected[:, :2] = True
    method.class_entropy.fill_(2.0)  # every NE is below: every non-selected row joins WD
    targets = torch.softmax(torch.randn(2, 4, 4), dim=-1) * ctx.candidates[idx]
    targets = targets / targets.sum(dim=-1, keepdim=True)
    selected, conf = method.training_targets(targets, ctx.candidates[idx], idx, epoch=1)  # before expansion
    assert selected.tolist() == [[True, True, False, False]] * 2 and torch.equal(conf, method.bank[:, idx])
    selected, conf = method.training_targets(targets, ctx.candidates[idx], idx, epoch=2)
    assert selected.all() and torch.equal(conf[:, 2:], targets[:, 2:]) and torch.equal(conf[:, :2], method.bank[:, :2])
    assert method.ud_entropy.tolist() == [0.0, 0.0]  # empty UD pool: unchanged
    method.class_entropy.zero_()  # nothing joins WD; u = 1 takes every agreeing row as UD, sharpened
    method.ud_entropy.fill_(1.0)
    selected, conf = method.training_targets(targets, ctx.candidates[idx], idx, epoch=2)
    agree = targets[0, 2:].argmax(-1) == targets[1, 2:].argmax(-1)
    assert torch.equal(selected[:, 2:], agree.expand(2, -1))
    assert torch.allclose(conf[:, 2:][:, agree], sharpen(targets[:, 2:][:, agree], 0.5))
    entropy = normalized_entropy(targets[:, 2:], ctx.candidates[2:4])
    assert torch.allclose(method.ud_entropy, 0.99 + 0.01 * entropy.mean(dim=1))


def test_a_step_trains_both_networks_and_refreshes_both_banks():
    torch.manual_seed(0)
    ctx = tiny_context()
    method = NEPLL(ctx, {**NEPLL.hparams, "warmup_epochs": 0, "expand_epoch": 1, "rampup_epochs": 2})
    method.on_epoch_start(0)
    batch = tiny_batch(ctx, torch.tensor([0, 1, 2, 3]), ("cls", "strong"), epoch=0)
    out = method.training_step(batch)
    assert set(out) == {"ce1", "ce2", "mix", "comp", "loss", "share/selected"} and torch.isfinite(out["loss"])
    assert torch.allclose(out["loss"], out["ce1"])  # w = 0/2 at epoch 0
    out["loss"].backward()
    assert all(net.fc.weight.grad is not None for net in method.nets)
    method.after_step(batch)
    assert torch.allclose(method.bank[:, :4].sum(dim=-1), torch.ones(2, 4))
    assert not torch.equal(method.bank[0, :4], method.bank[1, :4])  # own network, own bank


@pytest.mark.parametrize("shape", ["synthetic:channels=1,size=28,classes=10,train=40,test=20",
                                   "synthetic:size=32,classes=100,train=32,test=20"])
@pytest.mark.parametrize("expand", [0, 1])
def test_every_stage_in_one_epoch_on_dataset_shapes(shape, expand, smoke_cache, tmp_path):
    """test_method_shapes starts selection at epoch 0 but never expands: both here (expand 0), and the complementary
    term (expand 1), at 28-px gray and N < K."""
    hp = {"warmup_epochs": 0, "expand_epoch": expand, "rampup_epochs": 0}
    _, run_dir, _ = smoke_run("nepll", smoke_cache, tmp_path / "runs", hp=hp, dataset=shape, epochs=1)
    (record,) = [json.loads(line) for line in (run_dir / "curves.jsonl").read_text().splitlines()]
    assert {"loss/ce2", "loss/mix", "loss/comp"} <= set(record)
    assert all(math.isfinite(v) for k, v in record.items() if k.startswith("loss/"))
    assert (record["loss/comp"] > 0) == (expand == 1)


def test_resume_is_bit_identical(smoke_cache, tmp_path, monkeypatch):
    """Crash after epoch 2 of 3: the resumed epoch re-scores the rows from the restored networks and expands."""
    hp = {"warmup_epochs": 1, "expand_epoch": 2, "rampup_epochs": 2}
    assert_resume_is_bit_identical("nepll", smoke_cache, tmp_path, monkeypatch, hp=hp, epochs=3, stop_after=2)
