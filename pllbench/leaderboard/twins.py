"""The leaderboard's "identical rows": rows that turn out to be one computation under two names.

Some ablations switch off the only term in which two methods differ (CAD and CAD-CAM differ in their edits, which
only the RL term reads, so `cad-noboth` and `cad-cam-noboth` train the same network on the same batches). A board
that ranks both counts one result twice. Per dataset, two rows are twins when their final-epoch predictions
(predictions.parquet) are identical item for item on every seed both finished (one at least; a row may have more
seeds than its twin); the board lists each group once. The predictions are those the lost-classes pass has already
read (leaderboard.render shares one cached reader), so the check costs array comparisons only.
"""

from __future__ import annotations

import numpy as np

from .cells import Board
from .compare import read_final_predictions, seed_paths
from .tables import Tables, escape


def twins(paths_a: dict[int, str], paths_b: dict[int, str], read) -> list[int]:
    """The seeds two rows both finished ({seed: run folder} each) when their final predictions agree item for item
    on every one of them (and there is at least one), else []."""
    shared = sorted(set(paths_a) & set(paths_b))
    for seed in shared:
        a, b = read(paths_a[seed]), read(paths_b[seed])
        if a is None or b is None or not a.index.equals(b.index) \
                or not np.array_equal(a["y_pred"].to_numpy(), b["y_pred"].to_numpy()):
            return []
    return shared


def identical_rows(board: Board, read=read_final_predictions) -> list[tuple[str, list[str], list[int]]]:
    """[(dataset column, twin row labels, the seeds compared)] for each group of ≥ 2 rows that are twins of the
    group's first row (rows may have finished different seeds: they are compared on the seeds they share)."""
    groups = []
    for column, done in board.done.groupby("dataset_column", sort=False):
        paths = {label: seed_paths(board, label, column) for label in sorted(set(done["label"]))}
        labels = list(paths)
        while len(labels) > 1:
            first, rest = labels[0], labels[1:]
            seeds = {label: twins(paths[first], paths[label], read) for label in rest}
            group = [label for label in rest if seeds[label]]
            if group:
                groups.append((column, [first, *group], sorted(set().union(*(seeds[lb] for lb in group)))))
            labels = [label for label in rest if label not in group]
    return groups


def twins_table(t: Tables, groups: list[tuple[str, list[str], list[int]]]) -> None:
    """The section (nothing when no two rows are twins)."""
    if not groups:
        return
    t.lines += ["## Identical rows", "",
                "Rows whose final-epoch test predictions are identical, item for item, on every seed both finished: "
                "one computation under two names (an ablation that switches off the only part in which two methods "
                "differ). The main table ranks each of them; read them as one result.", ""]
    rows = []
    for column, labels, seeds in groups:
        rows.append([", ".join(escape(lb) for lb in labels), column, ",".join(str(s) for s in seeds)])
        t.record("identical", labels[0], "pllbench", column, "identical_rows", len(labels),
                 seeds=",".join(str(s) for s in seeds), note="; ".join(labels))
    t.table(["rows", "dataset", "seeds compared"], rows)
