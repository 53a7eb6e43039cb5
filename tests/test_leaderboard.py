"""Leaderboards from fabricated run folders: a golden rendering, missing-cell reasons, paper rows, CSV, CLI."""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
from conftest import smoke_run

from pllbench.cli import main
from pllbench.errors import PllbenchError
from pllbench.leaderboard.build import render
from pllbench.leaderboard.cells import build_boards, paper_numbers
from pllbench.leaderboard.compare import parse_comparisons
from pllbench.leaderboard.results import entangle_values
from pllbench.method import get_method, resolve_hparams
from pllbench.presets import method_overrides, resolve_preset
from pllbench.util import atomic_write_json

GOLDEN = Path(__file__).parent / "golden" / "leaderboard.md"
ENV = {"pllbench": "0.1.0", "torch": "2.4.0", "numpy": "2.0.0", "python": "3.11.7", "platform": "Linux",
       "commit": "abc1234", "device": "cpu", "cpu": "x86_64", "threads": 2}


def fake_run(root: Path, method: str, dataset: str, seed: int, acc: float | None = None, *, epochs: int | None = None,
             failed: str | None = None, epochs_done: int = 0, entangle=None, env=ENV, seconds: float = 36.0,
             peak: float | None = None, peak_scope: str = "run") -> Path:
    cls = get_method(method)
    preset = resolve_preset("smoke", dataset)
    if epochs:
        preset["epochs"] = epochs
    hp = resolve_hparams(cls, dataset, method_overrides(preset, cls.name, cls.family), {})
    config = {"method": method, "hparams": hp, "seed": seed, "dataset": {"name": dataset, "options": {}},
              "preset": preset, "val_fraction": 0.0, "environment": env,
              "candidates": {"hash": f"c{dataset[:3]}{seed}", "teacher": f"t{dataset[:3]}"}}
    run_dir = root / f"{dataset}-smoke" / f"{method}-s{seed}-{len(list(root.glob('*/*')))}"
    atomic_write_json(run_dir / "config.json", config)
    curves = [{"epoch": e, "seconds": seconds / preset["epochs"], "samples_per_sec": 100.0}
              for e in range(preset["epochs"] if acc is not None else epochs_done)]
    (run_dir / "curves.jsonl").write_text("".join(json.dumps(c) + "\n" for c in curves))
    if acc is not None:
        final = {"method": method, "label": cls.run_label(hp), "seed": seed, "test_acc": acc, "seconds": seconds}
        if peak is not None:
            final["throughput"] = {"peak_mem_mb": peak, "peak_mem_scope": peak_scope}
        atomic_write_json(run_dir / "final.json", final)
    if failed:
        atomic_write_json(run_dir / "failed.json", {"error": failed, "type": "NonFiniteLoss"})
    if entangle is not None:
        atomic_write_json(run_dir / "entangle.json", entangle)
    return run_dir


def ent(p01: float, p001: float, cd: float) -> dict:
    top = {"0.1": {"pairs": 10, "subset_acc": p01, "selected": {}}, "0.01": {"pairs": 1, "subset_acc": p001}}
    return {"center_distance": cd, "subsets": {"test/teacher": {"split": "test", "top": top}}}


@pytest.fixture
def fabricated(tmp_path) -> Path:
    root = tmp_path / "runs"
    for seed, (a, b) in enumerate([(0.90, 0.60), (0.92, 0.64), (0.91, 0.62)]):
        fake_run(root, "dirk", "fmnist", seed, a, entangle=ent(0.80 + seed / 100, 0.5, 1.0 + seed / 10))
        fake_run(root, "dirk", "cifar10", seed, b)
    for seed, acc in enumerate([0.93, 0.95]):
        fake_run(root, "cad", "fmnist", seed, acc, entangle=ent(0.85, 0.7, 1.2), peak=812.0)
    fake_run(root, "cad", "fmnist", 2, failed="non-finite loss at epoch 3 (loss)")
    fake_run(root, "cad", "cifar10", 0, epochs_done=1)  # interrupted
    fake_run(root, "proden", "fmnist", 0, 0.88, entangle={"subsets": "not a dict"})  # analysed by a future format
    fake_run(root, "proden", "cifar10", 0, failed="CUDA out of memory | tried 2 GiB")
    fake_run(root, "proden", "fmnist", 1, 0.70, epochs=1, env=dict(ENV, commit="def5678"))  # a variant row
    plots = tmp_path / "out" / "plots" / "fmnist-smoke"
    plots.mkdir(parents=True)
    (plots / "accuracy_vs_top-test-teacher.png").write_bytes(b"\x89PNG")
    return root


def test_golden_rendering(fabricated, tmp_path):
    """The markdown and CSV are those of the hand-written renderer before the pandas/tabulate port (commit c86054b),
    except one line: the goldens were regenerated once after the port for the provenance's new `- Time:` line (wall
    time and compute seconds, issue #13). Regenerate with PLLBENCH_UPDATE_GOLDEN=1 only for a deliberate change."""
    (board,) = build_boards(fabricated)
    markdown, table = render(board, tmp_path / "out")
    if os.environ.get("PLLBENCH_UPDATE_GOLDEN"):
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(markdown)
        GOLDEN.with_suffix(".csv").write_text(table)
    assert markdown == GOLDEN.read_text()
    assert table == GOLDEN.with_suffix(".csv").read_text()


def test_cells_ranks_and_paper_rows(fabricated, tmp_path):
    (board,) = build_boards(fabricated)
    markdown, table = render(board, tmp_path / "out")
    main_table = markdown.split("## Entangled")[0]
    rows = {line.split(" | ")[0].lstrip("| ") + "/" + line.split(" | ")[1]: line
            for line in main_table.splitlines() if line.startswith("| ") and " | " in line}
    # cad with the identity editor is its own row, never the paper's CAD
    assert "cad[identity]/pllbench" in rows and "cad/paper" in rows and "cad/pllbench" not in rows
    cad = rows["cad[identity]/pllbench"]
    assert "**94.00 ± 1.41** (n=2; 1 failed)" in cad and "interrupted (epoch 1/2)" in cad and "812" in cad
    assert "| 92.14 | 93.57 |" in rows["cad/paper"]  # the paper's fmnist, cifar10
    assert "failed: CUDA out of memory \\| tried 2 GiB" in rows["proden/pllbench"]
    assert "proden{epochs=1}/pllbench" in rows and "70.00 (n=1)" in rows["proden{epochs=1}/pllbench"]
    dirk = rows["dirk/pllbench"]
    assert "91.00 ± 1.00 (n=3)" in dirk and "**62.00 ± 2.00** (n=3)" in dirk
    assert "| 1.50 |" in dirk  # rank 2 on fmnist (behind cad[identity]), 1 on cifar10
    assert "| 0.060 |" in dirk  # 6 runs of 36 s = 0.06 device-hours
    assert "`abc1234` (" in markdown and "`def5678` (1)" in markdown
    assert "[accuracy_vs_top-test-teacher.png](plots/fmnist-smoke/accuracy_vs_top-test-teacher.png)" in markdown
    records = list(csv.DictReader(io.StringIO(table)))
    dirk_fmnist = next(r for r in records if r["row"] == "dirk" and r["dataset"] == "fmnist"
                       and r["metric"] == "test_acc")
    assert (float(dirk_fmnist["mean"]), float(dirk_fmnist["std"]), dirk_fmnist["n"], dirk_fmnist["seeds"]) == \
        (91.0, 1.0, "3", "0,1,2")
    assert any(r["source"] == "paper" and r["row"] == "cad" and r["dataset"] == "fmnist" for r in records)
    ent_row = next(r for r in records if r["table"] == "entangled" and r["row"] == "dirk" and
                   r["metric"] == "acc_top_0.1")
    assert float(ent_row["mean"]) == pytest.approx(81.0) and ent_row["n"] == "3"


def test_a_board_of_worker_process_peaks_says_why_it_has_no_peak_column(tmp_path):
    """A run before the per-run reset recorded its worker process's peak: the board shows no peak for it, and says
    why the column is gone instead of dropping it silently."""
    root = tmp_path / "runs"
    for seed in (0, 1):
        fake_run(root, "proden", "fmnist", seed, 0.7, peak=5350.0, peak_scope="process")
    (board,) = build_boards(root)
    markdown, _ = render(board, tmp_path / "out")
    assert "| peak MB |" not in markdown and "5,350" not in markdown
    assert "No peak MB column: these runs recorded only their worker process's peak memory" in markdown
    fake_run(root, "proden", "fmnist", 2, 0.7, peak=640.0)
    (board,) = build_boards(root)
    markdown, _ = render(board, tmp_path / "out")
    assert "| peak MB |" in markdown and "| 640 |" in markdown and "No peak MB column" not in markdown


def test_entangle_values_tolerates_any_shape():
    assert entangle_values(None) == {} and entangle_values({"subsets": []}) == {}
    assert entangle_values({"top": {"1": {"subset_acc": 0.5}, "10": "x"}}) == {("", "1"): 0.5}
    assert entangle_values({"subsets": {"test/t": {"top": {"0.1": {"subset_acc": 0.25}, "0.01": {}}}}}) == \
        {("test/t", "0.1"): 0.25}


def test_paper_csv_matches_the_spec():
    rows = paper_numbers()
    assert len(rows) == 89
    main_rows = {(r["method"], r["dataset"]): float(r["value"]) for r in rows if r["table"] == "main"}
    assert main_rows[("cad", "cifar10")] == 93.57 and main_rows[("cad-cam", "pets")] == 74.56


def test_cli_writes_markdown_and_csv(fabricated, tmp_path, capsys):
    out = tmp_path / "boards"
    assert main(["leaderboard", "--runs", str(fabricated), "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out / "smoke.md")
    assert (out / "smoke.csv").read_text().startswith("table,row,source,dataset,metric")
    assert main(["leaderboard", "--runs", str(fabricated), "--out", str(out), "--datasets", "cifar10"]) == 0
    assert "| method | source | cifar10 | avg rank |" in (out / "smoke-cifar10.md").read_text()
    assert main(["leaderboard", "--runs", str(fabricated), "--out", str(out), "--preset", "quick"]) == 2
    assert "no runs of preset 'quick'" in capsys.readouterr().err


def test_a_board_of_some_methods_covers_only_their_runs(fabricated, tmp_path, capsys):
    """--methods: a board of a subset (e.g. the paper's claims) ranks, counts and times only those methods' runs."""
    out = tmp_path / "claims"
    assert main(["leaderboard", "--runs", str(fabricated), "--out", str(out), "--methods", "dirk,proden"]) == 0
    markdown = (out / "smoke.md").read_text()
    main_table = markdown.split("## Test accuracy")[1].split("## ")[0]
    rows = [line.split(" | ")[0].lstrip("| ") for line in main_table.splitlines() if line.startswith("| ")]
    assert {"dirk", "proden", "proden{epochs=1}"} <= set(rows) and "cad[identity]" not in rows
    assert [line.split(" | ")[0].lstrip("| ") for line in main_table.splitlines() if " | paper | " in line] == [
        "dirk"]  # the paper's rows of the methods on the board, not its whole main table
    assert "- Run folders: 9" in markdown  # 6 of dirk + 3 of proden, of the 13 under the root
    assert main(["leaderboard", "--runs", str(fabricated), "--out", str(out), "--methods", "dirk,nosuch"]) == 2
    assert "unknown method nosuch" in capsys.readouterr().err
    assert main(["leaderboard", "--runs", str(fabricated), "--out", str(out), "--methods", "pico"]) == 2
    assert "no runs of methods pico" in capsys.readouterr().err


def test_a_cad_row_without_instructpix2pix_edits_says_why(tmp_path):
    """`cad` with the paper's editor keeps the label `cad` (not `cad{editor=ip2p}`) and shows its failure; the
    preset's identity control stays a separate `cad[identity]` row."""
    root = tmp_path / "runs"
    fake_run(root, "cad", "fmnist", 0, 0.40)
    for seed in (0, 1, 2):
        run_dir = fake_run(root, "cad", "fmnist", seed, failed=f"no 'ip2p' edits for candidates c{seed}; make them")
        config = json.loads((run_dir / "config.json").read_text())
        config["hparams"]["editor"] = "ip2p"
        atomic_write_json(run_dir / "config.json", config)
    (board,) = build_boards(root)
    assert set(board.rows) == {"cad", "cad[identity]"}
    markdown, _ = render(board, tmp_path / "out")
    (line,) = [row for row in markdown.splitlines() if row.startswith("| cad | pllbench")]
    assert "| seed 0: failed: no 'ip2p' edits for candidates c0; make them (seed 1, 2: failed) |" in line


GOLDEN_MORE = Path(__file__).parent / "golden" / "leaderboard-more.md"


def test_golden_rendering_of_more_states(tmp_path):
    """Written before the pandas port, to check it changes nothing: a dataset with options, a run held by a live
    process, a run with no epoch yet, tied rows, hparam / val / bf16 variants, a second commit and GPU hardware."""
    from pllbench.train.runs import claim

    root = tmp_path / "runs"
    gpu = dict(ENV, gpu="NVIDIA H100", device="cuda")
    for seed, acc in enumerate([0.50, 0.56]):
        for method in ("proden", "rc"):
            run_dir = fake_run(root, method, "synthetic", seed, acc, seconds=7200.0, env=gpu)
            config = json.loads((run_dir / "config.json").read_text())
            config["dataset"]["options"] = {"train": 384, "test": 32}
            atomic_write_json(run_dir / "config.json", config)
    variant = fake_run(root, "dirk", "fmnist", 0, 0.81)
    config = json.loads((variant / "config.json").read_text())
    config.update(val_fraction=0.1, bf16=True)
    config["hparams"]["tau"] = 0.123
    atomic_write_json(variant / "config.json", config)
    fake_run(root, "dirk", "fmnist", 1, epochs_done=0)  # a folder with no epoch yet
    fake_run(root, "dirk", "fmnist", 0, 0.80)
    running = fake_run(root, "cc", "fmnist", 0, epochs_done=1)
    with claim(running, job="j") as (mine, _):
        assert mine
        (board,) = build_boards(root)
        markdown, table = render(board, None)
    if os.environ.get("PLLBENCH_UPDATE_GOLDEN"):
        GOLDEN_MORE.write_text(markdown)
        GOLDEN_MORE.with_suffix(".csv").write_text(table)
    assert markdown == GOLDEN_MORE.read_text()
    assert table == GOLDEN_MORE.with_suffix(".csv").read_text()


# ---------------------------------------------------------------------------------------------------------------
# Issue #13: references (oracle, teacher), gap to the oracle, collapse flags, stability, paired comparisons, wall time

GOLDEN_REFERENCES = Path(__file__).parent / "golden" / "leaderboard-references.md"
TEST_INDEX = 1000 + 2 * np.arange(200)  # the test rows (predictions.parquet `index`)
START = 1_700_000_000.0


def write_predictions(run_dir: Path, y_pred: np.ndarray, y_true: np.ndarray) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    n = len(y_true)
    pq.write_table(pa.table({"tag": ["final"] * n, "epoch": np.ones(n, np.int32), "index": TEST_INDEX,
                             "y_true": y_true.astype(np.int32), "y_pred": y_pred.astype(np.int32)}),
                   run_dir / "predictions.parquet")


def enrich(run_dir: Path, accs: list[float], cos: float | None = None, start: float = 0.0, hours: float = 0.0,
           final_extra: dict | None = None) -> None:
    """Give a fabricated run per-epoch accuracies (and projection diagnostics), an attempts log and final fields."""
    curves = [{"epoch": e, "seconds": 1.0, "test_acc": a} for e, a in enumerate(accs)]
    if cos is not None:
        curves[-1].update({"proj/mean_cos": cos, "proj/eff_rank": 1.0 if cos > 0.99 else 12.5})
    (run_dir / "curves.jsonl").write_text("".join(json.dumps(c) + "\n" for c in curves))
    (run_dir / "attempts.jsonl").write_text(
        json.dumps({"event": "start", "time": START + start, "pid": 1, "host": "h"}) + "\n"
        + json.dumps({"event": "done", "time": START + start + 3600 * hours, "pid": 1, "host": "h"}) + "\n")
    if final_extra:
        final = json.loads((run_dir / "final.json").read_text())
        atomic_write_json(run_dir / "final.json", {**final, **final_extra})


def entangled_artifact(cache: Path) -> str:
    """A cached test-split artifact: top 10% = positions 60..99, top 1% = positions 60, 61, 80, 81."""
    from pllbench.artifacts import load_or_build

    def build(tmp: Path) -> dict:
        np.save(tmp / "rows.npy", np.arange(60, 80))
        np.save(tmp / "cols.npy", np.arange(80, 100))
        np.save(tmp / "scores.npy", np.linspace(1, 0, 20))
        np.save(tmp / "index.npy", TEST_INDEX)
        (tmp / "summary.json").write_text(json.dumps({"top": {"10": {"pairs": 20}, "1": {"pairs": 2}}}))
        return {}

    path, _ = load_or_build(cache, "entangled", {"kind": "entangled", "test": "fabricated"}, build)
    return path.name


@pytest.fixture
def reference_runs(tmp_path) -> Path:
    """fmnist: cad-cam and dirk on seeds 0-4 (cad-cam right where dirk is wrong on 30% of the items), cad-cam-norl on
    one seed, the oracle on two, every final.json with the teacher's accuracy; 2 cad-cam seeds collapsed."""
    root, cache = tmp_path / "runs", tmp_path / "cache"
    digest = entangled_artifact(cache)
    y_true = np.arange(200) % 10
    wrong = {"cad-cam": np.arange(0, 20), "dirk": np.r_[0:20, 60:80, 120:140, 160:180], "cad-cam-norl": np.arange(50),
             "oracle": np.arange(4)}
    for method, seeds in (("cad-cam", range(5)), ("dirk", range(5)), ("cad-cam-norl", [0]), ("oracle", [0, 1])):
        for seed in seeds:
            y_pred = y_true.copy()
            y_pred[wrong[method]] = (y_true[wrong[method]] + 1) % 10
            acc = float((y_pred == y_true).mean())
            top = {p: {"subset_acc": float((y_pred == y_true)[TEST_INDEX.searchsorted(rows)].mean())}
                   for p, rows in (("10", TEST_INDEX[60:100]), ("1", TEST_INDEX[[60, 61, 80, 81]]))}
            entangle = {"center_distance": 1.0, "subsets": {"test/teacher": {"split": "test", "artifact": digest,
                                                                             "top": top}}}
            run_dir = fake_run(root, method, "fmnist", seed, acc, entangle=entangle if method != "oracle" else None)
            write_predictions(run_dir, y_pred, y_true)
            jitter = [0.0, 0.004, -0.004, 0.002, 0.0][seed]
            cos = (0.999 if seed < 2 else 0.40) if method.startswith("cad") else None
            enrich(run_dir, [acc - 0.05, acc + jitter, acc - jitter, acc + jitter, acc], cos=cos, start=600 * seed,
                   hours=0.5, final_extra={"teacher_test_acc": 0.859, **({"reference": True} if method == "oracle"
                                                                         else {})})
    fake_run(root, "oracle", "fmnist", 2, failed="non-finite loss at epoch 1 (loss)")
    return root


def test_references_collapse_stability_comparisons_and_wall_time(reference_runs, tmp_path):
    (board,) = build_boards(reference_runs)
    assert board.references == ["oracle"] and "oracle" not in board.ranked
    markdown, table = render(board, None, cache=tmp_path / "cache")
    if os.environ.get("PLLBENCH_UPDATE_GOLDEN"):
        GOLDEN_REFERENCES.write_text(markdown)
    assert markdown == GOLDEN_REFERENCES.read_text()
    main_table, rest = markdown.split("## References")
    assert "| oracle |" not in main_table  # never ranked
    assert "| method | source | fmnist | avg rank | gap to oracle | last-5 std | device-h |" in main_table
    cad_cam = next(line for line in main_table.splitlines() if line.startswith("| cad-cam | pllbench"))
    assert "**90.00 ± 0.00** (n=5) †collapsed 2/5 |" in cad_cam and "| -8.00 |" in cad_cam  # oracle: 98.00
    assert "†collapsed: the run's projection collapsed" in main_table
    assert "| oracle | pllbench | 98.00 ± 0.00 (n=2; 1 failed) |" in rest
    assert "| teacher | candidates | 85.90 (13 runs) | — |" in rest
    assert "- Time: wall **1 h 10 min**" in markdown  # start at +0 s, last finish at 2400 s + 30 min
    comparisons = markdown.split("## vs reference method")[1]
    assert "| cad-cam vs dirk | fmnist | all | 200 | +30.00 |" in comparisons
    assert "| cad-cam vs dirk | fmnist | top 10% | 40 | +50.00 |" in comparisons
    assert "| cad-cam vs dirk | fmnist | top 1% | 4 | +50.00 |" in comparisons
    row = next(line for line in comparisons.splitlines() if "| all | 200 | +30.00 |" in line)
    # bootstrap p floored at 1/10,000; exact sign-flip p 2/2^5; 5 seeds: nothing flagged
    assert row.endswith("| 0.0001 | 0.0625 | 5 |") and "‡" not in comparisons
    assert "| cad-cam vs cad-cam-norl | fmnist | all | — | fewer than 2 shared seeds (n=1) |" in comparisons
    records = list(csv.DictReader(io.StringIO(table)))
    delta = next(r for r in records if r["table"] == "comparison" and r["metric"] == "delta_top_10")
    assert (float(delta["mean"]), delta["n"], delta["seeds"], delta["note"]) == (50.0, "5", "0,1,2,3,4", "test/teacher")
    assert any(r["table"] == "reference" and r["row"] == "teacher" and float(r["mean"]) == pytest.approx(85.9)
               for r in records)
    gap = next(r for r in records if r["metric"] == "gap_to_oracle" and r["row"] == "dirk")
    assert float(gap["mean"]) == pytest.approx(60 - 98)


def test_subset_comparisons_say_why_they_are_missing(reference_runs, tmp_path):
    markdown, _ = render(build_boards(reference_runs)[0], None, cache=tmp_path / "another-cache")
    comparisons = markdown.split("## vs reference method")[1]
    assert "| cad-cam vs dirk | fmnist | all | 200 | +30.00 |" in comparisons and "top 10%" not in comparisons
    assert "is not in the cache" in comparisons and "not the subset's items" in comparisons
    for path in reference_runs.glob("*/*/entangle.json"):
        path.unlink()
    markdown, _ = render(build_boards(reference_runs)[0], None, comparisons=[("dirk", "oracle")],
                         cache=tmp_path / "cache")
    assert "| dirk vs oracle | fmnist | all | 200 | -38.00 |" in markdown and "no entangle.json" in markdown
    row = next(line for line in markdown.splitlines() if line.startswith("| dirk vs oracle |"))
    assert row.count("‡") == 2 and row.endswith("| 2 |")  # 2 shared seeds: CI and bootstrap p flagged
    assert "‡ fewer than 5 seeds" in markdown
    assert "cad-cam vs" not in markdown


def test_parse_comparisons():
    assert parse_comparisons("cad-cam:dirk, a:b") == [("cad-cam", "dirk"), ("a", "b")]
    with pytest.raises(PllbenchError, match="ROW:REFERENCE"):
        parse_comparisons("cad-cam")


def test_lost_classes_on_constructed_confusions():
    from pllbench.leaderboard.classes import Lost, lost_classes

    # 3 classes, 2 seeds: class 1 is predicted as 2 on (10 + 8) of its (10 + 10) items (recall 0 and 0.2)
    seed_a = np.array([[10, 0, 0], [0, 0, 10], [0, 0, 10]])
    seed_b = np.array([[10, 0, 0], [0, 2, 8], [1, 0, 9]])
    assert lost_classes(np.stack([seed_a, seed_b]), threshold=0.10) == []  # mean recall 0.1 is not below 0.1
    (lost,) = lost_classes(np.stack([seed_a, seed_b]), threshold=0.15)
    assert lost == Lost(cls=1, recall=pytest.approx(0.1), to=2, share=pytest.approx(0.9))
    assert lost_classes(np.zeros((0, 3, 3))) == []


def test_a_row_below_50_names_the_classes_it_lost(tmp_path):
    root = tmp_path / "runs"
    y_true = np.arange(200) % 10
    merged = y_true.copy()
    merged[np.isin(y_true, [0, 2, 4])] = 6  # T-shirt/top, Pullover, Coat → Shirt
    merged[np.isin(y_true, [1, 3])] = 5  # and Trouser, Dress lost to Sandal: 5 of 10 classes left, accuracy 50 %
    merged[y_true == 7] = 7
    spread = y_true.copy()
    half = (np.arange(200) // 10) % 2 == 0
    spread[half] = (y_true[half] + 1) % 10  # every class half wrong, none lost: accuracy 50 %
    for method, y_pred in (("able", merged), ("cel", spread)):
        for seed in (0, 1):
            pred = y_pred.copy()
            if seed == 1 and method == "able":
                pred[y_true == 8] = 9  # below 50 % on average
            if seed == 1 and method == "cel":
                pred[15] = 0  # one more error: below 50 % on average
            run_dir = fake_run(root, method, "fmnist", seed, float((pred == y_true).mean()))
            write_predictions(run_dir, pred, y_true)
    markdown, table = render(build_boards(root)[0], None, comparisons=[])
    able = next(line for line in markdown.splitlines() if line.startswith("| able | pllbench"))
    assert "· below 50: lost T-shirt/top, Pullover, Coat → Shirt; Trouser, Dress → Sandal |" in able
    cel = next(line for line in markdown.splitlines() if line.startswith("| cel | pllbench"))
    assert "· below 50: no class lost |" in cel
    lost = markdown.split("## Lost classes")[1]
    assert "| able | fmnist | 5 | T-shirt/top (0.0 % recall, 100 % → Shirt);" in lost
    assert "Bag" not in lost.split("## ")[0]  # lost on one seed of two: mean recall 0.5
    records = [r for r in csv.DictReader(io.StringIO(table)) if r["table"] == "classes"]
    assert [(r["row"], r["mean"]) for r in records] == [("able", "5")]


def test_rows_with_identical_predictions_are_listed_once(tmp_path):
    """cad-noboth and cad-cam-noboth predict the same items on both seeds they share (twins, though cad-cam-noboth
    has a third seed); proden ties with them on accuracy but not item for item, and cc differs on one seed: neither
    joins the group."""
    root = tmp_path / "runs"
    y_true = np.arange(200) % 10
    for seed in (0, 1):
        twin = y_true.copy()
        twin[seed::7] = (y_true[seed::7] + 1) % 10
        shifted = y_true.copy()
        shifted[(seed + 1)::7] = (y_true[(seed + 1)::7] + 1) % 10  # the same number of errors, other items
        other = twin.copy()
        if seed == 1:
            other[3] = (y_true[3] + 5) % 10
        for method, pred in (("cad-noboth", twin), ("cad-cam-noboth", twin), ("proden", shifted), ("cc", other)):
            run_dir = fake_run(root, method, "fmnist", seed, float((pred == y_true).mean()))
            write_predictions(run_dir, pred, y_true)
    extra = fake_run(root, "cad-cam-noboth", "fmnist", 2, 1.0)  # a seed its twin has not run: not compared
    write_predictions(extra, y_true, y_true)
    markdown, table = render(build_boards(root)[0], None, comparisons=[])
    section = markdown.split("## Identical rows")[1].split("## ")[0]
    assert "| cad-cam-noboth, cad-noboth | fmnist | 0,1 |" in section
    assert "proden" not in section and "cc" not in section
    records = [r for r in csv.DictReader(io.StringIO(table)) if r["table"] == "identical"]
    assert [(r["row"], r["mean"], r["seeds"], r["note"]) for r in records] == [
        ("cad-cam-noboth", "2", "0,1", "cad-cam-noboth; cad-noboth")]
    for run_dir in root.glob("*/cad-noboth-s1-*"):
        pred = np.array(y_true)
        pred[1::7] = (y_true[1::7] + 1) % 10
        pred[[1, 8]] = pred[[8, 1]]  # the same accuracy, two items swapped
        write_predictions(run_dir, pred, y_true)
    assert "## Identical rows" not in render(build_boards(root)[0], None, comparisons=[])[0]


def test_wall_time_leaves_out_the_pause_of_a_grid_resumed_later():
    from pllbench.leaderboard.results import busy_intervals
    from pllbench.leaderboard.tables import union_seconds

    curves = [{"epoch": e, "seconds": 100.0} for e in range(5)]
    # killed after epochs 0-1 (no end event), resumed a day later from epoch 2, done after epochs 2-4
    events = [{"event": "start", "time": 0.0, "from_epoch": 0},
              {"event": "start", "time": 86_400.0, "from_epoch": 2},
              {"event": "done", "time": 86_700.0}]
    assert busy_intervals(events, curves) == [(0.0, 200.0), (86_400.0, 86_700.0)]
    assert busy_intervals([{"event": "start", "time": 5.0, "from_epoch": 3}], curves) == [(5.0, 205.0)]
    assert busy_intervals([], curves) == []
    # two workers: overlapping runs count once, the pause not at all
    assert union_seconds([(0.0, 200.0), (100.0, 300.0), (86_400.0, 86_700.0)]) == 600.0


def test_leaderboard_compare_option(smoke_cache, tmp_path, capsys):
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
