"""Markdown and CSV leaderboards from run folders (protocols.md §5): one board per preset (and dataset set).

Rows are methods (final.json's `label`, so `cad[identity]` never poses as the paper's CAD; runs whose config departs
from the preset get the difference appended, e.g. `dirk{epochs=3}`), columns datasets. A cell is the mean ± sample
std of the final test accuracy over seeds (the latest finished run per seed), with n; a cell without finished runs
says why (failed: <error>, running, interrupted, not run). Then: the average rank over datasets, the cost
(device-hours = Σ final.json seconds / 3600, peak memory when recorded), and the paper's numbers as rows tagged
`paper` (pllbench/data/paper_numbers.csv, copied from paper-numbers.md §6), which are never ranked or bolded.
A second table gives the entangled-subset accuracy per top-p% (entangle.json, written by `pllbench entangle`),
a third the center distance. The header records the provenance (commits, versions, hardware, candidate hashes).
"""

from __future__ import annotations

import csv
import io
import re
import statistics
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from .runs import RunFolder, scan
from .util import atomic_write_text

PAPER_DATASETS = ["fmnist", "cifar10", "cifar100", "flowers", "pets"]
CSV_FIELDS = ["table", "row", "source", "dataset", "metric", "mean", "std", "n", "seeds", "note"]


def paper_numbers() -> list[dict]:
    from importlib.resources import files

    text = files("pllbench").joinpath("data/paper_numbers.csv").read_text()
    return list(csv.DictReader(io.StringIO(text)))


def _method_class(name: str):
    from .errors import PllbenchError
    from .method import get_method

    try:
        return get_method(name)
    except PllbenchError:
        return None


def dataset_column(config: dict) -> str:
    """`name`, or `name:key=value,...` for the options that differ from the loader's defaults."""
    from .data import get_dataset
    from .errors import PllbenchError

    key = config.get("dataset", {})
    name, options = key.get("name", "?"), key.get("options") or {}
    try:
        defaults = get_dataset(name).options() if options else {}
    except (PllbenchError, AttributeError):
        defaults = {}
    extra = {k: v for k, v in sorted(options.items()) if defaults.get(k) != v}
    return name + (":" + ",".join(f"{k}={v}" for k, v in extra.items()) if extra else "")


def row_label(run: RunFolder) -> str:
    """The method's label plus whatever the run changed relative to its preset (hparams, epochs, val, bf16)."""
    from .errors import PllbenchError
    from .method import resolve_hparams
    from .presets import method_overrides, resolve_preset

    config = run.config
    cls = _method_class(config["method"])
    label = (run.final or {}).get("label")
    if label is None:
        label = cls.run_label(config.get("hparams", {})) if cls else config["method"]
    changes = []
    try:
        preset = resolve_preset(config["preset"]["name"], config["dataset"]["name"])
        if cls is not None:
            defaults = resolve_hparams(cls, config["dataset"]["name"],
                                       method_overrides(preset, cls.name, cls.family), {})
            base = cls.run_label(defaults)  # a change the label already shows (cad's editor) is not repeated
            changes += [f"{k}={v}" for k, v in sorted(config.get("hparams", {}).items())
                        if defaults.get(k) != v and cls.run_label({**defaults, k: v}) == base]
        if config["preset"].get("epochs") != preset["epochs"]:
            changes.append(f"epochs={config['preset']['epochs']}")
    except (PllbenchError, KeyError, TypeError):
        pass
    if config.get("val_fraction"):
        changes.append(f"val={config['val_fraction']:g}")
    if config.get("bf16"):
        changes.append("bf16")
    return label + ("{" + ", ".join(changes) + "}" if changes else "")


def peak_memory(final: dict) -> float | None:
    """final.json's peak memory in MB (CUDA allocated, or the process's peak RSS on the CPU), if recorded."""
    for value in (final.get("peak_mem_mb"), (final.get("throughput") or {}).get("peak_mem_mb")):
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
            return float(value)
    return None


def _stats(values: list[float]) -> tuple[float, float | None]:
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else None)


def _fmt(mean: float, std: float | None, n: int, digits: int = 2) -> str:
    core = f"{mean:.{digits}f}" + (f" ± {std:.{digits}f}" if std is not None else "")
    return f"{core} (n={n})"


def _escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _kind(note: str) -> str:
    return note.split(":")[0].split(" (")[0]


@dataclass
class Cell:
    """One (row, dataset): the latest finished run per seed, and why the other seeds have no number."""

    runs: list[RunFolder] = field(default_factory=list)

    def per_seed(self) -> dict[int, RunFolder]:
        order = {"done": 0, "running": 1, "incomplete": 2, "failed": 3, "new": 4}
        best: dict[int, RunFolder] = {}
        for run in self.runs:
            seed = int(run.config.get("seed", -1))
            current = best.get(seed)
            if current is None or (order[run.state], -_mtime(run)) < (order[current.state], -_mtime(current)):
                best[seed] = run
        return dict(sorted(best.items()))

    def done(self) -> dict[int, RunFolder]:
        return {s: r for s, r in self.per_seed().items() if r.state == "done"}

    def accuracies(self) -> list[float]:
        return [100 * float(r.final["test_acc"]) for r in self.done().values()]

    def stats(self) -> tuple[float, float | None, int] | None:
        values = self.accuracies()
        return (*_stats(values), len(values)) if values else None

    def seed_notes(self) -> dict[int, str]:
        """Why seeds lack a number: 'failed: <error>', 'running (epoch a/b)', 'interrupted (epoch a/b)'."""
        out = {}
        for seed, run in self.per_seed().items():
            if run.state == "failed":
                out[seed] = f"failed: {(run.failed or {}).get('error', '?')}"
            elif run.state in ("running", "incomplete"):
                word = "running" if run.state == "running" else "interrupted"
                out[seed] = f"{word} (epoch {len(run.curves)}/{run.epochs})"
            elif run.state == "new":
                out[seed] = "started, no epoch yet"
        return out

    def notes(self) -> list[str]:
        return list(self.seed_notes().values())

    def no_number_text(self) -> str:
        """The first seed's reason in full; the other seeds by the kind of theirs (their messages differ only in
        seed-specific details such as the candidate hash)."""
        by_seed = self.seed_notes()
        if not by_seed:
            return "not run"
        (first, note), *rest = by_seed.items()
        if not rest:
            return note
        kinds = Counter(_kind(n) for _, n in rest)
        others = "; ".join(f"seed {', '.join(str(s) for s, n in rest if _kind(n) == k)}: {k}" for k in kinds)
        return f"seed {first}: {note} ({others})"

    def text(self, bold: bool = False) -> str:
        stats = self.stats()
        notes = self.notes()
        if stats is None:
            return _escape(self.no_number_text())
        mean, std, n = stats
        core = f"{mean:.2f}" + (f" ± {std:.2f}" if std is not None else "")
        extra = Counter(_kind(note) for note in notes)
        tail = "".join(f"; {count} {what}" for what, count in sorted(extra.items()))
        return f"**{core}** (n={n}{tail})" if bold else f"{core} (n={n}{tail})"


def _mtime(run: RunFolder) -> float:
    try:
        return (run.path / "final.json").stat().st_mtime
    except OSError:
        return 0.0


@dataclass
class Board:
    preset: str
    name: str  # file stem
    columns: list[str]
    rows: dict[str, dict[str, Cell]]
    runs: list[RunFolder]


def build_boards(root: Path, preset: str | None = None, datasets: list[str] | None = None) -> list[Board]:
    by_preset: dict[str, list[RunFolder]] = {}
    for run in scan(root):
        name = run.config.get("preset", {}).get("name")
        if name and (preset is None or name == preset):
            by_preset.setdefault(name, []).append(run)
    boards = []
    for preset_name, runs in sorted(by_preset.items()):
        if datasets:
            wanted = set(datasets)
            runs = [r for r in runs if dataset_column(r.config) in wanted or r.config["dataset"]["name"] in wanted]
        if not runs:
            continue
        columns = sorted({dataset_column(r.config) for r in runs},
                         key=lambda c: (PAPER_DATASETS.index(c) if c in PAPER_DATASETS else len(PAPER_DATASETS), c))
        rows: dict[str, dict[str, Cell]] = {}
        for run in runs:
            rows.setdefault(row_label(run), {}).setdefault(dataset_column(run.config), Cell()).runs.append(run)
        stem = preset_name + ("-" + "+".join(re.sub(r"[^A-Za-z0-9._=-]+", "_", d) for d in datasets)
                              if datasets else "")
        boards.append(Board(preset_name, stem, columns, rows, runs))
    return boards


def average_ranks(board: Board) -> dict[str, tuple[float, int]]:
    """Per row: (mean rank over the datasets it has a number for, how many); rank 1 = best mean, ties averaged."""
    ranks: dict[str, list[float]] = {}
    for column in board.columns:
        means = {label: cells[column].stats()[0] for label, cells in board.rows.items()
                 if column in cells and cells[column].stats() is not None}
        ordered = sorted(means.values(), reverse=True)
        for label, mean in means.items():
            first = ordered.index(mean) + 1
            ties = ordered.count(mean)
            ranks.setdefault(label, []).append(first + (ties - 1) / 2)
    return {label: (statistics.mean(r), len(r)) for label, r in ranks.items()}


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


def _p_order(p: str) -> tuple[int, float | str]:
    try:
        return 0, -float(p)
    except ValueError:
        return 1, p


class _Tables:
    """Collects markdown lines and CSV rows together."""

    def __init__(self):
        self.lines: list[str] = []
        self.csv: list[dict] = []

    def table(self, header: list[str], rows: list[list[str]]) -> None:
        self.lines.append("| " + " | ".join(header) + " |")
        self.lines.append("|" + "---|" * len(header))
        self.lines += ["| " + " | ".join(row) + " |" for row in rows]
        self.lines.append("")

    def record(self, table, row, source, dataset, metric, mean=None, std=None, n=None, seeds="", note=""):
        def num(x):
            return "" if x is None else f"{x:.6g}" if isinstance(x, float) else str(x)

        self.csv.append({"table": table, "row": row, "source": source, "dataset": dataset, "metric": metric,
                         "mean": num(mean), "std": num(std), "n": num(n), "seeds": seeds, "note": note})


def _provenance(board: Board) -> list[str]:
    envs = [r.config.get("environment") or {} for r in board.runs]

    def counted(values) -> str:
        counts = Counter(v for v in values if v)
        return ", ".join(f"`{v}` ({n})" if len(counts) > 1 else f"`{v}`" for v, n in counts.most_common()) or "unknown"

    hardware = []
    for env in envs:
        if env.get("gpu"):
            hardware.append(f"{env['gpu']} ({env.get('device', 'cuda')})")
        elif env:
            hardware.append(f"{env.get('cpu') or 'cpu'}, {env.get('threads', '?')} threads")
    versions = [", ".join(f"{k} {env[k]}" for k in ("pllbench", "torch", "numpy", "python") if env.get(k))
                for env in envs]
    presets = Counter(
        "epochs {epochs}, backbone {backbone}, batch {batch_size}, lr {lr}, rate {rate}".format(
            **{k: r.config["preset"].get(k, "?") for k in ("epochs", "backbone", "batch_size", "lr", "rate")})
        for r in board.runs)
    cands: dict[str, set[str]] = {}
    for r in board.runs:
        c = r.config.get("candidates") or {}
        if c.get("hash"):
            cands.setdefault(dataset_column(r.config), set()).add(
                f"s{r.config.get('seed')} `{c['hash']}`" + (f" (teacher `{c['teacher']}`)" if c.get("teacher") else ""))
    settings = [f"{p} ({n} run{'s' if n > 1 else ''})" if len(presets) > 1 else p for p, n in presets.most_common()]
    lines = [f"- Preset `{board.preset}`: " + "; ".join(settings),
             f"- Run folders: {len(board.runs)}",
             f"- Commit: {counted(env.get('commit') for env in envs)}",
             f"- Packages: {counted(versions)}",
             f"- Hardware: {counted(hardware)}"]
    for column in board.columns:
        if column in cands:
            lines.append(f"- Candidates {column}: " + ", ".join(sorted(cands[column])))
    return lines


def render(board: Board, out_dir: Path | None = None) -> tuple[str, str]:
    """(markdown, csv) of one board."""
    t = _Tables()
    t.lines += [f"# pllbench leaderboard: preset `{board.preset}`", "", "Provenance:", *_provenance(board), ""]
    paper = [row for row in paper_numbers() if row["source"] == "paper" and row["setting"] == "id-cad"]
    ranks = average_ranks(board)
    labels = sorted(board.rows, key=lambda lb: (ranks.get(lb, (float("inf"), 0))[0], lb))
    best = {}
    for column in board.columns:
        means = [cells[column].stats()[0] for cells in board.rows.values()
                 if column in cells and cells[column].stats() is not None]
        best[column] = max(means) if means else None
    peaks = {label: [p for cell in cells.values() for r in cell.done().values() if (p := peak_memory(r.final))]
             for label, cells in board.rows.items()}
    show_peak = any(peaks.values())

    # ---- main table
    t.lines += ["## Test accuracy (%)", "",
                "Final-epoch test accuracy, mean ± sample std over seeds (n seeds); **bold** = best pllbench row per "
                "dataset. Rank: mean rank over the datasets a row has (of how many). device-h: Σ run seconds / 3600.",
                ""]
    header = ["method", "source", *board.columns, "avg rank", "device-h"] + (["peak MB"] if show_peak else [])
    rows = []
    for label in labels:
        cells = board.rows[label]
        row = [_escape(label), "pllbench"]
        for column in board.columns:
            cell = cells.get(column, Cell())
            stats = cell.stats()
            row.append(cell.text(bold=stats is not None and stats[0] == best[column]))
            seeds = ",".join(str(s) for s in cell.done())
            t.record("accuracy", label, "pllbench", column, "test_acc", *(stats or (None, None, None)), seeds,
                     "; ".join(cell.notes()) or ("" if stats else "not run"))
            seconds = sum(float(r.final.get("seconds", 0)) for r in cell.done().values())
            if cell.done():
                t.record("cost", label, "pllbench", column, "device_hours", seconds / 3600, n=len(cell.done()))
        rank = ranks.get(label)
        row.append("—" if rank is None else f"{rank[0]:.2f}" + ("" if rank[1] == len(board.columns)
                                                               else f" ({rank[1]}/{len(board.columns)})"))
        if rank is not None:
            t.record("accuracy", label, "pllbench", "", "avg_rank", rank[0], n=rank[1])
        hours = sum(float(r.final.get("seconds", 0)) for cell in cells.values() for r in cell.done().values()) / 3600
        row.append(f"{hours:.3f}")
        if show_peak:
            row.append(f"{max(peaks[label]):,.0f}" if peaks[label] else "—")
            if peaks[label]:
                t.record("cost", label, "pllbench", "", "peak_mem_mb", max(peaks[label]))
        rows.append(row)
    paper_main = {}
    ran = {r.config["method"] for r in board.runs}
    for row in paper:
        if row["table"] == "main" or (row["table"] == "ablation" and row["method"] in ran):
            if row["metric"] == "acc":
                paper_main.setdefault(row["method"], {})[row["dataset"]] = row
    if any(column in by_dataset for by_dataset in paper_main.values() for column in board.columns):
        for method, by_dataset in paper_main.items():
            cells = []
            for column in board.columns:
                ref = by_dataset.get(column)
                cells.append(ref["value"] if ref else "—")
                if ref:
                    t.record("accuracy", method, "paper", column, "test_acc", float(ref["value"]), note=ref["note"])
            rows.append([method, "paper", *cells, "—", "—"] + (["—"] if show_peak else []))
    t.table(header, rows)
    if paper_main and any(r[1] == "paper" for r in rows):
        t.lines += ["Rows tagged `paper` are the CAD paper's numbers (CVPR 2026, via a third-party summary: no std, "
                    "unknown number of runs) under its own protocol and candidate sets: references, not "
                    "replications" + ("" if board.preset == "paper" else f", and not comparable to preset "
                                      f"`{board.preset}`") + ". `—`: no reference number.", ""]

    # ---- entangled subsets
    ent: dict[str, dict[tuple[str, str, str], list[float]]] = {}
    keys: set[tuple[str, str, str]] = set()
    for label, cells in board.rows.items():
        for column, cell in cells.items():
            for run in cell.done().values():
                for (analysis, p), value in entangle_values(run.extra("entangle.json")).items():
                    key = (column, analysis, p)
                    keys.add(key)
                    ent.setdefault(label, {}).setdefault(key, []).append(100 * value)
    if keys:
        analyses = {a for _, a, _ in keys}
        ordered = sorted(keys, key=lambda k: (board.columns.index(k[0]), k[1], _p_order(k[2])))
        heads = [f"{c} top {p}%" + (f" ({a})" if len(analyses) > 1 else "") for c, a, p in ordered]
        t.lines += ["## Entangled instances: accuracy (%) on the top p% most similar cross-class pairs", "",
                    "From each run's entangle.json (`pllbench entangle`); mean ± sample std over seeds.", ""]
        best_ent = {k: max(statistics.mean(v[k]) for v in ent.values() if k in v) for k in ordered}
        erows = []
        for label in [lb for lb in labels if lb in ent]:
            row = [_escape(label), "pllbench"]
            for key in ordered:
                values = ent[label].get(key)
                if not values:
                    row.append("—")
                    continue
                mean, std = _stats(values)
                text = _fmt(mean, std, len(values))
                row.append(f"**{text.split(' (')[0]}** ({text.split(' (')[1]}" if mean == best_ent[key] else text)
                t.record("entangled", label, "pllbench", key[0], f"acc_top_{key[2]}", mean, std, len(values),
                         note=key[1])
            erows.append(row)
        paper_ent: dict[str, dict[tuple[str, str], str]] = {}
        for row in paper:
            if row["table"] == "entangled" and row["metric"].startswith("acc_top_"):
                paper_ent.setdefault(row["method"], {})[(row["dataset"], row["metric"][len("acc_top_"):])] = \
                    row["value"]
        for method, by_key in paper_ent.items():
            cells = [by_key.get((c, p), "—") for c, _, p in ordered]
            if any(cell != "—" for cell in cells):
                erows.append([method, "paper", *cells])
        t.table(["method", "source", *heads], erows)

    # ---- center distance
    centers: dict[str, dict[str, list[float]]] = {}
    for label, cells in board.rows.items():
        for column, cell in cells.items():
            for run in cell.done().values():
                record = run.extra("entangle.json")
                value = record.get("center_distance") if isinstance(record, dict) else None
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    centers.setdefault(label, {}).setdefault(column, []).append(float(value))
    if centers:
        cols = [c for c in board.columns if any(c in v for v in centers.values())]
        t.lines += ["## Center distance", "", "Mean pairwise distance of the class centroids of the method's "
                    "features on the test split (entangle.json).", ""]
        crows = []
        for label in [lb for lb in labels if lb in centers]:
            row = [_escape(label)]
            for column in cols:
                values = centers[label].get(column)
                if values:
                    mean, std = _stats(values)
                    row.append(_fmt(mean, std, len(values), 3))
                    t.record("center", label, "pllbench", column, "center_distance", mean, std, len(values))
                else:
                    row.append("—")
            crows.append(row)
        t.table(["method", *cols], crows)
        stats = {row["method"]: row["value"] for row in paper if row["metric"] == "center_distance"}
        if stats:
            t.lines += ["Paper (dataset and layer not stated): " + ", ".join(f"{m} {v}" for m, v in stats.items()),
                        ""]

    # ---- plots
    if out_dir is not None:
        links = []
        for column in board.columns:
            folder = out_dir / "plots" / f"{column.split(':')[0]}-{board.preset}"
            links += [p.relative_to(out_dir).as_posix() for p in sorted(folder.glob("*.png"))]
        if links:
            t.lines += ["## Plots", "", *[f"- [{Path(link).name}]({link})" for link in links], ""]

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(t.csv)
    return "\n".join(t.lines).rstrip() + "\n", buffer.getvalue()


def write_leaderboards(root: Path, out: Path, preset: str | None = None,
                       datasets: list[str] | None = None) -> list[Path]:
    """Write `<out>/<board>.md` and `.csv` per board (atomically); returns the markdown paths."""
    from .errors import PllbenchError

    boards = build_boards(root, preset, datasets)
    if not boards:
        which = f" of preset {preset!r}" if preset else ""
        raise PllbenchError(f"no runs{which} under {root}; run `pllbench run` first (or pass --runs DIR)")
    written = []
    for board in boards:
        markdown, table = render(board, out)
        atomic_write_text(out / f"{board.name}.md", markdown)
        atomic_write_text(out / f"{board.name}.csv", table)
        written.append(out / f"{board.name}.md")
    return written
