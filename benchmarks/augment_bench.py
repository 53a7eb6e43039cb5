"""Edits per second of the `tiny-ip2p` editor (pllbench/cad_edits/augment.py) on
CPU, and on CUDA in fp16 when available.

What is timed is one `Ip2pEditor` call per batch, as `pllbench augment` makes it: uint8 base images → RGB [0,1] →
resize to the working resolution → the InstructPix2Pix pipeline (DPM-Solver, 10 steps, three guidance branches) →
resize back → uint8, with one seeded generator per edit. Inputs are random 32-px RGB images (CIFAR-shaped). The tiny
pipeline is a code-path stand-in: its UNet has 0.25 M parameters against Stable Diffusion's 860 M, so these rates bound
the pipeline's fixed overhead, not the real model's speed.

Usage: .venv/bin/python benchmarks/augment_bench.py [--resolution 256] [--batch-size 8] [--batches 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from pllbench.cad_edits.augment import Ip2pEditor, ready_pipeline, tiny_pipeline


def edits_per_second(device: torch.device, dtype: torch.dtype, resolution: int, batch_size: int, batches: int,
                     size: int = 32) -> float:
    pipe = tiny_pipeline()
    pipe = ready_pipeline(pipe if dtype == torch.float32 else pipe.to(dtype=dtype), device)
    images = torch.randint(0, 256, (batch_size * (batches + 1), 3, size, size), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(0))
    editor = Ip2pEditor(pipe, images, [f"class {c}" for c in range(10)], "bench", 0, size, resolution, device)
    labels = np.arange(batch_size) % 10
    editor(np.arange(batch_size), labels)  # warm-up: allocator, kernels, scheduler tables
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for b in range(1, batches + 1):
        editor(np.arange(b * batch_size, (b + 1) * batch_size), labels)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return batches * batch_size / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--batches", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    settings = [(torch.device("cpu"), torch.float32, f"cpu ({args.threads} thread(s))")]
    if torch.cuda.is_available():
        settings.append((torch.device("cuda"), torch.float16, torch.cuda.get_device_name(0)))
    for device, dtype, name in settings:
        rate = edits_per_second(device, dtype, args.resolution, args.batch_size, args.batches)
        print(f"tiny-ip2p {name}, {str(dtype).removeprefix('torch.')}, working resolution {args.resolution}, "
              f"batch {args.batch_size}: {rate:.2f} edits/s ({1000 / rate:.0f} ms/edit)")


if __name__ == "__main__":
    main()
