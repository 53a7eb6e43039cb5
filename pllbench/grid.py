"""Grids of runs (methods × datasets × seeds) that resume, skip, record failures and scale out.

A job is one (method, dataset, seed) under a preset and overrides; its id is a hash of exactly those inputs. Its run
is `Job.run_config()` (pllbench.runconfig: the trainer's own resolution); the run folder is that run's run id, which
also hashes the candidate and teacher artifacts, so it is known once the candidates exist, and `status` matches
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
import statistics
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from .errors import PllbenchError, exception_text, os_error_message
from .hparams import UNSCOPED, canonical_overrides
from .runconfig import OPTIM_KEYS, RunConfig, apply_optim, check_optim, optim_overrides  # noqa: F401 (API)
from .runs import (
    FINAL,
    RunFolder,
    claim,
    clear_job_failure,
    inside_root,
    log_attempt,
    read_job_failure,
    read_json,
    record_failure,
    record_job_failure,
    remove_resume_state,
    scan,
    verify_finished,
)
from .util import atomic_write_json, key_hash

LAUNCHERS = ("local", "ray", "slurm")
SLURM_KEYS = {"partition": str, "timeout_min": int, "array_parallelism": int, "mem_gb": (int, float),
              "account": str, "qos": str, "constraint": str, "cluster": str}
GRIDS_DIR = "_grids"


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

    def __post_init__(self):
        self.hp = canonical_overrides(self.hp)

    def identity(self) -> dict:
        ident = {"methods": list(self.methods), "datasets": list(self.datasets), "seeds": list(self.seeds),
                 "preset": self.preset, "epochs": self.epochs, "hp": canonical_overrides(self.hp),
                 "val_fraction": self.val_fraction, "candidate_seed": self.candidate_seed}
        if self.bf16:  # grids of fp32 runs keep the ids they had before bf16 was recorded
            ident["bf16"] = True
        return ident

    @classmethod
    def from_identity(cls, ident: dict) -> GridSpec:
        return cls(list(ident["methods"]), list(ident["datasets"]), [int(s) for s in ident["seeds"]],
                   ident["preset"], ident.get("epochs"), canonical_overrides(ident.get("hp")),
                   float(ident.get("val_fraction", 0.0)), ident.get("candidate_seed"), bool(ident.get("bf16")))

    @property
    def id(self) -> str:
        return key_hash(self.identity(), 10)

    def describe(self) -> str:
        extra = (f", epochs {self.epochs}" if self.epochs else "") + (", bf16" if self.bf16 else "")
        return (f"{','.join(self.methods)} × {' '.join(self.datasets)} × seeds {','.join(map(str, self.seeds))} "
                f"(preset {self.preset}{extra})")

    def validate(self) -> None:
        """Refuse unknown names and bad hyperparameters (type, range, views) before any expensive work: every job's
        run is resolved as the trainer will resolve it."""
        from .method import check_unscoped_hp, get_method

        classes = [get_method(m) for m in self.methods]
        hp = check_optim(self.hp)
        method_hp = {scope: {k: v for k, v in values.items() if k not in OPTIM_KEYS} for scope, values in hp.items()}
        check_unscoped_hp(classes, method_hp)
        for job in self.jobs():
            job.run_config()

    def jobs(self) -> list[Job]:
        """Dataset, then seed, then method: consecutive jobs share one prepared dataset and candidate set."""
        return [Job(m, d, s, self.preset, self.epochs, self._job_hp(m), self.val_fraction, self.candidate_seed,
                    self.bf16)
                for d in self.datasets for s in self.seeds for m in self.methods]

    def _job_hp(self, method: str) -> dict:
        """The overrides that can reach this method (so unrelated --hp entries do not change its id)."""
        from .method import get_method

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

    def key(self) -> dict:
        key = {"method": self.method, "dataset": self.dataset, "seed": self.seed, "preset": self.preset,
               "epochs": self.epochs, "hp": canonical_overrides(self.hp), "val_fraction": self.val_fraction,
               "candidate_seed": self.candidate_seed}
        if self.bf16:  # fp32 jobs keep the ids they had before bf16 was recorded
            key["bf16"] = True
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
                                 candidate_seed=self.candidate_seed, bf16=self.bf16, compile=compile)

    def signature(self) -> str:
        """What a run folder of this job matches on (everything but the artifact hashes): RunConfig.signature."""
        return self.run_config().signature


def run_signature(config: dict) -> str | None:
    """The signature of a run folder's config.json (None when it is not a readable run config)."""
    try:
        return RunConfig.from_json(config).signature
    except PllbenchError:
        return None


# ------------------------------------------------------------------------------------------- the TOML grid file

_TOP_KEYS = {
    "methods": "a list of method names (or \"all\")", "datasets": "a list of dataset names",
    "seeds": "a list of non-negative integers", "preset": "a preset name", "epochs": "a positive integer",
    "hp": "a table of key = value (and [hp.METHOD] tables)", "val_fraction": "a number in [0, 0.5]",
    "candidate_seed": "an integer", "launcher": f"one of {', '.join(LAUNCHERS)}",
    "workers": "a positive integer", "address": "a Ray address string", "gpus_per_job": "a number >= 0",
    "cpus_per_job": "a number > 0", "slurm": f"a table with keys {', '.join(SLURM_KEYS)}",
}


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _names(value, key: str, where: str) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        raise PllbenchError(f"{where}: key {key!r} must be {_TOP_KEYS[key]}")
    return value


def load_grid_file(path: str | Path) -> tuple[dict, dict]:
    """(spec fields, launch fields) from a grid TOML; one-line errors naming the offending key."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        try:
            import tomli as tomllib
        except ModuleNotFoundError:
            raise PllbenchError("grid files need Python >= 3.11 (tomllib) or `pip install tomli`") from None
    where = str(path)
    try:
        data = tomllib.loads(Path(path).read_text())
    except OSError as exc:
        raise PllbenchError(f"cannot read grid file {where}: {exc.strerror or exc}; pass --grid with the path of "
                            f"a grid TOML (docs/grids.md)") from None
    except UnicodeDecodeError as exc:
        raise PllbenchError(f"{where} is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start}); "
                            f"a grid file is a TOML text file (docs/grids.md)") from None
    except tomllib.TOMLDecodeError as exc:
        raise PllbenchError(f"{where} is not valid TOML: {exc}") from None
    unknown = sorted(set(data) - set(_TOP_KEYS))
    if unknown:
        raise PllbenchError(f"{where}: unknown key {unknown[0]!r}; allowed keys: {', '.join(_TOP_KEYS)}")

    def bad(key):
        return PllbenchError(f"{where}: key {key!r} must be {_TOP_KEYS[key]}, got {data[key]!r}")

    spec: dict = {}
    launch: dict = {}
    for key, value in data.items():
        if key in ("methods", "datasets"):
            items = _names(value, key, where)
            spec[key] = ",".join(items) if key == "methods" else items
        elif key == "seeds":
            seeds = [value] if _is_int(value) else value
            if not isinstance(seeds, list) or not seeds or not all(_is_int(s) and s >= 0 for s in seeds):
                raise bad(key)
            spec[key] = [int(s) for s in seeds]
        elif key == "preset" or key == "address":
            if not isinstance(value, str) or not value:
                raise bad(key)
            (spec if key == "preset" else launch)[key] = value
        elif key in ("epochs", "workers"):
            if not _is_int(value) or value < 1:
                raise bad(key)
            (spec if key == "epochs" else launch)[key] = value
        elif key == "candidate_seed":
            if not _is_int(value) or value < 0:
                raise bad(key)
            spec[key] = value
        elif key == "val_fraction":
            if not _is_number(value) or not 0 <= value <= 0.5:
                raise bad(key)
            spec[key] = float(value)
        elif key == "launcher":
            if value not in LAUNCHERS:
                raise bad(key)
            launch[key] = value
        elif key in ("gpus_per_job", "cpus_per_job"):
            if not _is_number(value) or value < 0 or (key == "cpus_per_job" and value == 0):
                raise bad(key)
            launch[key] = float(value)
        elif key == "hp":
            spec[key] = _hp_table(value, where)
        elif key == "slurm":
            launch[key] = _slurm_table(value, where)
    return spec, launch


def _hp_table(table, where: str) -> dict:
    if not isinstance(table, dict):
        raise PllbenchError(f"{where}: key 'hp' must be {_TOP_KEYS['hp']}")
    out: dict = {}
    for key, value in table.items():
        if isinstance(value, dict):
            for sub, sub_value in value.items():
                if isinstance(sub_value, dict):
                    raise PllbenchError(f"{where}: key 'hp.{key}.{sub}' must be a value, not a table")
                out.setdefault(key, {})[sub] = sub_value
        else:
            out.setdefault(UNSCOPED, {})[key] = value
    return out


def _slurm_table(table, where: str) -> dict:
    if not isinstance(table, dict):
        raise PllbenchError(f"{where}: key 'slurm' must be {_TOP_KEYS['slurm']}")
    for key, value in table.items():
        if key not in SLURM_KEYS:
            raise PllbenchError(f"{where}: unknown key 'slurm.{key}'; allowed: {', '.join(SLURM_KEYS)}")
        expected = SLURM_KEYS[key]
        if isinstance(value, bool) or not isinstance(value, expected):
            raise PllbenchError(f"{where}: key 'slurm.{key}' has the wrong type ({value!r})")
        if key == "cluster" and value not in ("slurm", "local"):
            raise PllbenchError(f"{where}: key 'slurm.cluster' must be 'slurm' or 'local', got {value!r}")
    return dict(table)


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
    bf16: bool = False  # bfloat16 autocast on CUDA (protocols.md §4: off by default)
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
    from .method import get_method
    from .prepare import prepare

    source = get_method(job.method).candidate_source
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
                 f"{rep['size']['mean']:.3f}, teacher test accuracy {rep['teacher']['test_acc']:.4f}")
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


def execute_job(job: Job, env: RunEnv, echo=_stderr) -> dict:
    """Run one job to completion unless it is finished or claimed elsewhere; never raises for a failed run.

    status: done (trained now), skipped (finished earlier), busy (another live process holds it), failed, corrupt
    (finished, but a file fails its manifest: reported, never written to). A failed job echoes at most one line.
    """
    import torch

    from . import trainer
    from .prepare import default_device

    device = torch.device(env.device) if env.device else default_device()
    run = None
    try:
        prep = _prepared(job, env, device, echo)
        if env.bf16 and not job.bf16:  # a RunEnv from before jobs carried bf16
            job = dataclasses.replace(job, bf16=True)
        resolved = job.run_config(compile=env.compile).with_artifacts(prep)
        run, config = resolved.run_id, resolved.to_json()
        run_dir = inside_root(Path(env.runs), run)
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


def record_grid(runs: Path, spec: GridSpec) -> Path:
    path = Path(runs) / GRIDS_DIR / f"{spec.id}.json"
    if not path.exists():
        atomic_write_json(path, {"id": spec.id, "spec": spec.identity(), "created": round(time.time(), 3),
                                 "jobs": len(spec.jobs())})
    return path


def recorded_grids(runs: Path) -> list[GridSpec]:
    out = []
    for path in sorted((Path(runs) / GRIDS_DIR).glob("*.json"), key=lambda p: p.stat().st_mtime):
        data = read_json(path)
        try:
            out.append(GridSpec.from_identity(data["spec"]))
        except (TypeError, KeyError, ValueError):
            continue
    return out


# ------------------------------------------------------------------------------------------------------- status


@dataclass
class GridStatus:
    title: str
    total: int | None  # None when the spec is unknown (folders only)
    done: list[RunFolder] = field(default_factory=list)
    running: list[RunFolder] = field(default_factory=list)
    failed: list[RunFolder] = field(default_factory=list)
    incomplete: list[RunFolder] = field(default_factory=list)  # interrupted, resumable
    pending: list[tuple[str, str, int]] = field(default_factory=list)  # (method, dataset, epochs): not started
    corrupt: list[RunFolder] = field(default_factory=list)  # finished, but a file fails its manifest
    failed_jobs: list[tuple[str, str]] = field(default_factory=list)  # (job, error): failed before any run folder

    @property
    def failed_count(self) -> int:
        return len(self.failed) + len(self.failed_jobs)

    def remaining_epochs(self) -> list[tuple[str, str, int]]:
        """(method, dataset, epochs left) for every job not finished or failed."""
        return [(r.config["method"], r.config["dataset"]["name"], r.epochs - len(r.curves))
                for r in self.running + self.incomplete] + self.pending


def _epoch_seconds(folders: list[RunFolder]) -> dict[tuple[str, str], float]:
    """Median measured epoch time per (method, dataset), from curves.jsonl."""
    times: dict[tuple[str, str], list[float]] = {}
    for r in folders:
        key = (r.config["method"], r.config["dataset"]["name"])
        times.setdefault(key, []).extend(c["seconds"] for c in r.curves if isinstance(c.get("seconds"), (int, float)))
    return {k: statistics.median(v) for k, v in times.items() if v}


# A run folder's state → the GridStatus list counting it: a folder whose run died before its first epoch ("new")
# is interrupted (resumable), like one that finished some epochs.
_BUCKET = {"done": "done", "running": "running", "corrupt": "corrupt", "failed": "failed", "incomplete": "incomplete",
           "new": "incomplete"}


def grid_status(spec: GridSpec, folders: list[RunFolder], runs: Path | None = None) -> GridStatus:
    """Each job of the spec counted once: by its best run folder (done, running, corrupt, failed, interrupted), else
    failed when it failed before it had a folder (`<runs>/_jobs/<id>.failed.json`), else pending."""
    by_signature: dict[str, list[RunFolder]] = {}
    for r in folders:
        by_signature.setdefault(run_signature(r.config), []).append(r)
    order = {"done": 0, "running": 1, "corrupt": 2, "failed": 3, "incomplete": 4, "new": 5}
    jobs = spec.jobs()
    status = GridStatus(f"grid {spec.id}: {spec.describe()}", len(jobs))
    for job in jobs:
        run = job.run_config()
        matches = sorted(by_signature.get(run.signature, []), key=lambda r: order[r.state])
        if matches:
            getattr(status, _BUCKET[matches[0].state]).append(matches[0])
        elif runs is not None and (record := read_job_failure(runs, job.id)) is not None:
            status.failed_jobs.append((job.name, str(record.get("error", "?"))))
        else:
            status.pending.append((job.method, run.dataset_name, int(run.preset["epochs"])))
    return status


def folder_status(group: str, folders: list[RunFolder]) -> GridStatus:
    status = GridStatus(f"runs {group} (no grid spec: pending unknown)", None)
    for r in folders:
        getattr(status, _BUCKET[r.state]).append(r)
    return status


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def render_status(status: GridStatus, epoch_seconds: dict[tuple[str, str], float]) -> str:
    counts = (f"  done {len(status.done)} · running {len(status.running)} · failed {status.failed_count} · "
              f"interrupted {len(status.incomplete)} · corrupt {len(status.corrupt)}")
    if status.total is not None:  # pending: jobs of the spec that never started (failed ones are not pending)
        counts += f" · pending {len(status.pending)} · {status.total} jobs"
    lines = [status.title, counts]
    for r in status.running:
        owner = r.owner or {}
        speed = r.curves[-1].get("samples_per_sec") if r.curves else None
        lines.append(f"  running     {r.rel}: epoch {len(r.curves)}/{r.epochs}, pid {owner.get('pid', '?')} on "
                     f"{owner.get('host', '?')}" + (f", {speed:,.0f} samples/s" if speed else ""))
    for r in status.incomplete:
        lines.append(f"  interrupted {r.rel}: epoch {len(r.curves)}/{r.epochs} (rerun the grid to resume)")
    for r in status.failed:
        lines.append(f"  failed      {r.rel}: {(r.failed or {}).get('error', '?')}")
    for name, error in status.failed_jobs:
        lines.append(f"  failed      {name} (before training): {error}")
    for r in status.corrupt:
        lines.append(f"  corrupt     {r.rel}: {r.corrupt}")
    for r in status.done:  # finished, but its projection head collapsed (issue #13: mean cosine > 0.99)
        projection = (r.final or {}).get("projection") or {}
        if projection.get("collapsed"):
            lines.append(f"  collapsed   {r.rel}: projection mean cosine {projection['mean_cos']:.4f}, effective rank "
                         f"{projection['eff_rank']:.2f} (docs/calibration.md)")
    measured = [c["samples_per_sec"] for r in status.done + status.running + status.incomplete + status.failed
                for c in r.curves if isinstance(c.get("samples_per_sec"), (int, float))]
    if measured:
        live = sum(r.curves[-1].get("samples_per_sec", 0) for r in status.running if r.curves)
        lines.append(f"  throughput  {statistics.median(measured):,.0f} samples/s per job (median epoch)"
                     + (f"; {live:,.0f} samples/s now over {len(status.running)} running" if live else ""))
    left = status.remaining_epochs() if status.total is not None else [
        (r.config["method"], r.config["dataset"]["name"], r.epochs - len(r.curves)) for r in status.running]
    if left:
        all_times = list(epoch_seconds.values())
        fallback = statistics.median(all_times) if all_times else None
        per_dataset: dict[str, list[float]] = {}
        for (_, dataset), seconds in epoch_seconds.items():
            per_dataset.setdefault(dataset, []).append(seconds)
        total, unknown = 0.0, 0
        for method, dataset, epochs in left:
            seconds = epoch_seconds.get((method, dataset))
            if seconds is None and dataset in per_dataset:
                seconds = statistics.median(per_dataset[dataset])
            seconds = seconds if seconds is not None else fallback
            if seconds is None:
                unknown += 1
            else:
                total += seconds * epochs
        parallel = max(1, len(status.running))
        if unknown == len(left):
            lines.append("  ETA         unknown (no epoch measured yet)")
        else:
            lines.append(f"  ETA         {_duration(total / parallel)} for {sum(e for *_, e in left)} epochs left "
                         f"at {parallel} job(s) in parallel (measured epoch times)"
                         + (f"; {unknown} job(s) without an estimate" if unknown else ""))
    return "\n".join(lines)


def status_report(runs: Path, spec: GridSpec | None) -> str:
    folders = scan(runs)
    epoch_seconds = _epoch_seconds(folders)
    blocks: list[str] = []
    specs = [spec] if spec is not None else recorded_grids(runs)
    claimed: set[str] = set()
    for grid in specs:
        try:
            status = grid_status(grid, folders, runs)
        except PllbenchError as exc:  # a grid recorded by another version (a method or preset that changed since)
            if spec is not None:
                raise
            blocks.append(f"grid {grid.id}: {grid.describe()}\n  cannot be resolved now ({exc}); its run folders "
                          f"are listed below")
            continue
        claimed.update(r.rel for r in status.done + status.running + status.failed + status.incomplete
                       + status.corrupt)
        blocks.append(render_status(status, epoch_seconds))
    if spec is None:
        groups: dict[str, list[RunFolder]] = {}
        for r in folders:
            if r.rel not in claimed:
                groups.setdefault(r.rel.split("/")[0], []).append(r)
        blocks += [render_status(folder_status(g, fs), epoch_seconds) for g, fs in sorted(groups.items())]
    if not blocks:
        raise PllbenchError(f"no runs and no recorded grid under {runs}; pass --runs DIR where `pllbench run` wrote, "
                            f"or name a grid with --grid FILE (or --methods and --dataset) to see its pending jobs")
    return "\n\n".join(blocks)

