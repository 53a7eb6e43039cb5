"""Scoring finished runs on the entangled subsets of a split (the `pllbench entangle` command, in
pllbench/cli/entangle.py, builds the subsets and calls this module).

Per run it writes `entangle.json` into the run folder (atomically, merged with earlier analyses):

    {"run", "method", "seed", "dataset", "preset", "overall_acc", "center_distance",
     "subsets": {"<split>/<extractor>": {"artifact", "split", "extractor", "cross_class_pairs", "n",
                 "top": {"<p>": {"pairs", "threshold", "instances", "subset_acc", "selected": {tag: acc}}},
                 "threshold_counts": {"<τ>": n},
                 "sharing": {"top": {"<p>": {"mutual", "any"}}, "all": {"mutual", "any"}}}}}   # train split only

subset_acc comes from the final-epoch predictions; `selected` holds the selected epochs' (select-cr/-aa) when the
run has them. On the train split there are no per-instance predictions, so `subset_acc` is absent there.

Each analysis also records `run_manifest`, the sha256 of the run's manifest.json (which holds every file's digest):
a finished run whose entangle.json already has this split/extractor analysis of the same subsets artifact and the
same manifest is not scored again (loading its model and embedding the test split is most of the cost), unless
`rescore` asks for it (after a change to the scoring code).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from ..errors import PllbenchError
from ..train.runs import MANIFEST, inside_root, verify_finished
from ..util import atomic_write_json, sha256_file
from .extractors import load_run_method, method_features, run_candidates
from .pairs import Subsets, center_distance, sharing_all_pairs, sharing_flags, subset_accuracy


def read_predictions(path: Path) -> dict[str, dict[str, np.ndarray]]:
    """predictions.parquet → {tag: {index, y_true, y_pred}}."""
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path, columns=["tag", "index", "y_true", "y_pred"])
    except Exception as exc:  # noqa: BLE001 — a missing, truncated or foreign file means the same to the user
        raise PllbenchError(f"cannot read {path} ({exc})") from None
    columns = {name: table.column(name).to_numpy(zero_copy_only=False) for name in table.column_names}
    out = {}
    for tag in np.unique(columns["tag"]):
        rows = columns["tag"] == tag
        out[str(tag)] = {name: np.asarray(columns[name][rows]) for name in ("index", "y_true", "y_pred")}
    return out


def aligned_predictions(pred: dict[str, np.ndarray], split_index: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """ŷ per position of the split; raises if the parquet does not cover exactly these rows and labels."""
    positions = np.searchsorted(split_index, pred["index"])
    positions = np.clip(positions, 0, len(split_index) - 1)
    if len(pred["index"]) != len(split_index) or not np.array_equal(split_index[positions], pred["index"]) \
            or len(np.unique(positions)) != len(split_index):
        raise PllbenchError("its predictions do not cover the rows of this test split")
    if not np.array_equal(labels[positions], pred["y_true"]):
        raise PllbenchError("its predictions' y_true differ from this dataset's labels")
    y_pred = np.empty(len(split_index), dtype=np.int64)
    y_pred[positions] = pred["y_pred"]
    return y_pred


def finished_runs(root: Path, dataset_key: dict, preset: str) -> list[tuple[dict, Path]]:
    """(config.json, run folder) of this dataset key and preset for each run with final.json, by method then seed."""
    out = []
    for final in sorted((root / f"{dataset_key['name']}-{preset}").glob("*/final.json")):
        try:
            config = json.loads((final.parent / "config.json").read_text())
        except (OSError, ValueError):
            continue
        if config.get("dataset") == dataset_key and config.get("preset", {}).get("name") == preset:
            run_dir = inside_root(root, final.parent.relative_to(root))  # entangle.json is written there
            out.append((config["method"], config["seed"], run_dir, config))
    return [(config, path) for _, _, path, config in sorted(out, key=lambda item: item[:3])]


def analysis_key(split: str, extractor_name: str) -> str:
    return f"{split}/{extractor_name}"


def read_record(path: Path) -> dict:
    """A run's entangle.json, or {} when it is absent or unreadable (it is rewritten whole then)."""
    try:
        record = json.loads(path.read_text()) if path.exists() else {}
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def earlier_analysis(root: Path, dataset_key: dict, preset: str, key: str) -> tuple[list[str], list[str]]:
    """(top percentages, thresholds) that the finished runs' entangle.json already hold for analysis `key`. A new
    analysis takes them too, so a later `--top 0.001` keeps the 0.1 % and 0.01 % results of an earlier run (one
    subsets artifact for all of them, so every percentage stays comparable and reproducible from its hash)."""
    tops: dict[str, None] = {}
    taus: dict[str, None] = {}
    for _, run_dir in finished_runs(root, dataset_key, preset):
        analyses = read_record(run_dir / "entangle.json").get("subsets")
        entry = analyses.get(key) if isinstance(analyses, dict) else None
        for found, field in ((tops, "top"), (taus, "threshold_counts")):
            values = entry.get(field) if isinstance(entry, dict) else None
            found.update(dict.fromkeys(map(str, values if isinstance(values, dict) else ())))
    return list(tops), list(taus)


def is_current(record: dict, key: str, artifact: str, manifest: str | None) -> bool:
    """True when `record` already holds analysis `key` of this subsets artifact for this exact run content."""
    analyses = record.get("subsets")
    entry = analyses.get(key) if isinstance(analyses, dict) else None
    return (manifest is not None and isinstance(entry, dict) and entry.get("artifact") == artifact
            and entry.get("run_manifest") == manifest and "center_distance" in record)


def analyse_run(run_dir: Path, config: dict, subsets: Subsets, split: str, data, cache: Path, device: torch.device,
                data_root, warn, rescore: bool = False, need_features: bool = False) -> tuple[dict, dict, bool]:
    """Score one run (`config`: its config.json, read once by finished_runs); returns (its entangle.json content,
    extras for plots: y_true/y_pred/features, whether an up-to-date analysis was reused instead). `need_features`
    scores it again anyway when the plots want its features (t-SNE), which only the model gives."""
    final = json.loads((run_dir / "final.json").read_text())
    preds = read_predictions(run_dir / "predictions.parquet")
    if "final" not in preds:
        raise PllbenchError("its predictions.parquet has no 'final' rows")
    test_labels = data.test.labels.numpy()
    y_by_tag = {tag: aligned_predictions(pred, np.asarray(data.test_index), test_labels)
                for tag, pred in preds.items()}
    y_final = y_by_tag["final"]
    extras = {"y_true": test_labels, "y_pred": y_final, "features": None}
    path = run_dir / "entangle.json"
    record = read_record(path)
    key = analysis_key(split, subsets.summary["extractor"])
    manifest = sha256_file(run_dir / MANIFEST) if (run_dir / MANIFEST).is_file() else None
    if not rescore and not need_features and is_current(record, key, subsets.hash, manifest):
        return record, extras, True
    labels = list(subsets.summary["top"])
    entry = {"artifact": subsets.hash, "run_manifest": manifest, "split": split,
             "extractor": subsets.summary["extractor"], "n": subsets.summary["n"],
             "cross_class_pairs": subsets.summary["cross_class_pairs"],
             "threshold_counts": subsets.summary["threshold_counts"], "top": {}}
    for label in labels:
        stats = {k: subsets.summary["top"][label][k] for k in ("pairs", "threshold", "instances")}
        if split == "test":
            instances = subsets.instances(label)
            stats["subset_acc"] = subset_accuracy(instances, test_labels, y_final)
            stats["selected"] = {tag: subset_accuracy(instances, test_labels, y_pred)
                                 for tag, y_pred in y_by_tag.items() if tag != "final"}
        entry["top"][label] = stats
    if split == "train":
        cands = run_candidates(config, cache)
        train_labels = data.train.labels.numpy()
        if len(cands) != len(train_labels):
            raise PllbenchError("its candidate matrix does not match this train split")
        sharing = {}
        for label in labels:
            mutual, any_ = sharing_flags(*subsets.pairs(label), train_labels, cands)
            sharing[label] = {"mutual": float(mutual.mean()), "any": float(any_.mean())}
        mutual_all, any_all = sharing_all_pairs(train_labels, cands)
        entry["sharing"] = {"top": sharing, "all": {"mutual": float(mutual_all), "any": float(any_all)}}
    cd = None
    try:
        method, _, _ = load_run_method(run_dir, cache, device, data_root)
        feats = method_features(method, data.test.images, data.info, device)
        cd = center_distance(feats, data.test.labels)
        extras["features"] = feats.numpy()
    except PllbenchError as exc:
        warn(f"{final['run']}: no center distance ({exc})")
    record.update({"run": final["run"], "method": config["method"], "seed": config["seed"],
                   "dataset": config["dataset"]["name"], "preset": config["preset"]["name"],
                   "overall_acc": float((y_final == test_labels).mean()), "center_distance": cd})
    if not isinstance(record.get("subsets"), dict):
        record["subsets"] = {}  # a foreign or damaged value: this analysis replaces it
    record["subsets"][key] = entry
    atomic_write_json(path, record)
    return record, extras, False


def _pct(value) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}"


def render_report(subsets: Subsets, records: list[dict], split: str, dataset: str, classes: list[str],
                  extractor_name: str) -> str:
    s = subsets.summary
    labels = list(s["top"])

    def name(c: int) -> str:
        return classes[c] if classes else str(c)

    lines = [f"entangled subsets of {dataset} {split}: {s['n']} instances, {s['cross_class_pairs']:,} cross-class "
             f"pairs; extractor {extractor_name}; artifact {subsets.hash}", "",
             "| top p (%) | pairs | threshold | instances | most frequent class pairs |", "|---|---|---|---|---|"]
    for label in labels:
        t = s["top"][label]
        pairs = ", ".join(f"{name(c['pair'][0])} vs {name(c['pair'][1])} ({c['count']})" for c in t["class_pairs_top5"])
        lines.append(f"| {label} | {t['pairs']:,} | {t['threshold']:.6f} | {t['instances']:,} | {pairs} |")
    lines.append("")
    for tau, count in s["threshold_counts"].items():
        lines.append(f"n(s > {tau}) = {count:,} cross-class pairs ({100 * count / s['cross_class_pairs']:.4f}%)")
    lines.append("")
    if not records:
        lines.append("no finished runs of this dataset and preset")
        return "\n".join(lines)
    key = analysis_key(split, extractor_name)
    if split == "test":
        head = ["run", "method", "seed", "acc (%)"] + [f"acc@{label}% (%)" for label in labels] + ["CD"]
    else:
        head = ["run", "method", "seed", "test acc (%)"]
        head += [f"{kind}@{label}% (%)" for label in labels for kind in ("mutual", "any")]
        head += ["mutual all (%)", "any all (%)", "CD"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in records:
        entry = r["subsets"][key]
        cells = [r["run"].split("/", 1)[-1], r["method"], str(r["seed"]), _pct(r["overall_acc"])]
        if split == "test":
            cells += [_pct(entry["top"][label]["subset_acc"]) for label in labels]
        else:
            sharing = entry["sharing"]
            cells += [_pct(sharing["top"][label][kind]) for label in labels for kind in ("mutual", "any")]
            cells += [_pct(sharing["all"]["mutual"]), _pct(sharing["all"]["any"])]
        cells.append("n/a" if r["center_distance"] is None else f"{r['center_distance']:.4f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_plots(folder: Path, subsets: Subsets, records: list[dict], extras: list[dict], split: str,
                extractor, data, title: str, warn, tsne_points: int = 1500) -> list[Path]:
    from .plots import plot_accuracy_vs_top, plot_confusion, plot_tsne, safe_name

    folder.mkdir(parents=True, exist_ok=True)
    labels = list(subsets.summary["top"])
    classes = data.info.classes or [str(c) for c in range(data.info.num_classes)]
    written = []
    tag = safe_name(f"{split}-{extractor.name}")
    highlight = subsets.instances(labels[0]) if split == "test" else None
    highlight_label = f"top {labels[0]}% entangled" if split == "test" else ""
    if split == "test" and records:
        key = analysis_key(split, extractor.name)
        rows = [{"method": r["method"], "overall_acc": r["overall_acc"],
                 "subset_acc": {label: r["subsets"][key]["top"][label]["subset_acc"] for label in labels}}
                for r in records]
        path = folder / f"accuracy_vs_top-{tag}.png"
        plot_accuracy_vs_top(rows, labels, path, f"{title}: accuracy on the entangled subsets ({extractor.name})")
        written.append(path)
    tsne_done: set[str] = set()
    for record, extra in zip(records, extras):
        name = safe_name(record["run"].split("/", 1)[-1])
        path = folder / f"confusion-{name}.png"
        plot_confusion(extra["y_true"], extra["y_pred"], classes, path, f"{record['run']} (final epoch)")
        written.append(path)
        # t-SNE costs about a minute per thousand points on 2 cores: one run per method (its first seed).
        if tsne_points and extra["features"] is not None and record["method"] not in tsne_done:
            tsne_done.add(record["method"])
            path = folder / f"tsne-{name}.png"
            if plot_tsne(extra["features"], extra["y_true"], highlight, path, f"{record['run']} features (test)",
                         highlight_label, tsne_points, class_names=classes):
                written.append(path)
    if tsne_points and split == "test":
        path = folder / f"tsne-extractor-{tag}.png"
        feats = extractor.features(data.test.images).numpy()
        if plot_tsne(feats, data.test.labels.numpy(), highlight, path, f"{title}: {extractor.name} features (test)",
                     highlight_label, tsne_points, class_names=classes):
            written.append(path)
    if tsne_points and not any(p.name.startswith("tsne-") for p in written):
        warn("no t-SNE plots (scikit-learn is not installed, or too few points)")
    return written


def score_runs(root: Path, dataset_key: dict, preset: str, subsets: Subsets, split: str, data, extractor, cache: Path,
               device: torch.device, data_root, warn, rescore: bool = False,
               want_features: bool = False) -> tuple[list[dict], list[dict], list[Path], int]:
    """Score every finished run of this dataset and preset: (records, plot extras, run folders not scored, how many
    up-to-date analyses were reused). `want_features`: the plots take one run's features per method (t-SNE).

    A run that cannot be scored (a file off its manifest, predictions of other rows, ...) gets one warning line and
    loses its old entangle.json, which no longer describes what is on disk."""
    records, extras, unscored, reused, featured = [], [], [], 0, set()
    for config, run_dir in finished_runs(root, dataset_key, preset):
        _, problem = verify_finished(run_dir)  # every file against its manifest (predictions, model, ...)
        try:
            if problem:
                raise PllbenchError(problem)
            if extractor.name == "teacher" and config["candidates"]["teacher"] != extractor.identity["teacher_key"]:
                warn(f"{run_dir.name}: its candidates came from another teacher than the one ranking the pairs")
            record, extra, was_current = analyse_run(
                run_dir, config, subsets, split, data, cache, device, data_root, warn, rescore,
                need_features=want_features and config["method"] not in featured)
        except PllbenchError as exc:
            stale = (run_dir / "entangle.json").is_file()
            (run_dir / "entangle.json").unlink(missing_ok=True)
            message = problem or f"cannot score {run_dir}: {exc}; delete {run_dir} to rerun it"
            warn(f"{message}" + (" (its old entangle.json was removed)" if stale else ""))
            unscored.append(run_dir)
            continue
        reused += was_current
        if extra["features"] is not None:
            featured.add(record["method"])
        records.append(record)
        extras.append(extra)
    return records, extras, unscored, reused
