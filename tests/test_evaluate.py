"""The evaluator's projection diagnostics: effective rank, mean pairwise cosine, the collapse flag over every
epoch, and the chance values of the contrastive losses on a collapsed projection."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import smoke_run

from pllbench.evaluate import collapsed_epochs, effective_rank, mean_pairwise_cosine, projection_collapsed
from pllbench.losses import contrastive_chance, moco_chance, moco_loss, weighted_contrastive_loss
from pllbench.train.runs import read_curves


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


def test_projection_methods_log_diagnostics_and_chance(smoke_cache, tmp_path):
    for method, term in (("dirk-ref", "ref"), ("cad", "align"), ("pico", "cont"), ("able", "con")):
        final, run_dir, _ = smoke_run(method, smoke_cache, tmp_path / "runs")
        last = read_curves(run_dir)[-1]
        assert -1.0 <= last["proj/mean_cos"] <= 1.0 and last["proj/eff_rank"] >= 1.0
        assert f"loss/chance/{term}" in last and last[f"loss/chance/{term}"] > 0
        cosines = [r["proj/mean_cos"] for r in read_curves(run_dir)]
        assert final["projection"]["collapsed"] == projection_collapsed(cosines)
        assert final["projection"]["collapsed_epochs"] == collapsed_epochs(cosines)
    for method in ("dirk", "proden", "cad-norl"):  # no trained projection head: no diagnostics
        final, run_dir, _ = smoke_run(method, smoke_cache, tmp_path / "runs")
        assert "proj/mean_cos" not in read_curves(run_dir)[-1] and "projection" not in final


def test_collapse_reads_every_epoch_not_only_the_last():
    escaped_early = [1.0, 0.996, 0.667, 0.52, 0.44, 0.33, 0.33, 0.20, 0.17, 0.17]  # CAD-CAM seed 0, quick
    escaped_late = [1.0] * 5 + [0.999, 0.995, 0.98, 0.96, 0.95]  # above 0.99 in 7 of 10 epochs, 0.95 at the end
    assert not projection_collapsed(escaped_early) and collapsed_epochs(escaped_early) == 2
    assert projection_collapsed(escaped_late) and collapsed_epochs(escaped_late) == 7
    assert projection_collapsed([0.5, 0.4, 0.995])  # collapsed at the end
    assert projection_collapsed([1.0, 0.5]) and not projection_collapsed([1.0, 0.5, 0.4])  # half the epochs
    assert not projection_collapsed([])
