"""VALEN's kNN graph (methods.md §7, D10) at full-dataset scale: time and peak memory of the blockwise routine.

Builds the k = 3 nearest-other-instance index array for N random d-dimensional features with
`pllbench.methods.valen.knn_graph` (distances for a block of rows against all N at a time, never N×N), and reports
the wall time, the peak resident memory of the process above its level just before the call (ru_maxrss; the
graph's own tensors: features, one distance block, the N×k result), and what one dense N×N float32 distance matrix
(the official route) would take. On CUDA the peak is torch's max_memory_allocated.

Usage: .venv/bin/python benchmarks/valen_graph.py [--n 60000] [--dims 64 512] [--k 3] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import resource
import time

import torch

from pllbench.methods.valen import knn_graph


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def measure(n: int, dim: int, k: int, device: torch.device, block_elems: int) -> dict:
    feats = torch.randn(n, dim, generator=torch.Generator().manual_seed(0)).to(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    before = peak_rss_mb()
    start = time.perf_counter()
    graph = knn_graph(feats, k, max_block_elems=block_elems)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    if device.type == "cuda":
        peak_mb = (torch.cuda.max_memory_allocated(device) - base) / 2**20
    else:
        peak_mb = peak_rss_mb() - before
    assert graph.shape == (n, k) and not (graph == torch.arange(n, device=device)[:, None]).any()
    block_rows = max(1, min(n, block_elems // n))
    return {"n": n, "dim": dim, "k": k, "device": str(device), "threads": torch.get_num_threads(),
            "seconds": round(seconds, 2), "peak_mb_above_start": round(peak_mb, 1), "block_rows": block_rows,
            "distance_block_mb": round(block_rows * n * 4 / 2**20, 1), "dense_nxn_mb": round(n * n * 4 / 2**20, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=60000)
    parser.add_argument("--dims", type=int, nargs="+", default=[64])
    parser.add_argument("--k", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--block-elems", type=int, default=1 << 24)
    args = parser.parse_args()
    context = multiprocessing.get_context("spawn")  # one fresh process per size, so each peak is its own
    for dim in args.dims:
        with context.Pool(1) as pool:
            result = pool.apply(measure, (args.n, dim, args.k, torch.device(args.device), args.block_elems))
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
