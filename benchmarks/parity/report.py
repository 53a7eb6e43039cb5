"""The comparison a parity run writes: the official loop's epochs beside the pllbench run of the same seed.

parity.jsonl: one row per epoch, {"epoch", "official": {"test_acc", "recall"}, "pllbench": {"test_acc", "recall"}}
(accuracies and recalls as fractions; pllbench's per-class recall exists for its final epoch only, from its
predictions.parquet). parity.md: the same as tables, in percent.
"""

from __future__ import annotations

import json
from pathlib import Path

from pllbench.leaderboard.compare import read_final_predictions
from pllbench.train.runs import read_curves, read_json
from pllbench.util import atomic_write_text


def pllbench_side(run_dir: Path, num_classes: int) -> dict | None:
    """{"path", "finished", "test_acc": per epoch, "recall": final epoch's per class or None}, or None when the
    folder has no epoch yet."""
    curves = read_curves(run_dir) if run_dir.is_dir() else []
    if not curves:
        return None
    finished = (run_dir / "final.json").exists()
    recall = None
    frame = read_final_predictions(str(run_dir)) if finished else None
    if frame is not None:
        y_true, y_pred = frame["y_true"].to_numpy(), frame["y_pred"].to_numpy()
        recall = [float((y_pred[y_true == c] == c).mean()) if (y_true == c).any() else None
                  for c in range(num_classes)]
    return {"path": str(run_dir), "finished": finished, "test_acc": [r.get("test_acc") for r in curves],
            "recall": recall}


def epoch_rows(official: list[dict], pllbench: dict | None, epochs: int) -> list[dict]:
    rows = []
    for epoch in range(epochs):
        mine = next((r for r in official if r["epoch"] == epoch), None)
        row = {"epoch": epoch, "official": None if mine is None else {"test_acc": mine["test_acc"],
                                                                        "recall": mine["recall"]}}
        accs = (pllbench or {}).get("test_acc") or []
        last = pllbench is not None and pllbench["finished"] and epoch == epochs - 1
        row["pllbench"] = None if epoch >= len(accs) else {"test_acc": accs[epoch],
                                                           "recall": pllbench["recall"] if last else None}
        rows.append(row)
    return rows


def _pct(value) -> str:
    return "—" if value is None else f"{100 * value:.2f}"


def _delta(a, b) -> str:
    return "—" if a is None or b is None else f"{100 * (a - b):+.2f}"


def markdown(meta: dict, rows: list[dict], classes: list[str]) -> str:
    head = [f"# Parity: {meta['method']} — official [{meta['variant']}] vs pllbench, {meta['dataset']} "
            f"{meta['preset']}, seed {meta['seed']}", "",
            f"- Official: {meta['repo']} at {meta['checkout']} (commit {meta['commit'] or 'unknown'}); "
            f"{meta['variant_doc']}.",
            f"- Official command line: `{' '.join(meta['argv'])}`.",
            f"- pllbench run: {meta['pllbench_run']} (hyperparameters {json.dumps(meta['hparams'], sort_keys=True)}"
            f"){'' if meta['pllbench_found'] else ' — not found yet: ' + meta['pllbench_command']}.",
            "- Replaced in the official code:", *(f"  - `{c['target']}`: {c['why']}" for c in meta["changes"]),
            "", "| epoch | official | pllbench | official − pllbench |", "| --- | --- | --- | --- |"]
    for row in rows:
        a = (row["official"] or {}).get("test_acc")
        b = (row["pllbench"] or {}).get("test_acc")
        head.append(f"| {row['epoch']} | {_pct(a)} | {_pct(b)} | {_delta(a, b)} |")
    last = rows[-1] if rows else {}
    a_rec = (last.get("official") or {}).get("recall") or [None] * len(classes)
    b_rec = (last.get("pllbench") or {}).get("recall") or [None] * len(classes)
    head += ["", f"Final-epoch recall per class (%, epoch {last.get('epoch', '—')}):", "",
             "| class | official | pllbench | official − pllbench |", "| --- | --- | --- | --- |"]
    head += [f"| {name} | {_pct(a)} | {_pct(b)} | {_delta(a, b)} |" for name, a, b in zip(classes, a_rec, b_rec)]
    return "\n".join(head) + "\n"


def write_report(out: Path, meta: dict, official: list[dict], pllbench: dict | None, classes: list[str]) -> None:
    rows = epoch_rows(official, pllbench, meta["epochs"])
    atomic_write_text(out / "parity.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    atomic_write_text(out / "parity.md", markdown(meta, rows, classes))


def summary(root: Path) -> str:
    """One markdown row per parity run under `root`: final-epoch accuracy of each side and the classes each loses
    (recall under 10 %), read from the runs' meta.json and parity.jsonl."""
    lines = ["| method | dataset | preset | variant | seed | official | pllbench | official − pllbench | lost "
             "(official / pllbench) |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for path in sorted(Path(root).glob("*/*/meta.json")):
        meta = read_json(path) or {}
        rows = [json.loads(line) for line in (path.parent / "parity.jsonl").read_text().splitlines()] \
            if (path.parent / "parity.jsonl").exists() else []
        if not meta or not rows:
            continue
        last = rows[-1]
        a, b = (last["official"] or {}), (last["pllbench"] or {})
        lost = " / ".join(", ".join(meta["classes"][c] for c, r in enumerate(side.get("recall") or [])
                                    if r is not None and r < 0.1) or "—" for side in (a, b))
        lines.append(f"| {meta['method']} | {meta['dataset']} | {meta['preset']} | {meta['variant']} | "
                     f"{meta['seed']} | {_pct(a.get('test_acc'))} | {_pct(b.get('test_acc'))} | "
                     f"{_delta(a.get('test_acc'), b.get('test_acc'))} | {lost} |")
    return "\n".join(lines) + "\n"
