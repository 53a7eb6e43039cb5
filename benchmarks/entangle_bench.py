"""Benchmark of the exact blockwise pair search (entanglement.md §5) at FMNIST-train scale.

N = 60,000 random unit features of d = 512 in 10 classes, top 0.001% of the cross-class pairs (k = 16,200),
τ = 0.9 counted on the way. In one process it times:
  1. the bare N²d product, blockwise (every R×C block of F·Fᵀ, results discarded): the floor for any exact method;
  2. the same product on the blocks the search visits (j > i only, about half);
  3. pllbench's top_cross_class_pairs (float32);
  4. faiss-cpu IndexFlatIP exact k-NN of every row (the usual tool), with the share of the global top-k pairs
     that its neighbour lists recover.
Peak extra memory is the rise of the peak RSS (VmHWM, reset through /proc/self/clear_refs) over the RSS before each
step. Run: .venv/bin/python benchmarks/entangle_bench.py [--n 60000] [--dim 512] [--top 0.001] [--block 4096]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from pllbench.entangle.pairs import cross_class_pair_count, k_for_p, l2_normalize, parse_top, top_cross_class_pairs
from pllbench.train.machine import reset_peak_memory, status_kib


def measured(fn):
    """(result, seconds, peak extra MiB): peak RSS during fn minus RSS before it (Linux /proc only)."""
    reset_peak_memory(torch.device("cpu"))  # VmHWM back to the current RSS
    before = status_kib("VmRSS")
    start = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - start
    return result, seconds, (status_kib("VmHWM") - before) / 1024


def bare_product(feats: torch.Tensor, block: int, upper_only: bool) -> None:
    n = len(feats)
    buffer = torch.empty(block, block, dtype=feats.dtype)
    for r0 in range(0, n, block):
        r1 = min(n, r0 + block)
        for c0 in range((r0 // block) * block if upper_only else 0, n, block):
            c1 = min(n, c0 + block)
            torch.mm(feats[r0:r1], feats[c0:c1].T, out=buffer[:r1 - r0, :c1 - c0])


def faiss_knn(feats: np.ndarray, neighbours: int, threads: int):
    import faiss

    faiss.omp_set_num_threads(threads)
    index = faiss.IndexFlatIP(feats.shape[1])
    index.add(feats)
    return index.search(feats, neighbours)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=60_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--top", default="0.001")
    parser.add_argument("--block", type=int, default=4096)
    parser.add_argument("--neighbours", type=int, default=32, help="k of the faiss k-NN search")
    parser.add_argument("--json", default=None, help="Also write the numbers to this file.")
    args = parser.parse_args()
    threads = torch.get_num_threads()
    gen = torch.Generator().manual_seed(0)
    feats = l2_normalize(torch.randn(args.n, args.dim, generator=gen))
    labels = torch.arange(args.n) % args.classes
    num_pairs = cross_class_pair_count(labels)
    ((label, p),) = parse_top(args.top)
    k = k_for_p(p, num_pairs)
    print(f"N={args.n} d={args.dim} K={args.classes} P={num_pairs:,} top {label}% → k={k:,}; "
          f"R=C={args.block}; {threads} torch threads; {platform.processor() or platform.machine()}")

    _, t_full, m_full = measured(lambda: bare_product(feats, args.block, upper_only=False))
    print(f"bare N²d product (all blocks):      {t_full:8.2f} s  peak extra {m_full:7.1f} MiB")
    _, t_half, m_half = measured(lambda: bare_product(feats, args.block, upper_only=True))
    print(f"bare product, visited blocks only:   {t_half:8.2f} s  peak extra {m_half:7.1f} MiB")
    top, t_top, m_top = measured(lambda: top_cross_class_pairs(feats, labels, k, [0.9], args.block, args.block))
    print(f"top_cross_class_pairs (fp32):       {t_top:8.2f} s  peak extra {m_top:7.1f} MiB  "
          f"(÷ bare N²d {t_top / t_full:.3f}, ÷ visited blocks {t_top / t_half:.3f}); "
          f"threshold {float(top.scores[-1]):.6f}, n(0.9) = {top.counts[0.9]}")
    result = {"n": args.n, "dim": args.dim, "k": k, "threads": threads, "block": args.block,
              "bare_full_s": t_full, "bare_visited_s": t_half, "topk_s": t_top, "topk_peak_extra_mib": m_top,
              "ratio_full": t_top / t_full, "ratio_visited": t_top / t_half}
    try:
        import faiss  # noqa: F401
    except ImportError:
        print("faiss-cpu is not installed (pip install faiss-cpu): no comparison")
    else:
        array = feats.numpy()
        (scores, neighbours), t_faiss, m_faiss = measured(lambda: faiss_knn(array, args.neighbours, threads))
        rows = np.repeat(np.arange(args.n), args.neighbours)
        cols = neighbours.ravel()
        y = labels.numpy()
        cross = (cols >= 0) & (cols != rows) & (y[rows] != y[cols])
        found = np.unique(np.minimum(rows, cols)[cross] * args.n + np.maximum(rows, cols)[cross])
        wanted = top.rows.numpy() * args.n + top.cols.numpy()
        recovered = np.isin(wanted, found).mean()
        print(f"faiss IndexFlatIP k-NN (k={args.neighbours}):     {t_faiss:8.2f} s  peak extra {m_faiss:7.1f} MiB  "
              f"(÷ top_cross_class_pairs {t_faiss / t_top:.3f}); its lists hold {recovered:.2%} of the exact top-k")
        result.update({"faiss_s": t_faiss, "faiss_peak_extra_mib": m_faiss, "faiss_neighbours": args.neighbours,
                       "faiss_recovered": float(recovered)})
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
