"""Run-level guarantees: label hiding for every method, determinism, resume after SIGKILL."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pyarrow.parquet as pq
import pytest
import torch
from conftest import cli_command, smoke_run

from pllbench.data import prepare as prepare_module
from pllbench.method import method_names

TIMING_KEYS = {"seconds", "samples_per_sec", "train_seconds", "peak_mem_mb"}


def curves(run_dir):
    rows = [json.loads(line) for line in (run_dir / "curves.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in rows]


def outputs(run_dir):
    state = torch.load(run_dir / "model.pt", weights_only=True)
    table = pq.read_table(run_dir / "predictions.parquet").to_pydict()
    return state, table, curves(run_dir)


def same_outputs_with_permuted_labels(method, smoke_cache, tmp_path, monkeypatch) -> bool:
    """Train `method` twice on the smoke data, the second time with the train labels permuted after the
    candidates exist; True when weights, predictions and curves are identical, bit for bit."""
    prepare_module._load.cache_clear()
    _, clean_dir, _ = smoke_run(method, smoke_cache, tmp_path / "clean")
    from pllbench.datasets.synthetic import Synthetic

    original = Synthetic.load

    def permuted(self, root, download):
        train, test = original(self, root, download)
        train.labels = train.labels[torch.randperm(len(train.labels), generator=torch.Generator().manual_seed(7))]
        return train, test

    monkeypatch.setattr(Synthetic, "load", permuted)
    prepare_module._load.cache_clear()
    try:
        _, hidden_dir, _ = smoke_run(method, smoke_cache, tmp_path / "permuted")
    finally:
        prepare_module._load.cache_clear()
        monkeypatch.setattr(Synthetic, "load", original)
    (s1, t1, c1), (s2, t2, c2) = outputs(clean_dir), outputs(hidden_dir)
    same_state = s1.keys() == s2.keys() and all(torch.equal(s1[k], s2[k]) for k in s1)
    return same_state and t1["logits"] == t2["logits"] and c1 == c2


@pytest.mark.parametrize("method", method_names())  # built-ins and every installed entry-point plugin
def test_label_hiding(method, smoke_cache, tmp_path, monkeypatch):
    assert same_outputs_with_permuted_labels(method, smoke_cache, tmp_path, monkeypatch)


PLUGIN = """
import torch.nn.functional as F
from pllbench.method import ClassifierMethod, register_method
from pllbench.data.prepare import load_data


@register_method("ep-honest")
class Honest(ClassifierMethod):
    def training_step(self, batch):
        logits = self.net(batch.views["cls"])
        return {"loss": -(F.log_softmax(logits, 1) * batch.candidates).sum(1).mean()}


@register_method("ep-peeking")
class Peeking(ClassifierMethod):
    # reads the true labels through the data loader: the permutation test must catch it
    def training_step(self, batch):
        data = load_data(self.ctx.dataset, self.ctx.artifacts.origin["preset"])[1]
        labels = data.train.labels[batch.index.cpu()].to(batch.candidates.device)
        return {"loss": F.cross_entropy(self.net(batch.views["cls"]), labels)}
"""


def test_label_hiding_covers_entry_point_plugins(smoke_cache, tmp_path, monkeypatch):
    """A third-party method found through the `pllbench.methods` entry point is registered like a built-in and
    held to the same test; a plugin that peeks at the labels fails it (so the test can fail)."""
    from pllbench import method as registry

    site = tmp_path / "site"
    dist = site / "pll_plugin-0.1.dist-info"
    dist.mkdir(parents=True)
    (site / "pll_plugin.py").write_text(PLUGIN)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: pll-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[pllbench.methods]\nplugin = pll_plugin\n")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setattr(registry, "_plugins_loaded", False)
    try:
        assert {"ep-honest", "ep-peeking"} <= set(method_names())
        assert same_outputs_with_permuted_labels("ep-honest", smoke_cache, tmp_path / "honest", monkeypatch)
        assert not same_outputs_with_permuted_labels("ep-peeking", smoke_cache, tmp_path / "peeking", monkeypatch)
    finally:
        for name in ("ep-honest", "ep-peeking"):
            registry._METHODS.pop(name, None)
        sys.modules.pop("pll_plugin", None)


def test_determinism(smoke_cache, tmp_path):
    _, a, _ = smoke_run("dirk-ref", smoke_cache, tmp_path / "a", val_fraction=0.25)
    _, b, _ = smoke_run("dirk-ref", smoke_cache, tmp_path / "b", val_fraction=0.25)
    assert (a / "predictions.parquet").read_bytes() == (b / "predictions.parquet").read_bytes()
    assert curves(a) == curves(b)
    table = pq.read_table(a / "predictions.parquet").to_pydict()
    assert set(table["tag"]) == {"final", "select-cr", "select-aa"}


def test_resume_after_sigkill_matches_uninterrupted(tmp_path):
    args = ["run", "--methods", "dirk-ref", "--dataset", "synthetic:train=384,test=64", "--preset", "smoke",
            "--epochs", "5", "--no-progress"]
    cmd, full_env = cli_command(args + ["--runs", str(tmp_path / "straight")], tmp_path / "cache")
    subprocess.run(cmd, env=full_env, check=True, capture_output=True)
    straight = next((tmp_path / "straight").glob("*/*"))

    killed_root = tmp_path / "killed"
    cmd, full_env = cli_command(args + ["--runs", str(killed_root)], tmp_path / "cache")
    proc = subprocess.Popen(cmd, env=full_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    killed_at = None
    while time.time() < deadline and proc.poll() is None:
        progress = list(killed_root.glob("*/*/progress.json"))
        if progress:
            try:
                epoch = json.loads(progress[0].read_text())["epoch"]
            except (ValueError, OSError):
                epoch = 0
            if 1 <= epoch < 5:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                killed_at = epoch
                break
        time.sleep(0.005)
    if killed_at is None:
        proc.wait()
        pytest.skip("the run finished before it could be killed")
    run_dir = next(killed_root.glob("*/*"))
    assert not (run_dir / "final.json").exists()
    subprocess.run(cmd, env=full_env, check=True, capture_output=True)
    assert json.loads((run_dir / "final.json").read_text())["test_acc"] == \
        json.loads((straight / "final.json").read_text())["test_acc"]
    assert curves(run_dir) == curves(straight)
    assert (run_dir / "predictions.parquet").read_bytes() == (straight / "predictions.parquet").read_bytes()
    s1, s2 = outputs(run_dir)[0], outputs(straight)[0]
    assert all(torch.equal(s1[k], s2[k]) for k in s1)
