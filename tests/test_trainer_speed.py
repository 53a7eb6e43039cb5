"""Trainer speed features: no host read per step, throughput records, run ids of the speed options, compile."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import smoke_run
from test_views_batched import no_host_reads

from pllbench.data.prepare import prepare
from pllbench.leaderboard.results import peak_memory
from pllbench.method import MethodContext, get_method, parse_hp_overrides
from pllbench.train.loop import (
    compile_backbones,
    make_batch,
    resolve_run_config,
    throughput_summary,
    train_step,
)
from pllbench.train.machine import peak_memory_mb, reset_peak_memory
from pllbench.train.runconfig import run_id
from pllbench.views.maker import ViewMaker


def _method(name, smoke_cache):
    prep = prepare("synthetic", "smoke", 0, cache=smoke_cache, device=torch.device("cpu"), echo=lambda *_: None)
    maker = ViewMaker(prep.data.info, channels_last=True)
    cands = torch.from_numpy(prep.candidates.matrix).float()
    cfg = prep.preset
    ctx = MethodContext(4, len(cands), cands, cfg["backbone"], cfg["proj_dim"], 2, 4, cfg["batch_size"], "synthetic",
                        maker, prep.data.train.images)
    torch.manual_seed(0)
    config = resolve_run_config(prep, name, 0, parse_hp_overrides([]))
    method = get_method(name)(ctx, config["hparams"]).to(memory_format=torch.channels_last)
    return prep, maker, cands, method


@pytest.mark.parametrize("name", ["dirk", "dirk-ref", "proden"])
def test_a_step_reads_nothing_back(name, smoke_cache):
    """make_batch + train_step (views, forwards, backward, SGD, EMA) without one device→host read."""
    prep, maker, cands, method = _method(name, smoke_cache)
    optimizer = torch.optim.SGD(method.trainable_parameters(), lr=0.01, momentum=0.9)
    with no_host_reads():
        for step in range(2):
            idx = torch.arange(16) + 16 * step
            batch = make_batch(method, maker, prep.data.train.images, cands, idx, 1, step, torch.Generator())
            train_step(method, optimizer, batch, torch.autocast("cpu", enabled=False))


def test_curves_and_final_record_throughput(smoke_cache, tmp_path):
    final, run_dir, _ = smoke_run("proden", smoke_cache, tmp_path / "runs", epochs=2)
    curves = [json.loads(line) for line in (run_dir / "curves.jsonl").read_text().splitlines()]
    for record in curves:
        assert 0 < record["train_seconds"] <= record["seconds"]
        seconds = record["train_seconds"]  # rounded to 1 ms, which moves 64 / seconds by up to 64 · 0.0005 / seconds²
        assert record["samples_per_sec"] == pytest.approx(64 / seconds, abs=0.032 / seconds**2 + 0.1)
        assert record["peak_mem_mb"] > 0 and record["peak_mem_scope"] in ("run", "process")
    speed = final["throughput"]
    assert speed["peak_mem_mb"] == max(r["peak_mem_mb"] for r in curves)
    assert speed["peak_mem_scope"] == ("run" if Path("/proc/self/clear_refs").exists() else "process")
    assert speed["train_seconds"] == pytest.approx(sum(r["train_seconds"] for r in curves), abs=0.02)


def test_run_ids_of_the_speed_options(smoke_cache):
    prep = prepare("synthetic", "smoke", 0, cache=smoke_cache, device=torch.device("cpu"), echo=lambda *_: None)
    plain = resolve_run_config(prep, "dirk", 0, {})
    assert plain["compile"] is False and plain["bf16"] is False
    legacy = {k: v for k, v in plain.items() if k not in ("compile", "bf16")}  # a config from before the options
    assert run_id(plain) == run_id(legacy) == run_id(resolve_run_config(prep, "dirk", 0, {}, compile=True))
    assert run_id(resolve_run_config(prep, "dirk", 0, {}, bf16=True)) != run_id(plain)


@pytest.mark.slow
def test_compiled_backbones_match_eager(smoke_cache):
    _, maker, _, method = _method("dirk", smoke_cache)
    x = maker(torch.randint(0, 256, (8, 3, 16, 16), dtype=torch.uint8), "base", None)
    method.eval()
    eager, keys = method.predict(x), list(method.state_dict())
    compile_backbones(method)
    assert list(method.state_dict()) == keys
    assert torch.allclose(method.predict(x), eager, atol=1e-4)


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux's /proc/self/clear_refs")
def test_peak_memory_restarts_at_each_run_in_one_process():
    """A grid worker trains run after run in one process: a run's peak must not be an earlier run's."""
    cpu = torch.device("cpu")
    big = np.ones(400 * 2**20 // 8)  # 400 MiB, touched: the "expensive earlier run"
    during = peak_memory_mb(cpu)
    del big
    assert reset_peak_memory(cpu) == "run"
    after = peak_memory_mb(cpu)
    assert during - after > 300, (during, after)


def test_a_peak_counts_as_the_runs_own_only_when_every_epoch_says_so():
    """Epochs from before the per-run reset (or a resume across it) make the whole run's peak a process peak, and
    the leaderboard then shows none rather than an earlier run's."""
    epoch = {"seconds": 2.0, "train_seconds": 1.5, "samples_per_sec": 100.0, "peak_mem_mb": 700.0}
    own = throughput_summary([dict(epoch, peak_mem_scope="run")] * 2)
    mixed = throughput_summary([epoch, dict(epoch, peak_mem_scope="run", peak_mem_mb=650.0)])
    assert (own["peak_mem_scope"], mixed["peak_mem_scope"], mixed["peak_mem_mb"]) == ("run", "process", 700.0)
    assert peak_memory({"throughput": own}) == 700.0
    assert peak_memory({"throughput": mixed}) is None and peak_memory({"throughput": {"peak_mem_mb": 5350.0}}) is None
