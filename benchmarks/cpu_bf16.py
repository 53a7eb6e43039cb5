"""bfloat16 autocast against fp32 for each method's training step, side by side in one process (round-robin), on
the device the preset runs on: does `pllbench run --bf16` pay on this CPU? It does only where the core has native
bfloat16 (avx512_bf16 or AMX); elsewhere oneDNN emulates it and it is slower. The step is the trainer's
(make_batch + train_step through benchmarks/throughput.py's `Ours` pipeline), mid-training, one thread.

    python benchmarks/cpu_bf16.py --methods proden,dirk,cad-cam --dataset fmnist --preset quick --steps 3
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch
from _common import load_bench_data
from throughput import Ours, machine, timed_run, timed_step

from pllbench.method import method_names
from pllbench.util import cache_root


def native_bf16() -> str:
    """The CPU flags that make bfloat16 native ('' when none or not Linux)."""
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        return ""
    return " ".join(f for f in ("avx512_bf16", "amx_bf16") if f in flags.split())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default="proden,dirk,cad-cam", help="comma-separated, or 'all'")
    parser.add_argument("--dataset", default="fmnist")
    parser.add_argument("--preset", default="quick")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per round and variant")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    device = torch.device("cpu")
    methods = method_names() if args.methods == "all" else args.methods.split(",")
    data = load_bench_data(args.dataset, args.preset, cache=cache_root(), device=device)
    print(f"machine: {machine(device)}; native bfloat16 flags: {native_bf16() or 'none'}; torch {torch.__version__}")
    print(f"setting: {args.dataset}, preset {args.preset}, backbone {data.preset['backbone']}, batch "
          f"{data.preset['batch_size']}; {args.rounds} rounds × {args.steps} steps per variant after "
          f"{args.warmup} warm-up\n")
    print("| method | fp32 step (ms) | bf16 step (ms) | bf16 ÷ fp32 |\n|---|---|---|---|", flush=True)
    for name in methods:
        pipes = {v: Ours(name, data, device, bf16=v == "bf16") for v in ("fp32", "bf16")}
        for pipe in pipes.values():
            timed_run(pipe, args.warmup)
        times = {v: [] for v in pipes}
        for _ in range(args.rounds):
            for _ in range(args.steps):
                for v, pipe in pipes.items():  # alternate, so machine noise hits both alike
                    times[v].append(timed_step(pipe))
        fp32, bf16 = (1000 * statistics.median(times[v]) for v in ("fp32", "bf16"))
        print(f"| {name} | {fp32:.1f} | {bf16:.1f} | **{bf16 / fp32:.2f}** |", flush=True)


if __name__ == "__main__":
    main()
