"""Training throughput of pllbench's pipeline against a reference pipeline built like the official code, and each
method's step cost against a plain cross-entropy step beside its image-pass ratio; measured side by side in one run.

Ours: uint8 images on the device, batched views with per-sample draws (pllbench.views.maker), the trainer's make_batch
and train_step, networks and views channels_last (as the trainer); `--bf16` adds bfloat16 autocast, `--compile`
torch.compiles the backbones.
Reference (as the official code): a torch DataLoader over a Dataset that builds a PIL image per item and applies the
per-image torchvision transforms of each view (protocols.md §3; RandAugment with its magnitude drawn per image),
shuffle, drop_last, `--workers` processes (default 4 on CUDA, 2 on CPU), pinned memory on CUDA, fp32, contiguous
tensors, no compile; then the same method step on the device. Persistent workers: the official loaders restart
theirs every epoch, so this reference is, if anything, faster than the original.

Both pipelines build the same method (same init seed, same hyperparameters, epoch hooks walked to mid-training)
and run R rounds of N timed steps after warm-up steps; samples/s is the median over rounds. The step table times
single steps (synchronised on CUDA) of every method in round-robin with a plain-CE step, and reports medians.

    .venv/bin/python benchmarks/throughput.py --methods dirk,cad-cam --dataset fmnist --preset quick --steps 20
    .venv/bin/python benchmarks/throughput.py --methods all --dataset fmnist --preset quick --no-reference
    .venv/bin/python benchmarks/throughput.py --methods dirk --dataset synthetic:size=32,classes=10,train=50000 \
        --preset paper --like cifar10 --mean-size 4 --batch-size 512 --bf16 --compile
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import time
from pathlib import Path

import torch
from _common import PassCounter, PlainCE, bench_epoch, context, load_bench_data, method_hparams
from PIL import Image

from pllbench.method import Batch, get_method, method_names
from pllbench.train.loop import compile_backbones, make_batch, train_step
from pllbench.train.machine import cpu_name
from pllbench.util import cache_root
from pllbench.views.maker import ViewMaker, run_view_maker

# ------------------------------------------------------------------------------------------ the reference pipeline


class RandomMagnitudeRandAugment(torch.nn.Module):
    """RandAugment(num_ops) with the magnitude bin drawn per image (D13)."""

    def __init__(self, num_ops=3, max_magnitude=30):
        super().__init__()
        self.num_ops, self.max_magnitude = num_ops, max_magnitude

    def forward(self, image):
        from torchvision import transforms as T

        magnitude = int(torch.randint(0, self.max_magnitude + 1, ()))
        return T.RandAugment(num_ops=self.num_ops, magnitude=magnitude)(image)


def reference_transform(maker: ViewMaker, view: str):
    """The per-image torchvision pipeline of one view on PIL images (protocols.md §3)."""
    from torchvision import transforms as T

    size, fam = maker.size, maker.family
    finish = [T.ToTensor(), T.Normalize(maker.info.mean, maker.info.std)]
    jitter = [T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8), T.RandomGrayscale(0.2)]
    cutout = T.RandomErasing(p=1.0, scale=((maker.cutout / size) ** 2,) * 2, ratio=(1.0, 1.0), value=0)
    if view == "base":
        return T.Compose(([T.CenterCrop(size)] if fam == "224" else []) + finish)
    if view == "cls":
        if fam == "224":
            return T.Compose([T.RandomResizedCrop(size, (0.08, 1.0)), T.RandomHorizontalFlip(),
                              T.AutoAugment(T.AutoAugmentPolicy.IMAGENET)] + finish)
        auto = [T.AutoAugment(T.AutoAugmentPolicy.CIFAR10)] if fam == "32" else []
        return T.Compose([T.RandomHorizontalFlip(), T.RandomCrop(size, maker.pad, padding_mode="reflect")]
                         + auto + finish + [cutout])
    crop = [T.RandomResizedCrop(size, (0.08, 1.0) if fam == "224" else (0.2, 1.0)), T.RandomHorizontalFlip()]
    if view == "weak":
        return T.Compose(crop + ([] if fam == "28" else jitter) + finish)
    if fam == "28":
        return T.Compose(crop + jitter + finish)
    return T.Compose(crop + [RandomMagnitudeRandAugment()] + finish
                     + [T.RandomErasing(p=1.0, scale=(0.02, 0.25), ratio=(1.0, 1.0), value=0)])


class ReferenceDataset(torch.utils.data.Dataset):
    """Items built like torchvision's datasets: a PIL image from the uint8 array, then each view's transforms."""

    def __init__(self, images: torch.Tensor, candidates: torch.Tensor, transforms: dict):
        self.gray = images.shape[1] == 1
        self.arrays = images[:, 0].numpy() if self.gray else images.permute(0, 2, 3, 1).contiguous().numpy()
        self.candidates, self.transforms = candidates, transforms

    def __len__(self):
        return len(self.arrays)

    def __getitem__(self, i):
        image = Image.fromarray(self.arrays[i])
        if self.gray:
            image = image.convert("RGB")  # the views see gray replicated to RGB (protocols.md §3)
        return {v: t(image) for v, t in self.transforms.items()}, self.candidates[i], i


# ------------------------------------------------------------------------------------------------- the pipelines


class Pipeline:
    """One method trained by one pipeline; `step()` runs one optimisation step."""

    def __init__(self, name, data, device, *, bf16=False, compile=False, channels_last=False, method_cls=None,
                 preset_views=False):
        self.device, self.bs = device, data.preset["batch_size"]
        # ours: the preset's own views (cutout, one-channel input), as the trainer; the reference: RGB, as the
        # official code feeds its networks
        self.maker = (run_view_maker(data.info, data.preset, channels_last) if preset_views
                      else ViewMaker(data.info, channels_last=channels_last))
        torch.manual_seed(0)
        cls = method_cls or get_method(name)
        self.method = cls(context(data, self.maker, device), {} if method_cls else method_hparams(name, data))
        self.method.to(device)
        if channels_last:
            self.method.to(memory_format=torch.channels_last)
        if compile:
            compile_backbones(self.method)
        self.epoch = bench_epoch(self.method, data.preset["epochs"])
        self.method.train()
        self.optimizer = torch.optim.SGD(self.method.trainable_parameters(), lr=0.01, momentum=0.9)
        self.autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)  # as the trainer
        self.gen = torch.Generator(device=device).manual_seed(0)
        self.counter = PassCounter(self.method)
        self.steps = 0

    def batch(self) -> Batch:
        raise NotImplementedError

    def step(self):
        batch = self.batch()
        train_step(self.method, self.optimizer, batch, self.autocast)
        self.steps += 1


class Ours(Pipeline):
    def __init__(self, name, data, device, **kw):
        super().__init__(name, data, device, channels_last=True, preset_views=True, **kw)
        self.images = data.train.images.to(device)
        self.cands = data.candidates.to(device)
        self.order = torch.empty(0, dtype=torch.long, device=device)

    def batch(self):
        if len(self.order) < self.bs:  # a new shuffled pass, drawn on the device
            self.order = torch.randperm(len(self.cands), generator=self.gen, device=self.device)
        idx, self.order = self.order[:self.bs], self.order[self.bs:]
        return make_batch(self.method, self.maker, self.images, self.cands, idx, self.epoch, self.steps, self.gen)


class Reference(Pipeline):
    def __init__(self, name, data, device, workers, **kw):
        super().__init__(name, data, device, **kw)
        transforms = {v: reference_transform(self.maker, v) for v in self.method.views}
        self.loader = torch.utils.data.DataLoader(
            ReferenceDataset(data.train.images, data.candidates, transforms), batch_size=self.bs, shuffle=True,
            drop_last=True, num_workers=workers, pin_memory=device.type == "cuda", persistent_workers=workers > 0)
        self.iterator = iter(self.loader)

    def batch(self):
        try:
            views, cands, idx = next(self.iterator)
        except StopIteration:
            self.iterator = iter(self.loader)
            views, cands, idx = next(self.iterator)
        move = {"device": self.device, "non_blocking": True}
        views = {k: v.to(**move) for k, v in views.items()}
        return Batch(views, cands.to(**move), idx.to(**move), self.epoch, self.steps, self.gen)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_run(pipeline: Pipeline, steps: int) -> float:
    """Seconds for `steps` steps, one synchronisation at the end (no per-step sync)."""
    sync(pipeline.device)
    start = time.perf_counter()
    for _ in range(steps):
        pipeline.step()
    sync(pipeline.device)
    return time.perf_counter() - start


def timed_step(pipeline: Pipeline) -> float:
    sync(pipeline.device)
    start = time.perf_counter()
    pipeline.step()
    sync(pipeline.device)
    return time.perf_counter() - start


# ---------------------------------------------------------------------------------------------------- the tables


def throughput_table(args, data, device, variants) -> list[str]:
    """samples/s of our pipeline (each variant) and of the reference, per method, median over rounds."""
    bs = data.preset["batch_size"]
    header = ("| method | " + " | ".join(f"ours {v} (samples/s)" for v in variants) + " | reference fp32 (samples/s) | "
              + " | ".join(f"ours {v} ÷ reference" for v in variants) + " | peak memory ours / ref (MiB) |")
    lines = [header, "|" + "---|" * (3 + 2 * len(variants))]
    print("\n".join(lines), flush=True)
    for name in args.methods:
        cuda = device.type == "cuda"
        pipes = {v: Ours(name, data, device, bf16=v.startswith("bf16"), compile=args.compile) for v in variants}
        pipes["reference"] = Reference(name, data, device, args.workers)
        peaks = {}
        for key, pipe in pipes.items():  # warm-up: compilation, cuDNN plans, worker start-up, allocator
            if cuda:
                torch.cuda.reset_peak_memory_stats(device)
            timed_run(pipe, args.warmup)
            peaks[key] = torch.cuda.max_memory_allocated(device) / 2**20 if cuda else float("nan")
        rates: dict[str, list[float]] = {k: [] for k in pipes}
        for _ in range(args.rounds):
            for key, pipe in pipes.items():
                rates[key].append(args.steps * bs / timed_run(pipe, args.steps))
        med = {k: statistics.median(v) for k, v in rates.items()}
        ref = med["reference"]
        peak = "n/a" if not cuda else f"{max(peaks[v] for v in variants):,.0f} / {peaks['reference']:,.0f}"
        lines.append(f"| {name} | " + " | ".join(f"{med[v]:,.0f}" for v in variants) + f" | {ref:,.0f} | "
                     + " | ".join(f"**{med[v] / ref:.2f}**" for v in variants) + f" | {peak} |")
        print(lines[-1], flush=True)
        del pipes
        if args.compile:
            torch._dynamo.reset()
    return lines


def step_ratio_table(args, data, device, variant) -> list[str]:
    """Median step time of each method ÷ plain-CE step, beside the pass ratio and their quotient."""
    kw = {"bf16": variant.startswith("bf16"), "compile": args.compile}
    pipes = {"plain CE": Ours("plain-ce", data, device, method_cls=PlainCE, **kw)}
    pipes.update({name: Ours(name, data, device, **kw) for name in args.methods})
    for pipe in pipes.values():
        timed_run(pipe, args.warmup)
        pipe.counter.units = 0
    times: dict[str, list[float]] = {k: [] for k in pipes}
    for _ in range(args.rounds):
        for _ in range(args.steps):
            for key, pipe in pipes.items():  # round-robin: machine noise hits every method alike
                times[key].append(timed_step(pipe))
    units = {k: p.counter.units / (len(times[k]) * data.preset["batch_size"]) for k, p in pipes.items()}
    base_time, base_units = statistics.median(times["plain CE"]), units["plain CE"]
    lines = ["| method | step (ms) | step ÷ CE step | pass ratio | step ÷ (CE step × pass ratio) |",
             "|---|---|---|---|---|", f"| plain CE | {1000 * base_time:.1f} | 1.00 | 1.00 | 1.00 |"]
    print("\n".join(lines), flush=True)
    for name in args.methods:
        ratio, passes = statistics.median(times[name]) / base_time, units[name] / base_units
        lines.append(f"| {name} | {1000 * statistics.median(times[name]):.1f} | {ratio:.2f} | {passes:.2f} | "
                     f"**{ratio / passes:.2f}** |")
        print(lines[-1], flush=True)
    return lines


def machine(device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda}), {os.cpu_count()} CPUs"
    return f"CPU: {cpu_name()}, nproc {os.cpu_count()}, torch threads {torch.get_num_threads()}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default="dirk", help="comma-separated, or 'all'")
    parser.add_argument("--dataset", default="fmnist")
    parser.add_argument("--preset", default="quick")
    parser.add_argument("--like", default=None, help="resolve the preset as for this dataset (e.g. cifar10)")
    parser.add_argument("--mean-size", type=float, default=None,
                        help="random candidate sets of this mean size instead of the preset's teacher")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--backbone", default=None, help="override the preset's backbone (e.g. cnn-xs for dry runs)")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per round")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=None, help="reference loader workers (4 on CUDA, 2 on CPU)")
    parser.add_argument("--variants", default=None,
                        help="our pipeline's precisions, e.g. fp32,bf16 (default: fp32 on CPU, fp32,bf16 on CUDA)")
    parser.add_argument("--bf16", action="store_true", help="shorthand for --variants bf16")
    parser.add_argument("--compile", action="store_true", help="torch.compile our backbones")
    parser.add_argument("--no-reference", action="store_true", help="skip the ours ÷ reference table")
    parser.add_argument("--no-step-ratio", action="store_true", help="skip the step ÷ plain-CE table")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch threads of this process")
    parser.add_argument("--out", default=None, help="write the markdown report to this file")
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    args.methods = method_names() if args.methods == "all" else args.methods.split(",")
    args.workers = args.workers if args.workers is not None else (4 if device.type == "cuda" else 2)
    variants = ["bf16"] if args.bf16 else (args.variants.split(",") if args.variants else
                                           (["fp32", "bf16"] if device.type == "cuda" else ["fp32"]))
    data = load_bench_data(args.dataset, args.preset, like=args.like, mean_size=args.mean_size,
                           batch_size=args.batch_size, cache=cache_root(), device=device)
    cfg = data.preset
    if args.backbone:
        cfg["backbone"] = args.backbone
    started = time.time()
    report = [f"command: `{' '.join([Path(sys.executable).name, *sys.argv])}`",
              f"machine: {machine(device)}; torch {torch.__version__}; "
              f"{datetime.datetime.now().astimezone().isoformat(timespec='minutes')}",
              f"setting: {args.dataset} ({len(data.candidates)} train images, {data.source}), preset {cfg['name']}"
              f"{' as ' + args.like if args.like else ''}, backbone {cfg['backbone']}, batch {cfg['batch_size']}, "
              f"compile {'on' if args.compile else 'off'}, {args.rounds} rounds × {args.steps} steps after "
              f"{args.warmup} warm-up; reference: DataLoader with {args.workers} workers, PIL + torchvision "
              f"per image, fp32", ""]
    print("\n".join(report), flush=True)
    if not args.no_reference:
        report += ["**Throughput, ours ÷ reference** (median samples/s over rounds)", ""]
        report += throughput_table(args, data, device, variants) + [""]
    if not args.no_step_ratio:
        report += [f"**Step cost ÷ plain-CE step** (ours, {variants[-1]}; median single-step times)", ""]
        report += step_ratio_table(args, data, device, variants[-1]) + [""]
    report.append(f"total {time.time() - started:.0f} s")
    text = "\n".join(report)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    print(f"total {time.time() - started:.0f} s")


if __name__ == "__main__":
    main()
