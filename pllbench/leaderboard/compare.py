"""The leaderboard's "vs reference method" table: paired comparisons of two rows on the seeds both finished.

For each (row, reference row) pair and dataset: the final-epoch predictions (predictions.parquet, tag `final`) of
the shared seeds, on the test items every one of them covers, give a (seeds, items) matrix of correct predictions
per row; stats.paired_bootstrap gives Δ, its 95 % CI and a bootstrap p, stats.sign_flip_test the exact p over the
seeds' differences. The same is repeated on each entangled top-p% subset of the test split: entangle.json records
the subset accuracies and the hash of the entangled artifact, not the subset's items, so the items are read from
that artifact in the cache (`<cache>/entangled/<hash>/`); when it is not there, the table says so.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import PllbenchError
from ..stats import paired_bootstrap, sign_flip_test
from ..train.runs import read_json
from .cells import Board
from .tables import Tables, escape, p_order

DEFAULT_COMPARISONS = [("cad-cam", "dirk"), ("cad-cam", "cad-cam-norl"), ("cad-cam", "cad-cam-noca"),
                       ("cad-cam", "cad-cam-noboth")]  # the paper's claim, then its ablation ordering
N_BOOT = 10000
FEW_SEEDS = 5  # below this the bootstrap's seed level has at most n^n patterns: its CI and p are flagged
FEW = "‡"
HEADER = ["comparison", "dataset", "subset", "items", "Δ (points)", "95% CI", "bootstrap p", "sign-flip p", "n seeds"]


def parse_comparisons(text: str) -> list[tuple[str, str]]:
    """`a:b,c:d` → [(a, b), (c, d)]: row label a compared with reference row label b."""
    pairs = []
    for item in (s.strip() for s in text.split(",")):
        a, sep, b = item.partition(":")
        if not (sep and a.strip() and b.strip()):
            raise PllbenchError(f"malformed comparison {item!r}: expected ROW:REFERENCE, e.g. cad-cam:dirk")
        pairs.append((a.strip(), b.strip()))
    return pairs


def read_final_predictions(path: str) -> pd.DataFrame | None:
    """y_true, y_pred of the final epoch per test row (`index`) of a run folder, or None when unreadable."""
    import pyarrow.parquet as pq

    try:
        frame = pq.read_table(Path(path) / "predictions.parquet", columns=["tag", "index", "y_true", "y_pred"])
    except Exception:  # noqa: BLE001 — missing, truncated or foreign: the run has no usable predictions
        return None
    frame = frame.to_pandas()
    frame = frame[frame["tag"] == "final"]
    if frame.empty or frame["index"].duplicated().any():
        return None
    return frame.set_index("index")[["y_true", "y_pred"]]


@dataclass
class Paired:
    seeds: list[int]
    index: np.ndarray  # the test rows compared (predictions.parquet `index`), sorted
    correct_a: np.ndarray  # (seeds, items) bool
    correct_b: np.ndarray
    runs: list[str]  # the run folders involved
    unreadable: list[int]  # shared seeds without readable predictions


def seed_paths(board: Board, label: str, column: str) -> dict[int, str]:
    """{seed: run folder} of a row's selected finished runs on one dataset."""
    done = board.done[(board.done["label"] == label) & (board.done["dataset_column"] == column)]
    return dict(zip(done["seed"].astype(int), done["path"]))


def paired_predictions(board: Board, a: str, b: str, column: str, read) -> Paired:
    by_a, by_b = seed_paths(board, a, column), seed_paths(board, b, column)
    preds, unreadable = {}, []
    for seed in sorted(set(by_a) & set(by_b)):
        pa, pb = read(by_a[seed]), read(by_b[seed])
        if pa is None or pb is None:
            unreadable.append(seed)
        else:
            preds[seed] = (pa, pb)
    frames = [f for pair in preds.values() for f in pair]
    common = np.sort(frames[0].index.to_numpy()) if frames else np.zeros(0, dtype=np.int64)
    for frame in frames[1:]:
        common = np.intersect1d(common, frame.index.to_numpy())

    def correct(frame: pd.DataFrame) -> np.ndarray:
        rows = frame.loc[common]
        return rows["y_pred"].to_numpy() == rows["y_true"].to_numpy()

    shape = (0, len(common))
    ca = np.stack([correct(pa) for pa, _ in preds.values()]) if preds else np.zeros(shape, bool)
    cb = np.stack([correct(pb) for _, pb in preds.values()]) if preds else np.zeros(shape, bool)
    return Paired(list(preds), common, ca, cb, [by_a[s] for s in preds] + [by_b[s] for s in preds], unreadable)


def artifact_subsets(cache: Path, digest: str) -> dict[str, np.ndarray]:
    """{p: sorted test rows of the top-p% subset} from a cached entangled artifact (checksums verified)."""
    from ..artifacts import ArtifactStore

    artifact = ArtifactStore.of(cache).by_hash("entangled", digest)
    if artifact is None:
        raise PllbenchError(f"entangled artifact {digest} is not in the cache {cache} (entangle.json keeps the "
                            "subset accuracies and this hash, not the subset's items)")
    summary = json.loads(artifact.file("summary.json").read_text())
    arrays = {name: np.load(artifact.file(f"{name}.npy"), allow_pickle=False) for name in ("rows", "cols", "index")}
    out = {}
    for p, entry in summary["top"].items():
        k = int(entry["pairs"])
        positions = np.unique(np.concatenate([arrays["rows"][:k], arrays["cols"][:k]]))
        out[str(p)] = np.sort(arrays["index"][positions])
    return out


def test_subsets(run_dirs: list[str], cache: Path) -> tuple[dict[tuple[str, str], np.ndarray], list[str]]:
    """({(analysis, p): test rows} of the test-split analyses these runs' entangle.json name, why others lack)."""
    hashes: dict[str, set[str]] = {}
    for run_dir in run_dirs:
        record = read_json(Path(run_dir) / "entangle.json")
        subsets = record.get("subsets") if isinstance(record, dict) else None
        for analysis, entry in (subsets.items() if isinstance(subsets, dict) else []):
            if isinstance(entry, dict) and entry.get("split") == "test" and isinstance(entry.get("artifact"), str):
                hashes.setdefault(str(analysis), set()).add(entry["artifact"])
    if not hashes:
        return {}, ["no entangle.json for the test split in these runs (run `pllbench entangle`)"]
    out, why = {}, []
    for analysis, found in sorted(hashes.items()):
        if len(found) > 1:
            why.append(f"{analysis}: the runs were scored on different subsets ({len(found)} artifacts)")
            continue
        try:
            for p, rows in artifact_subsets(cache, next(iter(found))).items():
                out[(analysis, p)] = rows
        except (PllbenchError, OSError, ValueError, KeyError) as exc:
            why.append(f"{analysis}: {exc}")
    return out, why


def _p(value: float | None) -> str:
    return "—" if value is None else f"{value:.4f}"


def _row(t: Tables, where: tuple[str, str], subset: tuple[str, str, str], ca, cb, seeds: list[int]) -> list[str]:
    (name, column), (text, suffix, note) = where, subset
    result = paired_bootstrap(ca, cb, n_boot=N_BOOT, seed=0)
    try:
        p_sign = sign_flip_test(100 * (ca.mean(axis=1) - cb.mean(axis=1)))
    except ValueError:  # more seeds than the exact enumeration allows
        p_sign = None
    listed = ",".join(str(s) for s in seeds)
    for metric, value in (("delta", result.delta), ("ci_low", result.ci_low), ("ci_high", result.ci_high),
                          ("p_bootstrap", result.p), ("p_signflip", p_sign)):
        t.record("comparison", name, "pllbench", column, metric + suffix, value, n=result.n_seeds, seeds=listed,
                 note=note)
    few = f" {FEW}" if result.n_seeds < FEW_SEEDS else ""
    return [escape(name), column, text, f"{result.n_items:,}", f"{result.delta:+.2f}",
            f"[{result.ci_low:+.2f}, {result.ci_high:+.2f}]{few}", _p(result.p) + few, _p(p_sign), str(result.n_seeds)]


def comparison_rows(t: Tables, board: Board, pair: tuple[str, str], column: str, read, cache: Path,
                    why: dict[str, list[str]]) -> list[list[str]]:
    name = f"{pair[0]} vs {pair[1]}"
    paired = paired_predictions(board, *pair, column, read)
    where = f"{name} ({column})"
    if paired.unreadable:
        why.setdefault("seed " + ", ".join(map(str, paired.unreadable)) + ": no readable predictions.parquet",
                       []).append(where)
    n = len(paired.seeds)
    if n < 2:
        t.record("comparison", name, "pllbench", column, "delta", n=n, note="fewer than 2 shared seeds")
        return [[escape(name), column, "all", "—", f"fewer than 2 shared seeds (n={n})", "—", "—", "—", str(n)]]
    rows = [_row(t, (name, column), ("all", "", ""), paired.correct_a, paired.correct_b, paired.seeds)]
    subsets, reasons = test_subsets(paired.runs, cache)
    for reason in reasons:
        why.setdefault(reason, []).append(where)
    several = len({analysis for analysis, _ in subsets}) > 1
    for analysis, p in sorted(subsets, key=lambda k: (k[0], p_order(k[1]))):
        mask = np.isin(paired.index, subsets[(analysis, p)])
        if not mask.any():
            why.setdefault(f"{analysis} top {p}%: none of its items is among the compared test rows", []).append(where)
            continue
        text = f"top {p}%" + (f" ({analysis})" if several else "")
        rows.append(_row(t, (name, column), (text, f"_top_{p}", analysis), paired.correct_a[:, mask],
                         paired.correct_b[:, mask], paired.seeds))
    return rows


def comparison_table(t: Tables, board: Board, comparisons: list[tuple[str, str]], cache: Path | None,
                     read=read_final_predictions) -> None:
    """The table, for the comparisons whose two rows both have runs on a dataset of the board; `read` loads a run
    folder's final-epoch predictions (leaderboard.render passes one cached reader)."""
    from ..util import cache_root

    cache = cache_root(cache)
    rows, why = [], {}
    for a, b in comparisons:
        for column in board.columns:
            here = board.runs[board.runs["dataset_column"] == column]
            if {a, b} <= set(here["label"]):
                rows += comparison_rows(t, board, (a, b), column, read, cache, why)
    if not rows:
        return
    t.lines += ["## vs reference method: paired comparisons", "",
                "Δ = row − reference row in accuracy points, from the final-epoch predictions (predictions.parquet) "
                "of the seeds both rows finished, on the same test items. 95% CI and bootstrap p: paired bootstrap "
                f"over seeds × test items ({N_BOOT:,} resamples: seeds with replacement, then items with replacement; "
                "p = 2·min(P(Δ*≤0), P(Δ*≥0)), at least 1/resamples). sign-flip p: exact permutation test of the "
                "per-seed differences (all 2^n sign patterns; its smallest value is 2/2^n, 0.0625 for 5 seeds). "
                "Subsets: the entangled top p% of the test split (entangle.json's artifact).", ""]
    t.table(HEADER, rows)
    if any(row[5].endswith(FEW) for row in rows):
        t.lines += [f"{FEW} fewer than {FEW_SEEDS} seeds: resampling n seeds with replacement has at most n^n "
                    "patterns, so the bootstrap under-covers the seed-to-seed variance and its CI is too narrow; the "
                    "items of one seed are not independent evidence. Read the sign-flip p, and treat the comparison "
                    "as untested until it has 5 seeds.", ""]
    if why:
        t.lines += ["Not compared: " + "; ".join(f"{reason} [{', '.join(dict.fromkeys(where))}]"
                                            for reason, where in why.items()), ""]
