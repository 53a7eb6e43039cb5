"""The quick-preset calibration study (docs/calibration.md): candidate protocols on real Fashion-MNIST, each trained
through pllbench's own trainer and evaluator, with the oracle reference and the methods asked for.

A setting is the `quick` preset with some fields replaced (train subset, test split, learner, cls view, schedule,
epochs, batch, LR); it is registered at run time as preset `calib-<name>` with quick's teacher, so its candidates are
the shared generator's (rate 1.0, the quick cnn-s teacher) on that setting's train subset.

    python benchmarks/calibrate.py run --settings s20k,m20k --methods oracle,proden --seeds 0
    python benchmarks/calibrate.py report --out benchmarks/results/calibration-cpu.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from pllbench import presets
from pllbench.data.prepare import default_device, prepare
from pllbench.data.registry import dataset_class
from pllbench.method import get_method, parse_hp_overrides
from pllbench.train.loop import resolve_run_config, train_run
from pllbench.train.runconfig import run_id
from pllbench.train.runs import read_curves
from pllbench.util import cache_root

# The quick preset before this study (2026-11-26); every setting below is this with some fields replaced.
OLD_QUICK = {
    "description": "quick as of 2026-11-26", "epochs": 15, "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4,
    "eta_min": 0.05e-3, "proj_dim": 64, "backbone": "cnn-s", "batch_size": 128, "train_per_class": 400,
    "test_per_class": 200, "cls_cutout": 16, "schedule": "epoch"}
NO_CUTOUT = {"cls_cutout": 0, "schedule": "step", "test_per_class": None}
SETTINGS: dict[str, dict] = {
    # the quick preset as of 2026-11-26 (4k/2k, 16-px cls cutout, per-epoch cosine)
    "old": {},
    # the old preset on the full test split, no cutout, per-step cosine
    "s4k": {"train_per_class": 400, **NO_CUTOUT},
    "s20k": {"train_per_class": 2000, **NO_CUTOUT},
    "s20k-cut": {"train_per_class": 2000, "schedule": "step", "test_per_class": None},
    "m20k": {"train_per_class": 2000, "backbone": "cnn-m", **NO_CUTOUT},
    "s30k": {"train_per_class": 3000, **NO_CUTOUT},
    "s60k": {"train_per_class": None, "epochs": 6, **NO_CUTOUT},
    "s60k10": {"train_per_class": None, "epochs": 10, **NO_CUTOUT},
    "s30k-b256": {"train_per_class": 3000, "batch_size": 256, "lr": 0.1, **NO_CUTOUT},
    "s30k-e20": {"train_per_class": 3000, "epochs": 20, **NO_CUTOUT},
    "m30k": {"train_per_class": 3000, "backbone": "cnn-m", **NO_CUTOUT},
    "m60k": {"train_per_class": None, "backbone": "cnn-m", "epochs": 8, **NO_CUTOUT},
    "d20k": {"train_per_class": 2000, "backbone": "cnn-m2", **NO_CUTOUT},
    "d60k": {"train_per_class": None, "backbone": "cnn-m2", "epochs": 8, **NO_CUTOUT},
    "d30k-e10": {"train_per_class": 3000, "backbone": "cnn-m2", "epochs": 10, **NO_CUTOUT},
    "d60k-e5": {"train_per_class": None, "backbone": "cnn-m2", "epochs": 5, **NO_CUTOUT},
    "d20k-e10": {"train_per_class": 2000, "backbone": "cnn-m2", "epochs": 10, **NO_CUTOUT},
    "s2-30k-e10": {"train_per_class": 3000, "backbone": "cnn-s2", "epochs": 10, **NO_CUTOUT},
}


def register(name: str) -> str:
    """Add preset `calib-<name>` (quick with the setting's fields) and quick's teacher for it; returns its name."""
    preset = f"calib-{name}"
    quick = presets.PRESETS["quick"]
    cfg = {**quick, **OLD_QUICK, **SETTINGS[name]}  # quick's method overrides and datasets, the old fields
    cfg["description"] = f"calibration setting {name}: quick with {SETTINGS[name]}"
    presets.PRESETS[preset] = cfg
    presets.TEACHERS[preset] = presets.TEACHERS["quick"]
    fmnist = dataset_class("fmnist")  # a dataset declares the presets made for it
    fmnist.presets = (*fmnist.presets, preset)
    return preset


def run(args) -> None:
    device = default_device()
    cache = cache_root(args.cache_dir)
    for name in args.settings.split(","):
        preset = register(name)
        for seed in [int(s) for s in args.seeds.split(",")]:
            for method in args.methods.split(","):
                source = get_method(method).candidate_source
                prep = prepare("fmnist", preset, seed, cache=cache, device=device, candidate_seed=0,
                               candidate_source=source, echo=lambda *a: print(*a, flush=True))
                config = resolve_run_config(prep, method, seed, parse_hp_overrides(args.hp or []))
                run_dir = Path(args.runs) / run_id(config)
                started = time.time()
                final = train_run(prep, config, run_dir, device, progress=False)
                print(f"{name} {method} s{seed}: {100 * final['test_acc']:.2f}% "
                      f"({time.time() - started:.0f} s, mean |S| {config['candidates']['mean_size']:.2f}, "
                      f"train {len(prep.data.train.labels)}, test {len(prep.data.test.labels)})", flush=True)


def collect(runs: Path) -> dict[tuple[str, str], list[dict]]:
    rows: dict[tuple[str, str], list[dict]] = {}
    for final_path in sorted(runs.glob("fmnist-calib-*/*/final.json")):
        final = json.loads(final_path.read_text())
        config = json.loads((final_path.parent / "config.json").read_text())
        curves = read_curves(final_path.parent)
        last5 = [r["test_acc"] for r in curves[-5:]]
        setting = config["preset"]["name"].removeprefix("calib-")
        rows.setdefault((setting, final["label"]), []).append({
            "seed": final["seed"], "acc": 100 * final["test_acc"], "best": 100 * max(r["test_acc"] for r in curves),
            "last5_std": 100 * statistics.stdev(last5) if len(last5) > 1 else 0.0,  # as the leaderboard
            "seconds": final["seconds"], "threads": config["environment"].get("threads"),
            "mean_size": config["candidates"]["mean_size"], "teacher": final.get("teacher_test_acc"),
            "preset": config["preset"]})
    return rows


def describe(preset: dict) -> str:
    train = "60k" if not preset["train_per_class"] else f"{preset['train_per_class'] * 10 // 1000}k"
    test = "10k" if not preset["test_per_class"] else f"{preset['test_per_class'] * 10 // 1000}k"
    cut = preset.get("cls_cutout")
    return (f"{train}/{test}, {preset['backbone']}, cutout {16 if cut is None else cut}, "
            f"{preset.get('schedule', 'epoch')} cosine, {preset['epochs']} ep, b{preset['batch_size']}, "
            f"lr {preset['lr']}")


def cell(runs: list[dict] | None, key: str = "acc") -> str:
    if not runs:
        return "–"
    values = [r[key] for r in runs]
    sd = f" ± {statistics.stdev(values):.2f}" if len(values) > 1 else ""
    return f"{statistics.mean(values):.2f}{sd}" + (f" (n={len(values)})" if len(values) > 1 else "")


def report(args) -> None:
    """One row per setting: the final-epoch accuracy of each method, the last-5-epoch std and the training cost."""
    rows = collect(Path(args.runs))
    methods = ["oracle", "proden", "dirk"]
    settings = sorted({setting for setting, _ in rows}, key=lambda name: list(SETTINGS).index(name)
                      if name in SETTINGS else len(SETTINGS))
    lines = [f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch "
             f"{torch.__version__}, one thread per run. Final-epoch test accuracy (%) (mean ± sample std when several "
             "seeds); last-5 std: the std of the last 5 epochs' test accuracy; cost: training seconds of one run.", "",
             "| setting | what | " + " | ".join(methods) + " | last-5 std (" + "/".join(methods) + ") | cost s ("
             + "/".join(methods) + ") |", "|---|---|" + "---|" * (len(methods) + 2)]
    for setting in settings:
        found = [rows.get((setting, m)) for m in methods]
        preset = next(r for r in found if r)[0]["preset"]
        std = "/".join(f"{statistics.mean(r['last5_std'] for r in runs):.2f}" if runs else "–" for runs in found)
        cost = "/".join(f"{statistics.mean(r['seconds'] for r in runs):.0f}" if runs else "–" for runs in found)
        lines.append(f"| {setting} | {describe(preset)} | " + " | ".join(cell(runs) for runs in found)
                     + f" | {std} | {cost} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--settings", required=True, help=f"comma list of: {', '.join(SETTINGS)}")
    r.add_argument("--methods", default="oracle,proden")
    r.add_argument("--seeds", default="0")
    r.add_argument("--hp", action="append")
    r.add_argument("--cache-dir", default=None)
    r.add_argument("--runs", default="calib-runs")
    p = sub.add_parser("report")
    p.add_argument("--runs", default="calib-runs")
    p.add_argument("--out", default=None)
    args = parser.parse_args()
    run(args) if args.cmd == "run" else report(args)


if __name__ == "__main__":
    main()
