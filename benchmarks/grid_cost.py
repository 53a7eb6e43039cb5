"""What a grid costs, from the run times that finished runs measured: each method's run time (the seconds of its
epochs, evaluation included; median and fastest over its finished runs in RUNS), and the wall time of running
`--methods M --seeds <n seeds>` on W workers, packed longest job first onto the first free worker (what W grid
workers do, up to the job order). Only runs of the preset's default settings count: rows whose label carries
hyperparameter, epoch or bf16 changes (`dirk{teacher_init=separate}`, `proden{bf16}`) are left out. The fastest runs
are the closest to an otherwise idle machine; the median is what a shared one gave.

    python benchmarks/grid_cost.py --runs RUNS --preset quick --dataset fmnist --methods all --seeds 3 --workers 2
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from pllbench.leaderboard.results import load_runs
from pllbench.method import method_names
from pllbench.tune.cost import default_runs, packed_wall, run_seconds
from pllbench.wording import duration


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", required=True, help="results root holding the finished runs")
    parser.add_argument("--preset", default="quick")
    parser.add_argument("--dataset", default="fmnist")
    parser.add_argument("--methods", default="all", help="comma-separated, or 'all'")
    parser.add_argument("--seeds", type=int, default=3, help="number of seeds of the grid to cost")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    methods = method_names() if args.methods == "all" else args.methods.split(",")
    runs = default_runs(load_runs(Path(args.runs)), args.preset, args.dataset)
    print(f"{args.dataset}, preset {args.preset}: finished runs in {args.runs}\n")
    print("| method | runs | median run (min) | fastest run (min) |\n|---|---|---|---|")
    median, fastest, missing = {}, {}, []
    for method in methods:
        seconds = run_seconds(runs, method)
        if not seconds:
            missing.append(method)
            continue
        median[method], fastest[method] = statistics.median(seconds) / 60, min(seconds) / 60
        print(f"| {method} | {len(seconds)} | {median[method]:.1f} | {fastest[method]:.1f} |")
    print(f"\n`--methods {args.methods} --seeds <{args.seeds} seeds>` on {args.workers} workers:\n")
    print("| run times | core-minutes | wall |\n|---|---|---|")
    for name, table in (("fastest", fastest), ("median", median)):
        jobs = [minutes for minutes in table.values() for _ in range(args.seeds)]
        print(f"| {name} | {sum(jobs):,.0f} | {duration(60 * packed_wall(jobs, args.workers))} |")
    if missing:
        print(f"\nno finished run, left out: {', '.join(missing)}")


if __name__ == "__main__":
    main()
