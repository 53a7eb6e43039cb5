"""The leaderboard's "lost classes": classes a row no longer predicts, and where their test items went.

A row can score low because it confuses everything a little or because it merged whole classes into one. The second
is what the ID candidates invite: a class that is a candidate of most train items (Shirt on Fashion-MNIST) attracts
the classes it is confused with. Per (row, dataset), over the seeds' final-epoch predictions (predictions.parquet):
a class is lost when its recall, averaged over the seeds, is below LOST_RECALL; its items went to the class the
pooled confusion row sends most of them to. A row whose mean is below BELOW_PERCENT gets the lost classes in its
cell, so the cell says why (or that no class was lost).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .cells import Board
from .compare import read_final_predictions
from .tables import Tables, escape

LOST_RECALL = 0.10
BELOW_PERCENT = 50.0


@dataclass(frozen=True)
class Lost:
    cls: int
    recall: float  # mean over seeds, fraction
    to: int  # the class most of its items were predicted as (pooled over seeds)
    share: float  # the fraction of its items predicted as `to`


def confusions(frames: list, num_classes: int) -> np.ndarray:
    """(seeds, K, K) confusion counts [true, predicted] of the seeds' final-epoch predictions."""
    out = np.zeros((len(frames), num_classes, num_classes), dtype=np.int64)
    for seed, frame in enumerate(frames):
        np.add.at(out[seed], (frame["y_true"].to_numpy(), frame["y_pred"].to_numpy()), 1)
    return out


def lost_classes(confusion: np.ndarray, threshold: float = LOST_RECALL) -> list[Lost]:
    """The classes whose mean recall over the seeds is below `threshold` (classes without test items never are)."""
    if len(confusion) == 0:
        return []
    totals = confusion.sum(axis=2)  # (seeds, K)
    present = (totals > 0).all(axis=0)
    recall = np.divide(np.diagonal(confusion, axis1=1, axis2=2), totals, out=np.zeros(totals.shape),
                       where=totals > 0).mean(axis=0)
    pooled = confusion.sum(axis=0)
    lost = []
    for c in np.flatnonzero(present & (recall < threshold)):
        away = pooled[c].copy()
        away[c] = -1
        to = int(away.argmax())
        lost.append(Lost(int(c), float(recall[c]), to, float(pooled[c, to] / pooled[c].sum())))
    return lost


def class_names(column: str) -> list[str]:
    """The dataset's class names when its file declares them without loading (else none: `class k` is used)."""
    from ..data.registry import get_dataset

    try:
        return [str(name) for name in get_dataset(column).info().classes]
    except Exception:  # noqa: BLE001 — a dataset whose info needs its files, or one no longer registered
        return []


def class_name(names: list[str], k: int) -> str:
    return names[k] if k < len(names) else f"class {k}"


def board_lost(board: Board, read=read_final_predictions) -> dict[tuple[str, str], list[Lost]]:
    """{(row, dataset): lost classes} for every (row, dataset) with finished runs, references included; `read`
    loads a run folder's final-epoch predictions (leaderboard.render shares one cached reader)."""
    out = {}
    for (label, column), done in board.done.groupby(["label", "dataset_column"], sort=False):
        frames = [read(path) for path in done["path"]]
        frames = [f for f in frames if f is not None]
        if not frames:
            continue
        k = int(max(max(f["y_true"].max(), f["y_pred"].max()) for f in frames)) + 1
        out[(label, column)] = lost_classes(confusions(frames, k))
    return out


def lost_text(lost: list[Lost], names: list[str]) -> str:
    """`T-shirt/top, Pullover, Coat → Shirt`: the lost classes grouped by where their items went."""
    by_target: dict[int, list[str]] = {}
    for item in lost:
        by_target.setdefault(item.to, []).append(class_name(names, item.cls))
    return "; ".join(f"{', '.join(sources)} → {class_name(names, to)}" for to, sources in by_target.items())


def below_note(mean: float, lost: list[Lost] | None, names: list[str]) -> str:
    """What a cell below BELOW_PERCENT appends: the lost classes, or that none was lost."""
    if mean >= BELOW_PERCENT or lost is None:
        return ""
    if not lost:
        return f"below {BELOW_PERCENT:.0f}: no class lost"
    return f"below {BELOW_PERCENT:.0f}: lost {lost_text(lost, names)}"


def lost_table(t: Tables, board: Board, lost: dict[tuple[str, str], list[Lost]]) -> None:
    """The section: one line per (row, dataset) that lost a class, with each class's recall and destination."""
    rows = []
    for (label, column), items in sorted(lost.items()):
        if not items:
            continue
        names = class_names(column)
        detail = "; ".join(f"{class_name(names, i.cls)} ({100 * i.recall:.1f} % recall, {100 * i.share:.0f} % → "
                           f"{class_name(names, i.to)})" for i in items)
        rows.append([escape(label), column, str(len(items)), escape(detail)])
        t.record("classes", label, "pllbench", column, "lost_classes", len(items), note=lost_text(items, names))
    if not rows:
        return
    t.lines += ["## Lost classes", "",
                f"Classes a row no longer predicts: recall below {100 * LOST_RECALL:.0f} % on the test split, mean "
                "over the seeds' final-epoch predictions, with the share of their items sent to the class that "
                "took most of them (pooled over seeds). A ranked row below "
                f"{BELOW_PERCENT:.0f} % names them in its accuracy cell.", ""]
    t.table(["method", "dataset", "lost", "classes (recall, where their items went)"], rows)
