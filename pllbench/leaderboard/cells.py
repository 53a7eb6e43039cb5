"""The leaderboard's data: boards of `results.load_runs` rows, the run that speaks for each seed, and the per-cell
statistics (pandas groupby / agg) that tables.py renders."""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ..data.registry import paper_datasets
from .results import load_runs

STATE_ORDER = {"done": 0, "running": 1, "interrupted": 2, "failed": 3, "corrupt": 3, "new": 4}
KEY = ["label", "dataset_column"]


def paper_numbers() -> list[dict]:
    from importlib.resources import files

    text = files("pllbench").joinpath("resources/paper_numbers.csv").read_text()
    return list(csv.DictReader(io.StringIO(text)))


def select_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """Per (row, dataset, seed) the run that speaks for the seed: a finished one (the latest final.json) before a
    running, an interrupted, a failed and a new one; in (row, dataset, seed) order."""
    ranked = runs.assign(_order=runs["state"].map(STATE_ORDER), _age=-runs["final_mtime"])
    chosen = ranked.sort_values(["_order", "_age"], kind="stable").drop_duplicates([*KEY, "seed"])
    return chosen.drop(columns=["_order", "_age"]).sort_values([*KEY, "seed"], kind="stable")


@dataclass
class Board:
    preset: str
    name: str  # file stem
    columns: list[str]
    runs: pd.DataFrame  # the board's run folders: rows of results.load_runs
    methods: tuple[str, ...] = ()  # a board of these methods' runs only (`--methods`); () = every method
    selected: pd.DataFrame = field(init=False)  # select_runs(runs)
    done: pd.DataFrame = field(init=False)  # the selected finished runs
    ranks: dict[str, tuple[float, int]] = field(init=False)  # average_ranks(self)

    def __post_init__(self):
        self.selected = select_runs(self.runs)
        self.done = self.selected[self.selected["state"] == "done"]
        self.ranks = average_ranks(self)

    @property
    def rows(self) -> dict[str, dict[str, pd.DataFrame]]:
        """{row label: {dataset column: its run folders}}."""
        out: dict[str, dict[str, pd.DataFrame]] = {}
        for (label, column), runs in self.runs.groupby(KEY, sort=False):
            out.setdefault(label, {})[column] = runs
        return out

    @property
    def references(self) -> list[str]:
        return sorted(set(self.runs.loc[self.runs["reference"], "label"]))

    @property
    def ranked(self) -> list[str]:
        """The ranked rows (not references), best average rank first."""
        labels = set(self.runs.loc[~self.runs["reference"], "label"])
        return sorted(labels, key=lambda lb: (self.ranks.get(lb, (float("inf"), 0))[0], lb))


def build_boards(root: Path, preset: str | None = None, datasets: list[str] | None = None,
                 frame: pd.DataFrame | None = None, methods: list[str] | None = None) -> list[Board]:
    """One board per preset (restricted to `datasets` and to the runs of `methods` when given), from `frame` or
    load_runs(root)."""
    frame = load_runs(root) if frame is None else frame
    if frame.empty:
        return []
    frame = frame[frame["preset"].notna() & (frame["preset"] != "")]
    if preset is not None:
        frame = frame[frame["preset"] == preset]
    if methods:
        frame = frame[frame["method"].isin(methods)]
    boards, paper = [], paper_datasets()  # the paper's datasets first, in its column order
    for preset_name, runs in frame.groupby("preset", sort=True):
        if datasets:
            wanted = set(datasets)
            runs = runs[runs["dataset_column"].isin(wanted) | runs["dataset"].isin(wanted)]
        if runs.empty:
            continue
        columns = sorted(set(runs["dataset_column"]), key=lambda c: (paper.index(c) if c in paper else len(paper), c))
        stem = preset_name + ("-" + "+".join(re.sub(r"[^A-Za-z0-9._=-]+", "_", d) for d in datasets)
                              if datasets else "")
        boards.append(Board(preset_name, stem, columns, runs, tuple(methods or ())))
    return boards


def cell_stats(board: Board) -> pd.DataFrame:
    """Per (row, dataset) over the selected finished runs: test accuracy mean / sample std / n, the seeds, device
    hours, collapsed runs, stability (mean over seeds of the last epochs' std), peak memory, teacher accuracy."""
    if board.done.empty:
        return pd.DataFrame(columns=["mean", "std", "n", "seeds", "hours", "collapsed", "stability", "peak",
                                     "teacher"], index=pd.MultiIndex.from_tuples([], names=KEY))
    return board.done.groupby(KEY, sort=False).agg(
        mean=("test_acc", "mean"), std=("test_acc", "std"), n=("test_acc", "count"),
        seeds=("seed", lambda s: ",".join(str(x) for x in s)), hours=("seconds", lambda s: s.sum() / 3600),
        collapsed=("collapsed", "sum"), stability=("last5_std", "mean"), peak=("peak_mem_mb", "max"),
        teacher=("teacher_test_acc", "mean"))


def average_ranks(board: Board) -> dict[str, tuple[float, int]]:
    """Per ranked row: (mean rank over the datasets it has a number for, how many); rank 1 = best mean, ties
    averaged. References are not ranked."""
    stats = cell_stats(board)
    ranked = set(board.runs.loc[~board.runs["reference"], "label"])
    means = stats.loc[stats.index.get_level_values("label").isin(ranked), "mean"].dropna()
    if means.empty:
        return {}
    ranks = means.groupby(level="dataset_column").rank(ascending=False, method="average")
    per_row = ranks.groupby(level="label").agg(["mean", "count"])
    return {label: (float(row["mean"]), int(row["count"])) for label, row in per_row.iterrows()}


def seed_note(run) -> str | None:
    """Why a selected run has no number: 'failed: <error>', 'running (epoch a/b)', 'interrupted (epoch a/b)'."""
    if run["state"] in ("failed", "corrupt"):
        return f"{run['state']}: {run['error'] if isinstance(run['error'], str) else '?'}"
    if run["state"] in ("running", "interrupted"):
        return f"{run['state']} (epoch {run['epochs_done']}/{run['epochs']})"
    if run["state"] == "new":
        return "started, no epoch yet"
    return None


def seed_notes(board: Board) -> dict[tuple[str, str], list[tuple[int, str]]]:
    """{(row, dataset): [(seed, note), ...] in seed order} for the selected runs without a number."""
    out: dict[tuple[str, str], list[tuple[int, str]]] = {}
    for _, run in board.selected[board.selected["state"] != "done"].iterrows():
        note = seed_note(run)
        if note:
            out.setdefault((run["label"], run["dataset_column"]), []).append((int(run["seed"]), note))
    return out
