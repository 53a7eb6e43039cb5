"""What work costs, from the run times that finished runs measured (benchmarks/grid_cost.py, `pllbench tune`).

A run's time is the seconds of its epochs, evaluation included (final.json `seconds`). Only runs of the preset's
default settings count: rows whose label carries hyperparameter, epoch, validation or bf16 changes
(`dirk{teacher_init=separate}`, `proden{bf16}`) are left out. The fastest runs are the closest to an otherwise idle
machine; the median is what a shared one gave. Wall times pack jobs longest first onto the first free worker.
"""

from __future__ import annotations

import heapq
import statistics
from pathlib import Path

import pandas as pd

from ..wording import duration, plural


def packed_wall(jobs: list[float], workers: int) -> float:
    """Makespan of `jobs` (durations) on `workers`: longest first, each onto the worker that frees up first."""
    free = [0.0] * workers
    for job in sorted(jobs, reverse=True):
        heapq.heappush(free, heapq.heappop(free) + job)
    return max(free)


def default_runs(runs: pd.DataFrame, preset: str, dataset: str) -> pd.DataFrame:
    """The finished runs of the preset's default settings on one dataset (rows of results.load_runs)."""
    if runs.empty:
        return runs
    return runs[(runs["state"] == "done") & (runs["preset"] == preset) & (runs["dataset"] == dataset)
                & ~runs["label"].str.contains("{", regex=False)]


def run_seconds(runs: pd.DataFrame, method: str) -> list[float]:
    """The measured run times (s) of one method among `default_runs` rows."""
    return [float(s) for s in runs.loc[runs["method"] == method, "seconds"].dropna()] if not runs.empty else []


def tune_estimate(root: Path, studies: list, trials: int, final_seeds: int, workers: int) -> list[str]:
    """Lines saying what a tuning costs before it starts, from finished default runs under `root`: per study, at most
    `trials` trial runs (no pruning; a trial trains on 1 - val_fraction of the rows) and 2 x `final_seeds` final
    runs (the defaults are skipped where they are finished already), at the median measured run time."""
    from ..leaderboard.results import load_runs

    frame = load_runs(Path(root))
    lines, jobs, missing = [], [], []
    for spec in studies:
        run = spec.job({}).run_config()
        seconds = run_seconds(default_runs(frame, run.preset_name, run.dataset_name), spec.method)
        if not seconds:
            missing.append(spec.method)
            continue
        median = statistics.median(seconds)
        trial = median * (1 - spec.val_fraction)
        jobs += [trial] * trials + [median] * (2 * final_seeds)
        runs_text = plural(len(seconds), "finished default run")
        lines.append(f"  {spec.method}: median run {duration(median)} over {runs_text}; "
                     f"{trials} trials at most {duration(trials * trial)}, {2 * final_seeds} final runs at most "
                     f"{duration(2 * final_seeds * median)}")
    if jobs:
        lines.insert(0, f"cost estimate (from finished runs under {root}; pruning and finished default runs make it "
                        f"less):")
        lines.append(f"  total at most {sum(jobs) / 3600:.2f} run-hours, about {duration(packed_wall(jobs, workers))} "
                     f"wall on {plural(workers, 'worker')}")
    if missing:
        lines.append(f"cost estimate: no finished default run of {', '.join(missing)} under {root} to estimate from")
    return lines
