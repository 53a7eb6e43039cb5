"""POP (methods/pop.py): its kernels on hand-computed values, the purification schedule against a transcription of
the official loop, its step on a tiny context, purification in a smoke run, and a bit-identical resume."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import assert_resume_is_bit_identical, curves, smoke_run, tiny_batch, tiny_context

from pllbench.losses import renormalize
from pllbench.methods.pop import POP, grow_threshold, pop_loss, purify


def test_purify_hand_values():
    # e = .2. Row 0: f̄ ∝ (6, 3, 1, 0), S = {0, 1, 2}: ratios (1, .5, 1/6) → label 2 leaves; bank = (6, 3)/9.
    # Row 1: f̄ ∝ (1, 1, 1, 1) but label 1 was purified before: it stays out though its ratio is 1; bank 1/3 each.
    sums = torch.tensor([[6.0, 3.0, 1.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
    purified = torch.tensor([[1.0, 1.0, 1.0, 0.0], [1.0, 0.0, 1.0, 1.0]])
    kept, bank = purify(sums, purified, torch.tensor(0.2))
    assert torch.equal(kept, torch.tensor([[1.0, 1.0, 0.0, 0.0], [1.0, 0.0, 1.0, 1.0]]))
    assert torch.allclose(bank, torch.tensor([[2 / 3, 1 / 3, 0.0, 0.0], [1 / 3, 0.0, 1 / 3, 1 / 3]]))


def test_purify_never_empties_a_row():
    # the row's largest entry has ratio 1 ≥ e for any e ≤ 1
    sums = torch.rand(50, 7, generator=torch.Generator().manual_seed(0))
    kept, bank = purify(sums, torch.ones(50, 7), torch.tensor(1.0))
    assert torch.equal(kept.sum(dim=1), torch.ones(50)) and torch.allclose(bank.sum(dim=1), torch.ones(50))


def test_threshold_grows_only_after_a_stalled_purification_below_the_cap():
    # N·K = 20000 entries: a purification "stalls" below 1e-4·20000 = 2 changed entries
    e = torch.tensor(1e-3, dtype=torch.float64)
    assert grow_threshold(e, torch.tensor(1), 20000, 1e-3, 0.4).item() == pytest.approx(1e-3 * 1.001, rel=1e-12)
    assert grow_threshold(e, torch.tensor(2), 20000, 1e-3, 0.4).item() == 1e-3
    assert grow_threshold(torch.tensor(0.4, dtype=torch.float64), torch.tensor(0), 20000, 1e-3, 0.4).item() == 0.4


def test_pop_loss_averages_proden_over_the_views():
    # s = (.5, .5). View 1: z = (0, ln3) → p = (.25, .75), −(.5·ln .25 + .5·ln .75). View 2: z = 0 → −ln .5.
    views = [torch.tensor([[0.0, math.log(3)]]), torch.zeros(1, 2)]
    expected = (-(0.5 * math.log(0.25) + 0.5 * math.log(0.75)) - math.log(0.5)) / 2
    assert abs(pop_loss(views, torch.tensor([[0.5, 0.5]])).item() - expected) < 1e-6


def official_schedule(banks, cands, warmup, window, theta, inc):
    """The official main.py's end-of-epoch purification, transcribed: a ring of the last `window` banks; at epochs
    e ≥ warm-up with e % window == 0 the ring mean, row-normalised, purifies and becomes the bank; θ grows by
    (1 + inc) while θ < 0.4 and fewer than 1e-4·N·K entries changed. `banks[e]` is the bank at the end of epoch e
    (the official bank before its purification); returns the banks after each epoch's purification."""
    n, k = cands.shape
    record = torch.zeros(window, n, k, dtype=torch.float64)
    correction = cands.clone().double()
    out = []
    for epoch, confidence in enumerate(banks):
        confidence = confidence.double()
        record[epoch % window] = confidence
        if epoch >= warmup and epoch % window == 0:
            temp = record.mean(0)
            temp = temp / temp.sum(dim=1, keepdim=True)
            previous = correction.clone()
            correction[temp / temp.max(dim=1, keepdim=True).values < theta] = 0
            confidence = temp * correction
            confidence = confidence / confidence.sum(dim=1, keepdim=True)
            if theta < 0.4 and (previous != correction).sum() < 1e-4 * n * k:
                theta *= 1 + inc
        out.append((confidence, correction.clone(), theta))
    return out


@pytest.mark.parametrize("warmup,window", [(0, 1), (2, 3), (3, 2)])
def test_on_epoch_start_matches_the_official_ring_of_banks(warmup, window):
    """Random banks per epoch (renormalised over the current purified set, as training leaves them), fed to the
    method at each epoch start and to the official loop at each epoch end: same banks, sets and thresholds."""
    ctx = tiny_context(density=0.6)
    hp = {**POP.hparams, "warmup_epochs": warmup, "window": window, "threshold": 0.3, "threshold_growth": 0.5}
    method = POP(ctx, hp)
    gen = torch.Generator().manual_seed(1)
    banks = []
    for epoch in range(9):
        assert method.on_epoch_start(epoch) is False
        if banks:  # the method purified epoch − 1's bank: compare with the official end of epoch − 1
            confidence, correction, theta = official_schedule(banks, ctx.candidates, warmup, window, 0.3, 0.5)[-1]
            assert torch.equal(method.purified, correction.float())
            assert torch.allclose(method.bank.double(), confidence, atol=1e-6)
            assert method.threshold.item() == pytest.approx(theta, rel=1e-12)
        bank = renormalize(torch.rand(12, 4, generator=gen) ** 4, method.purified)  # this epoch's training
        method.bank.copy_(bank)
        banks.append(bank)
    assert method.purified.sum() < ctx.candidates.sum()  # the schedule purified something


def test_step_forwards_base_cls_and_a_second_cls_draw_then_rewrites_the_bank_rows():
    torch.manual_seed(0)
    ctx = tiny_context(density=0.6)
    method = POP(ctx, dict(POP.hparams))
    method.purified[0, :] = 0  # row 0 purified to one candidate: its new bank row is one-hot there
    method.purified[0, 0] = 1
    inputs = []
    method.net.register_forward_hook(lambda module, args, out: inputs.append((args[0], out.detach())))
    before = method.bank.clone()
    index = torch.tensor([0, 1, 2, 3])
    batch = tiny_batch(ctx, index, POP.views)
    out = method.training_step(batch)
    (x0, z0), (x1, z1), (x2, z2) = inputs
    assert torch.equal(x0, batch.views["base"]) and torch.equal(x1, batch.views["cls"])
    assert x2.shape == x1.shape and not torch.equal(x2, x1)  # an independent second cls draw
    assert torch.allclose(out["loss"], pop_loss([z0, z1, z2], before[index]))
    method.after_step(batch)
    assert torch.allclose(method.bank[index], renormalize(torch.softmax(z0, dim=1), method.purified[index]))
    assert torch.equal(method.bank[0], torch.tensor([1.0, 0.0, 0.0, 0.0]))
    assert torch.equal(method.bank[4:], before[4:])


def test_a_smoke_run_purifies_after_the_due_epochs(smoke_cache, tmp_path):
    # W = 1, window 2: purification at the end of epoch 2 only (e ≥ 1 and e even), so the purified sets shrink
    # from epoch 3 on; e = 1 keeps only each row's largest averaged confidence
    hp = {"warmup_epochs": 1, "window": 2, "threshold": 1.0}
    _, run_dir, _ = smoke_run("pop", smoke_cache, tmp_path / "runs", hp=hp, epochs=4)
    records = curves(run_dir)
    sizes = [r["loss/size/purified"] for r in records]
    assert sizes[:3] == pytest.approx([r["mean_size"] for r in records[:3]]) and sizes[2] > 1.5
    assert sizes[3] == pytest.approx(1.0)


def test_resume_is_bit_identical_across_purifications(smoke_cache, tmp_path, monkeypatch):
    # smoke: W = 0, window 1, so purifications run at every epoch start from epoch 1, before and after the stop;
    # e = .5 makes them remove labels
    state, records = assert_resume_is_bit_identical("pop", smoke_cache, tmp_path, monkeypatch,
                                                    hp={"threshold": 0.5}, epochs=4, stop_after=2)
    assert {"purified", "bank", "window_sum", "threshold"} <= set(state)
    assert records[-1]["loss/size/purified"] < records[0]["loss/size/purified"]
