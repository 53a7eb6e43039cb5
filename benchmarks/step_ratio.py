"""Step time of each method ÷ a plain cross-entropy step on the same backbone, batch and data, measured side by
side in one process, beside the pass-count ratio (the cost the method cannot beat).

Pass units: every image through a backbone counts 1 forward, plus 2 for its backward when it was forwarded with
grad enabled. Plain CE = 1 forward + 2 backward per image = 3 units.

    python benchmarks/step_ratio.py --methods dirk,dirk-ref --preset quick --steps 20
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from _common import PassCounter, PlainCE

from pllbench.data.prepare import prepare
from pllbench.method import Method, MethodContext, get_method, parse_hp_overrides
from pllbench.train.loop import make_batch, resolve_run_config, train_step
from pllbench.util import cache_root
from pllbench.views.maker import run_view_maker


def measure(method: Method, prep, maker, device, steps: int, warmup: int = 3):
    optimizer = torch.optim.SGD(method.trainable_parameters(), lr=0.01, momentum=0.9)
    images = prep.data.train.images.to(device)
    cands = torch.from_numpy(prep.candidates.matrix).float().to(device)
    bs = method.ctx.batch_size
    gen = torch.Generator(device=device).manual_seed(0)
    counter = PassCounter(method)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")
    method.train()
    times = []
    for s in range(warmup + steps):
        idx = torch.randint(0, len(cands), (bs,), generator=torch.Generator().manual_seed(s)).to(device)
        if s == warmup:
            counter.units = 0
        start = time.perf_counter()
        batch = make_batch(method, maker, images, cands, idx, epoch=1, step=s, gen=gen)
        train_step(method, optimizer, batch, autocast)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if s >= warmup:
            times.append(time.perf_counter() - start)
    times.sort()
    return times[len(times) // 2], counter.units / (steps * bs)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default="dirk")
    parser.add_argument("--dataset", default=None, help="default: synthetic for smoke, fmnist otherwise")
    parser.add_argument("--preset", default="smoke")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", default=None, help="append the markdown table to this file")
    args = parser.parse_args()
    device = torch.device(args.device)
    dataset = args.dataset or ("synthetic" if args.preset == "smoke" else "fmnist")
    prep = prepare(dataset, args.preset, 0, cache=cache_root(), device=device)
    cfg = prep.preset
    maker = run_view_maker(prep.data.info, cfg, channels_last=True)  # the trainer's views and memory format

    def context():
        return MethodContext(prep.data.info.num_classes, len(prep.candidates.matrix),
                             torch.from_numpy(prep.candidates.matrix).float().to(device), cfg["backbone"],
                             cfg["proj_dim"], cfg["epochs"], 10, cfg["batch_size"], prep.data.info.name, maker,
                             prep.data.train.images.to(device), device)

    torch.manual_seed(0)
    base_time, base_units = measure(PlainCE(context(), {}).to(device, memory_format=torch.channels_last), prep, maker,
                                    device, args.steps)
    lines = [f"device: {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}, "
             f"{torch.get_num_threads()} threads); dataset {dataset}, preset {args.preset}, batch {cfg['batch_size']}, "
             f"backbone {cfg['backbone']}; median of {args.steps} steps",
             "", "| method | step (ms) | step ÷ CE step | pass ratio | overhead (step ratio ÷ pass ratio) |",
             "|---|---|---|---|---|", f"| plain CE | {1000 * base_time:.1f} | 1.00 | 1.00 | 1.00 |"]
    for name in args.methods.split(","):
        config = resolve_run_config(prep, name, 0, parse_hp_overrides([]))
        torch.manual_seed(0)
        method = get_method(name)(context(), config["hparams"]).to(device, memory_format=torch.channels_last)
        step_time, units = measure(method, prep, maker, device, args.steps)
        ratio, pass_ratio = step_time / base_time, units / base_units
        lines.append(f"| {name} | {1000 * step_time:.1f} | {ratio:.2f} | {pass_ratio:.2f} | {ratio / pass_ratio:.2f} |")
    text = "\n".join(lines)
    print(text)
    if args.out:
        with open(Path(args.out), "a") as fh:
            fh.write(text + "\n\n")


if __name__ == "__main__":
    main()
