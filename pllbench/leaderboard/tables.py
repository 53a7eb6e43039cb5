"""The leaderboard's sections as markdown (tabulate) and CSV records: provenance, accuracy, references, entangled
subsets, center distance, plots. Numbers come from leaderboard.cell_stats / seed_notes (pandas over load_runs)."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import pandas as pd
from tabulate import DataRow, TableFormat, tabulate

from ..wording import duration, plural
from .cells import KEY, Board
from .results import parse_top_column

# GitHub markdown, one space around each cell and no column padding (so a cell's width never depends on others)
MARKDOWN = TableFormat(lineabove=None, linebelowheader=lambda widths, _aligns: "|" + "---|" * len(widths),
                       linebetweenrows=None, linebelow=None, headerrow=DataRow("|", "|", "|"),
                       datarow=DataRow("|", "|", "|"), padding=1, with_header_hide=None)
COLLAPSED = "†collapsed"


def missing(x) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def _none(x):
    return None if missing(x) else x


def escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _kind(note: str) -> str:
    return note.split(":")[0].split(" (")[0]


def fmt(mean: float, std: float | None, n: int, digits: int = 2) -> str:
    core = f"{mean:.{digits}f}" + (f" ± {std:.{digits}f}" if not missing(std) else "")
    return f"{core} (n={n})"


def bold_core(text: str) -> str:
    """`**mean ± std** (n=...)` from `mean ± std (n=...)`."""
    core, rest = text.split(" (", 1)
    return f"**{core}** ({rest}"


class Tables:
    """Collects markdown lines and CSV rows together."""

    def __init__(self):
        self.lines: list[str] = []
        self.csv: list[dict] = []

    def table(self, header: list[str], rows: list[list[str]]) -> None:
        self.lines.append(tabulate(rows, headers=header, tablefmt=MARKDOWN, stralign=None, numalign=None,
                                   disable_numparse=True))
        self.lines.append("")

    def record(self, table, row, source, dataset, metric, mean=None, std=None, n=None, seeds="", note=""):
        def num(x):
            x = _none(x)
            return "" if x is None else f"{x:.6g}" if isinstance(x, float) else str(x)

        self.csv.append({"table": table, "row": row, "source": source, "dataset": dataset, "metric": metric,
                         "mean": num(mean), "std": num(std), "n": num(n), "seeds": seeds, "note": note})


def no_number_text(notes: list[tuple[int, str]]) -> str:
    """The first seed's reason in full; the other seeds by the kind of theirs (their messages differ only in
    seed-specific details such as the candidate hash)."""
    if not notes:
        return "not run"
    (first, note), *rest = notes
    if not rest:
        return note
    kinds = Counter(_kind(n) for _, n in rest)
    others = "; ".join(f"seed {', '.join(str(s) for s, n in rest if _kind(n) == k)}: {k}" for k in kinds)
    return f"seed {first}: {note} ({others})"


def cell_text(cell, notes: list[tuple[int, str]], bold: bool = False) -> str:
    """A cell: `mean ± std (n=k; 1 failed)` (bold when best), the collapse flag, or why it has no number."""
    if cell is None:
        return escape(no_number_text(notes))
    core = f"{cell['mean']:.2f}" + (f" ± {cell['std']:.2f}" if not missing(cell["std"]) else "")
    extra = Counter(_kind(note) for _, note in notes)
    tail = "".join(f"; {count} {what}" for what, count in sorted(extra.items()))
    text = f"**{core}** (n={cell['n']}{tail})" if bold else f"{core} (n={cell['n']}{tail})"
    collapsed = int(cell["collapsed"])
    if collapsed:
        text += f" {COLLAPSED}" + ("" if collapsed == cell["n"] else f" {collapsed}/{cell['n']}")
    return text


def _cell(stats: pd.DataFrame, label: str, column: str):
    return stats.loc[(label, column)] if (label, column) in stats.index else None


def union_seconds(intervals: list[tuple[float, float]]) -> float:
    """The length of the union of [start, end] intervals."""
    total, reach = 0.0, float("-inf")
    for start, end in sorted(intervals):
        if end > reach:
            total += end - max(start, reach)
            reach = end
    return total


def time_line(board: Board) -> str:
    """The grid's measured wall time: the union of its runs' attempt intervals (results.busy_intervals), so the
    pauses of a grid resumed over several sessions are not counted; the span from the first start to the last
    finish beside it when they differ; and the summed compute seconds."""
    runs = board.runs
    compute = f"{runs['seconds'].fillna(0).sum():,.0f} s summed over the {plural(len(runs), 'run folder')}"
    starts, ends = runs["started_at"].dropna(), runs["finished_at"].dropna()
    if starts.empty or ends.empty or ends.max() < starts.min():
        return f"- Time: compute {compute} (wall time unknown: no attempts.jsonl)"
    timed = int((runs["started_at"].notna()).sum())
    intervals = [tuple(pair) for text in runs["busy"].dropna() for pair in json.loads(text)]
    busy, span = union_seconds(intervals), ends.max() - starts.min()
    spanned = "" if abs(span - busy) < 60 else f"; first start to last finish {duration(span)}"
    return (f"- Time: wall **{duration(busy)}** (while at least one run was training: the union of the attempts in "
            f"the attempts.jsonl of {plural(timed, 'run folder')}, {plural(len(intervals), 'attempt')}{spanned}); "
            f"compute {compute}")


def provenance(board: Board) -> list[str]:
    runs = board.runs

    def counted(values) -> str:
        counts = Counter(v for v in values if not missing(v) and v)
        return ", ".join(f"`{v}` ({n})" if len(counts) > 1 else f"`{v}`" for v, n in counts.most_common()) or "unknown"

    presets = Counter(runs["preset_settings"])
    cands: dict[str, set[str]] = {}
    for _, r in runs[runs["candidate_hash"].notna()].iterrows():
        teacher = f" (teacher `{r['teacher_hash']}`)" if not missing(r["teacher_hash"]) else ""
        source = f" [{r['candidate_source']}]" if r["candidate_source"] != "id" else ""
        cands.setdefault(r["dataset_column"], set()).add(f"s{r['seed']} `{r['candidate_hash']}`{source}" + teacher)
    settings = [f"{p} ({plural(n, 'run')})" if len(presets) > 1 else p for p, n in presets.most_common()]
    lines = [f"- Preset `{board.preset}`: " + "; ".join(settings),
             f"- Run folders: {len(runs)}",
             f"- Commit: {counted(runs['commit'])}",
             f"- Packages: {counted(runs['packages'])}",
             f"- Hardware: {counted(runs['hardware'])}",
             time_line(board)]
    for column in board.columns:
        if column in cands:
            lines.append(f"- Candidates {column}: " + ", ".join(sorted(cands[column])))
    return lines


def oracle_means(board: Board, stats: pd.DataFrame) -> dict[str, float]:
    """{dataset: the oracle row's mean}: the reference labelled `oracle` (else the first `oracle...` one)."""
    refs = [r for r in board.references if r.startswith("oracle")]
    if not refs:
        return {}
    label = "oracle" if "oracle" in refs else refs[0]
    return {c: float(cell["mean"]) for c in board.columns if (cell := _cell(stats, label, c)) is not None}


def _gap_text(gaps: list[float], of: int) -> str:
    if not gaps:
        return "—"
    return f"{sum(gaps) / len(gaps):+.2f}" + ("" if len(gaps) == of else f" ({len(gaps)}/{of})")


def _main_row(t: Tables, board: Board, label: str, stats, notes, best, oracle, show, why_low) -> list[str]:
    row, gaps = [escape(label), "pllbench"], []
    for column in board.columns:
        cell, cell_notes = _cell(stats, label, column), notes.get((label, column), [])
        text = cell_text(cell, cell_notes, bold=cell is not None and cell["mean"] == best.get(column))
        low = why_low.get((label, column), "")
        row.append(text + (f" · {escape(low)}" if cell is not None and low else ""))
        mean, std, n = (cell["mean"], cell["std"], cell["n"]) if cell is not None else (None, None, None)
        t.record("accuracy", label, "pllbench", column, "test_acc", mean, std, n,
                 cell["seeds"] if cell is not None else "",
                 "; ".join(note for _, note in cell_notes) or ("" if cell is not None else "not run"))
        if cell is None:
            continue
        t.record("cost", label, "pllbench", column, "device_hours", cell["hours"], n=cell["n"])
        if not missing(cell["stability"]):
            t.record("accuracy", label, "pllbench", column, "last5_std", cell["stability"], n=cell["n"])
        if cell["collapsed"]:
            t.record("accuracy", label, "pllbench", column, "collapsed_runs", int(cell["collapsed"]), n=cell["n"])
        if column in oracle:
            gaps.append(mean - oracle[column])
            t.record("accuracy", label, "pllbench", column, "gap_to_oracle", gaps[-1], n=cell["n"])
    rank = board.ranks.get(label)
    row.append("—" if rank is None else f"{rank[0]:.2f}" + ("" if rank[1] == len(board.columns)
                                                           else f" ({rank[1]}/{len(board.columns)})"))
    if rank is not None:
        t.record("accuracy", label, "pllbench", "", "avg_rank", rank[0], n=rank[1])
    done = board.done[board.done["label"] == label]
    if oracle:
        row.append(_gap_text(gaps, len(oracle)))
    if show["stability"]:
        row.append("—" if done["last5_std"].isna().all() else f"{done['last5_std'].mean():.2f}")
    row.append(f"{done['seconds'].sum() / 3600:.3f}")
    if show["peak"]:
        peak = done["peak_mem_mb"].max()
        row.append("—" if missing(peak) else f"{peak:,.0f}")
        if not missing(peak):
            t.record("cost", label, "pllbench", "", "peak_mem_mb", float(peak))
    return row


def _paper_rows(t: Tables, board: Board, paper: list[dict], width: int) -> list[list[str]]:
    paper_main: dict[str, dict[str, dict]] = {}
    ran = set(board.runs["method"])
    for row in paper:
        # the paper's main table in full, its ablations only where run; a board of some methods: only theirs
        shown = row["method"] in ran or (row["table"] == "main" and not board.methods)
        if row["table"] in ("main", "ablation") and row["metric"] == "acc" and shown:
            paper_main.setdefault(row["method"], {})[row["dataset"]] = row
    if not any(column in by_dataset for by_dataset in paper_main.values() for column in board.columns):
        return []
    rows = []
    for method, by_dataset in paper_main.items():
        cells = []
        for column in board.columns:
            ref = by_dataset.get(column)
            cells.append(ref["value"] if ref else "—")
            if ref:
                t.record("accuracy", method, "paper", column, "test_acc", float(ref["value"]), note=ref["note"])
        rows.append([method, "paper", *cells] + ["—"] * width)
    return rows


def main_table(t: Tables, board: Board, stats: pd.DataFrame, notes: dict, paper: list[dict],
               why_low: dict[tuple[str, str], str] | None = None) -> None:
    """why_low: {(row, dataset): text appended to the accuracy cell}, the lost classes of a row below 50 %."""
    labels = board.ranked
    ranked = stats[stats.index.get_level_values("label").isin(labels)]
    best = ranked.groupby(level="dataset_column")["mean"].max().dropna().to_dict()
    oracle = oracle_means(board, stats)
    mine = board.done[board.done["label"].isin(labels)]
    show = {"peak": mine["peak_mem_mb"].notna().any(), "stability": mine["last5_std"].notna().any()}
    t.lines += ["## Test accuracy (%)", "",
                "Final-epoch test accuracy, mean ± sample std over seeds (n seeds); **bold** = best pllbench row per "
                "dataset. Rank: mean rank over the datasets a row has (of how many). device-h: Σ run seconds / 3600."
                + (" gap to oracle: row mean − oracle mean in points (mean over datasets)." if oracle else "")
                + (" last-5 std: mean over seeds of the std of the last 5 epochs' test accuracy." if show["stability"]
                   else "")
                + (" No peak MB column: these runs recorded only their worker process's peak memory (before the "
                   "per-run reset), which includes the runs that process trained before them."
                   if not show["peak"] and mine["peak_mem_scope"].eq("process").any() else ""), ""]
    header = ["method", "source", *board.columns, "avg rank"] + (["gap to oracle"] if oracle else []) \
        + (["last-5 std"] if show["stability"] else []) + ["device-h"] + (["peak MB"] if show["peak"] else [])
    rows = [_main_row(t, board, label, stats, notes, best, oracle, show, why_low or {}) for label in labels]
    rows += _paper_rows(t, board, paper, len(header) - 2 - len(board.columns))
    t.table(header, rows)
    if any(r[1] == "paper" for r in rows):
        t.lines += ["Rows tagged `paper` are the CAD paper's numbers (CVPR 2026, via a third-party summary: no std, "
                    "unknown number of runs) under its own protocol and candidate sets: references, not "
                    "replications" + ("" if board.preset == "paper" else f", and not comparable to preset "
                                      f"`{board.preset}`") + ". `—`: no reference number.", ""]
    if ranked["collapsed"].astype(int).sum():
        t.lines += [f"{COLLAPSED}: the run's projection collapsed (mean pairwise cosine of the L2-normalised test "
                    "projections, curves.jsonl `proj/mean_cos`, above 0.99 at the final epoch or in at least half the "
                    "epochs); `k/n` when k of the n seeds did.", ""]


def references_table(t: Tables, board: Board, stats: pd.DataFrame, notes: dict) -> None:
    """The oracle (and any other reference run) and the candidate teacher, outside the ranking."""
    refs = board.references
    teacher = board.done.groupby("dataset_column")["teacher_test_acc"].agg(["mean", "std", "count"])
    teacher = teacher[teacher["count"] > 0]
    if not refs and teacher.empty:
        return
    t.lines += ["## References", "", "Not ranked or bolded. `oracle`: the learner trained on candidate sets replaced "
                "by the true labels (|S| = 1), through the same trainer and evaluator. `teacher`: the candidate "
                "teacher's accuracy on the same test split (final.json `teacher_test_acc`), mean over the runs that "
                "record it.", ""]
    rows = []
    for label in refs:
        row = [escape(label), "pllbench"]
        for column in board.columns:
            cell, cell_notes = _cell(stats, label, column), notes.get((label, column), [])
            row.append(cell_text(cell, cell_notes))
            if cell is not None:
                t.record("reference", label, "pllbench", column, "test_acc", cell["mean"], cell["std"], cell["n"],
                         cell["seeds"], "; ".join(note for _, note in cell_notes))
        rows.append(row + [f"{board.done.loc[board.done['label'] == label, 'seconds'].sum() / 3600:.3f}"])
    if not teacher.empty:
        row = ["teacher", "candidates"]
        for column in board.columns:
            if column not in teacher.index:
                row.append("—")
                continue
            mean, std, n = teacher.loc[column, "mean"], teacher.loc[column, "std"], int(teacher.loc[column, "count"])
            row.append(f"{mean:.2f}{'' if missing(std) or std <= 0 else f' ± {std:.2f}'} ({plural(n, 'run')})")
            t.record("reference", "teacher", "candidates", column, "test_acc", mean, _none(std), n)
        rows.append(row + ["—"])
    t.table(["method", "source", *board.columns, "device-h"], rows)


def p_order(p: str) -> tuple[int, float | str]:
    try:
        return 0, -float(p)
    except ValueError:
        return 1, p


def entangled_stats(board: Board) -> pd.DataFrame:
    """Per (row, dataset, analysis, p): mean / sample std / n over the selected finished runs' entangle.json."""
    names = [c for c in board.done.columns if parse_top_column(c)]
    if not names:
        return pd.DataFrame()
    long = board.done.melt(id_vars=KEY, value_vars=names, var_name="name", value_name="value").dropna(subset=["value"])
    if long.empty:
        return pd.DataFrame()
    long["analysis"] = long["name"].map(lambda c: parse_top_column(c)[0])
    long["p"] = long["name"].map(lambda c: parse_top_column(c)[1])
    return long.groupby([*KEY, "analysis", "p"]).agg(mean=("value", "mean"), std=("value", "std"),
                                                     n=("value", "count"))


def entangled_table(t: Tables, board: Board, paper: list[dict]) -> None:
    stats = entangled_stats(board)
    if stats.empty:
        return
    keys = sorted({k[1:] for k in stats.index}, key=lambda k: (board.columns.index(k[0]), k[1], p_order(k[2])))
    analyses = {a for _, a, _ in keys}
    heads = [f"{c} top {p}%" + (f" ({a})" if len(analyses) > 1 else "") for c, a, p in keys]
    t.lines += ["## Entangled instances: accuracy (%) on the top p% most similar cross-class pairs", "",
                "From each run's entangle.json (`pllbench entangle`); mean ± sample std over seeds.", ""]
    labels = [lb for lb in board.ranked + board.references if lb in stats.index.get_level_values("label")]
    ranked = stats[stats.index.get_level_values("label").isin(board.ranked)]
    best = ranked.groupby(level=[1, 2, 3])["mean"].max().to_dict()
    rows = []
    for label in labels:
        row = [escape(label), "pllbench"]
        for key in keys:
            if (label, *key) not in stats.index:
                row.append("—")
                continue
            cell = stats.loc[(label, *key)]
            text = fmt(cell["mean"], cell["std"], int(cell["n"]))
            row.append(bold_core(text) if cell["mean"] == best.get(key) else text)
            t.record("entangled", label, "pllbench", key[0], f"acc_top_{key[2]}", cell["mean"], cell["std"],
                     int(cell["n"]), note=key[1])
        rows.append(row)
    paper_ent: dict[str, dict[tuple[str, str], str]] = {}
    for row in paper:
        if row["table"] == "entangled" and row["metric"].startswith("acc_top_"):
            paper_ent.setdefault(row["method"], {})[(row["dataset"], row["metric"][len("acc_top_"):])] = row["value"]
    for method, by_key in paper_ent.items():
        cells = [by_key.get((c, p), "—") for c, _, p in keys]
        if any(cell != "—" for cell in cells):
            rows.append([method, "paper", *cells])
    t.table(["method", "source", *heads], rows)


def center_table(t: Tables, board: Board, paper: list[dict]) -> None:
    done = board.done.dropna(subset=["center_distance"])
    if done.empty:
        return
    stats = done.groupby(KEY).agg(mean=("center_distance", "mean"), std=("center_distance", "std"),
                                  n=("center_distance", "count"))
    cols = [c for c in board.columns if c in stats.index.get_level_values("dataset_column")]
    t.lines += ["## Center distance", "", "Mean pairwise distance of the class centroids of the method's "
                "features on the test split (entangle.json).", ""]
    rows = []
    for label in [lb for lb in board.ranked + board.references if lb in stats.index.get_level_values("label")]:
        row = [escape(label)]
        for column in cols:
            cell = _cell(stats, label, column)
            if cell is None:
                row.append("—")
                continue
            row.append(fmt(cell["mean"], cell["std"], int(cell["n"]), 3))
            t.record("center", label, "pllbench", column, "center_distance", cell["mean"], cell["std"], int(cell["n"]))
        rows.append(row)
    t.table(["method", *cols], rows)
    reported = {row["method"]: row["value"] for row in paper if row["metric"] == "center_distance"}
    if reported:
        t.lines += ["Paper (dataset and layer not stated): " + ", ".join(f"{m} {v}" for m, v in reported.items()), ""]


def plot_links(t: Tables, board: Board, out_dir: Path) -> None:
    links = []
    for column in board.columns:
        folder = out_dir / "plots" / f"{column.split(':')[0]}-{board.preset}"
        links += [p.relative_to(out_dir).as_posix() for p in sorted(folder.glob("*.png"))]
    if links:
        t.lines += ["## Plots", "", *[f"- [{Path(link).name}]({link})" for link in links], ""]
