"""RC kernels on hand-computed values: each expected number is derived in the comment next to it;
the stateful checks build the method on a tiny synthetic context and drive its hooks directly."""

from __future__ import annotations

import torch
from conftest import smoke_run
from kernel_helpers import make_batch, tiny_context

from pllbench.losses import renormalize
from pllbench.methods.rc import RC
from pllbench.train.runs import read_curves


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


def test_rc_has_its_own_target_update(smoke_cache, tmp_path):
    _, rc_dir, _ = smoke_run("rc", smoke_cache, tmp_path / "runs", epochs=3)
    _, proden_dir, _ = smoke_run("proden", smoke_cache, tmp_path / "runs", epochs=3)
    rc, proden = torch.load(rc_dir / "model.pt"), torch.load(proden_dir / "model.pt")
    assert not torch.equal(rc["bank"], proden["bank"])
    assert [r["loss/loss"] for r in read_curves(rc_dir)][1:] != [r["loss/loss"] for r in read_curves(proden_dir)][1:]
