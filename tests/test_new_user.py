"""What a new user types does what they expect (issue 15): defaults, discoverability, input hygiene, one line per
failure, progress, integrity and `status`.

Snapshots (tests/golden/): `pllbench run --help`, `pllbench describe dirk`, a run's header line and one epoch line.
Refresh them with PLLBENCH_UPDATE_GOLDEN=1 after an intended change.
"""

from __future__ import annotations

import errno
import json
import os
import re
import sys
from pathlib import Path

import pytest

from pllbench.cli import main
from pllbench.train.runs import claim, read_attempts
from pllbench.util import sha256_file

GOLDEN = Path(__file__).parent / "golden"
MANIFEST = "manifest.json"
DATA = "synthetic:train=64,test=32"  # 4 steps of 16 per epoch, seconds per run


def smoke(cache: Path, runs: Path, *extra: str) -> list[str]:
    return ["run", "--dataset", DATA, "--preset", "smoke", "--cache-dir", str(cache), "--runs", str(runs), *extra]


def golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("PLLBENCH_UPDATE_GOLDEN"):
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
    assert text == path.read_text(), f"{name} changed; rerun with PLLBENCH_UPDATE_GOLDEN=1 if that is intended"


def error_line(capsys, argv: list[str], *needles: str) -> str:
    """`argv` fails with exit 2 and exactly one `error: ` line (the last) holding every needle, no traceback."""
    code = main(argv)
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert code == 2, (code, captured.err)
    assert err and err[-1].startswith("error: "), err
    assert sum(line.startswith("error") for line in err) == 1 and "Traceback" not in captured.err
    for needle in needles:
        assert needle in err[-1], (needle, err[-1])
    return err[-1]


def run_dirs(runs: Path, method: str = "*") -> list[Path]:
    return sorted(d for d in runs.glob(f"*/{method}-s*") if d.is_dir())


def fsync_refused(*fragments: str):
    """os.fsync failing with ENOSPC for files whose path holds every fragment (the run stops after an epoch)."""
    real = os.fsync

    def fsync(fd):
        if all(fragment in os.readlink(f"/proc/self/fd/{fd}") for fragment in fragments):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd)

    return fsync


# ------------------------------------------------------------------------------------------------ 1. defaults


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


def test_header_estimate_and_epoch_lines(capsys, smoke_cache, tmp_path):
    """One header line before training, one wall-time estimate after the first steps, one line per epoch without a
    TTY (pytest's captured stderr is not one); snapshot of the header and of one epoch line."""
    runs = tmp_path / "runs"
    assert main(smoke(smoke_cache, runs, "--methods", "dirk")) == 0
    err = capsys.readouterr().err
    (run_dir,) = run_dirs(runs)
    headers = [line for line in err.splitlines() if "train /" in line]
    estimates = [line for line in err.splitlines() if "estimated wall time" in line]
    epochs = [line for line in err.splitlines() if ": epoch " in line]
    assert len(headers) == 1 and len(estimates) == 1 and len(epochs) == 2, err
    assert err.index(headers[0]) < err.index(estimates[0]) < err.index(epochs[0])
    assert "warning" not in estimates[0]  # only the paper preset on a CPU warns

    def normal(text: str) -> str:
        text = text.replace(str(runs.resolve()), "<runs>")
        text = re.sub(r"-s0-[0-9a-f]{8}", "-s0-<h8>", text)
        return re.sub(r"\d+\.\d+", "<x>", text)

    golden("run_header_and_epoch.txt", normal(headers[0]) + "\n" + normal(epochs[0]) + "\n")
    assert re.fullmatch(r"synthetic-smoke/dirk-s0-[0-9a-f]{8}: epoch 1/2  test_acc \d+\.\d\d%  "
                        r"loss \d+\.\d{4}  \d+\.\d s", epochs[0])


def test_paper_on_a_cpu_warns_with_the_estimate_and_names_the_cpu_preset():
    from pllbench.train.loop import wall_time_line

    config = {"method": "dirk", "seed": 0, "dataset": {"name": "cifar10", "options": {}},
              "preset": {"name": "paper", "epochs": 500}}
    line = wall_time_line(config, "cpu", 0.5, 20, 781, 500)
    assert line.startswith("warning: ") and "estimated wall time 54:14:10" in line and "--preset quick" in line
    assert not wall_time_line(config, "cuda", 0.5, 20, 781, 500).startswith("warning")


# ----------------------------------------------------------------------------------- 2. CAD's control editor


def test_identity_editor_is_announced_once_and_missing_edits_name_the_command(capsys, smoke_cache, tmp_path):
    runs = tmp_path / "runs"
    assert main(smoke(smoke_cache, runs, "--methods", "cad,dirk", "--epochs", "1")) == 0
    err = capsys.readouterr().err
    notes = [line for line in err.splitlines() if "identity editor" in line]
    assert len(notes) == 1, err
    assert notes[0].startswith("CAD uses the identity editor (a control: no InstructPix2Pix edits)")
    assert "`pllbench augment --dataset" in notes[0] and "cad[identity]" in notes[0]
    # the paper's editor without its edits: one line, naming the command that makes them
    code = main(smoke(smoke_cache, runs, "--methods", "cad", "--epochs", "1", "--hp", "editor=ip2p"))
    captured = capsys.readouterr()
    assert code == 2
    mentions = [line for line in (captured.out + captured.err).splitlines() if "the 'ip2p' edits" in line]
    assert len(mentions) == 1 and mentions[0].startswith("error: ") and "`pllbench augment --dataset" in mentions[0]
    assert "identity editor" not in captured.err


# ------------------------------------------------------------------------------------------ 3. discoverability


def test_describe_dirk_snapshot_and_every_hyperparameter_documented(capsys):
    assert main(["describe", "dirk"]) == 0
    golden("describe_dirk.txt", capsys.readouterr().out)
    from pllbench.method import get_method, method_names

    for name in method_names():
        cls = get_method(name)
        docs = getattr(cls, "hparam_docs", {})
        for key in cls.hparams:
            assert key in docs and all(docs[key]), f"{name}.{key} has no (range, meaning) in hparam_docs"
        assert main(["describe", name, "--preset", "smoke", "--dataset", "synthetic"]) == 0
    capsys.readouterr()
    error_line(capsys, ["describe", "nope"], "unknown method 'nope'")


def test_run_help_snapshot(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    assert main(["run", "--help"]) == 0
    golden("run_help.txt", capsys.readouterr().out)


def test_optimisation_settings_are_settable_and_part_of_the_run_id(capsys, smoke_cache, tmp_path):
    runs = tmp_path / "runs"
    assert main(smoke(smoke_cache, runs, "--methods", "cc", "--epochs", "1", "--no-progress")) == 0
    assert main(smoke(smoke_cache, runs, "--methods", "cc", "--no-progress", "--hp", "lr=0.01", "--hp",
                      "batch_size=8", "--hp", "weight_decay=0", "--hp", "epochs=1")) == 0
    folders = run_dirs(runs, "cc")
    assert len(folders) == 2, folders
    configs = {d: json.loads((d / "config.json").read_text()) for d in folders}
    changed = next(d for d, c in configs.items() if c["preset"]["lr"] == 0.01)
    default = next(d for d in folders if d != changed)
    assert configs[changed]["preset"]["batch_size"] == 8 and configs[changed]["preset"]["weight_decay"] == 0.0
    assert configs[changed]["preset"]["epochs"] == 1 and configs[default]["preset"]["lr"] == 0.05
    assert "1 epoch of 8 steps (batch 8)" in capsys.readouterr().err  # the header: 64 rows in batches of 8
    # status finds the run with the overrides (its signature includes them)
    assert main(["status", "--runs", str(runs), "--methods", "cc", "--dataset", DATA, "--preset", "smoke",
                 "--hp", "lr=0.01", "--hp", "batch_size=8", "--hp", "weight_decay=0", "--epochs", "1"]) == 0
    assert "done 1 ·" in capsys.readouterr().out
    error_line(capsys, smoke(smoke_cache, runs, "--methods", "cc", "--hp", "cc.lr=0.1"),
               "--hp cc.lr", "pass --hp lr=0.1 without a method")
    error_line(capsys, smoke(smoke_cache, runs, "--methods", "cc", "--hp", "lr=-1"), "--hp lr=-1", "> 0")
    error_line(capsys, smoke(smoke_cache, runs, "--methods", "cc", "--hp", "batch_size=2.5"), "an integer >= 1")
    error_line(capsys, smoke(smoke_cache, runs, "--methods", "cc", "--epochs", "2", "--hp", "epochs=3"),
               "disagree")


# -------------------------------------------------------------------------------------------- 4. input hygiene


def test_duplicates_are_merged_with_a_warning(capsys, smoke_cache, tmp_path):
    runs = tmp_path / "runs"
    assert main(smoke(smoke_cache, runs, "--methods", "cc,cc", "--seeds", "0,0", "--epochs", "1",
                      "--no-progress")) == 0
    captured = capsys.readouterr()
    warnings = [line for line in captured.err.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 2 and "method cc" in warnings[0] and "seed 0" in warnings[1], warnings
    assert "1 job " in captured.err and "| cc | synthetic:train=64,test=32 |" in captured.out
    row = next(line for line in captured.out.splitlines() if line.startswith("| cc |"))
    assert row.endswith("| 1 | 0 |"), row  # counted once
    assert [a["event"] for a in read_attempts(run_dirs(runs)[0])] == ["start", "done"]


@pytest.mark.parametrize("argv,needles", [
    (["--seeds", "0,,1"], ["malformed --seeds '0,,1'", "an empty item"]),
    (["--seeds", "0,1,"], ["malformed --seeds '0,1,'", "an empty item"]),
    (["--methods", "dirk,,cc"], ["malformed --methods 'dirk,,cc'", "an empty item"]),
    (["--runs", ""], ["--runs is empty", "pass --runs DIR"]),
    (["--runs", " "], ["--runs is empty"]),
    (["--preset", ""], ["--preset is empty"]),
])
def test_empty_items_are_one_line_errors(capsys, tmp_path, argv, needles):
    base = ["run", "--dataset", DATA, "--preset", "smoke"]
    if "--methods" not in argv:
        base += ["--methods", "cc"]
    if "--runs" not in argv:
        base += ["--runs", str(tmp_path / "r")]
    error_line(capsys, base + argv, *needles)
    assert not (tmp_path / "r").exists() and not Path("runs").exists()


def test_empty_dataset_item_is_an_error(capsys):
    error_line(capsys, ["run", "--methods", "cc", "--datasets", "fmnist,,cifar10"], "an empty item")


def test_non_utf8_grid_file_is_one_line(capsys, tmp_path):
    grid = tmp_path / "grid.toml"
    grid.write_bytes(b'methods = ["cc"]\n\xff\xfe datasets = ["synthetic"]\n')
    error_line(capsys, ["run", "--grid", str(grid)], "grid.toml is not UTF-8 text (byte 0xff at offset 17)")
    error_line(capsys, ["status", "--grid", str(grid)], "is not UTF-8 text")


# ------------------------------------------------------------------------------ 5. one failure, one line


def test_a_failing_job_prints_one_line_then_one_summary(capsys, smoke_cache, tmp_path):
    runs = tmp_path / "runs"
    code = main(smoke(smoke_cache, runs, "--methods", "cad,cad-noca,cc", "--epochs", "1", "--no-progress", "--hp",
                      "editor=ip2p"))
    captured = capsys.readouterr()
    assert code == 2
    assert "the 'ip2p' edits" not in captured.out and "failed:" not in captured.out
    lines = [line for line in captured.err.splitlines() if "the 'ip2p' edits" in line]
    assert len(lines) == 3, lines  # cad, cad-noca, then the summary
    assert sum(f"/{m}-s0-" in line for line in lines[:2] for m in ("cad", "cad-noca")) == 2
    assert lines[2].startswith("error: 2 of 3 jobs failed (first: ") and lines[2] == captured.err.splitlines()[-1]
    assert "| cc |" in captured.out


# ------------------------------------------------------------------------------------------------ 6. progress


def test_progress_bar_shows_accuracy_and_loss_on_a_terminal(capsys, monkeypatch, smoke_cache, tmp_path):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert main(smoke(smoke_cache, tmp_path / "runs", "--methods", "cc")) == 0
    err = capsys.readouterr().err
    assert re.search(r"test_acc \d+\.\d\d% loss \d+\.\d{4}", err), err
    assert not [line for line in err.splitlines() if line.startswith("epoch ")]


def test_resumed_run_says_so_and_the_table_says_what_it_shows(capsys, monkeypatch, smoke_cache, tmp_path):
    runs = tmp_path / "runs"
    argv = smoke(smoke_cache, runs, "--methods", "cc", "--seeds", "0,1", "--no-progress")
    with monkeypatch.context() as mp:  # the disk fills while writing epoch 2's checkpoint of seed 1
        mp.setattr(os, "fsync", fsync_refused("/cc-s1-", ".checkpoint-0002.pt."))
        assert main(argv) == 2
    capsys.readouterr()
    assert main(argv) == 0
    captured = capsys.readouterr()
    resumed = [line for line in captured.err.splitlines() if "resuming from epoch" in line]
    assert len(resumed) == 1 and "/cc-s1-" in resumed[0] and "resuming from epoch 1 (1/2 epochs done" in resumed[0]
    out = captured.out.splitlines()
    assert out[0] == "final-epoch test accuracy (%) on 32 test images; mean ± sample std over seeds", out
    assert re.search(r"\| cc \| synthetic:train=64,test=32 \| \d+\.\d\d ± \d+\.\d\d \| 2 \| 0,1 \|", out[-1])
    assert main(smoke(smoke_cache, runs, "--methods", "cc", "--seeds", "1", "--no-progress")) == 0
    out = capsys.readouterr().out
    assert "±" not in out and "final-epoch test accuracy (%) on 32 test images" in out


# ----------------------------------------------------------------------------------------------- 7. integrity


def test_manifest_lists_every_file_with_its_sha256(smoke_cache, tmp_path):
    runs = tmp_path / "runs"
    assert main(smoke(smoke_cache, runs, "--methods", "cc", "--epochs", "1", "--no-progress")) == 0
    (run_dir,) = run_dirs(runs)
    files = json.loads((run_dir / MANIFEST).read_text())["files"]
    assert sorted(files) == ["config.json", "curves.jsonl", "final.json", "model.pt", "predictions.parquet"]
    for name, info in files.items():
        assert info == {"bytes": (run_dir / name).stat().st_size, "sha256": sha256_file(run_dir / name)}, name


def _finished_world(smoke_cache, tmp_path) -> tuple[Path, Path, list[str]]:
    runs = tmp_path / "runs"
    argv = smoke(smoke_cache, runs, "--methods", "cc", "--epochs", "1", "--no-progress")
    assert main(argv) == 0
    (run_dir,) = run_dirs(runs)
    return runs, run_dir, argv


def test_truncated_final_json_is_corrupt_and_the_rerun_writes_nothing(capsys, smoke_cache, tmp_path):
    runs, run_dir, argv = _finished_world(smoke_cache, tmp_path)
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
    runs, run_dir, argv = _finished_world(smoke_cache, tmp_path)
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


def test_entangle_on_unreadable_predictions_fails_and_removes_the_stale_analysis(capsys, smoke_cache, tmp_path):
    runs, run_dir, _ = _finished_world(smoke_cache, tmp_path)
    entangle = ["entangle", "--dataset", DATA, "--preset", "smoke", "--top", "10", "--tsne-points", "0", "--device",
                "cpu", "--cache-dir", str(smoke_cache), "--runs", str(runs)]
    assert main(entangle) == 0
    assert (run_dir / "entangle.json").is_file()
    parquet = run_dir / "predictions.parquet"
    parquet.write_bytes(parquet.read_bytes()[:100])
    capsys.readouterr()
    assert main(entangle) == 2
    err = capsys.readouterr().err
    assert "predictions.parquet" in err and "its old entangle.json was removed" in err
    assert err.strip().splitlines()[-1].startswith("error: 1 finished run could not be scored")
    assert not (run_dir / "entangle.json").exists()


def test_a_run_finished_before_manifests_existed_is_still_done(capsys, smoke_cache, tmp_path):
    runs, run_dir, argv = _finished_world(smoke_cache, tmp_path)
    (run_dir / MANIFEST).unlink()
    capsys.readouterr()
    assert main(argv) == 0 and "finished earlier" in capsys.readouterr().err
    assert main(["status", "--runs", str(runs)]) == 0
    assert "done 1 · running 0 · failed 0 · interrupted 0 · corrupt 0" in capsys.readouterr().out


# ------------------------------------------------------------------------------------------------- 8. status


def test_status_counts_every_state_and_failed_jobs_are_not_pending(capsys, monkeypatch, smoke_cache, tmp_path):
    """cc on DATA: seed 0 done, 1 corrupt, 2 interrupted, 3 failed, 4 running; cifar10: seed 0 failed before
    training (no data), seeds 1-4 pending."""
    runs = tmp_path / "runs"

    def one(seed: int, *extra: str) -> int:
        return main(smoke(smoke_cache, runs, "--methods", "cc", "--seeds", str(seed), "--no-progress", *extra))

    assert one(0) == 0 and one(1) == 0
    final = next(runs.glob("*/cc-s1-*/final.json"))
    final.write_text(final.read_text()[:20])
    with monkeypatch.context() as mp:
        mp.setattr(os, "fsync", fsync_refused(".checkpoint-0002.pt."))
        for seed in (2, 3, 4):
            assert one(seed) == 2
    for seed in (2, 4):
        (next(runs.glob(f"*/cc-s{seed}-*")) / "failed.json").unlink()  # killed rather than failed
    assert main(["run", "--methods", "cc", "--dataset", "cifar10", "--preset", "smoke", "--runs", str(runs),
                 "--cache-dir", str(smoke_cache), "--data-root", str(tmp_path / "no-data")]) == 2
    capsys.readouterr()
    status = ["status", "--runs", str(runs), "--methods", "cc", "--datasets", f"{DATA},cifar10", "--preset", "smoke",
              "--seeds", "0,1,2,3,4"]
    with claim(next(runs.glob("*/cc-s4-*")), job="test") as (held, _):
        assert held
        assert main(status) == 0
    out = capsys.readouterr().out
    assert "done 1 · running 1 · failed 2 · interrupted 1 · corrupt 1 · pending 4 · 10 jobs" in out, out
    assert "cifar10/cc/s0 (before training): dataset 'cifar10' not found" in out
    # ETA: 1 epoch left of the interrupted run, 1 of the running one, 2 of each pending job; none of failed ones
    assert "for 10 epochs left" in out, out
    assert len(list((runs / "_jobs").glob("*.failed.json"))) == 1
