"""Each method's training step in fp32 against the run options that only change speed or precision, side by side in
one process (round-robin) on the CPU: does `pllbench run --bf16` or `--compile` pay here? bf16 does only where the
core has native bfloat16 (avx512_bf16 or AMX); elsewhere oneDNN emulates it and it is slower. The step is the
trainer's (make_batch + train_step through benchmarks/throughput.py's `Ours` pipeline), mid-training, one thread;
a compiled variant is warmed up (compiled) before timing.

    python benchmarks/cpu_variants.py --methods proden,dirk,cad-cam --variants bf16 --steps 3
    python benchmarks/cpu_variants.py --methods proden,dirk,cad-cam --variants compile,bf16+compile
"""

from __future__ import annotations

import argparse
import statistics

import torch
from _common import load_bench_data
from throughput import Ours, machine, timed_run, timed_step

from pllbench.method import method_names
from pllbench.train.machine import native_bf16_flags
from pllbench.util import cache_root

VARIANTS = {"fp32": {}, "bf16": {"bf16": True}, "compile": {"compile": True},
            "bf16+compile": {"bf16": True, "compile": True}}  # the `Ours` pipeline's keyword arguments


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default="proden,dirk,cad-cam", help="comma-separated, or 'all'")
    parser.add_argument("--dataset", default="fmnist")
    parser.add_argument("--preset", default="quick")
    parser.add_argument("--variants", default="bf16",
                        help=f"compared with fp32, comma-separated: {', '.join(VARIANTS)}")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per round and variant")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    variants = ["fp32", *args.variants.split(",")]
    if unknown := [v for v in variants if v not in VARIANTS]:
        parser.error(f"unknown variant {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")
    torch.set_num_threads(1)
    device = torch.device("cpu")
    methods = method_names() if args.methods == "all" else args.methods.split(",")
    data = load_bench_data(args.dataset, args.preset, cache=cache_root(), device=device)
    flags = native_bf16_flags()
    print(f"machine: {machine(device)}; native bfloat16 flags: "
          f"{'unknown' if flags is None else ', '.join(flags) or 'none'}; torch {torch.__version__}")
    print(f"setting: {args.dataset}, preset {args.preset}, backbone {data.preset['backbone']}, batch "
          f"{data.preset['batch_size']}; {args.rounds} rounds × {args.steps} steps per variant after "
          f"{args.warmup} warm-up\n")
    print("| method | " + " | ".join(f"{v} step (ms)" for v in variants) + " | "
          + " | ".join(f"{v} ÷ fp32" for v in variants[1:]) + " |\n|" + "---|" * (2 * len(variants)), flush=True)
    for name in methods:
        pipes = {v: Ours(name, data, device, **VARIANTS[v]) for v in variants}
        for pipe in pipes.values():
            timed_run(pipe, args.warmup)
        times = {v: [] for v in pipes}
        for _ in range(args.rounds):
            for _ in range(args.steps):
                for v, pipe in pipes.items():  # alternate, so machine noise hits every variant alike
                    times[v].append(timed_step(pipe))
        ms = {v: 1000 * statistics.median(times[v]) for v in variants}
        print(f"| {name} | " + " | ".join(f"{ms[v]:.1f}" for v in variants) + " | "
              + " | ".join(f"**{ms[v] / ms['fp32']:.2f}**" for v in variants[1:]) + " |", flush=True)


if __name__ == "__main__":
    main()
