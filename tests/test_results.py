"""results.load_runs on fabricated run folders, and `pllbench export`."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from test_leaderboard import ENV, enrich, ent, fake_run

from pllbench.cli import main
from pllbench.leaderboard.results import COLUMNS, load_runs, parse_top_column, top_column
from pllbench.util import atomic_write_json


@pytest.fixture
def runs(tmp_path):
    root = tmp_path / "runs"
    for seed in (0, 1):
        run_dir = fake_run(root, "cad-cam", "fmnist", seed, 0.9 + seed / 100, entangle=ent(0.8, 0.5, 1.2), peak=900.0)
        enrich(run_dir, [0.80, 0.88, 0.90, 0.89, 0.90, 0.91], cos=0.995 if seed == 0 else 0.5, start=100 * seed,
               hours=0.25, final_extra={"teacher_test_acc": 0.861})
    oracle = fake_run(root, "oracle", "fmnist", 0, 0.97)
    config = json.loads((oracle / "config.json").read_text())
    config["candidates"]["source"] = "oracle"
    atomic_write_json(oracle / "config.json", config)
    fake_run(root, "dirk", "fmnist", 0, failed="non-finite loss at epoch 1 (loss)", epochs_done=1)
    fake_run(root, "dirk", "cifar10", 1, epochs_done=1, env=dict(ENV, gpu="H100", device="cuda", commit="fff"))
    return root


def test_load_runs_one_row_per_folder(runs):
    frame = load_runs(runs)
    assert len(frame) == 5 and list(frame.columns[:len(COLUMNS)]) == COLUMNS
    by = {(r.method, r.dataset, r.seed): r for r in frame.itertuples()}
    cad = by[("cad-cam", "fmnist", 0)]
    assert (cad.state, cad.label, cad.dataset_column, cad.preset, cad.candidate_source) == \
        ("done", "cad-cam", "fmnist", "smoke", "id")
    assert cad.test_acc == pytest.approx(90.0) and cad.teacher_test_acc == pytest.approx(86.1)
    assert cad.last5_mean == pytest.approx(89.6) and cad.last5_std == pytest.approx(pd.Series(
        [88, 90, 89, 90, 91]).std())
    assert cad.collapsed and cad.proj_mean_cos == pytest.approx(0.995) and cad.proj_eff_rank == 1.0
    assert not by[("cad-cam", "fmnist", 1)].collapsed
    assert cad.seconds == 36.0 and cad.peak_mem_mb == 900.0 and cad.center_distance == pytest.approx(1.2)
    assert frame.loc[cad.Index, top_column("test/teacher", "0.1")] == pytest.approx(80.0)
    assert (cad.started_at, cad.attempts) == (1_700_000_000.0, 1) and cad.finished_at > cad.started_at
    assert (cad.commit, cad.torch, cad.hardware) == ("abc1234", "2.4.0", "x86_64, 2 threads")
    assert json.loads(cad.hparams)["ema"] == json.loads((runs / cad.run / "config.json").read_text())["hparams"]["ema"]
    oracle = by[("oracle", "fmnist", 0)]
    assert oracle.reference and oracle.candidate_source == "oracle" and oracle.label == "oracle"
    assert pd.isna(oracle.teacher_test_acc) and not oracle.collapsed and pd.isna(oracle.proj_mean_cos)
    failed = by[("dirk", "fmnist", 0)]
    assert (failed.state, failed.error, failed.epochs_done, failed.epochs) == \
        ("failed", "non-finite loss at epoch 1 (loss)", 1, 2)
    assert pd.isna(failed.test_acc) and failed.seconds == pytest.approx(18.0)  # its logged epoch
    gpu = by[("dirk", "cifar10", 1)]
    assert (gpu.state, gpu.hardware, gpu.commit) == ("interrupted", "H100 (cuda)", "fff")
    assert not frame["reference"].drop(index=oracle.Index).any()


def test_top_columns_round_trip():
    assert parse_top_column(top_column("test/timm:hf-hub:x@y", "0.01")) == ("test/timm:hf-hub:x@y", "0.01")
    assert parse_top_column("test_acc") is None


def test_load_runs_of_an_empty_root(tmp_path):
    frame = load_runs(tmp_path / "nothing")
    assert frame.empty and list(frame.columns) == COLUMNS


def test_projection_from_final_json_when_curves_lack_it(tmp_path):
    run_dir = fake_run(tmp_path / "runs", "dirk", "fmnist", 0, 0.5)
    final = json.loads((run_dir / "final.json").read_text())
    atomic_write_json(run_dir / "final.json", {**final, "projection": {"mean_cos": 0.999, "eff_rank": 1.2,
                                                                       "collapsed": True}})
    (row,) = load_runs(tmp_path / "runs").itertuples()
    assert row.collapsed and row.proj_eff_rank == pytest.approx(1.2)


def test_a_late_escape_is_flagged_collapsed(tmp_path):
    """The frame reads the cosine of every epoch: 0.95 at the end after six epochs above 0.99 is collapsed."""
    run_dir = fake_run(tmp_path / "runs", "dirk", "fmnist", 0, 0.5, epochs=10)
    records = [json.loads(line) for line in (run_dir / "curves.jsonl").read_text().splitlines()]
    cosines = [1.0] * 6 + [0.95] * 4
    (run_dir / "curves.jsonl").write_text("".join(json.dumps({**r, "proj/mean_cos": c, "proj/eff_rank": 2.0}) + "\n"
                                                  for r, c in zip(records, cosines)))
    (row,) = load_runs(tmp_path / "runs").itertuples()
    assert row.collapsed and row.proj_mean_cos == pytest.approx(0.95)


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_export(runs, tmp_path, fmt, capsys):
    out = tmp_path / "out" / f"runs.{fmt}"
    assert main(["export", "--format", fmt, "--out", str(out), "--runs", str(runs)]) == 0
    assert capsys.readouterr().out.strip() == f"{out}: 5 run folders"
    back = pd.read_csv(out) if fmt == "csv" else pd.read_parquet(out)
    expected = load_runs(runs)
    assert list(back.columns) == list(expected.columns) and len(back) == 5
    assert sorted(back["test_acc"].dropna()) == pytest.approx(sorted(expected["test_acc"].dropna()))
    assert back["collapsed"].sum() == 1


def test_export_refuses_bad_input(tmp_path, capsys):
    assert main(["export", "--out", str(tmp_path / "x.csv"), "--runs", str(tmp_path / "empty")]) == 2
    assert "no runs under" in capsys.readouterr().err
    assert main(["export", "--format", "xlsx", "--out", str(tmp_path / "x")]) == 2
    assert "xlsx" in capsys.readouterr().err


def test_the_docs_example_runs(runs):
    from pathlib import Path

    text = (Path(__file__).parents[1] / "docs" / "grids.md").read_text()
    example = text.split("## Results as data")[1].split("```python\n")[1].split("```")[0]
    scope: dict = {}
    exec(example.replace('load_runs("runs")', f"load_runs({str(runs)!r})"), scope)
    assert len(scope["runs"]) == 5 and len(scope["done"]) == 0  # the fixture's runs are smoke runs
