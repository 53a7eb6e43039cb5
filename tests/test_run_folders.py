"""Run-folder integrity: the manifest lists every file with its sha256; a truncated final.json or damaged
predictions make a finished run corrupt (a rerun writes nothing into it); a run finished before manifests existed
is still done."""

from __future__ import annotations

import json

import pytest
from cli_helpers import error_line, finished_world, run_dirs, smoke

from pllbench.cli import main
from pllbench.util import sha256_file

MANIFEST = "manifest.json"


def test_manifest_lists_every_file_with_its_sha256(smoke_cache, tmp_path):
    runs = tmp_path / "runs"
    assert main(smoke(smoke_cache, runs, "--methods", "cc", "--epochs", "1", "--no-progress")) == 0
    (run_dir,) = run_dirs(runs)
    files = json.loads((run_dir / MANIFEST).read_text())["files"]
    assert sorted(files) == ["config.json", "curves.jsonl", "final.json", "model.pt", "predictions.parquet"]
    for name, info in files.items():
        assert info == {"bytes": (run_dir / name).stat().st_size, "sha256": sha256_file(run_dir / name)}, name


def test_truncated_final_json_is_corrupt_and_the_rerun_writes_nothing(capsys, smoke_cache, tmp_path):
    runs, run_dir, argv = finished_world(smoke_cache, tmp_path)
    final = run_dir / "final.json"
    final.write_bytes(final.read_bytes()[:40])
    before = {p.name: p.read_bytes() for p in run_dir.iterdir()}
    capsys.readouterr()
    assert main(["status", "--runs", str(runs)]) == 0
    out = capsys.readouterr().out
    assert "corrupt 1" in out and "interrupted 0" in out and "resumable" not in out
    assert "final.json is not valid JSON" in out and f"delete {run_dir} to rerun it" in out
    error_line(capsys, argv, f"run {run_dir} is corrupt (final.json is not valid JSON",
               f"delete {run_dir} to rerun it")
    assert {p.name: p.read_bytes() for p in run_dir.iterdir()} == before  # no failed.json, no attempt, no lock
    # the leaderboard reads the same verdict: no number from a corrupt run
    assert main(["leaderboard", "--runs", str(runs), "--out", str(tmp_path / "boards")]) == 0
    board = (tmp_path / "boards" / "smoke.md").read_text()
    assert "corrupt" in board and "final.json" in board
    assert before == {p.name: p.read_bytes() for p in run_dir.iterdir()}


@pytest.mark.parametrize("damage", ["zeroed", "truncated"])
def test_damaged_predictions_are_caught_by_the_manifest(capsys, smoke_cache, tmp_path, damage):
    runs, run_dir, argv = finished_world(smoke_cache, tmp_path)
    parquet = run_dir / "predictions.parquet"
    data = bytearray(parquet.read_bytes())
    if damage == "zeroed":
        data[len(data) // 3: len(data) // 3 + 16] = bytes(16)  # inside the column chunks: the size is unchanged
    else:
        del data[len(data) // 2:]
    parquet.write_bytes(bytes(data))
    capsys.readouterr()
    assert main(["status", "--runs", str(runs)]) == 0
    out = capsys.readouterr().out
    why = "fails its sha256" if damage == "zeroed" else "has "
    assert "corrupt 1" in out and f"predictions.parquet {why}" in out, out
    error_line(capsys, argv, "predictions.parquet", f"delete {run_dir} to rerun it")


def test_a_run_finished_before_manifests_existed_is_still_done(capsys, smoke_cache, tmp_path):
    runs, run_dir, argv = finished_world(smoke_cache, tmp_path)
    (run_dir / MANIFEST).unlink()
    capsys.readouterr()
    assert main(argv) == 0 and "finished earlier" in capsys.readouterr().err
    assert main(["status", "--runs", str(runs)]) == 0
    assert "done 1 · running 0 · failed 0 · interrupted 0 · corrupt 0" in capsys.readouterr().out
