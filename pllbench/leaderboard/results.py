"""Results as data: `load_runs(root)` reads every run folder under a results root into one pandas DataFrame.

One row per run folder (finished or not), with its config fields, final and entangled metrics, collapse
diagnostics, costs, state and environment. Accuracies are in percent (0–100); a value a run does not have is
NaN / None. The leaderboard is built on this frame, and `pllbench export` writes it as CSV or Parquet.
See docs/grids.md ("Results as data") for the columns.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pandas as pd

from ..evaluate import projection_collapsed
from ..train.runs import RunFolder, read_attempts, scan

ACC_TOP = "acc_top_"  # entangled-subset accuracy columns: acc_top_<p>@<split>/<extractor>
LAST_EPOCHS = 5  # stability: the std of the test accuracy over the last this-many epochs
STATE_NAMES = {"incomplete": "interrupted"}  # runs.RunFolder.state → the frame's state (done, running, failed,
# interrupted, new, corrupt)
COLUMNS = [
    "run", "path", "state", "error", "dataset", "dataset_column", "dataset_options", "preset", "preset_settings",
    "method", "label", "reference", "seed", "candidate_hash", "candidate_source", "teacher_hash", "hparams",
    "val_fraction", "bf16", "epochs", "epochs_done", "test_acc", "last5_mean", "last5_std", "center_distance",
    "proj_mean_cos", "proj_eff_rank", "collapsed", "teacher_test_acc", "seconds", "samples_per_sec", "peak_mem_mb",
    "peak_mem_scope", "started_at", "finished_at", "attempts", "busy", "final_mtime", "commit", "packages", "torch",
    "hardware",
]


NUMERIC = ["val_fraction", "test_acc", "last5_mean", "last5_std", "center_distance", "proj_mean_cos", "proj_eff_rank",
           "teacher_test_acc", "seconds", "samples_per_sec", "peak_mem_mb", "started_at", "finished_at", "final_mtime"]


def _number(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _percent(value) -> float | None:
    """A stored accuracy (a fraction, as the trainer writes every accuracy) in percent."""
    value = _number(value)
    return None if value is None else 100 * value


def _method_class(name: str):
    from ..errors import PllbenchError
    from ..method import get_method

    try:
        return get_method(name)
    except PllbenchError:
        return None


def dataset_column(config: dict) -> str:
    """`name`, or `name:key=value,...` for the options that differ from the loader's defaults."""
    from ..data.registry import get_dataset
    from ..errors import PllbenchError

    key = config.get("dataset", {})
    name, options = key.get("name", "?"), key.get("options") or {}
    try:
        defaults = get_dataset(name).options() if options else {}
    except PllbenchError:
        defaults = {}
    extra = {k: v for k, v in sorted(options.items()) if defaults.get(k) != v}
    source = candidate_source(config)
    kind = f" [{source}]" if source.startswith("uniform") else ""  # another kind of ambiguity: its own column
    return name + (":" + ",".join(f"{k}={v}" for k, v in extra.items()) if extra else "") + kind


def candidate_source(config: dict) -> str:
    return str((config.get("candidates") or {}).get("source", "id"))


def row_label(run: RunFolder) -> str:
    """The run's label (final.json's, else its method's) plus whatever it changed relative to its preset (hparams,
    optimisation overrides, epochs, val, bf16): RunConfig.label_for."""
    from ..errors import PllbenchError
    from ..train.runconfig import RunConfig

    base = (run.final or {}).get("label")
    try:
        return RunConfig.from_json(run.config).label_for(base)
    except PllbenchError:
        return base or str(run.config.get("method", "?"))


def is_reference(run: RunFolder) -> bool:
    """A reference row (never ranked): final.json or the method class says so, or the run is the oracle (true labels
    as candidates)."""
    method = run.config.get("method")
    return bool((run.final or {}).get("reference")) or candidate_source(run.config) == "oracle" \
        or method == "oracle" or bool(getattr(_method_class(method), "reference", False))


def peak_memory_scope(final: dict) -> str | None:
    """What final.json's peak memory covers: "run", "process" (a run before the per-run reset, whatever it says),
    or None where no peak was recorded."""
    speed = final.get("throughput") or {}
    if _number(speed.get("peak_mem_mb")) is None:
        return None
    return "run" if speed.get("peak_mem_scope") == "run" else "process"


def peak_memory(final: dict) -> float | None:
    """final.json's peak memory of this run in MB (CUDA allocated, or the resident set on the CPU), or None where the
    record cannot say it is this run's own (peak_memory_scope is not "run"): runs that predate the per-run reset (or
    where it failed) recorded the peak of their whole process, which in a grid worker includes every run before them."""
    if peak_memory_scope(final) != "run":
        return None
    value = float(final["throughput"]["peak_mem_mb"])
    return value if value > 0 else None


def entangle_values(record) -> dict[tuple[str, str], float]:
    """{(analysis, p): subset accuracy} from an entangle.json, whatever of its structure is present."""
    out: dict[tuple[str, str], float] = {}
    if not isinstance(record, dict):
        return out
    subsets = record.get("subsets")
    entries = subsets.items() if isinstance(subsets, dict) else [("", record)]
    for analysis, entry in entries:
        top = entry.get("top") if isinstance(entry, dict) else None
        if not isinstance(top, dict):
            continue
        for p, stats in top.items():
            value = stats.get("subset_acc") if isinstance(stats, dict) else stats
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                out[(str(analysis), str(p))] = float(value)
    return out


def top_column(analysis: str, p: str) -> str:
    return f"{ACC_TOP}{p}@{analysis}"


def parse_top_column(name: str) -> tuple[str, str] | None:
    """(analysis, p) of an `acc_top_<p>@<analysis>` column, else None."""
    if not name.startswith(ACC_TOP) or "@" not in name:
        return None
    p, analysis = name[len(ACC_TOP):].split("@", 1)
    return analysis, p


def _environment(config: dict) -> dict:
    env = config.get("environment") or {}
    if env.get("gpu"):
        hardware = f"{env['gpu']} ({env.get('device', 'cuda')})"
    elif env:
        cores = f", {env['cores']} cores" if env.get("cores") else ""
        hardware = f"{env.get('cpu') or 'cpu'}{cores}, {env.get('threads', '?')} threads"
    else:
        hardware = None
    packages = ", ".join(f"{k} {env[k]}" for k in ("pllbench", "torch", "numpy", "python") if env.get(k))
    return {"commit": env.get("commit") or None, "packages": packages or None, "torch": env.get("torch"),
            "hardware": hardware}


def _identity(run: RunFolder) -> dict:
    config = run.config
    preset = config.get("preset", {})
    cands = config.get("candidates") or {}
    settings = "epochs {epochs}, backbone {backbone}, batch {batch_size}, lr {lr}, rate {rate}".format(
        **{k: preset.get(k, "?") for k in ("epochs", "backbone", "batch_size", "lr", "rate")})
    corrupt = getattr(run, "corrupt", None)  # a finished run whose files fail their manifest (train/runs.py)
    failed = (run.failed or {}).get("error", "?") if run.failed is not None else None
    return {"run": run.rel, "path": str(run.path), "state": STATE_NAMES.get(run.state, run.state),
            "error": corrupt or failed,
            "dataset": config.get("dataset", {}).get("name"), "dataset_column": dataset_column(config),
            "dataset_options": json.dumps(config.get("dataset", {}).get("options") or {}, sort_keys=True),
            "preset": preset.get("name"), "preset_settings": settings, "method": config.get("method"),
            "label": row_label(run), "reference": is_reference(run), "seed": int(config.get("seed", -1)),
            "candidate_hash": cands.get("hash") or None, "candidate_source": candidate_source(config),
            "teacher_hash": cands.get("teacher") or None,
            "hparams": json.dumps(config.get("hparams", {}), sort_keys=True, default=str),
            "val_fraction": float(config.get("val_fraction") or 0.0), "bf16": bool(config.get("bf16")),
            "epochs": run.epochs, "epochs_done": run.epochs_done}


def _curve_metrics(curves: list[dict], final: dict | None) -> dict:
    """The last epochs' accuracy (mean, sample std), the last curves.jsonl record's projection diagnostics and the
    collapse flag over every epoch's cosine (else final.json's `projection`)."""
    accs = [a for a in (_percent(r.get("test_acc")) for r in curves) if a is not None][-LAST_EPOCHS:]
    cosines = [c for c in (_number(r.get("proj/mean_cos")) for r in curves) if c is not None]
    last = curves[-1] if curves else {}
    if "proj/mean_cos" in last:
        collapsed = projection_collapsed(cosines)
    else:
        projection = (final or {}).get("projection")
        last = {f"proj/{k}": v for k, v in projection.items()} if isinstance(projection, dict) else {}
        collapsed = bool(last.get("proj/collapsed"))
    return {"last5_mean": statistics.mean(accs) if accs else None,
            "last5_std": statistics.stdev(accs) if len(accs) > 1 else None,
            "proj_mean_cos": _number(last.get("proj/mean_cos")), "proj_eff_rank": _number(last.get("proj/eff_rank")),
            "collapsed": collapsed}


def _final_metrics(run: RunFolder) -> dict:
    final = run.final or {}
    curves = run.curves
    speeds = [s for s in (_number(r.get("samples_per_sec")) for r in curves) if s is not None]
    seconds = _number(final.get("seconds")) if run.final is not None else \
        sum(_number(r.get("seconds")) or 0.0 for r in curves)
    speed = _number((final.get("throughput") or {}).get("samples_per_sec"))
    try:
        mtime = (run.path / "final.json").stat().st_mtime
    except OSError:
        mtime = 0.0
    return {"test_acc": _percent(final.get("test_acc")), "teacher_test_acc": _percent(final.get("teacher_test_acc")),
            "seconds": seconds, "samples_per_sec": speed if speed is not None else
            (statistics.median(speeds) if speeds else None),
            "peak_mem_mb": peak_memory(final), "peak_mem_scope": peak_memory_scope(final), "final_mtime": mtime}


def _entangled(run: RunFolder) -> dict:
    record = run.extra("entangle.json")
    out = {top_column(a, p): 100 * v for (a, p), v in entangle_values(record).items()}
    out["center_distance"] = _number(record.get("center_distance")) if isinstance(record, dict) else None
    return out


def busy_intervals(events: list[dict], curves: list[dict]) -> list[tuple[float, float]]:
    """[start, end] of each attempt of a run: its `done` / `failed` event, or, for an attempt that was killed (no
    such event before the next start), its start plus the seconds of the epochs it finished (curves.jsonl, epochs
    from its `from_epoch` to the next attempt's); the unfinished epoch it lost is not counted."""
    timed = sorted((t, e) for e in events if (t := _number(e.get("time"))) is not None)
    starts = [(i, t, e) for i, (t, e) in enumerate(timed) if e.get("event") == "start"]
    epoch_seconds = {int(r["epoch"]): _number(r.get("seconds")) or 0.0 for r in curves
                     if isinstance(r.get("epoch"), int)}
    out = []
    for n, (i, start, event) in enumerate(starts):
        following = starts[n + 1] if n + 1 < len(starts) else None
        window = timed[i + 1:following[0] if following else len(timed)]
        end = next((t for t, e in window if e.get("event") in ("done", "failed")), None)
        if end is None:
            first = int(_number(event.get("from_epoch")) or 0)
            last = (int(_number(following[2].get("from_epoch")) or 0) if following
                    else max(epoch_seconds, default=-1) + 1)
            end = start + sum(v for k, v in epoch_seconds.items() if first <= k < last)
        out.append((start, max(start, end)))
    return out


def _attempt_times(run: RunFolder) -> dict:
    events = read_attempts(run.path)
    starts = [t for e in events if e.get("event") == "start" and (t := _number(e.get("time"))) is not None]
    ends = [t for e in events if e.get("event") in ("done", "failed") and (t := _number(e.get("time"))) is not None]
    return {"started_at": min(starts) if starts else None, "finished_at": max(ends) if ends else None,
            "attempts": len(starts), "busy": json.dumps(busy_intervals(events, run.curves))}


def run_record(run: RunFolder) -> dict:
    """One run folder as a flat dict (the row of `load_runs`)."""
    return {**_identity(run), **_final_metrics(run), **_curve_metrics(run.curves, run.final), **_entangled(run),
            **_attempt_times(run), **_environment(run.config)}


def runs_frame(folders: list[RunFolder]) -> pd.DataFrame:
    """The frame of these run folders, in their order: the fixed columns, then the entangled-subset columns."""
    records = [run_record(run) for run in folders]
    extra = sorted({k for r in records for k in r if k not in COLUMNS})
    frame = pd.DataFrame.from_records(records, columns=COLUMNS + extra)
    return frame.astype({**{c: "float64" for c in NUMERIC + extra}, "reference": bool, "collapsed": bool,
                         "bf16": bool, "seed": "int64", "epochs": "int64", "epochs_done": "int64", "attempts": "int64"})


def load_runs(root: str | Path) -> pd.DataFrame:
    """Every run folder under the results root `root` (see runs.scan), one row each."""
    return runs_frame(scan(Path(root)))
