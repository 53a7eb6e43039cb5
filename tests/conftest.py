"""Shared fixtures: every test gets a private cache and results root and an empty working directory, so nothing in
the checkout (./runs and ./data after `make demo`, ./leaderboards) reaches a test; the hub is never contacted."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

os.environ["HF_HUB_OFFLINE"] = "1"
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def isolated_dirs(tmp_path, monkeypatch):
    monkeypatch.setenv("PLLBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PLLBENCH_RUNS", str(tmp_path / "runs"))
    monkeypatch.delenv("PLLBENCH_DATA", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")  # apart from the runs and cache folders: "./runs" is not $PLLBENCH_RUNS
    return tmp_path


@pytest.fixture(scope="session")
def smoke_cache(tmp_path_factory):
    """One teacher + candidate cache for the whole session (the smoke teacher trains in about a second)."""
    return tmp_path_factory.mktemp("smoke-cache")


def smoke_run(method: str, cache, runs, seed: int = 0, hp: dict | None = None, dataset: str = "synthetic",
              epochs: int | None = None, val_fraction: float = 0.0, bf16: bool = False):
    """Prepare smoke data and train one method; returns (final, run_dir, prepared)."""
    from pllbench.data.prepare import prepare
    from pllbench.method import get_method, parse_hp_overrides
    from pllbench.train.loop import resolve_run_config, train_run
    from pllbench.train.runconfig import run_id

    device = torch.device("cpu")
    prep = prepare(dataset, "smoke", seed, cache=cache, device=device, echo=lambda *_: None,
                   candidate_source=get_method(method).candidate_source)
    items = [f"{k}={v}" for k, v in (hp or {}).items()]
    config = resolve_run_config(prep, method, seed, parse_hp_overrides(items), epochs, val_fraction, bf16=bf16)
    run_dir = runs / run_id(config)
    return train_run(prep, config, run_dir, device, progress=False), run_dir, prep


def cli_command(args: list[str], cache: Path, **env) -> tuple[list[str], dict]:
    """A `python -m pllbench` subprocess command and its environment: a private cache, one torch thread."""
    return [sys.executable, "-m", "pllbench", *args], dict(os.environ, PLLBENCH_CACHE=str(cache), OMP_NUM_THREADS="1",
                                                           **env)


# ------------------------------------------------------------------------------------------------ method tests

TIMING_KEYS = {"seconds", "samples_per_sec", "train_seconds", "peak_mem_mb"}


def curves(run_dir: Path) -> list[dict]:
    """A run's curves.jsonl without its timing fields (the part a bit-identical rerun must reproduce)."""
    import json

    rows = [json.loads(line) for line in (run_dir / "curves.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in rows]


def tiny_context(num_train: int = 12, num_classes: int = 4, epochs: int = 3, batch_size: int = 4,
                 density: float = 0.5):
    """A MethodContext over random 16-px images and random candidate sets (each row holds its index mod K)."""
    from pllbench.data.registry import DatasetInfo
    from pllbench.method import MethodContext
    from pllbench.views.maker import ViewMaker

    gen = torch.Generator().manual_seed(0)
    cands = (torch.rand(num_train, num_classes, generator=gen) < density).float()
    cands[torch.arange(num_train), torch.arange(num_train) % num_classes] = 1
    info = DatasetInfo("synthetic", num_classes, 3, 16, (0.5,) * 3, (0.25,) * 3, "32")
    images = torch.randint(0, 256, (num_train, 3, 16, 16), generator=gen, dtype=torch.uint8)
    return MethodContext(num_classes=num_classes, num_train=num_train, candidates=cands, backbone="cnn-xs",
                         proj_dim=8, epochs=epochs, steps_per_epoch=num_train // batch_size, batch_size=batch_size,
                         dataset="synthetic", views=ViewMaker(info), train_images=images)


def tiny_batch(ctx, index, views, epoch: int = 0, step: int = 0):
    """A Batch of `ctx`'s rows `index` with the named views drawn from a generator seeded by `step`."""
    from pllbench.method import Batch

    gen = torch.Generator().manual_seed(step)
    images = ctx.train_images[index]
    return Batch({v: ctx.views(images, v, gen) for v in views}, ctx.candidates[index], index, epoch, step, gen)


class _Stopped(Exception):
    pass


def assert_resume_is_bit_identical(method: str, cache, tmp_path, monkeypatch, hp: dict | None = None,
                                   epochs: int = 3, stop_after: int = 1):
    """Train `method` straight, then again stopped right after epoch `stop_after`'s checkpoint and rerun: the rerun
    trains only the epochs after the checkpoint, and weights, buffers, predictions and curves equal the straight
    run's bit for bit. Returns the straight run's final state and curves."""
    from pllbench.train import loop as trainer

    _, straight, _ = smoke_run(method, cache, tmp_path / "straight", hp=hp, epochs=epochs)
    save, train_epoch, trained = trainer.save_checkpoint, trainer.train_epoch, []

    def save_then_stop(run_dir, epoch, state):
        save(run_dir, epoch, state)
        if epoch == stop_after:
            raise _Stopped

    with monkeypatch.context() as patch:
        patch.setattr(trainer, "save_checkpoint", save_then_stop)
        with pytest.raises(_Stopped):
            smoke_run(method, cache, tmp_path / "resumed", hp=hp, epochs=epochs)
    with monkeypatch.context() as patch:  # the rerun must start from the checkpoint, not from scratch
        patch.setattr(trainer, "train_epoch", lambda t, epoch, *rest: trained.append(epoch) or train_epoch(
            t, epoch, *rest))
        _, resumed, _ = smoke_run(method, cache, tmp_path / "resumed", hp=hp, epochs=epochs)
    assert trained == list(range(stop_after, epochs))
    s1, s2 = (torch.load(d / "model.pt", weights_only=True) for d in (straight, resumed))
    assert s1.keys() == s2.keys() and all(torch.equal(s1[k], s2[k]) for k in s1)
    assert (resumed / "predictions.parquet").read_bytes() == (straight / "predictions.parquet").read_bytes()
    assert curves(resumed) == curves(straight)
    return s1, curves(straight)
