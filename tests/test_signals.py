"""SIGTERM (Slurm, docker, `timeout`) and SIGINT (Ctrl-C) stop `pllbench run` the same way: one line, the attempt
recorded in the run's attempts.jsonl, the claim released, exit 143 or 130; the rerun resumes from the checkpoint."""

from __future__ import annotations

import json
import signal
import subprocess
import time

import pytest
from conftest import cli_command

from pllbench.cli import main
from pllbench.interrupts import Terminated
from pllbench.train.runs import LOCK, lock_owner, read_attempts

SMOKE = ["--dataset", "synthetic", "--preset", "smoke", "--device", "cpu"]
# 64 steps an epoch: the signal, sent once the first epoch is saved, lands well before the run could finish
SLOWER = ["--dataset", "synthetic:train=1024", "--preset", "smoke", "--device", "cpu"]
WAIT_S = 600  # a bound for a loaded machine, never reached by a working run


def start(args: list[str], cache, runs) -> subprocess.Popen:
    cmd, env = cli_command(["run", *args, *SLOWER, "--runs", str(runs)], cache)
    # SIGINT back to its default in the child, so Python raises KeyboardInterrupt even when the tests run in a
    # background job (whose shell ignores SIGINT for its children).
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def wait_for_epochs(proc: subprocess.Popen, runs, count: int) -> list:
    """The run folders once `count` of them have a checkpoint (at least one epoch done)."""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        done = sorted(p.parent for p in runs.glob("synthetic-smoke/*/progress.json"))
        if len(done) >= count:
            return done
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    proc.kill()
    raise AssertionError("no epoch finished in time")


def nonblank(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_a_run_in_one_line_records_it_and_the_rerun_resumes(sig, smoke_cache, tmp_path):
    runs = tmp_path / "runs"
    args = ["--methods", "proden", "--epochs", "4"]
    proc = start(args, smoke_cache, runs)
    (run_dir,) = wait_for_epochs(proc, runs, 1)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=WAIT_S)
    name = signal.Signals(sig).name
    assert proc.returncode == 128 + sig, err
    assert nonblank(err)[-1] == (f"error: interrupted ({name}); finished work is kept, rerun the same command to "
                                 f"resume"), err
    assert "Traceback" not in err
    assert lock_owner(run_dir) is None and (run_dir / LOCK).read_bytes() == b""  # released by us, not by the kernel
    events = read_attempts(run_dir)
    assert [e["event"] for e in events] == ["start", "interrupted"]
    assert events[-1]["signal"] == name and events[-1]["epochs_done"] >= 1
    assert not (run_dir / "final.json").exists()

    rerun = start(args, smoke_cache, runs)
    _, err = rerun.communicate(timeout=WAIT_S)
    assert rerun.returncode == 0, err
    assert f"resuming from epoch {events[-1]['epochs_done']}" in err
    assert [e["event"] for e in read_attempts(run_dir)] == ["start", "interrupted", "start", "done"]
    assert json.loads((run_dir / "final.json").read_text())["epochs"] == 4


def test_sigterm_stops_every_worker_of_a_grid(smoke_cache, tmp_path):
    """With --workers 2 the parent gets SIGTERM and stops its workers with SIGTERM: each records its run."""
    runs = tmp_path / "runs"
    proc = start(["--methods", "proden,cc", "--epochs", "30", "--workers", "2"], smoke_cache, runs)
    run_dirs = wait_for_epochs(proc, runs, 2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=WAIT_S)
    assert proc.returncode == 143 and nonblank(err)[-1].startswith("error: interrupted (SIGTERM)"), err
    for run_dir in run_dirs:
        assert lock_owner(run_dir) is None
        events = read_attempts(run_dir)
        assert events[-1]["event"] == "interrupted" and events[-1]["signal"] == "SIGTERM", events


@pytest.mark.parametrize("raised,code,name", [(KeyboardInterrupt, 130, "SIGINT"), (Terminated, 143, "SIGTERM")])
def test_the_interrupted_message_prints(raised, code, name, monkeypatch, capsys):
    """click turns a KeyboardInterrupt into its Abort: the message must still be ours, with the exit code."""
    import pllbench.grid.launchers

    def interrupted(*_args, **_kwargs):
        raise raised()

    monkeypatch.setattr(pllbench.grid.launchers, "launch", interrupted)
    assert main(["run", "--methods", "proden", *SMOKE]) == code
    err = capsys.readouterr().err
    assert nonblank(err)[-1] == f"error: interrupted ({name}); finished work is kept, rerun the same command to resume"
