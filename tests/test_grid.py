"""Grids: spec errors, failure records, resume after SIGKILL, concurrent runs, status, and the launchers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from cli_helpers import DATA, fsync_refused, smoke
from conftest import cli_command, smoke_run

from pllbench.cli import main
from pllbench.grid.file import load_grid_file
from pllbench.grid.jobs import GridSpec, RunEnv, split_datasets
from pllbench.grid.launchers import LaunchOptions, submit_slurm, visible_gpus, wait_slurm
from pllbench.train import loop as trainer
from pllbench.train.runconfig import RunConfig
from pllbench.train.runs import claim, read_attempts

BASE = 'methods = ["proden"]\ndatasets = ["synthetic"]\npreset = "smoke"\n'


def starts(run_dir: Path) -> list[dict]:
    return [a for a in read_attempts(run_dir) if a["event"] == "start"]


def run_dirs(root: Path) -> list[Path]:
    return sorted(p for p in root.glob("*/*") if p.is_dir() and not p.parent.name.startswith("_"))


@pytest.mark.parametrize("text,needle", [
    ('methdos = ["dirk"]\n', "unknown key 'methdos'"),
    ("methods = 3\n", "'methods'"),
    ('seeds = [0, "1"]\n', "'seeds'"),
    ("epochs = 0\n", "'epochs'"),
    ("val_fraction = 0.9\n", "'val_fraction'"),
    ('launcher = "k8s"\n', "'launcher'"),
    ("workers = 1.5\n", "'workers'"),
    ('[slurm]\npartiton = "gpu"\n', "'slurm.partiton'"),
    ('[slurm]\ntimeout_min = "1h"\n', "'slurm.timeout_min'"),
    ("[hp.dirk]\ntau = {a = 1}\n", "'hp.dirk.tau'"),
    ("methods = [\n", "not valid TOML"),
])
def test_grid_file_errors_name_the_key(tmp_path, capsys, text, needle):
    grid = tmp_path / "grid.toml"
    grid.write_text(text if text.startswith("methods") else BASE + text)
    code = main(["run", "--grid", str(grid)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: ") and needle in err[0], err


def test_grid_file_values():
    spec, launch = load_grid_file_from("""
methods = ["dirk", "proden"]
datasets = ["synthetic:train=128,test=32", "fmnist"]
seeds = [0, 2]
epochs = 3
launcher = "ray"
gpus_per_job = 0.25
[hp]
tau = 0.1
[hp.dirk]
ema = 0.9
[slurm]
partition = "gpu"
""")
    assert spec == {"methods": "dirk,proden", "datasets": ["synthetic:train=128,test=32", "fmnist"], "seeds": [0, 2],
                    "epochs": 3, "hp": {"*": {"tau": 0.1}, "dirk": {"ema": 0.9}}}
    assert launch == {"launcher": "ray", "gpus_per_job": 0.25, "slurm": {"partition": "gpu"}}


def load_grid_file_from(text: str):
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as fh:
        fh.write(text)
    try:
        return load_grid_file(fh.name)
    finally:
        os.unlink(fh.name)


def test_split_datasets_keeps_options_together():
    assert split_datasets("fmnist,synthetic:train=384,test=64,cifar10") == \
        ["fmnist", "synthetic:train=384,test=64", "cifar10"]


def test_job_ids_hash_only_what_reaches_the_method():
    a = GridSpec(["dirk", "proden"], ["synthetic"], [0], "smoke", hp={"dirk": {"ema": 0.9}}).jobs()
    b = GridSpec(["dirk", "proden"], ["synthetic"], [0], "smoke").jobs()
    assert [j.method for j in a] == ["dirk", "proden"]
    assert a[0].id != b[0].id and a[1].id == b[1].id  # proden ignores dirk's override


def test_visible_gpus(monkeypatch):
    assert visible_gpus("cpu") == [] and visible_gpus("cuda:1") == []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    assert visible_gpus(None) == ["3", "5"]
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert visible_gpus("cuda") == ["0", "1"]


def test_failed_job_is_recorded_and_the_grid_goes_on(tmp_path, capsys, monkeypatch):
    runs = tmp_path / "runs"
    argv = ["run", "--methods", "dirk,proden", "--dataset", "synthetic", "--preset", "smoke", "--epochs", "1",
            "--no-progress", "--runs", str(runs)]
    real = trainer.train_run

    def diverging(prep, config, run_dir, device, progress=True):
        if config["method"] == "dirk":
            raise trainer.NonFiniteLoss("non-finite loss at epoch 0 (loss)")
        return real(prep, config, run_dir, device, progress)

    monkeypatch.setattr(trainer, "train_run", diverging)
    assert main(argv) == 2
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert err[-1].startswith("error: synthetic-smoke/dirk-s0-") and "non-finite loss at epoch 0" in err[-1]
    assert sum(line.startswith("error") for line in err) == 1
    assert "| proden | synthetic |" in captured.out and "failed" not in captured.out  # one line per failure:
    assert sum("non-finite loss at epoch 0" in line for line in err) == 2  # the job's, then the summary
    dirk = next(runs.glob("*/dirk-*"))
    failed = json.loads((dirk / "failed.json").read_text())
    assert failed["type"] == "NonFiniteLoss" and failed["error"] == "non-finite loss at epoch 0 (loss)"

    assert main(["status", "--runs", str(runs)]) == 0
    out = capsys.readouterr().out
    assert "done 1 · running 0 · failed 1 · interrupted 0 · corrupt 0 · pending 0 · 2 jobs" in out
    assert "non-finite loss" in out
    assert main(["status", "--runs", str(runs), "--methods", "dirk,proden", "--dataset", "synthetic", "--preset",
                 "smoke", "--epochs", "1", "--seeds", "0,1"]) == 0
    out = capsys.readouterr().out
    assert "done 1 · running 0 · failed 1 · interrupted 0 · corrupt 0 · pending 2 · 4 jobs" in out and "ETA" in out

    monkeypatch.setattr(trainer, "train_run", real)
    assert main(argv) == 0  # the rerun retries the failed job and skips the finished one
    assert not (dirk / "failed.json").exists() and (dirk / "final.json").exists()
    assert [a["event"] for a in read_attempts(dirk)] == ["start", "failed", "start", "done"]
    proden = next(runs.glob("*/proden-*"))
    assert [a["event"] for a in read_attempts(proden)] == ["start", "done"]


def test_runs_recorded_with_the_whole_method_table_are_found_not_trained_again(tmp_path, capsys, monkeypatch):
    """Before 2026-12-02 a run recorded its preset's whole method table, so the same run now has another id. Without
    the lookup, an upgrade showed every finished run as pending and `run` trained it again in a new folder."""
    runs = tmp_path / "runs"
    argv = ["run", "--methods", "proden", "--dataset", "synthetic", "--preset", "smoke", "--epochs", "1",
            "--no-progress", "--runs", str(runs), "--seeds"]
    with monkeypatch.context() as older:
        older.setattr(RunConfig, "with_own_method_table", lambda self: self)
        assert main(argv + ["0,1"]) == 0
    old = run_dirs(runs)
    assert all(set(json.loads((d / "config.json").read_text())["preset"]["method_hparams"]) >=
               {"*", "cel", "valen", "cad"} for d in old)  # the whole table (methods added since bring entries)
    unfinished = old[1]
    (unfinished / "final.json").unlink()  # interrupted after its last epoch: trains again, in its own folder
    capsys.readouterr()

    assert main(argv + ["0,1,2"]) == 0
    assert [d for d in run_dirs(runs) if d not in old] == [runs / "synthetic-smoke" / next(
        d.name for d in (runs / "synthetic-smoke").iterdir() if d.name.startswith("proden-s2-"))]
    assert [a["event"] for a in read_attempts(old[0])] == ["start", "done"]  # skipped, not trained again
    assert [a["event"] for a in read_attempts(unfinished)] == ["start", "done", "start", "done"]
    final = json.loads((unfinished / "final.json").read_text())
    assert final["run"] == f"synthetic-smoke/{unfinished.name}"  # still named by its own config.json's id
    assert set(json.loads((unfinished / "config.json").read_text())["preset"]["method_hparams"]) >= \
        {"*", "cel", "valen", "cad"}
    assert main(["status", "--runs", str(runs)]) == 0
    out = capsys.readouterr().out
    assert "done 3 · running 0 · failed 0 · interrupted 0 · corrupt 0 · pending 0 · 3 jobs" in out


def test_grid_file_run_and_status(tmp_path, capsys):
    grid = tmp_path / "grid.toml"
    grid.write_text(BASE + "seeds = [0]\nepochs = 1\n[hp]\nlambda0 = 2.0\n")
    runs = tmp_path / "runs"
    # lambda0 belongs to no requested method: refused before any work
    assert main(["run", "--grid", str(grid), "--runs", str(runs)]) == 2
    assert "no requested method" in capsys.readouterr().err
    grid.write_text(BASE + "seeds = [0]\nepochs = 1\n")
    assert main(["run", "--grid", str(grid), "--runs", str(runs), "--no-progress"]) == 0
    assert main(["status", "--grid", str(grid), "--runs", str(runs)]) == 0
    out = capsys.readouterr().out
    assert "done 1 · running 0 · failed 0 · interrupted 0 · corrupt 0 · pending 0 · 1 job" in out
    assert "samples/s" in out
    assert main(["status", "--grid", str(grid), "--seeds", "0,1", "--runs", str(runs)]) == 0  # options override
    assert "pending 1 · 2 jobs" in capsys.readouterr().out


def test_sigkill_then_rerun_runs_only_unfinished_jobs(tmp_path):
    runs = tmp_path / "runs"
    args = ["run", "--methods", "proden,cc,rc", "--dataset", "synthetic", "--preset", "smoke", "--epochs", "4",
            "--no-progress", "--runs", str(runs)]
    cmd, env = cli_command(args, tmp_path / "cache")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline, killed = time.time() + 180, False
    while time.time() < deadline and proc.poll() is None:
        finished = list(runs.glob("*/*/final.json"))
        busy = [p for p in runs.glob("*/*/progress.json") if not (p.parent / "final.json").exists()]
        if finished and busy:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            killed = True
            break
        time.sleep(0.005)
    if not killed:
        proc.wait()
        pytest.skip("the grid finished before it could be killed")
    stamps = {p: p.stat().st_mtime_ns for p in runs.glob("*/*/final.json")}
    interrupted = [d for d in run_dirs(runs) if not (d / "final.json").exists()]
    assert stamps and interrupted
    subprocess.run(cmd, env=env, check=True, capture_output=True)
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps  # finished jobs untouched
    dirs = run_dirs(runs)
    assert len(dirs) == 3 and all((d / "final.json").exists() for d in dirs)
    for d in dirs:
        events = starts(d)
        if d / "final.json" in stamps:
            assert len(events) == 1
        elif d in interrupted:
            assert len(events) == 2 and events[1]["from_epoch"] >= 1 or events[0]["from_epoch"] == 0
        else:
            assert len(events) == 1  # not reached before the kill: trained once, by the rerun
    resumed = [d for d in interrupted if starts(d)[1]["from_epoch"] >= 1]
    assert resumed, "the interrupted job restarted from scratch instead of resuming"


def test_two_concurrent_grids_never_train_a_job_twice(tmp_path):
    runs = tmp_path / "runs"
    args = ["run", "--methods", "proden,cc,rc", "--dataset", "synthetic", "--seeds", "0,1",
            "--preset", "smoke", "--epochs", "2", "--no-progress", "--runs", str(runs)]
    cmd_a, env = cli_command(args + ["--workers", "2"], tmp_path / "cache")
    cmd_b, _ = cli_command(args, tmp_path / "cache")
    a = subprocess.Popen(cmd_a, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    b = subprocess.Popen(cmd_b, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out_a, err_a = a.communicate(timeout=300)
    out_b, err_b = b.communicate(timeout=300)
    assert a.returncode == 0 and b.returncode == 0, (err_a[-2000:], err_b[-2000:])
    dirs = run_dirs(runs)
    assert len(dirs) == 6 and all((d / "final.json").exists() for d in dirs)
    pids = []
    for d in dirs:
        events = starts(d)
        assert len(events) == 1, f"{d.name} trained {len(events)} times"
        pids.append(events[0]["pid"])
    if b.pid not in pids or not set(pids) - {b.pid}:
        pytest.skip("the two grids did not overlap (one finished every job before the other started)")


def test_ray_launcher_on_a_local_cluster(tmp_path):
    ray = pytest.importorskip("ray")
    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    except Exception as exc:  # noqa: BLE001 — no Ray here is a skip, not a failure
        pytest.skip(f"ray cannot start: {exc}")
    try:
        runs = tmp_path / "runs"
        code = main(["run", "--launcher", "ray", "--cpus-per-job", "1", "--methods", "proden,cc", "--dataset",
                     "synthetic", "--preset", "smoke", "--epochs", "1", "--runs", str(runs)])
    finally:
        ray.shutdown()
    assert code == 0
    dirs = run_dirs(runs)
    assert len(dirs) == 2 and all((d / "final.json").exists() for d in dirs)
    assert all(starts(d)[0]["pid"] != os.getpid() for d in dirs)  # trained in Ray workers


def test_slurm_launcher_requeues_and_resumes_through_submitit(tmp_path):
    pytest.importorskip("submitit")
    runs = tmp_path / "runs"
    jobs = GridSpec(["proden", "dirk-ref"], ["synthetic"], [0], "smoke", epochs=3).jobs()
    env = RunEnv(runs=str(runs), cache=str(tmp_path / "cache"))
    _, submitted = submit_slurm(jobs, env, LaunchOptions("slurm", slurm={"cluster": "local", "timeout_min": 10}))
    deadline, interrupted = time.time() + 180, False
    while time.time() < deadline and not submitted[1].done():
        run_dir = next(runs.glob("*/dirk-ref-*"), None)
        progress = json.loads((run_dir / "progress.json").read_text()) if run_dir and (
            run_dir / "progress.json").exists() else {}
        if 1 <= progress.get("epoch", 0) < 3:
            os.kill(starts(run_dir)[0]["pid"], signal.SIGUSR2)  # what Slurm sends on time-out or preemption
            interrupted = True
            break
        time.sleep(0.01)
    results = wait_slurm(jobs, submitted, lambda _: None, poll_s=0.5)
    assert [r["status"] for r in results] == ["done", "done"], results
    if not interrupted:
        pytest.skip("the run finished before it could be interrupted")
    events = starts(next(runs.glob("*/dirk-ref-*")))
    assert len(events) == 2 and events[1]["from_epoch"] >= 1  # requeued, then resumed from its checkpoint


def test_status_flags_a_collapsed_projection(smoke_cache, tmp_path, capsys):
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
