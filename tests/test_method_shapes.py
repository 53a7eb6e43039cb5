"""Every registered method trains one smoke epoch on synthetic data shaped like each of the five datasets.

Shapes: channels, side (28 gray, 32, or 256 stored → 224 input), class count, and the real dataset's candidate rate
(synthetic's own 0.2 would give ~21 candidates at K = 100). Train sets are tiny (N may be < K). Every stage of a
method runs inside the one epoch: warm-ups (`warmup_epochs`) and prototype starts (`prot_start`) are set to 0 where
a method declares them, and queues hold a batch of CAD edits at K ≈ 100 (`queue_size` 2048, the quick preset's).
"""

from __future__ import annotations

import json
import math

import pytest
from conftest import smoke_run

from pllbench.data.registry import dataset_class
from pllbench.method import get_method, method_names

DATASETS = {  # name: (synthetic spec, the dataset whose candidate rate applies, 224-px input)
    "fmnist-like": ("synthetic:channels=1,size=28,classes=10,train=40,test=20", "fmnist", False),
    "cifar10-like": ("synthetic:size=32,classes=10,train=40,test=20", "cifar10", False),
    "cifar100-like": ("synthetic:size=32,classes=100,train=32,test=20", "cifar100", False),
    "flowers-like": ("synthetic:size=256,classes=102,train=16,test=8", "flowers", True),
    "pets-like": ("synthetic:size=256,classes=37,train=16,test=8", "pets", True),
}


def forwards_edits(method: str) -> bool:
    """CAD-family methods with the alignment term forward one edit per (instance, candidate): B·|S| more images."""
    cls = get_method(method)
    return cls.family == "cad" and cls.hparams.get("align_weight", 0) > 0


def cases():
    for method in method_names():
        for name, (_, _, large) in DATASETS.items():
            # > 10 s on 2 cores: ~100 edits a step through three 224-px views each.
            marks = [pytest.mark.slow] if large and forwards_edits(method) else []
            yield pytest.param(method, name, marks=marks, id=f"{method}-{name}")


def every_stage_overrides(method: str) -> dict:
    declared = get_method(method).hparams
    hp = {key: 0 for key in ("warmup_epochs", "prot_start") if key in declared}
    if "queue_size" in declared:
        hp["queue_size"] = 2048
    return hp


@pytest.mark.parametrize("method,shape", list(cases()))
def test_one_epoch_on_dataset_shape(method, shape, smoke_cache, tmp_path, monkeypatch):
    spec, like, _ = DATASETS[shape]
    monkeypatch.setattr(dataset_class("synthetic"), "rate", dataset_class(like).rate)
    final, run_dir, _ = smoke_run(method, smoke_cache, tmp_path / "runs", hp=every_stage_overrides(method),
                                  dataset=spec, epochs=1)
    assert 0.0 <= final["test_acc"] <= 1.0
    (record,) = [json.loads(line) for line in (run_dir / "curves.jsonl").read_text().splitlines()]
    losses = {k: v for k, v in record.items() if k.startswith("loss/")}
    assert "loss/loss" in losses and all(math.isfinite(v) for v in losses.values())


@pytest.mark.parametrize("method", method_names())
def test_one_bf16_epoch_on_the_cpu(method, smoke_cache, tmp_path, monkeypatch):
    """`--bf16` autocasts on the CPU too (faster on a core with native bfloat16, benchmarks/cpu_variants.py): every
    method's step and evaluation run under it with finite losses."""
    import torch

    from pllbench.train import loop as trainer

    seen, step = [], trainer.train_step

    def recording_step(method_, optimizer, batch, autocast):
        with autocast:
            seen.append(torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16)
        return step(method_, optimizer, batch, autocast)

    monkeypatch.setattr(trainer, "train_step", recording_step)
    spec, _, _ = DATASETS["fmnist-like"]
    final, run_dir, _ = smoke_run(method, smoke_cache, tmp_path / "runs", hp=every_stage_overrides(method),
                                  dataset=spec, epochs=1, bf16=True)
    assert json.loads((run_dir / "config.json").read_text())["bf16"] is True and seen and all(seen)
    assert 0.0 <= final["test_acc"] <= 1.0
    (record,) = [json.loads(line) for line in (run_dir / "curves.jsonl").read_text().splitlines()]
    assert all(math.isfinite(v) for k, v in record.items() if k.startswith("loss/"))
