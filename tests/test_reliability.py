"""Reliability and security: diverging runs, concurrent runners, no unsafe loads, no path escape, no network."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from conftest import cli_command

from pllbench import method as registry
from pllbench.cli import main
from pllbench.method import ClassifierMethod, register_method
from pllbench.train.runs import read_attempts

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted(p for part in ("pllbench", "methods", "datasets", "benchmarks") for p in (ROOT / part).rglob("*.py"))
SMOKE = ["--dataset", "synthetic", "--preset", "smoke", "--no-progress"]


# ------------------------------------------------------------------------------------------------ NaN / inf

class Diverging(ClassifierMethod):
    """Cross-entropy on the candidate mass, poisoned with NaN from one global step on."""

    poison_step = 0

    def training_step(self, batch):
        logits = self.net(batch.views["cls"])
        loss = -torch.logsumexp(logits.log_softmax(1).masked_fill(batch.candidates == 0, -1e4), 1).mean()
        return {"loss": loss * (float("nan") if batch.step >= self.poison_step else 1.0)}


@pytest.fixture
def diverging():
    cls = register_method("diverging")(Diverging)
    yield cls
    registry._METHODS.pop("diverging", None)


def test_diverging_run_is_recorded_and_the_grid_goes_on(tmp_path, capsys, diverging):
    runs = tmp_path / "runs"
    # smoke synthetic: 64 train rows / batch 16 = 4 steps per epoch; poison epoch 1 from its step 2
    diverging.poison_step = 4 + 2
    code = main(["run", "--methods", "diverging,cc", *SMOKE, "--runs", str(runs)])
    err = capsys.readouterr().err
    assert code == 2 and err.splitlines()[-1].startswith("error: synthetic-smoke/diverging-")
    (failed_dir,) = [d for d in runs.glob("*/diverging-*")]
    failed = json.loads((failed_dir / "failed.json").read_text())
    assert failed["type"] == "NonFiniteLoss"
    assert failed["error"].startswith("non-finite loss at epoch 1 step 2 (loss)")
    assert f"{failed_dir.parent.name}/{failed_dir.name}: failed: non-finite loss at epoch 1 step 2" in err
    assert not (failed_dir / "final.json").exists() and [c["epoch"] for c in map(json.loads, (
        failed_dir / "curves.jsonl").read_text().splitlines())] == [0]  # the poisoned epoch is not checkpointed
    (done_dir,) = [d for d in runs.glob("*/cc-*")]
    assert (done_dir / "final.json").exists()  # the grid went on
    assert main(["status", "--methods", "diverging,cc", *SMOKE[:4], "--runs", str(runs)]) == 0
    assert "failed 1" in capsys.readouterr().out


# ----------------------------------------------------------------------------------------------- concurrency

def test_four_concurrent_runners_share_one_results_root(tmp_path):
    """Four `pllbench run` on one grid: every job trains exactly once and no record is ever seen torn."""
    runs = tmp_path / "runs"
    args = ["run", "--methods", "proden,cc,rc", "--seeds", "0,1", "--epochs", "2", *SMOKE, "--runs", str(runs)]
    cmd, env = cli_command(args, tmp_path / "cache")
    subprocess.run(cli_command(["candidates", *SMOKE[:4]], tmp_path / "cache")[0], env=env,
                   check=True, capture_output=True)  # the shared teacher first, so the runners overlap on jobs
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(4)]
    torn, reads = [], 0
    while any(p.poll() is None for p in procs):
        for path in runs.glob("*/*/*.json"):
            try:
                json.loads(path.read_text())
                reads += 1
            except FileNotFoundError:
                continue
            except ValueError:
                torn.append(path.name)
        time.sleep(0.01)
    results = [p.communicate() for p in procs]
    assert all(p.returncode == 0 for p in procs), [err[-1500:] for _, err in results]
    assert not torn and reads > 0
    dirs = sorted(p for p in runs.glob("*/*") if p.is_dir() and not p.parent.name.startswith("_"))
    assert len(dirs) == 6
    owners = set()
    for d in dirs:
        events = read_attempts(d)
        assert [e["event"] for e in events] == ["start", "done"], (d.name, events)
        owners.add(events[0]["pid"])
    assert len(owners) >= 2, "the runners did not overlap"


# --------------------------------------------------------------------------------------------------- security

def _calls(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            yield node, ast.unparse(node.func)


def test_every_torch_load_is_weights_only_and_nothing_unpickles_freely():
    offenders = []
    for path in SOURCES:
        for node, name in _calls(ast.parse(path.read_text())):
            where = f"{path.relative_to(ROOT)}:{node.lineno}"
            keywords = {k.arg: ast.unparse(k.value) for k in node.keywords}
            if name == "torch.load" and keywords.get("weights_only") != "True":
                offenders.append(f"{where} torch.load without weights_only=True")
            if name in ("pickle.load", "pickle.loads") or (name == "np.load" and keywords.get("allow_pickle", "False")
                                                           != "False"):
                offenders.append(f"{where} {name}")
    assert not offenders, offenders
    assert sum("torch.load" in p.read_text() for p in SOURCES) >= 3  # the scan sees the loads it guards


@pytest.mark.parametrize("name", ["../evil", "/abs", "a/b", "..", "", "UPPER", "x" * 65])
def test_method_names_cannot_name_a_path(name):
    with pytest.raises(ValueError, match="must match"):
        register_method(name)


def test_a_symlinked_run_folder_cannot_lead_outside_the_results_root(tmp_path, capsys):
    runs, outside = tmp_path / "runs", tmp_path / "outside"
    outside.mkdir()
    runs.mkdir()
    (runs / "synthetic-smoke").symlink_to(outside, target_is_directory=True)
    code = main(["run", "--methods", "cc", *SMOKE, "--runs", str(runs)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and "outside the results root" in err[-1] and "Traceback" not in "".join(err)
    assert not any(outside.iterdir())  # nothing written through the link


def test_entangle_refuses_a_run_linked_in_from_outside(tmp_path, capsys):
    runs, elsewhere = tmp_path / "runs", tmp_path / "elsewhere"
    assert main(["run", "--methods", "cc", *SMOKE, "--runs", str(elsewhere)]) == 0
    (run_dir,) = elsewhere.glob("synthetic-smoke/*")
    (runs / run_dir.parent.name).mkdir(parents=True)
    (runs / run_dir.parent.name / run_dir.name).symlink_to(run_dir, target_is_directory=True)
    capsys.readouterr()
    code = main(["entangle", "--dataset", "synthetic", "--preset", "smoke", "--top", "1", "--runs", str(runs)])
    assert code == 2 and "outside the results root" in capsys.readouterr().err
    assert not (run_dir / "entangle.json").exists()


GUARD = """
import socket
_real_connect = socket.socket.connect
def _connect(self, address):
    host = address[0] if isinstance(address, tuple) else address
    if self.family == socket.AF_UNIX or host in ("127.0.0.1", "::1", "localhost"):
        return _real_connect(self, address)
    with open(%r, "a") as fh:
        fh.write(f"{address}\\n")
    raise OSError("network blocked by the test")
_real_getaddrinfo = socket.getaddrinfo
def _getaddrinfo(host, *args, **kwargs):
    if host in (None, "127.0.0.1", "::1", "localhost"):
        return _real_getaddrinfo(host, *args, **kwargs)
    with open(%r, "a") as fh:
        fh.write(f"lookup {host}\\n")
    raise OSError("name lookup blocked by the test")
socket.socket.connect = _connect
socket.getaddrinfo = _getaddrinfo
"""


def test_no_network_unless_download_is_asked(tmp_path):
    """Every command runs offline; the guard records a connect attempt only when --download is given."""
    log = tmp_path / "connects.log"
    site = tmp_path / "guard"
    site.mkdir()
    (site / "sitecustomize.py").write_text(GUARD % (str(log), str(log)))
    runs, cache = tmp_path / "runs", tmp_path / "cache"
    script = textwrap.dedent(f"""
        from pllbench.cli import main
        smoke = ["--dataset", "synthetic", "--preset", "smoke"]
        steps = [["candidates", *smoke], ["list"],
                 ["run", "--methods", "cc,cad", *smoke, "--no-progress", "--runs", {str(runs)!r}],
                 ["entangle", *smoke, "--top", "1", "--runs", {str(runs)!r}],
                 ["augment", *smoke, "--model", "tiny-ip2p", "--resolution", "16", "--batch-size", "64",
                  "--no-progress"],
                 ["status", "--methods", "cc", *smoke, "--runs", {str(runs)!r}],
                 ["leaderboard", "--runs", {str(runs)!r}, "--out", {str(tmp_path / 'lb')!r}]]
        for argv in steps:
            assert main(argv) == 0, argv
    """)
    env = dict(cli_command([], cache)[1], PYTHONPATH=os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]),
               HF_HUB_OFFLINE="1")
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not log.exists(), log.read_text()
    download = subprocess.run([sys.executable, "-m", "pllbench", "candidates", "--dataset", "fmnist",
                               "--data-root", str(tmp_path / "dl"), "--download"], env=env, capture_output=True,
                              text=True, timeout=300)
    assert download.returncode != 0 and log.exists()  # --download reaches for the network (and is blocked here)
    assert download.stderr.strip().splitlines()[-1].startswith("error: ")
