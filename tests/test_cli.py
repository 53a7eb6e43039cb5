"""The CLI: bad input gives one line naming the problem and a non-zero exit, never a traceback."""

from __future__ import annotations

import json

import pytest
from cli_helpers import error_line, golden

from pllbench.cli import main

SMOKE = ["run", "--dataset", "synthetic", "--preset", "smoke", "--no-progress"]


def one_line_error(capsys, argv, *needles):
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0
    assert err and err[-1].startswith("error: "), err
    assert sum(line.startswith("error") for line in err) == 1 and not any("Traceback" in line for line in err)
    for needle in needles:
        assert needle in err[-1]
    return err[-1]


@pytest.mark.parametrize("argv,needles", [
    (["run", "--methods", "nope", "--dataset", "synthetic"], ["unknown method", "dirk"]),
    (["run", "--methods", "dirk", "--dataset", "mnist"], ["unknown dataset", "fmnist"]),
    (["run", "--methods", "dirk", "--dataset", "synthetic", "--preset", "huge"], ["unknown preset", "quick"]),
    (["run", "--methods", "dirk", "--dataset", "synthetic", "--hp", "tau"], ["malformed --hp"]),
    (["run", "--methods", "dirk", "--dataset", "synthetic", "--hp", "nosuch=1"], ["no requested method"]),
    (["run", "--methods", "dirk", "--dataset", "synthetic", "--preset", "smoke", "--hp", "dirk.tau=abc"],
     ["expected a value like"]),
    (["run", "--methods", "dirk", "--dataset", "synthetic", "--preset", "smoke", "--hp", "dirk.nosuch=1"],
     ["has no hyperparameter"]),
    (["run", "--methods", "dirk", "--dataset", "synthetic", "--seeds", "0,x"], ["malformed --seeds"]),
    (["run", "--methods", "dirk", "--dataset", "synthetic:size=abc"], ["bad options"]),
    (["run", "--methods", "dirk"], ["--dataset"]),
])
def test_bad_arguments(capsys, argv, needles):
    one_line_error(capsys, argv, *needles)


@pytest.mark.parametrize("dataset", ["cifar10", "cifar100", "flowers", "pets"])
def test_missing_dataset_names_the_flag(capsys, tmp_path, dataset):
    one_line_error(capsys, ["run", "--methods", "proden", "--dataset", dataset, "--data-root", str(tmp_path)],
                   "not found", "--download")


def test_results_root_that_is_a_file(capsys, tmp_path):
    target = tmp_path / "file"
    target.write_text("x")
    one_line_error(capsys, SMOKE + ["--methods", "proden", "--runs", str(target)], "is a file")


def test_corrupted_candidate_artifact(capsys, tmp_path):
    assert main(SMOKE + ["--methods", "proden", "--runs", str(tmp_path / "r1")]) == 0
    capsys.readouterr()
    artifact = next((tmp_path / "cache" / "candidates").glob("*/candidates.npy"))
    data = bytearray(artifact.read_bytes())
    data[-1] ^= 0xFF
    artifact.write_bytes(bytes(data))
    one_line_error(capsys, SMOKE + ["--methods", "proden", "--runs", str(tmp_path / "r2")], "corrupted",
                   "candidates.npy")


def test_corrupted_checkpoint(capsys, tmp_path):
    runs = tmp_path / "runs"
    assert main(SMOKE + ["--methods", "proden", "--runs", str(runs), "--epochs", "1"]) == 0
    run_dir = next(runs.glob("*/*"))
    # Pretend the run stopped after epoch 1 of 2 with a damaged checkpoint.
    (run_dir / "final.json").unlink()
    (run_dir / "checkpoint-0001.pt").write_bytes(b"garbage")
    (run_dir / "progress.json").write_text(json.dumps({"epoch": 1, "checkpoint": "checkpoint-0001.pt",
                                                       "sha256": "0" * 64}))
    capsys.readouterr()
    one_line_error(capsys, SMOKE + ["--methods", "proden", "--runs", str(runs), "--epochs", "1"], "corrupted")


def test_run_prints_a_table_and_skips_finished_runs(capsys, tmp_path):
    argv = SMOKE + ["--methods", "proden,dirk", "--seeds", "0,1", "--runs", str(tmp_path / "r")]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "| proden |" in out and "| dirk |" in out and "| 2 |" in out
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "r").glob("*/*/final.json")}
    assert len(stamps) == 4
    assert main(argv) == 0
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps


def test_list(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in ("dirk", "dirk-ref", "proden", "fmnist", "cifar10", "quick", "paper", "smoke"):
        assert name in out


@pytest.mark.parametrize("flags,noted", [([], True), (["avx512_bf16"], False), (None, False)])
def test_bf16_on_a_cpu_without_native_bfloat16_says_it_is_slower(capsys, monkeypatch, smoke_cache, tmp_path, flags,
                                                                 noted):
    """--bf16 on a CPU without avx512_bf16 / AMX is emulated and slower than fp32: the run says so in one line, and
    still runs; a CPU with them, or one whose flags cannot be read, gets no note."""
    from pllbench.train import machine

    monkeypatch.setattr(machine, "native_bf16_flags", lambda: flags)
    argv = SMOKE + ["--methods", "cc", "--epochs", "1", "--bf16", "--device", "cpu", "--runs", str(tmp_path / "r"),
                    "--cache-dir", str(smoke_cache)]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert ("no native bfloat16" in err) == noted, err


def test_native_bf16_flags_reads_the_cpu_flags(monkeypatch):
    from pllbench.train import machine

    monkeypatch.setattr(machine, "_proc_value", lambda path, key: "fpu sse2 avx512f avx512_bf16 amx_tile")
    assert machine.native_bf16_flags() == ["avx512_bf16"]
    monkeypatch.setattr(machine, "_proc_value", lambda path, key: "fpu sse2 avx2")
    assert machine.native_bf16_flags() == []
    monkeypatch.setattr(machine, "_proc_value", lambda path, key: None)
    assert machine.native_bf16_flags() is None


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
