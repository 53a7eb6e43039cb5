"""Grids of runs (methods × datasets × seeds) that resume, skip, record failures and scale out.

A job is one (method, dataset, seed) under a preset and overrides; its id is a hash of exactly those inputs. Its run
is `Job.run_config()` (pllbench.train.runconfig: the trainer's own resolution); the run folder is that run's run id,
which also hashes the candidate and teacher artifacts, so it is known once the candidates exist, and `status` matches
folders to jobs by `RunConfig.signature`. Executing a job: finished (final.json) → verified against its manifest,
then skipped (or reported as corrupt, without writing into the folder); lock held by a live process → skipped as
running elsewhere; otherwise claim it, resume from its checkpoint if any, and train. An exception fails the job
(failed.json with the one-line error, or `<runs>/_jobs/<job id>.failed.json` before the run folder is known), never
the grid; a rerun retries it. Unscoped `--hp` keys naming an optimisation setting (OPTIM_KEYS) override the preset's
value.

The grid's spec is recorded under `<runs>/_grids/<id>.json` so `pllbench status` can count pending jobs.
"""

from __future__ import annotations

import dataclasses
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import PllbenchError, exception_text, os_error_message
from ..hparams import UNSCOPED, canonical_overrides
from ..train.legacy import recorded_earlier
from ..train.runconfig import OPTIM_KEYS, RunConfig, check_optim
from ..train.runs import (
    FINAL,
    claim,
    clear_job_failure,
    inside_root,
    log_attempt,
    read_json,
    record_failure,
    record_job_failure,
    remove_resume_state,
    verify_finished,
)
from ..util import key_hash
from ..wording import percent

# ---------------------------------------------------------------------------------------------------- the spec


def split_datasets(text: str, option: str = "--datasets") -> list[str]:
    """'fmnist,synthetic:train=384,test=64' → ['fmnist', 'synthetic:train=384,test=64'] (options keep their commas).
    An empty item (`fmnist,,cifar10`, a trailing comma) is refused."""
    items: list[str] = []
    for token in (t.strip() for t in text.split(",")):
        if not token:
            raise PllbenchError(f"malformed {option} {text!r}: an empty item; expected names like fmnist,cifar10")
        if "=" in token and ":" not in token and items and ":" in items[-1]:
            items[-1] += "," + token
        else:
            items.append(token)
    return items


@dataclass
class GridSpec:
    """What to run. `hp` is the --hp overrides in their one form: {"*" (every method that declares the key) or a
    method: {key: value}}. `bf16` is part of what runs (a bf16 run is another run), recorded only when on."""

    methods: list[str]
    datasets: list[str]
    seeds: list[int]
    preset: str = "paper"
    epochs: int | None = None
    hp: dict = field(default_factory=dict)
    val_fraction: float = 0.0
    candidate_seed: int | None = None
    bf16: bool = False
    candidates: str = "id"  # the candidate source of the PLL methods (reference rows keep their own)

    def __post_init__(self):
        from ..data.candidates import source_text

        self.hp = canonical_overrides(self.hp)
        self.candidates = source_text(self.candidates)

    def identity(self) -> dict:
        ident = {"methods": list(self.methods), "datasets": list(self.datasets), "seeds": list(self.seeds),
                 "preset": self.preset, "epochs": self.epochs, "hp": canonical_overrides(self.hp),
                 "val_fraction": self.val_fraction, "candidate_seed": self.candidate_seed}
        if self.bf16:  # grids of fp32 runs keep the ids they had before bf16 was recorded
            ident["bf16"] = True
        if self.candidates != "id":  # so do grids of ID candidates
            ident["candidates"] = self.candidates
        return ident

    @classmethod
    def from_identity(cls, ident: dict) -> GridSpec:
        return cls(list(ident["methods"]), list(ident["datasets"]), [int(s) for s in ident["seeds"]],
                   ident["preset"], ident.get("epochs"), canonical_overrides(ident.get("hp")),
                   float(ident.get("val_fraction", 0.0)), ident.get("candidate_seed"), bool(ident.get("bf16")),
                   ident.get("candidates", "id"))

    @property
    def id(self) -> str:
        return key_hash(self.identity(), 10)

    def describe(self) -> str:
        extra = (f", epochs {self.epochs}" if self.epochs else "") + (", bf16" if self.bf16 else "") + \
            (f", candidates {self.candidates}" if self.candidates != "id" else "")
        return (f"{','.join(self.methods)} × {' '.join(self.datasets)} × seeds {','.join(map(str, self.seeds))} "
                f"(preset {self.preset}{extra})")

    def validate(self) -> None:
        """Refuse unknown names and bad hyperparameters (type, range, views) before any expensive work: every job's
        run is resolved as the trainer will resolve it."""
        from ..method import check_unscoped_hp, get_method

        classes = [get_method(m) for m in self.methods]
        hp = check_optim(self.hp)
        method_hp = {scope: {k: v for k, v in values.items() if k not in OPTIM_KEYS} for scope, values in hp.items()}
        check_unscoped_hp(classes, method_hp)
        for job in self.jobs():
            job.run_config()

    def jobs(self) -> list[Job]:
        """Dataset, then seed, then method: consecutive jobs share one prepared dataset and candidate set."""
        return [Job(m, d, s, self.preset, self.epochs, self._job_hp(m), self.val_fraction, self.candidate_seed,
                    self.bf16, candidates=self.candidates)
                for d in self.datasets for s in self.seeds for m in self.methods]

    def _job_hp(self, method: str) -> dict:
        """The overrides that can reach this method (so unrelated --hp entries do not change its id)."""
        from ..method import get_method

        declared = get_method(method).hparams
        relevant = {}
        unscoped = {k: v for k, v in self.hp.get(UNSCOPED, {}).items() if k in declared or k in OPTIM_KEYS}
        if unscoped:
            relevant[UNSCOPED] = unscoped
        if self.hp.get(method):
            relevant[method] = dict(self.hp[method])
        return relevant


@dataclass(frozen=True)
class Job:
    method: str
    dataset: str  # as typed, options included (`synthetic:train=384`)
    seed: int
    preset: str
    epochs: int | None
    hp: dict = field(hash=False)  # the overrides that reach this method, in their one form
    val_fraction: float = 0.0
    candidate_seed: int | None = None
    bf16: bool = False
    tuned: dict | None = field(default=None, hash=False)  # a study's chosen configuration (RunConfig.tuned)
    candidates: str = "id"  # candidate source asked for (`uniform:q=0.3`); reference rows keep their own

    def key(self) -> dict:
        key = {"method": self.method, "dataset": self.dataset, "seed": self.seed, "preset": self.preset,
               "epochs": self.epochs, "hp": canonical_overrides(self.hp), "val_fraction": self.val_fraction,
               "candidate_seed": self.candidate_seed}
        if self.bf16:  # fp32 jobs keep the ids they had before bf16 was recorded
            key["bf16"] = True
        if self.tuned:  # so are untuned jobs' ids
            key["tuned"] = self.tuned
        if self.candidates != "id":  # and jobs on ID candidates
            key["candidates"] = self.candidates
        return key

    @property
    def id(self) -> str:
        return key_hash(self.key(), 12)

    @property
    def name(self) -> str:
        return f"{self.dataset}/{self.method}/s{self.seed}"

    def run_config(self, compile: bool = False) -> RunConfig:
        """The run of this job, resolved as the trainer resolves it (its artifact hashes come with the prepared
        candidates, RunConfig.with_artifacts)."""
        return RunConfig.resolve(self.method, self.dataset, self.preset, self.seed, overrides=self.hp,
                                 epochs=self.epochs, val_fraction=self.val_fraction,
                                 candidate_seed=self.candidate_seed, bf16=self.bf16, compile=compile,
                                 tuned=self.tuned, candidates=self.candidates)

    def signature(self) -> str:
        """What a run folder of this job matches on (everything but the artifact hashes): RunConfig.signature."""
        return self.run_config().signature


def run_signature(config: dict) -> str | None:
    """The signature of a run folder's config.json (None when it is not a readable run config)."""
    try:
        return RunConfig.from_json(config).signature
    except PllbenchError:
        return None


# ------------------------------------------------------------------------------------------------ executing jobs


@dataclass(frozen=True)
class RunEnv:
    """Where and how a worker runs jobs (plain strings: it travels to other processes and machines)."""

    runs: str
    cache: str
    data_root: str | None = None
    download: bool = False
    device: str | None = None
    progress: bool = False
    debug: bool = False
    session: str = ""  # one per `pllbench run`: prepared data is reused within it, re-verified by the next
    compile: bool = False  # torch.compile the backbones (trainer.resolve_run_config)
    bf16: bool = False  # bfloat16 autocast, CUDA or CPU (docs/spec/protocols.md §4: off by default)
    quiet_failures: bool = False  # a one-job grid: its failure is the command's one `error:` line, not echoed here


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def one_line(exc: BaseException, where=None) -> str:
    """A PllbenchError as it is; an OS refusal (full disk, permission) with its path (else `where`) and the fix."""
    if isinstance(exc, OSError):
        return os_error_message(exc, where)
    if isinstance(exc, PllbenchError):
        return exception_text(exc)
    text = f"{type(exc).__name__}: {exception_text(exc)}"  # a foreign message may be anything: keep its start
    return text if len(text) <= 400 else text[:397] + "..."


_PREPARED: dict = {}  # the last prepared (dataset, preset, seed) of this process, or the error preparing it


def _prepared(job: Job, env: RunEnv, device, echo):
    from ..data.prepare import prepare

    source = job.run_config().candidate_source
    key = (env.session, job.dataset, job.preset, job.seed, job.candidate_seed, source, env.cache, env.data_root,
           env.download, str(device))
    if key not in _PREPARED:
        _PREPARED.clear()
        try:
            prep = prepare(job.dataset, job.preset, job.seed, root=env.data_root, download=env.download,
                           cache=Path(env.cache), device=device, candidate_seed=job.candidate_seed,
                           candidate_source=source, echo=echo)
            rep = prep.candidates.report
            echo(f"candidates {prep.candidates.hash} ({job.dataset}, seed {job.seed}): mean |S| "
                 f"{rep['size']['mean']:.3f}, teacher test accuracy {percent(rep['teacher']['test_acc'])}")
        except Exception as exc:  # noqa: BLE001 — every job of this (dataset, seed) fails with it, the grid goes on
            if env.debug:
                raise
            prep = exc
        _PREPARED[key] = prep
    prep = _PREPARED[key]
    if isinstance(prep, Exception):
        raise prep
    return prep


def _result(job: Job, status: str, run: str | None = None, final: dict | None = None, error: str | None = None,
            owner: dict | None = None, test_images: int | None = None) -> dict:
    return {"job": job.name, "job_id": job.id, "status": status, "run": run, "final": final, "error": error,
            "owner": owner, "test_images": test_images}


_REPORTED: set = set()  # failures before training already echoed by this process (one per dataset × seed)


def ensure_job_artifacts(job: Job, run: RunConfig, prep, env: RunEnv, device, echo) -> None:
    """The artifacts the job's method needs, built on demand as candidates are (CAD's stored edits)."""
    from ..method import ArtifactRequest, get_method

    get_method(job.method).ensure_artifacts(run.hparams, ArtifactRequest(
        job.dataset, job.preset, run.candidate_seed, prep.candidates.hash, Path(env.cache), device, env.data_root,
        env.download, echo))


def execute_job(job: Job, env: RunEnv, echo=_stderr) -> dict:
    """Run one job to completion unless it is finished or claimed elsewhere; never raises for a failed run.

    status: done (trained now), skipped (finished earlier), busy (another live process holds it), failed, corrupt
    (finished, but a file fails its manifest: reported, never written to). A failed job echoes at most one line.
    """
    import torch

    from ..data.prepare import default_device
    from ..train import loop as trainer

    device = torch.device(env.device) if env.device else default_device()
    run = None
    try:
        prep = _prepared(job, env, device, echo)
        if env.bf16 and not job.bf16:  # a RunEnv from before jobs carried bf16
            job = dataclasses.replace(job, bf16=True)
        resolved = job.run_config(compile=env.compile).with_artifacts(prep)
        resolved = recorded_earlier(Path(env.runs), resolved) or resolved
        run, config = resolved.run_id, resolved.to_json()
        run_dir = inside_root(Path(env.runs), run)
        if not (run_dir / FINAL).exists():
            ensure_job_artifacts(job, resolved, prep, env, device, echo)
    except Exception as exc:  # noqa: BLE001
        if env.debug:
            raise
        message = one_line(exc)
        record_job_failure(Path(env.runs), job.id, message, job.key())  # no run folder: `status` still sees it
        if not env.quiet_failures and (env.session, message) not in _REPORTED:
            _REPORTED.add((env.session, message))
            echo(f"{run or job.name}: failed before training: {message}")
        return _result(job, "failed", run, error=message)
    clear_job_failure(Path(env.runs), job.id)
    test_images = len(prep.data.test)

    def finished() -> dict:
        """A finished run: skipped when it verifies against its manifest, reported as corrupt otherwise."""
        final, problem = verify_finished(run_dir)
        if problem:
            if not env.quiet_failures:
                echo(f"{run}: corrupt: {problem}")
            return _result(job, "corrupt", run, error=problem, test_images=test_images)
        remove_resume_state(run_dir)
        echo(f"{run}: finished earlier, test accuracy {100 * final['test_acc']:.2f}%")
        return _result(job, "skipped", run, final, test_images=test_images)

    if (run_dir / FINAL).exists():  # never claimed, so nothing is written into a finished (or corrupt) folder
        return finished()
    with claim(run_dir, job=job.id) as (held, owner):
        if not held:
            echo(f"{run}: running in another process (pid {owner.get('pid', '?')} on {owner.get('host', '?')})")
            return _result(job, "busy", run, owner=owner, test_images=test_images)
        if (run_dir / FINAL).exists():  # finished between the check and the claim
            return finished()
        (run_dir / "failed.json").unlink(missing_ok=True)
        progress = read_json(run_dir / "progress.json") or {}
        log_attempt(run_dir, "start", job=job.id, from_epoch=int(progress.get("epoch", 0)))
        started = time.time()
        try:
            final = trainer.train_run(prep, config, run_dir, device, progress=env.progress)
        except Exception as exc:  # noqa: BLE001 — recorded, the grid goes on
            if env.debug:
                raise
            message = one_line(exc, run_dir)
            try:
                if not (run_dir / "config.json").exists():  # failed before the trainer wrote it: status must see it
                    trainer.write_config(run_dir, resolved, device)
                record_failure(run_dir, message, type(exc).__name__, job.key(),
                               None if isinstance(exc, PllbenchError) else traceback.format_exc())
                log_attempt(run_dir, "failed", job=job.id, error=message)
            except OSError:
                # The full disk or refused folder that stopped the run refuses its record too; `message` says so.
                if not isinstance(exc, OSError):
                    raise
            if not env.quiet_failures:
                echo(f"{run}: failed: {message}")
            return _result(job, "failed", run, error=message, test_images=test_images)
        log_attempt(run_dir, "done", job=job.id, wall_seconds=round(time.time() - started, 2))
    echo(f"{run}: final-epoch test accuracy {100 * final['test_acc']:.2f}% on {test_images} test images")
    return _result(job, "done", run, final, test_images=test_images)
