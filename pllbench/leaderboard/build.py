"""Markdown and CSV leaderboards from run folders (docs/spec/protocols.md §5): one board per preset (and dataset set).

Built on `results.load_runs` (one DataFrame row per run folder): cells.py groups the runs into boards and
cells with pandas, tables.py renders the sections with tabulate, compare.py adds the paired
comparisons (stats.py).

Rows are methods (final.json's `label`, so `cad[identity]` never poses as the paper's CAD; runs whose config departs
from the preset get the difference appended, e.g. `dirk{epochs=3}`), columns datasets. A cell is the mean ± sample
std of the final test accuracy over seeds (the latest finished run per seed), with n; a cell without finished runs
says why (failed: <error>, running, interrupted, not run), and a run whose projection collapsed is flagged. Then:
the average rank over datasets, the gap to the oracle, the stability (std of the last epochs), the cost
(device-hours = Σ final.json seconds / 3600, peak memory when recorded), and the paper's numbers as rows tagged
`paper` (pllbench/resources/paper_numbers.csv, copied from docs/spec/paper-numbers.md §6), which are never ranked or
bolded. References (the oracle, the candidate teacher) are printed outside the ranking. Classes a row no longer predicts
(recall < 10 %) are listed, and a row below 50 % names them in its cell (classes.py); rows whose
predictions are identical on every seed (one computation under two names) are listed (twins.py). Further
tables:
the entangled-subset accuracy per top-p% (entangle.json, written by `pllbench entangle`), the center distance, and
paired comparisons "vs reference method". The header records the provenance (commits, versions, hardware,
candidate hashes, time). Beside the markdown, a PNG of the learning curves (curves.py).
"""

from __future__ import annotations

import csv
import io
from functools import lru_cache
from pathlib import Path

from ..util import atomic_write_text
from . import tables
from .cells import Board, build_boards, cell_stats, paper_numbers, seed_notes
from .classes import below_note, board_lost, class_names, lost_table
from .compare import DEFAULT_COMPARISONS, comparison_table, read_final_predictions
from .curves import write_curves_plot
from .twins import identical_rows, twins_table

CSV_FIELDS = ["table", "row", "source", "dataset", "metric", "mean", "std", "n", "seeds", "note"]


def render(board: Board, out_dir: Path | None = None, comparisons: list[tuple[str, str]] | None = None,
           cache: Path | None = None, curves: Path | None = None) -> tuple[str, str]:
    """(markdown, csv) of one board. comparisons: (row, reference row) pairs for the paired-comparison table
    (default DEFAULT_COMPARISONS); cache: where entangled-subset artifacts are looked up (default: cache_root());
    curves: the learning-curve PNG beside the markdown, linked in its own section."""
    t = tables.Tables()
    t.lines += [f"# pllbench leaderboard: preset `{board.preset}`", "", "Provenance:", *tables.provenance(board), ""]
    paper = [row for row in paper_numbers() if row["source"] == "paper" and row["setting"] == "id-cad"]
    stats, notes = cell_stats(board), seed_notes(board)
    read = lru_cache(maxsize=None)(read_final_predictions)  # one read of each run's predictions per render
    lost = board_lost(board, read)
    why_low = {key: below_note(stats.loc[key, "mean"], items, class_names(key[1]))
               for key, items in lost.items() if key in stats.index}
    tables.main_table(t, board, stats, notes, paper, why_low)
    tables.references_table(t, board, stats, notes)
    lost_table(t, board, lost)
    twins_table(t, identical_rows(board, read))
    tables.entangled_table(t, board, paper)
    tables.center_table(t, board, paper)
    comparison_table(t, board, DEFAULT_COMPARISONS if comparisons is None else comparisons, cache, read)
    if curves is not None:
        t.lines += ["## Learning curves", "", f"![test accuracy per epoch]({curves.name})", "",
                    "Test accuracy per epoch, mean over seeds with a band from the lowest to the highest seed; one "
                    "panel per dataset and method group (references, mission methods, classics, ablations); the "
                    "candidate teacher's test accuracy dashed among the references.", ""]
    if out_dir is not None:
        tables.plot_links(t, board, out_dir)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(t.csv)
    return "\n".join(t.lines).rstrip() + "\n", buffer.getvalue()


def write_leaderboards(root: Path, out: Path, preset: str | None = None, datasets: list[str] | None = None,
                       comparisons: list[tuple[str, str]] | None = None, cache: Path | None = None,
                       methods: list[str] | None = None) -> list[Path]:
    """Write `<out>/<board>.md`, `.csv` and the learning curves `-curves.png` per board (atomically); returns the
    markdown paths. methods: only these methods' runs (a board of a subset: its provenance, wall time and
    comparisons cover those runs only)."""
    from ..errors import PllbenchError

    boards = build_boards(root, preset, datasets, methods=methods)
    if not boards:
        which = (f" of preset {preset!r}" if preset else "") + (f" of methods {', '.join(methods)}" if methods else "")
        raise PllbenchError(f"no runs{which} under {root}; run `pllbench run` first (or pass --runs DIR)")
    written = []
    for board in boards:
        curves = write_curves_plot(board, out / f"{board.name}-curves.png")
        markdown, table = render(board, out, comparisons, cache, curves)
        atomic_write_text(out / f"{board.name}.md", markdown)
        atomic_write_text(out / f"{board.name}.csv", table)
        written.append(out / f"{board.name}.md")
    return written
