"""Progress that is there: with --workers 2 each run's per-epoch line reaches the terminal, prefixed by its run id,
whole (the parent alone writes them); a run on a terminal shows its epoch on the bar; the paper preset on a CPU
warns before any work."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys

import torch
from cli_helpers import fsync_refused, golden, run_dirs, smoke
from conftest import cli_command

from pllbench.cli import main

SMOKE = ["--dataset", "synthetic", "--preset", "smoke", "--device", "cpu"]
EPOCH = re.compile(r"(synthetic-smoke/[a-z0-9+-]+-s0-[0-9a-f]{8}): epoch (\d+)/3  test_acc \d+\.\d\d%  "
                   r"(loss \d+\.\d{4}  )?\d+\.\d s")


def test_two_workers_print_one_whole_line_per_epoch_per_run(smoke_cache, tmp_path):
    cmd, env = cli_command(["run", "--methods", "proden,cc", *SMOKE, "--epochs", "3", "--workers", "2", "--runs",
                            str(tmp_path / "runs")], smoke_cache)
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert "\r" not in done.stderr  # no bar from a worker
    epochs: dict[str, list[int]] = {}
    for line in lines:
        if ": epoch " in line:
            match = EPOCH.fullmatch(line)
            assert match, f"a garbled epoch line: {line!r}"
            epochs.setdefault(match.group(1), []).append(int(match.group(2)))
        assert line.count("synthetic-smoke/") <= 2, f"two lines mixed: {line!r}"  # a header names its folder too
    assert sorted(run.split("/")[1].split("-s0-")[0] for run in epochs) == ["cc", "proden"], done.stderr
    assert all(seen == [1, 2, 3] for seen in epochs.values()), epochs


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_run_on_a_terminal_shows_its_epoch_on_the_bar(smoke_cache, tmp_path, monkeypatch):
    import tqdm

    from pllbench.data.prepare import prepare
    from pllbench.train.loop import resolve_run_config, train_run
    from pllbench.train.runconfig import run_id

    prep = prepare("synthetic", "smoke", 0, cache=smoke_cache, device=torch.device("cpu"), echo=lambda *_: None)
    config = resolve_run_config(prep, "proden", 0, {})
    labels = []
    real = tqdm.tqdm.set_description_str
    monkeypatch.setattr(tqdm.tqdm, "set_description_str",
                        lambda self, desc=None, refresh=True: labels.append(desc) or real(self, desc, refresh))
    terminal = FakeTerminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    train_run(prep, config, tmp_path / run_id(config), torch.device("cpu"), progress=True)
    monkeypatch.undo()
    run = run_id(config)
    assert f"{run} epoch 1/2" in terminal.getvalue()  # the bar's first frame
    assert labels == [f"{run} epoch 1/2", f"{run} epoch 2/2"]
    assert not re.search(r"^\S+: epoch \d", terminal.getvalue(), re.M)  # the bar, not the per-epoch lines


def test_the_paper_preset_on_a_cpu_warns_before_any_work(monkeypatch, capsys, tmp_path):
    import pllbench.data.prepare

    def no_work(*_args, **_kwargs):
        raise AssertionError("work started")

    monkeypatch.setattr(pllbench.data.prepare, "prepare", no_work)
    main(["run", "--methods", "proden", "--dataset", "fmnist", "--preset", "paper", "--device", "cpu", "--runs",
          str(tmp_path / "runs")])
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("warning: preset paper on a CPU: 500 epochs of resnet18c per run on fmnist, after a "
                             "40-epoch mlp candidate teacher: expect days; use --preset quick"), err
    main(["run", "--methods", "proden", "--dataset", "fmnist", "--preset", "paper", "--device", "cpu", "--epochs",
          "3", "--runs", str(tmp_path / "runs")])
    assert "3 epochs of resnet18c" in capsys.readouterr().err
    main(["run", "--methods", "proden", *SMOKE, "--runs", str(tmp_path / "runs")])
    assert "warning: preset" not in capsys.readouterr().err


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
