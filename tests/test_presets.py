"""Presets: the calibrated quick learner, views and per-step cosine schedule (checked at smoke size), and the demo
preset as quick with ten epochs."""

from __future__ import annotations

import json
import math

import pytest
from cli_helpers import error_line
from conftest import smoke_run

from pllbench import presets
from pllbench.train.loop import lr_at
from pllbench.train.runs import read_curves


def test_calibrated_quick_learner_view_and_schedule_at_smoke_size(smoke_cache, tmp_path, monkeypatch):
    """The quick preset's own learner, cls view and per-step schedule, on the smoke data and epochs."""
    quick = presets.PRESETS["quick"]
    smoke = dict(presets.PRESETS["smoke"], **{k: quick[k] for k in ("backbone", "cls_cutout", "schedule")})
    monkeypatch.setitem(presets.PRESETS, "smoke", smoke)
    final, run_dir, _ = smoke_run("dirk", smoke_cache, tmp_path / "runs")
    config = json.loads((run_dir / "config.json").read_text())
    assert config["preset"]["backbone"] == quick["backbone"] and config["preset"]["schedule"] == "step"
    lrs = [r["lr"] for r in read_curves(run_dir)]
    assert lrs[0] == pytest.approx(smoke["lr"]) and lrs[1] < lrs[0]
    assert 0.0 <= final["test_acc"] <= 1.0


def test_per_step_cosine_schedule():
    cfg = {"lr": 0.1, "eta_min": 0.0, "epochs": 2, "schedule": "step"}
    assert lr_at(cfg, 0, 0, 10) == pytest.approx(0.1)
    assert lr_at(cfg, 1, 0, 10) == pytest.approx(0.05)
    assert lr_at(cfg, 0, 5, 10) == pytest.approx(0.05 * (1 + math.cos(math.pi / 4)))
    assert lr_at(dict(cfg, schedule="epoch"), 0, 5, 10) == pytest.approx(0.1)


def test_demo_preset_is_quick_with_ten_epochs():
    """`make demo`'s preset: the calibration's d20k-e10 (docs/calibration.md), quick's teacher and overrides."""
    demo, quick = presets.resolve_preset("demo", "fmnist"), presets.resolve_preset("quick", "fmnist")
    assert demo["epochs"] == 10 and quick["epochs"] == 15
    assert {k: v for k, v in demo.items() if k not in ("epochs", "name")} == \
        {k: v for k, v in quick.items() if k not in ("epochs", "name")}


def test_run_without_preset_uses_paper_and_a_preset_refuses_foreign_datasets(capsys, tmp_path):
    """No --preset: the paper preset, which has no entry for synthetic data (old: quick ran it silently)."""
    error_line(capsys, ["run", "--methods", "dirk", "--dataset", "synthetic", "--runs", str(tmp_path / "r")],
               "preset 'paper' is not made for dataset 'synthetic'", "--preset smoke")
    assert not (tmp_path / "r").exists()
    # quick is the Fashion-MNIST CPU preset: cifar10 under it is one line naming the preset that fits
    error_line(capsys, ["run", "--methods", "dirk", "--dataset", "cifar10", "--preset", "quick", "--data-root",
                        str(tmp_path)], "preset 'quick' is not made for dataset 'cifar10'", "--preset paper")
    error_line(capsys, ["candidates", "--dataset", "synthetic"], "preset 'paper' is not made for dataset")
    from pllbench.grid.jobs import GridSpec
    from pllbench.presets import preset_datasets, resolve_preset

    assert GridSpec(["dirk"], ["fmnist"], [0]).preset == "paper"
    assert preset_datasets("quick") == ["fmnist"] and "datasets" not in resolve_preset("quick", "fmnist")
    assert preset_datasets("paper") == ["fmnist", "cifar10", "cifar100", "flowers", "pets"]
