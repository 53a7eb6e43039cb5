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
