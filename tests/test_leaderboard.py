"""Leaderboards from fabricated run folders: a golden rendering, missing-cell reasons, paper rows, CSV, CLI."""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

import pytest

from pllbench.cli import main
from pllbench.leaderboard import build_boards, entangle_values, paper_numbers, render
from pllbench.method import get_method, resolve_hparams
from pllbench.presets import method_overrides, resolve_preset
from pllbench.util import atomic_write_json

GOLDEN = Path(__file__).parent / "golden" / "leaderboard.md"
ENV = {"pllbench": "0.1.0", "torch": "2.4.0", "numpy": "2.0.0", "python": "3.11.7", "platform": "Linux",
       "commit": "abc1234", "device": "cpu", "cpu": "x86_64", "threads": 2}


def fake_run(root: Path, method: str, dataset: str, seed: int, acc: float | None = None, *, epochs: int | None = None,
             failed: str | None = None, epochs_done: int = 0, entangle=None, env=ENV, seconds: float = 36.0,
             peak: float | None = None) -> Path:
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
            final["throughput"] = {"peak_mem_mb": peak}
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
    (board,) = build_boards(fabricated)
    markdown, _ = render(board, tmp_path / "out")
    if os.environ.get("PLLBENCH_UPDATE_GOLDEN"):
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(markdown)
    assert markdown == GOLDEN.read_text()


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
