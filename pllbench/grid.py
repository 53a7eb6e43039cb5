"""Grids of runs (methods × datasets × seeds) that resume, skip, record failures and scale out.

A job is one (method, dataset, seed) under a preset and overrides; its id is a hash of exactly those inputs. Its
run folder is `trainer.run_id(config)`, which also hashes the candidate and teacher artifacts, so it is known once
the candidates exist. Executing a job: finished (final.json) → skipped; lock held by a live process → skipped as
running elsewhere; otherwise claim it, resume from its checkpoint if any, and train. An exception fails the job
(failed.json with the one-line error), never the grid; a rerun retries it.

The grid's spec is recorded under `<runs>/_grids/<id>.json` so `pllbench status` can count pending jobs.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from .errors import PllbenchError, exception_text, os_error_message
from .runs import RunFolder, claim, inside_root, log_attempt, read_json, record_failure, remove_resume_state, scan
from .util import atomic_write_json, key_hash

LAUNCHERS = ("local", "ray", "slurm")
SLURM_KEYS = {"partition": str, "timeout_min": int, "array_parallelism": int, "mem_gb": (int, float),
              "account": str, "qos": str, "constraint": str, "cluster": str}
GRIDS_DIR = "_grids"


# ---------------------------------------------------------------------------------------------------- the spec


def split_datasets(text: str) -> list[str]:
    """'fmnist,synthetic:train=384,test=64' → ['fmnist', 'synthetic:train=384,test=64'] (options keep their commas)."""
    items: list[str] = []
    for token in (t.strip() for t in text.split(",")):
        if not token:
            continue
        if "=" in token and ":" not in token and items and ":" in items[-1]:
            items[-1] += "," + token
        else:
            items.append(token)
    return items


def _hp_key(scope: str | None) -> str:
    return scope if scope is not None else "*"


@dataclass
class GridSpec:
    """What to run. `hp` is {method or None (every method that declares the key): {key: value}}."""

    methods: list[str]
    datasets: list[str]
    seeds: list[int]
    preset: str = "quick"
    epochs: int | None = None
    hp: dict = field(default_factory=dict)
    val_fraction: float = 0.0
    candidate_seed: int | None = None

    def identity(self) -> dict:
        return {"methods": list(self.methods), "datasets": list(self.datasets), "seeds": list(self.seeds),
                "preset": self.preset, "epochs": self.epochs,
                "hp": {_hp_key(k): dict(v) for k, v in self.hp.items()},
                "val_fraction": self.val_fraction, "candidate_seed": self.candidate_seed}

    @classmethod
    def from_identity(cls, ident: dict) -> GridSpec:
        hp = {(None if k == "*" else k): dict(v) for k, v in ident.get("hp", {}).items()}
        return cls(list(ident["methods"]), list(ident["datasets"]), [int(s) for s in ident["seeds"]],
                   ident["preset"], ident.get("epochs"), hp, float(ident.get("val_fraction", 0.0)),
                   ident.get("candidate_seed"))

    @property
    def id(self) -> str:
        return key_hash(self.identity(), 10)

    def describe(self) -> str:
        extra = f", epochs {self.epochs}" if self.epochs else ""
        return (f"{','.join(self.methods)} × {' '.join(self.datasets)} × seeds {','.join(map(str, self.seeds))} "
                f"(preset {self.preset}{extra})")

    def validate(self) -> None:
        """Refuse unknown names and bad hyperparameters before any expensive work."""
        from .data import get_dataset
        from .method import check_unscoped_hp, get_method, resolve_hparams
        from .presets import method_overrides, resolve_preset

        classes = [get_method(m) for m in self.methods]
        check_unscoped_hp(classes, self.hp)
        for dataset in self.datasets:
            name = get_dataset(dataset).info().name
            preset_cfg = resolve_preset(self.preset, name)
            for cls in classes:
                resolve_hparams(cls, name, method_overrides(preset_cfg, cls.name, cls.family), self.hp)

    def jobs(self) -> list[Job]:
        """Dataset, then seed, then method: consecutive jobs share one prepared dataset and candidate set."""
        return [Job(m, d, s, self.preset, self.epochs, self._job_hp(m), self.val_fraction, self.candidate_seed)
                for d in self.datasets for s in self.seeds for m in self.methods]

    def _job_hp(self, method: str) -> str:
        """The overrides that can reach this method (so unrelated --hp entries do not change its id), as JSON."""
        from .method import get_method

        declared = get_method(method).hparams
        relevant = {}
        unscoped = {k: v for k, v in self.hp.get(None, {}).items() if k in declared}
        if unscoped:
            relevant["*"] = unscoped
        if self.hp.get(method):
            relevant[method] = dict(self.hp[method])
        return json.dumps(relevant, sort_keys=True)


@dataclass(frozen=True)
class Job:
    method: str
    dataset: str  # as typed, options included (`synthetic:train=384`)
    seed: int
    preset: str
    epochs: int | None
    hp: str  # canonical JSON of the overrides that reach this method
    val_fraction: float
    candidate_seed: int | None

    def key(self) -> dict:
        return {"method": self.method, "dataset": self.dataset, "seed": self.seed, "preset": self.preset,
                "epochs": self.epochs, "hp": json.loads(self.hp), "val_fraction": self.val_fraction,
                "candidate_seed": self.candidate_seed}

    @property
    def id(self) -> str:
        return key_hash(self.key(), 12)

    @property
    def name(self) -> str:
        return f"{self.dataset}/{self.method}/s{self.seed}"

    def hp_cli(self) -> dict:
        return {(None if k == "*" else k): v for k, v in json.loads(self.hp).items()}

    def signature(self) -> dict:
        """The config fields a run folder of this job will have (everything but the artifact hashes)."""
        from .data import get_dataset
        from .method import get_method, resolve_hparams
        from .presets import method_overrides, resolve_preset

        loader = get_dataset(self.dataset)
        name = loader.info().name
        cfg = resolve_preset(self.preset, name)
        if self.epochs is not None:
            cfg["epochs"] = int(self.epochs)
        cls = get_method(self.method)
        hp = resolve_hparams(cls, name, method_overrides(cfg, cls.name, cls.family), self.hp_cli())
        options = loader.options() if hasattr(loader, "options") else {}
        return json.loads(json.dumps({"method": self.method, "seed": self.seed, "dataset": {"name": name,
                                      "options": options}, "preset": cfg, "hparams": hp,
                                      "val_fraction": float(self.val_fraction)}))


def run_signature(config: dict) -> str:
    keys = ("method", "seed", "dataset", "preset", "hparams", "val_fraction")
    return key_hash({k: config.get(k) for k in keys})


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
            out.setdefault(None, {})[key] = value
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
    from .prepare import prepare

    key = (env.session, job.dataset, job.preset, job.seed, job.candidate_seed, env.cache, env.data_root,
           env.download, str(device))
    if key not in _PREPARED:
        _PREPARED.clear()
        try:
            prep = prepare(job.dataset, job.preset, job.seed, root=env.data_root, download=env.download,
                           cache=Path(env.cache), device=device, candidate_seed=job.candidate_seed, echo=echo)
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
            owner: dict | None = None) -> dict:
    return {"job": job.name, "job_id": job.id, "status": status, "run": run, "final": final, "error": error,
            "owner": owner}


def execute_job(job: Job, env: RunEnv, echo=_stderr) -> dict:
    """Run one job to completion unless it is finished or claimed elsewhere; never raises for a failed run.

    status: done (trained now), skipped (finished earlier), busy (another live process holds it), failed.
    """
    import torch

    from . import trainer
    from .prepare import default_device

    device = torch.device(env.device) if env.device else default_device()
    try:
        prep = _prepared(job, env, device, echo)
        config = trainer.resolve_run_config(prep, job.method, job.seed, job.hp_cli(), job.epochs, job.val_fraction,
                                            compile=env.compile, bf16=env.bf16)
    except Exception as exc:  # noqa: BLE001
        if env.debug:
            raise
        echo(f"{job.name}: failed before training: {one_line(exc)}")
        return _result(job, "failed", error=one_line(exc))
    run = trainer.run_id(config)
    try:
        run_dir = inside_root(Path(env.runs), run)
    except PllbenchError as exc:
        echo(f"{run}: failed: {exc}")
        return _result(job, "failed", run, error=str(exc))
    if (final := read_json(run_dir / "final.json")) is not None:
        remove_resume_state(run_dir)
        echo(f"{run}: finished earlier, test accuracy {100 * final['test_acc']:.2f}%")
        return _result(job, "skipped", run, final)
    with claim(run_dir, job=job.id) as (held, owner):
        if not held:
            echo(f"{run}: running in another process (pid {owner.get('pid', '?')} on {owner.get('host', '?')})")
            return _result(job, "busy", run, owner=owner)
        if (final := read_json(run_dir / "final.json")) is not None:  # finished between the check and the claim
            return _result(job, "skipped", run, final)
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
                    atomic_write_json(run_dir / "config.json", {**config, "environment": trainer.environment(device)})
                record_failure(run_dir, message, type(exc).__name__, job.key(),
                               None if isinstance(exc, PllbenchError) else traceback.format_exc())
                log_attempt(run_dir, "failed", job=job.id, error=message)
            except OSError:
                # The full disk or refused folder that stopped the run refuses its record too; `message` says so.
                if not isinstance(exc, OSError):
                    raise
            echo(f"{run}: failed: {message}")
            return _result(job, "failed", run, error=message)
        log_attempt(run_dir, "done", job=job.id, wall_seconds=round(time.time() - started, 2))
    echo(f"{run}: test accuracy {100 * final['test_acc']:.2f}%")
    return _result(job, "done", run, final)


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


def grid_status(spec: GridSpec, folders: list[RunFolder]) -> GridStatus:
    by_signature: dict[str, list[RunFolder]] = {}
    for r in folders:
        by_signature.setdefault(run_signature(r.config), []).append(r)
    order = {"done": 0, "running": 1, "failed": 2, "incomplete": 3, "new": 4}
    jobs = spec.jobs()
    status = GridStatus(f"grid {spec.id}: {spec.describe()}", len(jobs))
    for job in jobs:
        signature = job.signature()
        matches = sorted(by_signature.get(key_hash(signature), []), key=lambda r: order[r.state])
        state = matches[0].state if matches else "new"
        if state == "new":
            status.pending.append((job.method, signature["dataset"]["name"], int(signature["preset"]["epochs"])))
        else:
            getattr(status, state).append(matches[0])
    return status


def folder_status(group: str, folders: list[RunFolder]) -> GridStatus:
    status = GridStatus(f"runs {group} (no grid spec: pending unknown)", None)
    for r in folders:
        if r.state != "new":
            getattr(status, r.state).append(r)
    return status


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def render_status(status: GridStatus, epoch_seconds: dict[tuple[str, str], float]) -> str:
    pending = len(status.pending) if status.total is not None else "?"
    lines = [status.title,
             f"  done {len(status.done)} · running {len(status.running)} · failed {len(status.failed)} · "
             f"pending {pending}" + (f" (of which {len(status.incomplete)} interrupted, resumable)"
                                     if status.incomplete else "")
             + (f" · {status.total} jobs" if status.total is not None else "")]
    if status.total is None and status.incomplete:
        lines[-1] = lines[-1].replace("pending ?", f"interrupted {len(status.incomplete)}")
    for r in status.running:
        owner = r.owner or {}
        speed = r.curves[-1].get("samples_per_sec") if r.curves else None
        lines.append(f"  running     {r.rel}: epoch {len(r.curves)}/{r.epochs}, pid {owner.get('pid', '?')} on "
                     f"{owner.get('host', '?')}" + (f", {speed:,.0f} samples/s" if speed else ""))
    for r in status.incomplete:
        lines.append(f"  interrupted {r.rel}: epoch {len(r.curves)}/{r.epochs} (rerun the grid to resume)")
    for r in status.failed:
        lines.append(f"  failed      {r.rel}: {(r.failed or {}).get('error', '?')}")
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
        status = grid_status(grid, folders)
        claimed.update(r.rel for r in status.done + status.running + status.failed + status.incomplete)
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

