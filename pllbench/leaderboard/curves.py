"""The leaderboard's learning curves: the test accuracy per epoch of every row of a board (curves.jsonl of each
seed's finished run), the mean over seeds with a band from the lowest to the highest seed, one panel per method group
and dataset, the candidate teacher's accuracy as a dashed line among the references. Written as `<board>-curves.png`
beside the markdown board, which links it.

Drawn on matplotlib's Agg canvas directly (no pyplot, so no global backend state).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from ..errors import PllbenchError
from ..train.runs import read_curves
from ..util import atomic_write_bytes
from .cells import KEY, Board

GROUPS = ("references", "mission methods", "classics", "ablations")
# What registering a method sets on its class, and what a hyperparameter variant declares: an ablation has no more.
_VARIANT_ATTRIBUTES = {"__module__", "__doc__", "__qualname__", "__firstlineno__", "__static_attributes__", "name",
                       "family", "summary", "hparams", "hp_specs", "hparam_docs"}


def method_group(method: str, reference: bool) -> str:
    """references: reference rows (the oracle); ablations: methods whose class adds nothing but hyperparameters to
    another registered method (CAD's and CAD-CAM's -norl, -noca, -noboth); classics: the one-network baselines on
    the cls view (PRODEN, CC, RC, LWS, CAVL); mission methods: every other method (an uninstalled plugin's too)."""
    from ..method import ClassifierMethod, get_method

    if reference:
        return "references"
    try:
        cls = get_method(method)
    except PllbenchError:
        return "mission methods"
    parent = cls.__mro__[1]
    registered_parent = getattr(parent, "name", "") not in ("", method)
    if registered_parent and set(vars(cls)) <= _VARIANT_ATTRIBUTES:
        return "ablations"
    if issubclass(cls, ClassifierMethod) and tuple(cls.views) == ("cls",):
        return "classics"
    return "mission methods"


def row_curves(board: Board) -> dict[tuple[str, str], dict]:
    """{(row, dataset): {"group", "epochs", "mean", "low", "high", "seeds"}} in percent, from the selected finished
    runs; an epoch's statistics are over the seeds that have it. Rows whose runs have no curves are left out."""
    out = {}
    for (label, column), runs in board.done.groupby(KEY, sort=False):
        per_epoch: dict[int, list[float]] = {}
        for path in runs["path"]:
            for record in read_curves(Path(path)):
                if isinstance(record.get("test_acc"), (int, float)) and isinstance(record.get("epoch"), int):
                    per_epoch.setdefault(record["epoch"], []).append(100 * record["test_acc"])
        if not per_epoch:
            continue
        epochs = sorted(per_epoch)
        accs = [np.array(per_epoch[e]) for e in epochs]
        out[(label, column)] = {
            "group": method_group(runs["method"].iloc[0], bool(runs["reference"].iloc[0])),
            "epochs": [e + 1 for e in epochs], "mean": [a.mean() for a in accs], "low": [a.min() for a in accs],
            "high": [a.max() for a in accs], "seeds": len(runs)}
    return out


def write_curves_plot(board: Board, path: Path) -> Path | None:
    """Draw the board's learning curves into `path` (atomically); None (and nothing written) without curves."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    curves = row_curves(board)
    if not curves:
        return None
    groups = [g for g in GROUPS if any(c["group"] == g for c in curves.values())]
    columns = [c for c in board.columns if any(column == c for _, column in curves)]
    fig = Figure(figsize=(4.6 * len(groups), 3.4 * len(columns) + 0.5), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(columns), len(groups), squeeze=False, sharey=True)
    for i, column in enumerate(columns):
        for j, group in enumerate(groups):
            ax = axes[i][j]
            rows = [(label, c) for (label, col), c in curves.items() if col == column and c["group"] == group]
            for label, c in sorted(rows, key=lambda item: -item[1]["mean"][-1]):  # best final accuracy first
                line = ax.plot(c["epochs"], c["mean"], marker="." if len(c["epochs"]) < 30 else None,
                               label=f"{label} ({c['mean'][-1]:.1f})")[0]
                ax.fill_between(c["epochs"], c["low"], c["high"], color=line.get_color(), alpha=0.18, linewidth=0)
            teacher = board.done.loc[board.done["dataset_column"] == column, "teacher_test_acc"].dropna()  # in %
            if group == "references" and not teacher.empty:
                ax.axhline(teacher.mean(), color="0.35", linestyle="--", linewidth=1,
                           label=f"candidate teacher ({teacher.mean():.1f})")
            ax.set_title(f"{column}: {group}", fontsize=10)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_xlabel("epoch")
            ax.grid(alpha=0.3)
            if j == 0:
                ax.set_ylabel("test accuracy (%)")
            if rows:
                ax.legend(fontsize=7, loc="lower right")
            else:
                ax.text(0.5, 0.5, "no finished runs", ha="center", va="center", transform=ax.transAxes)
    fig.suptitle(f"preset {board.preset}: test accuracy per epoch, mean over seeds, band from the lowest to the "
                 f"highest seed (final mean in the legend)", fontsize=10)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", metadata={"Software": None})
    atomic_write_bytes(path, buffer.getvalue())
    return path
