"""`pllbench tune` on the smoke preset: a study end to end (trials, pruning, selection, the final runs, the board),
resume after a SIGKILL mid-study, selection that never reads the test split or a true label, one-line errors."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from conftest import cli_command

from pllbench.cli import main
from pllbench.data import prepare as prepare_module
from pllbench.errors import PllbenchError
from pllbench.train.runconfig import RunConfig
from pllbench.train.runs import read_attempts, read_curves
from pllbench.tune.study import TRIALS_ROOT, StudySpec, budget_used, existing_study, run_studies, storage_url
from pllbench.tune.trial import params_text
from pllbench.tune_space import choice, log_uniform, uniform

DATA = "synthetic:train=64,test=32"  # 3 steps of 16 per epoch after a 0.25 validation split: seconds per trial


def tune_args(runs: Path, cache: Path, *extra: str) -> list[str]:
    return ["tune", "--dataset", DATA, "--preset", "smoke", "--val-fraction", "0.25", "--runs", str(runs),
            "--cache-dir", str(cache), "--device", "cpu", *extra]


def error_line(capsys, argv: list[str], *needles: str) -> str:
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err and err[-1].startswith("error: "), err
    assert sum(line.startswith("error") for line in err) == 1 and not any("Traceback" in e for e in err)
    for needle in needles:
        assert needle in err[-1], (needle, err[-1])
    return err[-1]


def study_of(runs: Path, method: str, *, epochs: int | None = None, pruner: str = "halving"):
    spec = StudySpec(method, DATA, "smoke", "aa", 0, epochs, 0.25, pruner=pruner)
    return spec, existing_study(spec, storage_url(spec, runs, None))


def snapshot(study) -> list[tuple]:
    """What a study chose and saw: per trial its values, state, label-free value and per-epoch reports."""
    return [(t.number, t.params, t.state.name, t.value, dict(t.intermediate_values)) for t in study.get_trials()]


# ------------------------------------------------------------------------------------------------ spaces


def test_a_bad_space_is_one_line_when_its_class_is_defined():
    for make, needle in ((lambda: log_uniform(0.0, 1.0), "a log scale needs low > 0"),
                         (lambda: uniform(2.0, 1.0), "low 2.0 > high 1.0"), (lambda: choice(), "at least one value")):
        with pytest.raises(PllbenchError, match=needle) as info:
            make()
        assert "\n" not in str(info.value) and "test_tune.py:" in str(info.value)  # names where it was declared
    from pllbench.method import HP, ClassifierMethod

    with pytest.raises(PllbenchError, match="a log scale needs low > 0"):
        class BadWeight(ClassifierMethod):  # noqa: F841 — defining it is the test
            hparams = {"w": HP(1.0, "a weight", low=0, tune=log_uniform(0.0, 10.0))}


def test_a_space_outside_its_hyperparameter_is_one_line_at_tune_start(capsys, smoke_cache, tmp_path):
    from pllbench import method as registry
    from pllbench.method import HP, ClassifierMethod, register_method

    @register_method("tune-outside")
    class Outside(ClassifierMethod):
        hparams = {"w": HP(0.5, "a weight in [0, 1]", low=0, high=1, tune=uniform(0.5, 2.0))}

    try:
        error_line(capsys, tune_args(tmp_path / "runs", smoke_cache, "--methods", "tune-outside"),
                   "tune-outside.w: search space uniform [0.5, 2.0] reaches 2.0")
    finally:
        registry._METHODS.pop("tune-outside", None)
    assert not (tmp_path / "runs" / "_tune").exists()  # refused before any study or run


def test_bad_storage_and_reference_rows_are_one_line(capsys, smoke_cache, tmp_path):
    args = tune_args(tmp_path / "runs", smoke_cache, "--methods", "cc", "--trials", "1")
    error_line(capsys, [*args, "--storage", "not a url"], "--storage 'not a url' is not a database URL")
    error_line(capsys, [*args, "--storage", "nosuchdialect://user@host/db"], "cannot open the study storage")
    error_line(capsys, tune_args(tmp_path / "runs", smoke_cache, "--methods", "oracle"), "oracle is a reference row")


def test_tuned_runs_have_their_own_ids_and_default_ids_do_not_move():
    plain = RunConfig.resolve("lws", DATA, "smoke", 0)
    tuned = RunConfig.resolve("lws", DATA, "smoke", 0, overrides={"*": {"lr": 0.02}},
                              tuned={"criterion": "aa", "study": "s", "trial": 3})
    same_values = RunConfig.resolve("lws", DATA, "smoke", 0, overrides={"*": {"lr": 0.02}})
    assert "tuned" not in plain.identity() and "tuned" not in plain.to_json()
    assert tuned.run_id != same_values.run_id and tuned.signature != same_values.signature
    assert RunConfig.from_json(tuned.to_json()) == tuned
    assert tuned.label == "lws{tuned=aa}" and same_values.label == "lws{lr=0.02}"
    spec = StudySpec("lws", DATA, "smoke")
    assert "tuned" not in spec.final_job(0).key() and spec.final_job(0).run_config() == plain


# ------------------------------------------------------------------------------------------------ a study


def test_study_end_to_end_prunes_selects_and_trains_the_choice(capsys, smoke_cache, tmp_path):
    runs = tmp_path / "runs"
    args = tune_args(runs, smoke_cache, "--methods", "lws", "--trials", "4", "--final-seeds", "0")
    assert main(args) == 0
    out = capsys.readouterr().out
    spec, study = study_of(runs, "lws")
    trials = study.get_trials()
    states = [t.state.name for t in trials]
    assert len(trials) == 4 and "PRUNED" in states and "COMPLETE" in states, states
    for t in trials:  # every report is the run's label-free criterion on its validation split, epoch by epoch
        run_dir = runs / TRIALS_ROOT / t.user_attrs["run"]
        config = json.loads((run_dir / "config.json").read_text())
        assert config["val_fraction"] == 0.25 and "tuned" not in config
        curves = read_curves(run_dir)
        assert t.intermediate_values == {r["epoch"] + 1: r["val_aa"] for r in curves}
        assert (t.state.name == "COMPLETE") == (run_dir / "final.json").exists()
        if t.state.name == "COMPLETE":
            assert t.value == curves[-1]["val_aa"] and len(curves) == 2
    best = max((t for t in trials if t.state.name == "COMPLETE"), key=lambda t: (t.value, -t.number))
    assert set(best.params) == {"lr", "weight_decay", "lambda1"}
    finals = {json.loads(p.read_text()).get("tuned") is not None: json.loads(p.read_text())
              for p in runs.glob("synthetic-smoke/lws-s0-*/config.json")}
    assert set(finals) == {False, True} and finals[True]["val_fraction"] == 0.0
    assert finals[True]["tuned"] == {"criterion": "aa", "study": spec.name, "trial": best.number}
    assert finals[True]["preset"]["lr"] == best.params["lr"]
    assert finals[True]["hparams"]["lambda1"] == best.params["lambda1"]
    assert (runs / "_tune" / f"tune-{spec.name}.png").stat().st_size > 0
    assert "| lws |" in out and "Selection gap" in out and params_text(best.params) in out

    # a rerun trains nothing again: every trial and final run is finished and reused
    assert main(args) == 0
    capsys.readouterr()
    assert snapshot(study_of(runs, "lws")[1]) == snapshot(study)
    for t in trials:
        starts = [a for a in read_attempts(runs / TRIALS_ROOT / t.user_attrs["run"]) if a["event"] == "start"]
        assert len(starts) == 1
    # a trial's run is the ordinary run of its values: `pllbench run` finds it finished
    assert main(["run", "--methods", "lws", "--dataset", DATA, "--preset", "smoke", "--val-fraction", "0.25",
                 "--hp", f"lr={best.params['lr']!r}", "--hp", f"weight_decay={best.params['weight_decay']!r}",
                 "--hp", f"lws.lambda1={best.params['lambda1']!r}", "--runs", str(runs / TRIALS_ROOT),
                 "--cache-dir", str(smoke_cache), "--device", "cpu", "--no-progress"]) == 0
    assert "finished earlier" in capsys.readouterr().err


def test_a_study_killed_mid_trial_resumes_and_reuses_finished_trials(capsys, smoke_cache, tmp_path):
    runs = tmp_path / "runs"
    args = tune_args(runs, smoke_cache, "--methods", "cc", "--trials", "3", "--epochs", "4", "--final-seeds", "none",
                     "--pruner", "none")
    cmd, env = cli_command(args, smoke_cache)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    trial_runs = runs / TRIALS_ROOT / "synthetic-smoke"

    def training_now() -> Path | None:
        """A trial run mid-training (a checkpoint, no final.json) once another trial has finished."""
        if not any(trial_runs.glob("cc-s0-*/final.json")):
            return None
        for run_dir in trial_runs.glob("cc-s0-*"):
            attempts = read_attempts(run_dir)
            if (run_dir / "progress.json").exists() and not (run_dir / "final.json").exists() and attempts and \
                    attempts[-1]["event"] == "start":
                return run_dir
        return None

    deadline = time.monotonic() + 300  # a guard against a hang, not a timing assertion
    while (killed := training_now()) is None and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert killed is not None, "the study finished (or hung) before a trial could be killed mid-training"
    finished_before = sorted(p.parent for p in trial_runs.glob("cc-s0-*/final.json"))

    assert main(args) == 0
    capsys.readouterr()
    _, study = study_of(runs, "cc", epochs=4, pruner="none")
    trials = study.get_trials()
    assert budget_used(trials) == 3 and all(t.state.name in ("COMPLETE", "FAIL") for t in trials)
    lost = [t for t in trials if t.state.name == "FAIL"]
    retries = [t for t in trials if "retry_of" in t.user_attrs]
    assert len(lost) == 1 and len(retries) == 1 and retries[0].user_attrs["retry_of"] == lost[0].number
    assert retries[0].params == lost[0].params and retries[0].user_attrs["run"] == lost[0].user_attrs["run"]
    assert trial_runs / Path(retries[0].user_attrs["run"]).name == killed
    starts = [a for a in read_attempts(killed) if a["event"] == "start"]
    assert len(starts) == 2 and starts[1]["from_epoch"] >= 1  # resumed from its checkpoint, not from scratch
    for run_dir in finished_before:  # reused, never trained again
        assert [a["event"] for a in read_attempts(run_dir)].count("start") == 1


# ------------------------------------------------------------------------------------------------ label hiding


def study_on(labels: str, runs: Path, cache: Path, monkeypatch, trials: int = 4) -> list[tuple]:
    """A proden study on the smoke data, with the true labels as they are or scrambled ("scrambled": random train
    AND test labels, drawn after the candidates exist); returns its snapshot."""
    from pllbench.datasets.synthetic import Synthetic
    from pllbench.grid.jobs import RunEnv

    original = Synthetic.load

    def scrambled(self, root, download):
        train, test = original(self, root, download)
        gen = torch.Generator().manual_seed(11)
        train.labels = torch.randint(0, 4, train.labels.shape, generator=gen)
        test.labels = torch.randint(0, 4, test.labels.shape, generator=gen)
        return train, test

    if labels == "scrambled":
        monkeypatch.setattr(Synthetic, "load", scrambled)
    prepare_module._load.cache_clear()
    try:
        spec = StudySpec("proden", DATA, "smoke", "aa", 0, None, 0.25)
        url = storage_url(spec, runs, None)
        env = RunEnv(runs=str(runs / TRIALS_ROOT), cache=str(cache), device="cpu", session=labels + str(runs))
        run_studies([(spec, url)], trials, env, 1, lambda *_: None)
        return snapshot(existing_study(spec, url))
    finally:
        prepare_module._load.cache_clear()
        monkeypatch.setattr(Synthetic, "load", original)


def test_selection_never_reads_the_test_split_or_a_true_label(smoke_cache, tmp_path, monkeypatch):
    """Scrambling every true train and test label (after the candidates exist) leaves every trial's values, state,
    reports and so the choice identical; a tuner that selects on test accuracy fails the same check."""
    clean = study_on("clean", tmp_path / "clean", smoke_cache, monkeypatch)
    hidden = study_on("scrambled", tmp_path / "scrambled", smoke_cache, monkeypatch)
    assert clean == hidden and any(state == "COMPLETE" for _, _, state, _, _ in clean)

    from pllbench.tune import trial as tune_trial

    real_init = tune_trial.Reporter.__init__

    def peeking(self, trial, key, epochs, echo=None):
        real_init(self, trial, "test_acc", epochs, echo)

    monkeypatch.setattr(tune_trial.Reporter, "__init__", peeking)
    peek_clean = study_on("clean", tmp_path / "peek-clean", smoke_cache, monkeypatch, trials=2)
    peek_hidden = study_on("scrambled", tmp_path / "peek-scrambled", smoke_cache, monkeypatch, trials=2)
    assert peek_clean != peek_hidden
