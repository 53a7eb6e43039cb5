"""PNG plots of the entanglement analysis: accuracy vs top p per method, confusion matrices, t-SNE of features.

Figures are drawn on matplotlib's Agg canvas directly (no pyplot, so no global backend state).
"""

from __future__ import annotations

import re
import statistics
from pathlib import Path

import numpy as np


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=120)
    FigureCanvasAgg(fig)
    return fig


def safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")


def plot_accuracy_vs_top(records: list[dict], labels: list[str], path: Path, title: str) -> None:
    """One line per method: mean accuracy (± sample std over seeds) on the whole split, then each top-p subset."""
    fig = _figure(6.4, 4.2)
    ax = fig.add_subplot()
    ticks = ["all"] + [f"top {label}%" for label in labels]
    by_method: dict[str, list[dict]] = {}
    for record in records:
        by_method.setdefault(record["method"], []).append(record)
    for method, runs in sorted(by_method.items()):
        columns = [[100 * r["overall_acc"] for r in runs]]
        columns += [[100 * r["subset_acc"][label] for r in runs] for label in labels]
        means = [statistics.mean(c) for c in columns]
        stds = [statistics.stdev(c) if len(c) > 1 else 0.0 for c in columns]
        ax.errorbar(range(len(ticks)), means, yerr=stds, marker="o", capsize=3, label=f"{method} (n={len(runs)})")
    ax.set_xticks(range(len(ticks)), ticks)
    ax.set_ylabel("accuracy (%)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)


def plot_confusion(y_true: np.ndarray, y_pred: np.ndarray, classes: list[str], path: Path, title: str) -> None:
    """Row-normalised confusion matrix (rows: true class), counts written in when K ≤ 20."""
    k = len(classes)
    counts = np.zeros((k, k), dtype=np.int64)
    np.add.at(counts, (np.asarray(y_true), np.asarray(y_pred)), 1)
    rates = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    side = min(12.0, 3.0 + 0.45 * k)
    fig = _figure(side, side)
    ax = fig.add_subplot()
    image = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, fraction=0.046)
    if k <= 20:
        for a in range(k):
            for b in range(k):
                ax.text(b, a, str(counts[a, b]), ha="center", va="center", fontsize=6,
                        color="white" if rates[a, b] > 0.5 else "black")
        ax.set_xticks(range(k), classes, rotation=90, fontsize=6)
        ax.set_yticks(range(k), classes, fontsize=6)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)


def plot_tsne(features: np.ndarray, labels: np.ndarray, highlight: np.ndarray | None, path: Path, title: str,
              highlight_label: str = "", max_points: int = 2000, seed: int = 0,
              class_names: list[str] | None = None) -> bool:
    """2-d t-SNE of at most `max_points` rows (highlighted rows kept first), coloured by class; False without
    scikit-learn."""
    try:
        from sklearn.manifold import TSNE
    except ImportError:
        return False
    n = len(features)
    rng = np.random.default_rng(seed)
    marked = np.zeros(n, dtype=bool)
    if highlight is not None:
        marked[np.asarray(highlight)] = True
    first = rng.permutation(np.flatnonzero(marked))[:max_points]
    rest = rng.permutation(np.flatnonzero(~marked))[:max_points - len(first)]
    rows = np.sort(np.concatenate([first, rest]))
    if len(rows) < 4:
        return False
    perplexity = float(min(30, max(2, (len(rows) - 1) // 3)))
    method = "exact" if len(rows) <= 200 else "barnes_hut"  # exact is faster on tiny sets
    points = TSNE(2, init="pca", random_state=seed, perplexity=perplexity, method=method).fit_transform(
        np.asarray(features, dtype=np.float32)[rows])
    from matplotlib import colormaps

    fig = _figure(6.0, 5.6)
    ax = fig.add_subplot()
    classes = np.asarray(labels)[rows]
    palette = colormaps["tab10" if classes.max() < 10 else "tab20"]
    ax.scatter(points[:, 0], points[:, 1], c=palette(classes % palette.N), s=4, alpha=0.7, linewidths=0)
    if classes.max() < 10:
        for c in np.unique(classes):
            ax.scatter([], [], color=palette(c), s=10, label=class_names[c] if class_names else f"class {c}")
    if marked[rows].any():
        picked = marked[rows]
        ax.scatter(points[picked, 0], points[picked, 1], facecolors="none", edgecolors="black", s=14,
                   linewidths=0.5, label=highlight_label)
    ax.legend(fontsize=6, loc="best", markerscale=1.5)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(f"{title} ({len(rows)} of {n} points)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    return True
