"""Nothing lost, nothing silently overwritten: a narrower `entangle --top` adds to the runs' results, the leaderboard
writes under the results root unless told otherwise, files and folders get the user's umask, and a missing --runs
folder is one line."""

from __future__ import annotations

import json
import os
import stat

import pytest
from conftest import smoke_run

from pllbench.cli import main
from pllbench.train.runs import claim
from pllbench.util import atomic_write_text

ENTANGLE = ["entangle", "--dataset", "synthetic", "--preset", "smoke", "--device", "cpu", "--tsne-points", "0"]


def test_a_narrower_top_keeps_the_earlier_percentages(smoke_cache, tmp_path, capsys):
    _, run_dir, _ = smoke_run("proden", smoke_cache, tmp_path / "runs")
    base = [*ENTANGLE, "--cache-dir", str(smoke_cache), "--runs", str(tmp_path / "runs")]
    assert main([*base, "--top", "10,1", "--threshold", "0.9"]) == 0
    first = json.loads((run_dir / "entangle.json").read_text())["subsets"]["test/teacher"]
    capsys.readouterr()
    assert main([*base, "--top", "5", "--threshold", "0.5"]) == 0
    captured = capsys.readouterr()
    assert "--top: also 10, 1, which these runs' entangle.json already hold" in captured.err
    assert "--threshold: also 0.9" in captured.err
    assert "| acc@10% (%) | acc@5% (%) | acc@1% (%) |" in captured.out
    entry = json.loads((run_dir / "entangle.json").read_text())["subsets"]["test/teacher"]
    assert set(entry["top"]) == {"10", "5", "1"} and set(entry["threshold_counts"]) == {"0.9", "0.5"}
    for label in ("10", "1"):  # the same subsets, the same numbers
        assert entry["top"][label] == first["top"][label]


def test_the_leaderboard_writes_under_the_results_root_by_default(smoke_cache, tmp_path, monkeypatch, capsys):
    runs = tmp_path / "runs"
    smoke_run("proden", smoke_cache, runs)
    work = tmp_path / "checkout"
    work.mkdir()
    monkeypatch.chdir(work)
    assert main(["leaderboard", "--runs", str(runs)]) == 0
    written = capsys.readouterr().out.split()
    assert written and all(path.startswith(str(runs / "leaderboards")) for path in written), written
    assert not (work / "leaderboards").exists()
    assert main(["leaderboard", "--runs", str(runs), "--out", "boards"]) == 0
    assert (work / "boards").is_dir()


@pytest.mark.parametrize("umask", [0o002, 0o022, 0o077])
def test_files_and_folders_get_the_users_umask(umask, tmp_path):
    old = os.umask(umask)
    try:
        atomic_write_text(tmp_path / "new" / "result.json", "{}")
        with claim(tmp_path / "run", job="j") as (held, _):
            assert held
    finally:
        os.umask(old)
    for path, full in ((tmp_path / "new" / "result.json", 0o666), (tmp_path / "run" / "job.lock", 0o666),
                       (tmp_path / "new", 0o777), (tmp_path / "run", 0o777)):
        assert stat.S_IMODE(path.stat().st_mode) == full & ~umask, path


def test_a_finished_run_is_readable_by_the_group_under_umask_002(smoke_cache, tmp_path):
    old = os.umask(0o002)
    try:
        _, run_dir, _ = smoke_run("cc", smoke_cache, tmp_path / "runs")
    finally:
        os.umask(old)
    modes = {path.name: stat.S_IMODE(path.stat().st_mode) for path in run_dir.iterdir()}
    assert modes and all(mode == 0o664 for mode in modes.values()), modes


def test_entangle_on_a_missing_runs_folder_is_one_line(capsys, tmp_path):
    assert main([*ENTANGLE, "--runs", str(tmp_path / "nowhere")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == [f"error: no runs under {tmp_path / 'nowhere'}: no such folder; pass --runs DIR where "
                     f"`pllbench run` wrote"]
