"""`pllbench tune`: the same seeded search, budget and pruning schedule for every method, selected label-free.

A study is one method × dataset × preset × criterion × seed (`StudySpec`); its name hashes everything that makes two
studies the same study (the search space included, the trial budget not: a rerun with more trials extends it). It
lives in an Optuna RDB storage, by default SQLite at `<runs>/_tune/<study>.db`. Each trial draws the shared
optimisation settings (`tune_space.OPTIM_SPACE`) and the method's declared spaces (`HP(..., tune=...)`), then is an
ordinary pllbench run with a candidate-only validation split, trained under `<runs>/_tune/runs` (a results root of
its own, so trials stay off the board): content-addressed, resumable, reused when finished
(pllbench.tune.trial). After each epoch the run reports the label-free criterion on its validation split
(`val_aa` or `val_cr`, pllbench.evaluate) to the pruner, which stops poor trials at its rungs (successive halving
by default); the last epoch's criterion is the trial's value. Nothing else reaches the sampler: no test split, no
true label (the oracle criterion of the tuned board is computed afterwards by pllbench.tune.report).

A process that dies mid-trial leaves it RUNNING in the storage; the next `pllbench tune` of the study sees that
its owner is gone (`stale`), marks it failed and queues the same parameters again, whose run resumes from its
checkpoint. Several processes (local `--workers`, or `pllbench tune` on several machines sharing one `--storage`)
draw trials from the same study; each stops asking once the budget is used, so a study ends with at most
(processes - 1) trials more than asked.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from ..errors import PllbenchError
from ..grid.jobs import Job
from ..hparams import UNSCOPED, canonical_overrides
from ..method import get_method
from ..train.runconfig import OPTIM_KEYS, check_optim, dataset_key
from ..train.runs import inside_root, lock_owner, read_attempts
from ..tune_space import OPTIM_SPACE, Space
from ..util import derive_seed, key_hash

CRITERIA = {"aa": "approximated accuracy", "cr": "covering rate"}  # label-free, on the validation split
SAMPLERS = ("tpe", "random")
PRUNERS = ("halving", "hyperband", "none")
REDUCTION_FACTOR = 3  # the pruner's: a rung keeps the best third
TUNE_DIR = "_tune"
TRIALS_ROOT = Path(TUNE_DIR) / "runs"  # under the results root: the trials' run folders
STALE_UNOWNED_S = 60  # a RUNNING trial that never named its owner this long after it started is stale
WAIT_S = 10.0  # how often a process re-reads the storage while other processes finish their trials


def first_rung(epochs: int) -> int:
    """The epoch of the pruner's first rung: a fifth of the schedule (at least one epoch); later rungs are at
    3x, 9x ... that, and the last epoch is never pruned."""
    return max(1, epochs // 5)


@dataclass(frozen=True)
class StudySpec:
    """One study. `hp`: overrides fixed for every trial and final run (the --hp form); a fixed key is not tuned."""

    method: str
    dataset: str
    preset: str
    criterion: str = "aa"
    seed: int = 0
    epochs: int | None = None
    val_fraction: float = 0.1
    sampler: str = "tpe"
    pruner: str = "halving"
    hp: dict = field(default_factory=dict, hash=False)

    def __post_init__(self):
        if self.criterion not in CRITERIA:
            raise PllbenchError(f"unknown criterion {self.criterion!r}; choose one of {', '.join(CRITERIA)} (label-free"
                                f", on the validation split)")
        if self.sampler not in SAMPLERS or self.pruner not in PRUNERS:
            raise PllbenchError(f"sampler {self.sampler!r} / pruner {self.pruner!r}: choose a sampler of "
                                f"{', '.join(SAMPLERS)} and a pruner of {', '.join(PRUNERS)}")
        if not 0 < self.val_fraction <= 0.5:
            raise PllbenchError(f"--val-fraction {self.val_fraction!r}: tuning needs a validation split, a fraction "
                                f"in (0, 0.5]")
        cls = get_method(self.method)
        if cls.reference:
            raise PllbenchError(f"{self.method} is a reference row, not a PLL method: it is not tuned")
        object.__setattr__(self, "hp", fixed_overrides(cls, self.hp))

    # ------------------------------------------------------------------------------------------------ the space

    def space(self) -> dict[str, Space]:
        """{name: space}: the shared optimisation settings, then the method's declared spaces, less the fixed keys;
        each checked against what its hyperparameter accepts."""
        fixed = {**self.hp.get(UNSCOPED, {}), **self.hp.get(self.method, {})}
        specs = get_method(self.method).hp_specs
        out = {k: s for k, s in OPTIM_SPACE.items() if k not in fixed}
        out.update({k: spec.tune for k, spec in specs.items() if spec.tune is not None and k not in fixed})
        for key, space in out.items():
            for value in space.edge_values():
                problem = optim_problem(key, value) if key in OPTIM_KEYS else specs[key].problem(value)
                if problem:
                    raise PllbenchError(f"{self.method}.{key}: search space {space.text} reaches {value!r}, which "
                                        f"the hyperparameter refuses ({problem}); fix its tune=...")
        if not out:
            raise PllbenchError(f"{self.method}: nothing left to tune (every tuned key is fixed by --hp)")
        return out

    # ------------------------------------------------------------------------------------------------ identity

    @cached_property
    def epochs_run(self) -> int:
        """The epochs every trial and final run trains (the preset's, or --epochs / --hp epochs)."""
        return int(self.job({}).run_config().preset["epochs"])

    def pruner_settings(self) -> dict:
        if self.pruner == "none":
            return {"kind": "none"}
        return {"kind": self.pruner, "first_rung": first_rung(self.epochs_run), "reduction_factor": REDUCTION_FACTOR}

    def identity(self) -> dict:
        return {"method": self.method, "dataset": dataset_key(self.dataset), "preset": self.preset,
                "epochs": self.epochs_run, "val_fraction": self.val_fraction, "criterion": self.criterion,
                "seed": self.seed, "sampler": self.sampler, "pruner": self.pruner_settings(), "hp": self.hp,
                "space": {k: s.text for k, s in self.space().items()}}

    @cached_property
    def name(self) -> str:
        data = dataset_key(self.dataset)["name"]
        return f"{self.method}-{data}-{self.preset}-{self.criterion}-s{self.seed}-{key_hash(self.identity(), 8)}"

    # ------------------------------------------------------------------------------------------------ runs

    def overrides(self, params: dict) -> dict:
        """The --hp form of a trial's drawn values on top of the fixed ones."""
        out = canonical_overrides(self.hp)
        shared = {k: v for k, v in params.items() if k in OPTIM_SPACE}
        own = {k: v for k, v in params.items() if k not in OPTIM_SPACE}
        if shared:
            out.setdefault(UNSCOPED, {}).update(shared)
        if own:
            out.setdefault(self.method, {}).update(own)
        return out

    def job(self, params: dict) -> Job:
        """A trial's run: the run seed is the study's, with the validation split."""
        return Job(self.method, self.dataset, self.seed, self.preset, self.epochs, self.overrides(params),
                   self.val_fraction)

    def final_job(self, seed: int, params: dict | None = None, tuned: dict | None = None) -> Job:
        """A run on the full train split, scored on the test split: the chosen configuration (`tuned` says which
        study, trial and criterion chose it), or the preset's defaults (params None) to compare it with."""
        return Job(self.method, self.dataset, seed, self.preset, self.epochs, self.overrides(params or {}),
                   tuned=tuned)


def optim_problem(key: str, value) -> str | None:
    kind, ok, allowed, _ = OPTIM_KEYS[key]
    return None if isinstance(value, (int, float)) and ok(kind(value)) else f"expected {allowed}"


def fixed_overrides(cls, hp) -> dict:
    """The --hp overrides that reach this method (unscoped keys it declares or optimisation settings, its own
    scope), in their one form."""
    hp = check_optim(hp)
    out = {}
    unscoped = {k: v for k, v in hp.get(UNSCOPED, {}).items() if k in cls.hparams or k in OPTIM_KEYS}
    if unscoped:
        out[UNSCOPED] = unscoped
    if hp.get(cls.name):
        out[cls.name] = dict(hp[cls.name])
    return out


# ---------------------------------------------------------------------------------------------------- storage


def storage_url(spec: StudySpec, runs: Path, storage: str | None) -> str:
    """--storage as given (checked to be a database URL), else SQLite under the results root."""
    if not storage:
        return f"sqlite:///{(Path(runs) / TUNE_DIR / f'{spec.name}.db').resolve()}"
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        make_url(storage)
    except ArgumentError:
        raise PllbenchError(f"--storage {storage!r} is not a database URL; expected e.g. sqlite:////abs/path.db or "
                            f"postgresql://user@host/db") from None
    return storage


def open_storage(url: str):
    """The Optuna RDB storage at `url`; an unusable one (no driver, unreachable, refused) is one line."""
    import optuna

    from ..grid.jobs import one_line

    kwargs = None
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        kwargs = {"connect_args": {"timeout": 120}}  # several processes write the same file
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)
    except Exception as exc:  # noqa: BLE001 — SQLAlchemy and the drivers raise many kinds for the same refusal
        raise PllbenchError(f"cannot open the study storage {url}: {one_line(exc)}") from None


def open_study(spec: StudySpec, url: str, worker: int = 0):
    """The study (made when new), its sampler seeded from the study seed, the trials it already holds and the
    worker: so a resumed or parallel process draws new points, and a rerun from scratch draws the same ones."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    settings = spec.pruner_settings()
    if settings["kind"] == "halving":
        pruner = optuna.pruners.SuccessiveHalvingPruner(min_resource=settings["first_rung"],
                                                        reduction_factor=REDUCTION_FACTOR)
    elif settings["kind"] == "hyperband":
        pruner = optuna.pruners.HyperbandPruner(min_resource=settings["first_rung"], max_resource=spec.epochs_run,
                                                reduction_factor=REDUCTION_FACTOR)
    else:
        pruner = optuna.pruners.NopPruner()
    study = optuna.create_study(storage=open_storage(url), study_name=spec.name, direction="maximize",
                                pruner=pruner, load_if_exists=True)
    seed = derive_seed("tune-sampler", spec.seed, len(study.get_trials(deepcopy=False)), worker) % 2**32
    study.sampler = (optuna.samplers.TPESampler(seed=seed) if spec.sampler == "tpe"
                     else optuna.samplers.RandomSampler(seed=seed))
    return study


# ---------------------------------------------------------------------------------------------------- trials


def owner_gone(trial, trials_root: Path) -> bool:
    """A RUNNING trial whose process is gone: on this host its pid is dead; elsewhere its run folder's lock is free
    and the run's last attempt never ended (killed, or interrupted)."""
    owner = trial.user_attrs.get("owner")
    if not owner:
        started = trial.datetime_start.timestamp() if trial.datetime_start else 0.0
        return time.time() - started > STALE_UNOWNED_S
    if owner.get("host") == socket.gethostname():
        try:
            os.kill(int(owner["pid"]), 0)
        except ProcessLookupError:
            return True
        except (PermissionError, ValueError, TypeError):
            return False
        return False
    run = trial.user_attrs.get("run")
    if not run:
        return False
    run_dir = inside_root(trials_root, run)
    attempts = read_attempts(run_dir)
    return lock_owner(run_dir) is None and bool(attempts) and attempts[-1].get("event") in ("start", "interrupted")


def retry_stale(study, trials_root: Path, echo) -> None:
    """Fail each RUNNING trial whose owner is gone and queue its parameters again (its run resumes)."""
    from optuna.trial import TrialState

    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if owner_gone(trial, trials_root):
            study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)
            study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})
            echo(f"{study.study_name}: trial {trial.number}'s process is gone; its parameters are queued again "
                 f"(its run resumes from its checkpoint)")


def budget_used(trials) -> int:
    """Trials that count against the budget: all but queued ones and failed ones queued again (stale)."""
    from optuna.trial import TrialState

    retried = {t.user_attrs["retry_of"] for t in trials if "retry_of" in t.user_attrs}
    return sum(1 for t in trials if t.state != TrialState.WAITING and t.number not in retried)


def next_action(study, budget: int, trials_root: Path, echo) -> str:
    """'ask' (a trial to run), 'wait' (only other processes' trials are running) or 'done'."""
    from optuna.trial import TrialState

    retry_stale(study, trials_root, echo)
    trials = study.get_trials(deepcopy=False)
    if any(t.state == TrialState.WAITING for t in trials) or budget_used(trials) < budget:
        return "ask"
    return "wait" if any(t.state == TrialState.RUNNING for t in trials) else "done"


def drive(spec: StudySpec, url: str, budget: int, env, echo, worker: int = 0, wait: bool = True) -> None:
    """Run trials of the study until its budget is used; with `wait`, then until no other process's trial is
    still running (so selection sees the whole study)."""
    from .trial import run_trial

    study = open_study(spec, url, worker)
    space = spec.space()
    trials_root = Path(env.runs)
    while (action := next_action(study, budget, trials_root, echo)) != "done":
        if action == "wait":
            if not wait:
                return
            time.sleep(WAIT_S)
            continue
        run_trial(study, spec, space, env, echo)


def chosen_trial(study):
    """The COMPLETE trial with the best label-free value (ties: the earliest), or None."""
    from optuna.trial import TrialState

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return max(complete, key=lambda t: (t.value, -t.number)) if complete else None


def tuned_record(spec: StudySpec, trial) -> dict:
    """What a final run of the chosen configuration records in its identity (RunConfig.tuned)."""
    return {"criterion": spec.criterion, "study": spec.name, "trial": int(trial.number)}


def final_jobs(spec: StudySpec, study, seeds: list[int]) -> list[Job]:
    """The default runs, then the chosen configuration's, on each final seed (none when nothing completed)."""
    best = chosen_trial(study)
    if best is None or not seeds:
        return []
    return ([spec.final_job(s) for s in seeds]
            + [spec.final_job(s, best.params, tuned_record(spec, best)) for s in seeds])


# ---------------------------------------------------------------------------------------------------- processes


def _stderr(msg: str) -> None:
    import sys

    print(msg, file=sys.stderr, flush=True)


def _trial_worker(worker: int, threads: int, studies: list[tuple[StudySpec, str]], budget: int, env) -> None:
    """A spawned worker: the studies in turn, asking trials until each budget is used (Ctrl-C is the parent's)."""
    import signal

    import torch

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(threads)
    for spec, url in studies:
        drive(spec, url, budget, env, _stderr, worker=worker, wait=False)


def run_studies(studies: list[tuple[StudySpec, str]], budget: int, env, workers: int, echo) -> None:
    """Every study to its budget: here (one worker), or on `workers` spawned processes sharing the storages, each
    with cores / workers torch threads; then, here, until no other process's trial is running."""
    import multiprocessing

    if workers > 1:
        threads = max(1, (os.cpu_count() or 1) // workers)
        echo(f"{workers} local trial workers, {threads} threads each")
        ctx = multiprocessing.get_context("spawn")
        procs = [ctx.Process(target=_trial_worker, args=(k, threads, studies, budget, env)) for k in range(workers)]
        for proc in procs:
            proc.start()
        try:
            for proc in procs:
                proc.join()
        finally:
            for proc in procs:
                if proc.is_alive():
                    proc.terminate()  # Ctrl-C here: the trials' checkpoints are atomic, their trials are retried
                proc.join()
    for spec, url in studies:
        drive(spec, url, budget, env, echo)


def existing_study(spec: StudySpec, url: str):
    """The study as stored (for the board); a study that is not there is one line naming the command."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    missing = f"no study {spec.name} in {url}; run `pllbench tune` with the same options first"
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).is_file():
        raise PllbenchError(missing)  # opening it would leave an empty database behind
    storage = open_storage(url)
    if spec.name not in optuna.study.get_all_study_names(storage):
        raise PllbenchError(missing)
    return optuna.load_study(study_name=spec.name, storage=storage)
