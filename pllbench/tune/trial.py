"""One trial of a study: draw its values, train it as an ordinary pllbench run with a candidate-only validation
split, and report the label-free criterion after every epoch to the study's pruner.

The run is the one `pllbench run --val-fraction f --hp ...` would train (grid.Job, RunConfig), in the trials'
results root: a finished run is verified and reused (its curves are replayed to the pruner, so its value is read
back), an interrupted one resumes from its checkpoint, one another process is training is waited for. A pruned run
keeps its checkpoint (attempts.jsonl says `pruned`), so it can be resumed should the same values be drawn again.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from pathlib import Path

from ..errors import PllbenchError
from ..grid.jobs import Job, RunEnv, ensure_job_artifacts, one_line
from ..interrupts import INTERRUPTS, signal_name
from ..train.runs import (
    FAILED,
    FINAL,
    claim,
    inside_root,
    log_attempt,
    read_curves,
    read_json,
    record_failure,
    verify_finished,
)
from ..tune_space import Space

WAIT_S = 10.0  # how often a trial re-checks a run that another process is training


class TrialFailed(PllbenchError):
    """This trial's run cannot be trained (its values refused, a non-finite loss): the trial fails, the study goes
    on. Any other error (no data, a full disk) stops the study, and the trial is asked again next time."""


class Reporter:
    """The per-epoch hook of a trial's run: reports `record[key]` at step epoch + 1 (epochs done), once per step,
    and raises optuna.TrialPruned when the pruner says so (never after the last epoch: that run is done)."""

    def __init__(self, trial, key: str, epochs: int, echo=None):
        self.trial, self.key, self.epochs, self.echo = trial, key, epochs, echo
        self.step, self.value = 0, None

    def __call__(self, record: dict, live: bool = True) -> None:
        import optuna

        step = int(record["epoch"]) + 1
        if step <= self.step:
            return
        value = record.get(self.key)
        if value is None:
            raise PllbenchError(f"epoch {step} of the trial's run has no {self.key} (no validation split)")
        self.trial.report(float(value), step)
        self.step, self.value = step, float(value)
        if live and self.echo is not None:
            self.echo(f"  trial {self.trial.number}: epoch {step}/{self.epochs}, {self.key} {value:.4f}")
        if step < self.epochs and self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned after epoch {step}")

    def replay(self, curves: list[dict]) -> None:
        for record in curves:
            self(record, live=False)


_PREPARED: dict = {}  # this process's last prepared (dataset, preset, seed) of a session: its trials share it


def prepared(job: Job, env: RunEnv, device):
    from ..data.prepare import prepare

    key = (env.session, job.dataset, job.preset, job.seed, env.cache, env.data_root, env.download, str(device))
    if key not in _PREPARED:
        _PREPARED.clear()
        _PREPARED[key] = prepare(job.dataset, job.preset, job.seed, root=env.data_root, download=env.download,
                                 cache=Path(env.cache), device=device, echo=lambda *_: None)
    return _PREPARED[key]


def train_claimed(job: Job, run, run_dir: Path, prep, env: RunEnv, device, reporter: Reporter) -> None:
    """Train (or resume) the claimed run with the reporter as its per-epoch hook; its end goes to attempts.jsonl."""
    import optuna

    from ..train import loop as trainer

    ensure_job_artifacts(job, run, prep, env, device, lambda *_: None)
    (run_dir / FAILED).unlink(missing_ok=True)
    done_before = int((read_json(run_dir / "progress.json") or {}).get("epoch", 0))
    log_attempt(run_dir, "start", job=job.id, from_epoch=done_before, trial=reporter.trial.number)
    started = time.time()
    try:
        trainer.train_run(prep, run.to_json(), run_dir, device, progress=False, echo=lambda *_: None,
                          on_epoch=reporter)
    except optuna.TrialPruned:
        log_attempt(run_dir, "pruned", job=job.id, epochs_done=reporter.step)
        raise
    except INTERRUPTS as exc:
        with contextlib.suppress(OSError):
            log_attempt(run_dir, "interrupted", job=job.id, signal=signal_name(exc), epochs_done=reporter.step)
        raise
    except Exception as exc:  # noqa: BLE001 — the trial fails in one line, the study goes on
        message = one_line(exc, run_dir)
        with contextlib.suppress(OSError):
            record_failure(run_dir, message, type(exc).__name__, job.key())
            log_attempt(run_dir, "failed", job=job.id, error=message)
        raise TrialFailed(message) from None
    log_attempt(run_dir, "done", job=job.id, wall_seconds=round(time.time() - started, 2))


def trial_run(trial, job: Job, env: RunEnv, reporter: Reporter, echo) -> str:
    """The trial's run id, once its run is finished (trained now, resumed, or reused) and every epoch reported."""
    import torch

    from ..data.prepare import default_device

    device = torch.device(env.device) if env.device else default_device()
    prep = prepared(job, env, device)
    try:
        run = job.run_config(compile=env.compile).with_artifacts(prep)
    except PllbenchError as exc:  # the drawn values break a rule between hyperparameters
        raise TrialFailed(str(exc)) from None
    run_dir = inside_root(Path(env.runs), run.run_id)
    while True:
        reporter.replay(read_curves(run_dir))
        if not (run_dir / FINAL).exists():
            with claim(run_dir, job=job.id) as (held, owner):
                if held:
                    trial.set_user_attr("run", run.run_id)  # only now: owner_gone reads its lock and attempts
                    if not (run_dir / FINAL).exists():
                        train_claimed(job, run, run_dir, prep, env, device, reporter)
                    break
            echo(f"  {run.run_id} is being trained by pid {owner.get('pid', '?')} on {owner.get('host', '?')}; "
                 f"waiting for it")
            time.sleep(WAIT_S)
            continue
        trial.set_user_attr("run", run.run_id)
        break
    _, problem = verify_finished(run_dir)
    if problem:
        raise PllbenchError(problem)
    reporter.replay(read_curves(run_dir))
    if reporter.step != reporter.epochs:
        raise PllbenchError(f"{run.run_id}: curves.jsonl has {reporter.step} of {reporter.epochs} epochs")
    return run.run_id


def params_text(params: dict) -> str:
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


def run_trial(study, spec, space: dict[str, Space], env: RunEnv, echo) -> None:
    """Ask the study for a trial, run it, tell the study its value (COMPLETE), PRUNED or FAIL."""
    import optuna
    from optuna.trial import TrialState

    trial = study.ask()
    trial.set_user_attr("owner", {"host": socket.gethostname(), "pid": os.getpid()})
    params = {key: s.suggest(trial, key) for key, s in space.items()}
    reporter = Reporter(trial, f"val_{spec.criterion}", spec.epochs_run, echo)
    head = f"{spec.method} trial {trial.number} ({params_text(params)})"
    echo(f"{head}: started")
    started = time.time()
    try:
        run = trial_run(trial, spec.job(params), env, reporter, echo)
    except optuna.TrialPruned:
        study.tell(trial, state=TrialState.PRUNED)
        echo(f"{head}: pruned after epoch {reporter.step} ({spec.criterion} {reporter.value:.4f})")
        return
    except TrialFailed as exc:
        study.tell(trial, state=TrialState.FAIL)
        echo(f"{head}: failed: {exc}")
        return
    except (Exception, *INTERRUPTS):
        study.tell(trial, state=TrialState.FAIL)  # queued again: the next `pllbench tune` resumes its run
        study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})
        raise
    study.tell(trial, reporter.value)
    echo(f"{head}: {spec.criterion} {reporter.value:.4f} after {time.time() - started:.1f} s ({run})")
