"""Issue #13: the oracle candidate source, collapse diagnostics, chance values, RC's own update, the calibrated
quick preset's learner/view/schedule at smoke size."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from conftest import smoke_run

from pllbench import presets
from pllbench.evaluate import collapsed_epochs, effective_rank, mean_pairwise_cosine, projection_collapsed
from pllbench.losses import contrastive_chance, moco_chance, moco_loss, weighted_contrastive_loss
from pllbench.train.loop import lr_at


def curves(run_dir):
    return [json.loads(line) for line in (run_dir / "curves.jsonl").read_text().splitlines()]


def test_collapse_metrics_on_constructed_features():
    same = torch.randn(1, 8).repeat(50, 1)
    assert mean_pairwise_cosine(same) == pytest.approx(1.0)
    assert effective_rank(same) == pytest.approx(1.0, abs=1e-6)
    orthogonal = torch.eye(8) * 3.0
    assert mean_pairwise_cosine(orthogonal) == pytest.approx(0.0, abs=1e-12)
    assert effective_rank(orthogonal) == pytest.approx(8.0)
    antipodal = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])
    assert mean_pairwise_cosine(antipodal) == pytest.approx(-1.0)


def test_chance_values_are_the_losses_of_a_collapsed_projection():
    q = torch.nn.functional.normalize(torch.ones(4, 6), dim=1)  # every projection identical
    queue = q[:1].repeat(10, 1)
    assert moco_loss(q, q, queue, 0.07) == pytest.approx(float(moco_chance(10)), rel=1e-5)
    assert float(moco_chance(10)) == pytest.approx(math.log(11))
    feats = torch.cat([q, q, queue])  # 18 keys, anchors are the first 4
    mask = torch.ones(4, 18)
    mask[torch.arange(4), torch.arange(4)] = 0
    wcl = weighted_contrastive_loss(q, feats, mask, torch.rand(18, 3), tau=0.12, tau_d=0.1)
    assert float(wcl) == pytest.approx(float(contrastive_chance(18, 0.12)), rel=1e-5)


def test_oracle_source_gives_the_true_labels_as_singletons(smoke_cache, tmp_path):
    final, run_dir, prep = smoke_run("oracle", smoke_cache, tmp_path / "runs")
    matrix = prep.candidates.matrix
    assert (matrix.sum(axis=1) == 1).all()
    assert np.array_equal(matrix.argmax(axis=1), prep.data.train.labels.numpy())
    config = json.loads((run_dir / "config.json").read_text())
    assert config["candidates"]["source"] == "oracle" and config["candidates"]["mean_size"] == 1.0
    assert final["reference"] is True and final["label"] == "oracle"
    assert 0.0 <= final["teacher_test_acc"] <= 1.0
    _, id_dir, id_prep = smoke_run("proden", smoke_cache, tmp_path / "runs")
    assert id_prep.candidates.hash != prep.candidates.hash  # a separate artifact, never the ID candidates
    assert "source" not in json.loads((id_dir / "config.json").read_text())["candidates"]


def test_projection_methods_log_diagnostics_and_chance(smoke_cache, tmp_path):
    for method, term in (("dirk-ref", "ref"), ("cad", "align"), ("pico", "cont"), ("able", "con")):
        final, run_dir, _ = smoke_run(method, smoke_cache, tmp_path / "runs")
        last = curves(run_dir)[-1]
        assert -1.0 <= last["proj/mean_cos"] <= 1.0 and last["proj/eff_rank"] >= 1.0
        assert f"loss/chance/{term}" in last and last[f"loss/chance/{term}"] > 0
        cosines = [r["proj/mean_cos"] for r in curves(run_dir)]
        assert final["projection"]["collapsed"] == projection_collapsed(cosines)
        assert final["projection"]["collapsed_epochs"] == collapsed_epochs(cosines)
    for method in ("dirk", "proden", "cad-norl"):  # no trained projection head: no diagnostics
        final, run_dir, _ = smoke_run(method, smoke_cache, tmp_path / "runs")
        assert "proj/mean_cos" not in curves(run_dir)[-1] and "projection" not in final


def test_collapse_reads_every_epoch_not_only_the_last():
    escaped_early = [1.0, 0.996, 0.667, 0.52, 0.44, 0.33, 0.33, 0.20, 0.17, 0.17]  # CAD-CAM seed 0, quick
    escaped_late = [1.0] * 5 + [0.999, 0.995, 0.98, 0.96, 0.95]  # above 0.99 in 7 of 10 epochs, 0.95 at the end
    assert not projection_collapsed(escaped_early) and collapsed_epochs(escaped_early) == 2
    assert projection_collapsed(escaped_late) and collapsed_epochs(escaped_late) == 7
    assert projection_collapsed([0.5, 0.4, 0.995])  # collapsed at the end
    assert projection_collapsed([1.0, 0.5]) and not projection_collapsed([1.0, 0.5, 0.4])  # half the epochs
    assert not projection_collapsed([])


def test_rc_has_its_own_target_update(smoke_cache, tmp_path):
    _, rc_dir, _ = smoke_run("rc", smoke_cache, tmp_path / "runs", epochs=3)
    _, proden_dir, _ = smoke_run("proden", smoke_cache, tmp_path / "runs", epochs=3)
    rc, proden = torch.load(rc_dir / "model.pt"), torch.load(proden_dir / "model.pt")
    assert not torch.equal(rc["bank"], proden["bank"])
    assert [r["loss/loss"] for r in curves(rc_dir)][1:] != [r["loss/loss"] for r in curves(proden_dir)][1:]


def test_calibrated_quick_learner_view_and_schedule_at_smoke_size(smoke_cache, tmp_path, monkeypatch):
    """The quick preset's own learner, cls view and per-step schedule, on the smoke data and epochs."""
    quick = presets.PRESETS["quick"]
    smoke = dict(presets.PRESETS["smoke"], **{k: quick[k] for k in ("backbone", "cls_cutout", "schedule")})
    monkeypatch.setitem(presets.PRESETS, "smoke", smoke)
    final, run_dir, _ = smoke_run("dirk", smoke_cache, tmp_path / "runs")
    config = json.loads((run_dir / "config.json").read_text())
    assert config["preset"]["backbone"] == quick["backbone"] and config["preset"]["schedule"] == "step"
    lrs = [r["lr"] for r in curves(run_dir)]
    assert lrs[0] == pytest.approx(smoke["lr"]) and lrs[1] < lrs[0]
    assert 0.0 <= final["test_acc"] <= 1.0


def test_per_step_cosine_schedule():
    cfg = {"lr": 0.1, "eta_min": 0.0, "epochs": 2, "schedule": "step"}
    assert lr_at(cfg, 0, 0, 10) == pytest.approx(0.1)
    assert lr_at(cfg, 1, 0, 10) == pytest.approx(0.05)
    assert lr_at(cfg, 0, 5, 10) == pytest.approx(0.05 * (1 + math.cos(math.pi / 4)))
    assert lr_at(dict(cfg, schedule="epoch"), 0, 5, 10) == pytest.approx(0.1)


def test_status_flags_a_collapsed_projection(smoke_cache, tmp_path, capsys):
    from pllbench.cli import main

    runs = tmp_path / "runs"
    final, run_dir, _ = smoke_run("cad", smoke_cache, runs)
    assert final["projection"]["collapsed"]  # two smoke epochs leave the head as initialised (cosine ≈ 1)
    capsys.readouterr()
    assert main(["status", "--runs", str(runs)]) == 0
    out = capsys.readouterr().out
    flagged = [line for line in out.splitlines() if line.strip().startswith("collapsed")]
    assert len(flagged) == int(final["projection"]["collapsed"])
    if flagged:
        assert run_dir.name in flagged[0] and "mean cosine" in flagged[0]


def test_leaderboard_compare_option(smoke_cache, tmp_path, capsys):
    from pllbench.cli import main

    runs = tmp_path / "runs"
    assert main(["leaderboard", "--runs", str(runs), "--compare", "cad-cam"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: malformed comparison 'cad-cam'")
    for seed in (0, 1):
        smoke_run("proden", smoke_cache, runs, seed=seed)
        smoke_run("cc", smoke_cache, runs, seed=seed)
    out = tmp_path / "boards"
    assert main(["leaderboard", "--runs", str(runs), "--out", str(out), "--compare", "proden:cc",
                 "--cache-dir", str(smoke_cache)]) == 0
    board = next(out.glob("*.md")).read_text()
    assert "| proden vs cc |" in board


def test_demo_preset_is_quick_with_ten_epochs():
    """`make demo`'s preset: the calibration's d20k-e10 (docs/calibration.md), quick's teacher and overrides."""
    demo, quick = presets.resolve_preset("demo", "fmnist"), presets.resolve_preset("quick", "fmnist")
    assert demo["epochs"] == 10 and quick["epochs"] == 15
    assert {k: v for k, v in demo.items() if k not in ("epochs", "name")} == \
        {k: v for k, v in quick.items() if k not in ("epochs", "name")}
