"""Entangled subsets (docs/spec/entanglement.md): the most similar cross-class pairs of a split under a fixed extractor.

Pure functions first: the exact blockwise top-k of cross-class pairs by cosine (§5), k_p from a decimal p (§2),
threshold counts, per-p statistics (§3), candidate sharing (§6) and center distance (§4). Then the content-addressed
"entangled" artifact. The feature extractors are in pllbench/entangle/extractors.py.

Pairs are stored as positions in the split (rows of the preset's subset); `index.npy` maps positions to rows of
the full split, the `index` column of predictions.parquet.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..artifacts import load_or_build
from ..errors import PllbenchError
from ..util import sha256_array
from .extractors import Extractor

ENTANGLE_VERSION = "entangled-v2"  # v2: pairs decided on canonical per-pair scores
DEFAULT_TOP = "0.1,0.01,0.001"
DEFAULT_THRESHOLDS = "0.9"
DEFAULT_BLOCK = 4096


# ---------------------------------------------------------------------------------------------------------------
# Parsing and counting


def parse_top(text: str) -> list[tuple[str, Fraction]]:
    """'0.1,0.01' → [(label, exact p)], largest p first; p is read as a decimal, never through a float."""
    items = [s.strip() for s in str(text).split(",") if s.strip()]
    if not items:
        raise PllbenchError(f"malformed --top {text!r}: expected percentages like 0.1,0.01,0.001")
    out: dict[Fraction, str] = {}
    for item in items:
        try:
            dec = Decimal(item)
        except InvalidOperation:
            raise PllbenchError(f"malformed --top {text!r}: {item!r} is not a decimal percentage like 0.1") from None
        if not dec.is_finite() or not 0 < dec <= 100:
            raise PllbenchError(f"--top {item}: a percentage must be greater than 0 and at most 100")
        out.setdefault(Fraction(dec), format(dec.normalize(), "f"))
    return [(label, p) for p, label in sorted(out.items(), reverse=True)]


def parse_thresholds(text: str) -> list[float]:
    """'0.9,0.5' → sorted distinct finite cosines."""
    values = []
    for item in (s.strip() for s in str(text).split(",")):
        if not item:
            continue
        try:
            value = float(item)
        except ValueError:
            raise PllbenchError(f"malformed --threshold {text!r}: {item!r} is not a number") from None
        if not math.isfinite(value):
            raise PllbenchError(f"--threshold {item}: a threshold must be a finite number")
        values.append(value)
    return sorted(set(values), reverse=True)


def k_for_p(p: Fraction, num_pairs: int) -> int:
    """k_p = ceil(p·P/100), exactly."""
    return math.ceil(Fraction(p) * num_pairs / 100)


def cross_class_pair_count(labels) -> int:
    """P = N(N−1)/2 − Σ_c n_c(n_c−1)/2, in Python integers."""
    labels = np.asarray(torch.as_tensor(labels).cpu())
    n = len(labels)
    counts = np.bincount(labels).tolist() if n else []
    return n * (n - 1) // 2 - sum(c * (c - 1) // 2 for c in counts)


def l2_normalize(features: torch.Tensor) -> torch.Tensor:
    """f ← f / max(‖f‖, 1e-12), row-wise."""
    return F.normalize(features, dim=1, eps=1e-12)


# ---------------------------------------------------------------------------------------------------------------
# Exact blockwise top-k (§5)


@dataclass
class TopPairs:
    """The first k cross-class pairs in the order (−s, i, j), as three arrays, and n(τ) per threshold."""

    scores: torch.Tensor  # k, non-increasing
    rows: torch.Tensor  # i (int64), i < j
    cols: torch.Tensor  # j (int64)
    counts: dict[float, int]


@contextlib.contextmanager
def _exact_matmul(device: torch.device):
    """Plain fp32/fp64 products: no TF32, no autocast, whatever the caller set."""
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    try:
        with torch.autocast(device.type, enabled=False):
            yield
    finally:
        torch.set_float32_matmul_precision(previous)


def _first_k(scores, rows, cols, k: int, n: int):
    """Sort by (−s, i, j) and keep the first k: (i, j) first, then a stable sort on −s."""
    order = torch.argsort(rows * n + cols)
    order = order[torch.argsort(-scores[order], stable=True)][:k]
    return scores[order], rows[order], cols[order]


def canonical_scores(features: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """s_ij = Σ_d f_id·f_jd summed sequentially in float64, rounded to the features' dtype: one value per pair whatever
    the block shape (a BLAS product's reduction order depends on it: equal scores can differ by an ulp)."""
    products = features[rows].double() * features[cols].double()
    return (products.cumsum(dim=1)[:, -1] if products.shape[1] else products.sum(dim=1)).to(features.dtype)


def _rounding_margin(features: torch.Tensor) -> float:
    """A bound on |BLAS score − canonical score| for any summation order: d·eps·max‖f‖² (γ_d bound, both sides)."""
    d = features.shape[1]
    return 2.0 * d * torch.finfo(features.dtype).eps * float(features.double().pow(2).sum(dim=1).max())


def _block_floor(block: torch.Tensor, k: int) -> float:
    """A score v with at least k valid entries ≥ v in the block (so the global k-th best is ≥ v), or −max float.

    Taken as the k-th best of each row's top ⌈k/R⌉ entries, it spares the first blocks, seen before k pairs are
    known, from extracting every one of their R·C entries.
    """
    per_row = min(block.shape[1], -(-k // block.shape[0]))
    tops = block.topk(per_row, dim=1, sorted=False).values.flatten()
    tops = tops[tops > -math.inf]
    if len(tops) < k:
        return torch.finfo(block.dtype).min
    return float(torch.topk(tops, k, sorted=False).values.min())


def _kth_floor(scores: torch.Tensor, k: int, slack: float) -> float:
    """(k-th best score) − slack, or −inf when there are fewer than k scores."""
    if len(scores) < k:
        return -math.inf
    return float(torch.topk(scores, k, sorted=False).values.min()) - slack


def _count_above(block, tau: float, margin: float, features, order, r0: int, c0: int) -> int:
    """#{entries > τ}, the entries within `margin` of τ decided on their canonical scores."""
    rr, cc = torch.nonzero((block > tau - margin) & (block <= tau + margin), as_tuple=True)
    near = canonical_scores(features, order[r0 + rr], order[c0 + cc])
    return int(torch.count_nonzero(block > tau + margin)) + int(torch.count_nonzero(near > tau))


def _class_sorted_blocks(labels: torch.Tensor, n: int, row_block: int, col_block: int):
    """The class-sorted order, each class's span in it, and the blocks (r0, r1, c0, c1) holding a sorted q > p."""
    order = torch.argsort(labels, stable=True)
    _, sizes = torch.unique_consecutive(labels[order], return_counts=True)
    ends = torch.cumsum(sizes, 0).tolist()
    spans = list(zip([0] + ends[:-1], ends))  # class c occupies sorted positions [a, b)
    blocks = [(r0, min(n, r0 + row_block), c0, min(n, c0 + col_block))
              for r0 in range(0, n, row_block) for c0 in range((r0 // col_block) * col_block, n, col_block)
              if min(n, c0 + col_block) - 1 > r0]
    return order, spans, blocks


def _fill_block(block, features, order, spans, r0, r1, c0, c1, row_feats):
    """Scores of the block, with same-class entries and q ≤ p set to −inf."""
    col_feats = row_feats if (c0, c1) == (r0, r1) else features[order[c0:c1]]
    torch.mm(row_feats, col_feats.T, out=block)
    for a, b in spans:
        if a < r1 and b > r0 and a < c1 and b > c0:
            block[max(a, r0) - r0:min(b, r1) - r0, max(a, c0) - c0:min(b, c1) - c0] = -math.inf
    if c0 <= r1 - 1:  # the block meets the diagonal: drop q ≤ p
        p = torch.arange(r0, r1, device=block.device)[:, None]
        q = torch.arange(c0, c1, device=block.device)[None, :]
        block.masked_fill_(q <= p, -math.inf)


@torch.no_grad()
def top_cross_class_pairs(features: torch.Tensor, labels: torch.Tensor, k: int, thresholds=(),
                          row_block: int = DEFAULT_BLOCK, col_block: int = DEFAULT_BLOCK) -> TopPairs:
    """Exact top-k of cross-class pairs by s_ij = f_i·f_j with ties by (i, j), and n(τ) = #{s > τ}, in R×C blocks.

    `features` are used as given (normalise them first). Blocks are BLAS products in the features' dtype; every pair
    within the rounding margin of the k-th score (or of a threshold) is decided on its `canonical_scores`, so the
    answer, ties included, does not depend on the block shape; the scores returned are the canonical ones. Extra
    memory O(k + near-ties + R·C + (R + C)·d + N). Class-sorted order makes each block's same-class entries a few
    rectangles; every unordered pair is visited once and ties are resolved on the original (i, j).
    """
    if features.ndim != 2 or not features.is_floating_point():
        raise PllbenchError("features must be a floating N×d matrix")
    n = len(features)
    if labels.shape != (n,):
        raise PllbenchError(f"labels have shape {tuple(labels.shape)}, expected ({n},)")
    if k < 1 or row_block < 1 or col_block < 1:
        raise PllbenchError("k and the block sizes must be positive")
    if not bool(torch.isfinite(features).all()):
        raise PllbenchError("features contain NaN or infinite values")
    device, dtype = features.device, features.dtype
    thresholds = [float(t) for t in thresholds]
    order, spans, blocks = _class_sorted_blocks(labels.to(device=device, dtype=torch.long), n, row_block, col_block)
    margin = _rounding_margin(features)
    cut = -math.inf  # every pair that can be in the top k scores ≥ cut (a lower bound on the k-th score − 2·margin)
    pool_s = torch.empty(0, dtype=dtype, device=device)
    pool_i = torch.empty(0, dtype=torch.long, device=device)
    pool_j = torch.empty(0, dtype=torch.long, device=device)
    counts = [0] * len(thresholds)
    buffer = torch.empty(min(row_block, n), min(col_block, n), dtype=dtype, device=device)
    with _exact_matmul(device):
        for r0, r1, c0, c1 in blocks:
            block = buffer[:r1 - r0, :c1 - c0]
            _fill_block(block, features, order, spans, r0, r1, c0, c1, features[order[r0:r1]])
            for t, tau in enumerate(thresholds):
                counts[t] += _count_above(block, tau, margin, features, order, r0, c0)
            if len(pool_s) < k:
                cut = max(cut, _block_floor(block, k) - 2 * margin)
            hit_rows = torch.nonzero(block.amax(dim=1) >= cut).squeeze(1)
            if len(hit_rows) == 0:
                continue
            sub = block[hit_rows]
            rr, cc = torch.nonzero(sub >= cut, as_tuple=True)
            scores = sub[rr, cc]
            own = _kth_floor(scores, k, 2 * margin)  # the block's own top k, near-ties included
            if own > -math.inf:
                keep = scores >= own
                scores, rr, cc = scores[keep], rr[keep], cc[keep]
            pi, qj = order[r0 + hit_rows[rr]], order[c0 + cc]
            pool_s, pool_i, pool_j = (torch.cat([pool_s, scores]), torch.cat([pool_i, torch.minimum(pi, qj)]),
                                      torch.cat([pool_j, torch.maximum(pi, qj)]))
            pooled = _kth_floor(pool_s, k, 2 * margin)
            if pooled > -math.inf:
                keep = pool_s >= pooled
                pool_s, pool_i, pool_j = pool_s[keep], pool_i[keep], pool_j[keep]
                cut = max(cut, pooled)
    exact = canonical_scores(features, pool_i, pool_j)
    best_s, best_i, best_j = _first_k(exact, pool_i, pool_j, k, n)
    return TopPairs(best_s, best_i, best_j, dict(zip(thresholds, counts)))


# ---------------------------------------------------------------------------------------------------------------
# Per-p statistics (§3), candidate sharing (§6), center distance (§4)


def subset_instances(rows, cols) -> np.ndarray:
    """U: the sorted unique instances of the selected pairs."""
    return np.unique(np.concatenate([np.asarray(rows), np.asarray(cols)]))


def subset_accuracy(instances, y_true, y_pred) -> float:
    """(1/|U|)·Σ_{i∈U} 1[ŷ_i = y_i], each instance once."""
    instances = np.asarray(instances)
    return float((np.asarray(y_pred)[instances] == np.asarray(y_true)[instances]).mean())


def class_pairs_top(rows, cols, labels, limit: int = 5) -> list[dict]:
    """The most frequent unordered class pairs {y_i, y_j} among the pairs, ties by (a, b)."""
    labels = np.asarray(labels)
    a, b = labels[np.asarray(rows)], labels[np.asarray(cols)]
    pairs = np.stack([np.minimum(a, b), np.maximum(a, b)], axis=1)
    if not len(pairs):
        return []
    unique, counts = np.unique(pairs, axis=0, return_counts=True)
    ranked = sorted(zip((-counts).tolist(), unique[:, 0].tolist(), unique[:, 1].tolist()))[:limit]
    return [{"pair": [a, b], "count": -c} for c, a, b in ranked]


def sharing_flags(rows, cols, labels, candidates) -> tuple[np.ndarray, np.ndarray]:
    """Per pair: mutual (y_j ∈ S_i and y_i ∈ S_j) and any (or)."""
    rows, cols, labels = np.asarray(rows), np.asarray(cols), np.asarray(labels)
    cands = np.asarray(candidates).astype(bool)
    forward, backward = cands[rows, labels[cols]], cands[cols, labels[rows]]
    return forward & backward, forward | backward


def sharing_all_pairs(labels, candidates) -> tuple[Fraction, Fraction]:
    """(mutual_all, any_all) over every cross-class pair, in closed form from m_ab = #{i: y_i = a, b ∈ S_i}."""
    labels = np.asarray(labels)
    cands = np.asarray(candidates).astype(np.int64)
    num_classes = cands.shape[1]
    n = np.bincount(labels, minlength=num_classes).tolist()
    m = (np.eye(num_classes, dtype=np.int64)[labels].T @ cands).tolist()
    total = cross_class_pair_count(labels)
    if total == 0:
        raise PllbenchError("the split has no cross-class pair")
    mutual = any_ = 0
    for a in range(num_classes):
        for b in range(a + 1, num_classes):
            mutual += m[a][b] * m[b][a]
            any_ += n[a] * n[b] - (n[a] - m[a][b]) * (n[b] - m[b][a])
    return Fraction(mutual, total), Fraction(any_, total)


def class_centroids(features, labels) -> torch.Tensor:
    """μ_c = the mean of the L2-normalised features of class c (not re-normalised), for the classes present,
    in ascending class order (float64)."""
    feats = l2_normalize(torch.as_tensor(features).double().cpu())
    _, inverse = torch.unique(torch.as_tensor(labels).long().cpu(), return_inverse=True)
    sums = torch.zeros(int(inverse.max()) + 1, feats.shape[1], dtype=torch.float64).index_add_(0, inverse, feats)
    return sums / torch.bincount(inverse).double()[:, None]


def center_distance(features, labels) -> float:
    """CD = (2/(K(K−1)))·Σ_{a<b} ‖μ_a − μ_b‖ over the K classes present (§4)."""
    centroids = class_centroids(features, labels)
    if len(centroids) < 2:
        raise PllbenchError("center distance needs at least two classes")
    return float(torch.pdist(centroids).mean())


# ---------------------------------------------------------------------------------------------------------------
# The "entangled" artifact


@dataclass
class Subsets:
    """A cached analysis of one (split, extractor): the ranked pairs (positions in the split) and their summary."""

    path: Path
    hash: str
    summary: dict
    scores: np.ndarray
    rows: np.ndarray
    cols: np.ndarray
    index: np.ndarray  # position → row of the full split

    def pairs(self, label: str) -> tuple[np.ndarray, np.ndarray]:
        k = self.summary["top"][label]["pairs"]
        return self.rows[:k], self.cols[:k]

    def instances(self, label: str) -> np.ndarray:
        return subset_instances(*self.pairs(label))


def subset_key(dataset_key: dict, split: str, index: np.ndarray, extractor: Extractor, top, thresholds,
               dtype: torch.dtype) -> dict:
    return {"kind": "entangled", "dataset": dataset_key, "split": split, "n": int(len(index)),
            "index_sha256": sha256_array(np.asarray(index, dtype=np.int64)), "extractor": extractor.identity,
            "top": [label for label, _ in top], "thresholds": [float(t) for t in thresholds],
            "dtype": str(dtype).removeprefix("torch."), "version": ENTANGLE_VERSION}


def summarize_subsets(top_pairs: TopPairs, labels, top, num_pairs: int) -> dict:
    """§3's per-p fields that need no predictions, plus n(τ)."""
    rows, cols = top_pairs.rows.cpu().numpy(), top_pairs.cols.cpu().numpy()
    scores = top_pairs.scores.cpu().numpy()
    labels = np.asarray(labels)
    per_p = {}
    for label, p in top:
        k = k_for_p(p, num_pairs)
        per_p[label] = {"p": label, "pairs": k, "threshold": float(scores[k - 1]),
                        "instances": int(len(subset_instances(rows[:k], cols[:k]))),
                        "class_pairs_top5": class_pairs_top(rows[:k], cols[:k], labels)}
    return {"n": int(len(labels)), "cross_class_pairs": num_pairs, "top": per_p,
            "threshold_counts": {repr(t): int(c) for t, c in top_pairs.counts.items()}}


def get_subsets(cache: Path, dataset_key: dict, split: str, index: np.ndarray, labels: torch.Tensor,
                images: torch.Tensor, extractor: Extractor, top, thresholds, *, device: torch.device,
                dtype: torch.dtype = torch.float32, block: int = DEFAULT_BLOCK, echo=print) -> Subsets:
    """Load or build the entangled subsets of a split (content-addressed; features are computed on a miss only)."""
    key = subset_key(dataset_key, split, index, extractor, top, thresholds, dtype)

    def build(tmp: Path) -> dict:
        echo(f"ranking the cross-class pairs of {dataset_key['name']} {split} ({len(index)} instances, "
             f"extractor {extractor.name})")
        start = time.time()
        feats = l2_normalize(extractor.features(images).to(device=device, dtype=dtype))
        extracted = time.time()
        num_pairs = cross_class_pair_count(labels)
        if num_pairs == 0:
            raise PllbenchError(f"{dataset_key['name']} {split} has no cross-class pair")
        k = max(k_for_p(p, num_pairs) for _, p in top)
        result = top_cross_class_pairs(feats, labels.to(device), k, thresholds, block, block)
        summary = summarize_subsets(result, labels.cpu().numpy(), top, num_pairs)
        summary.update({"split": split, "extractor": extractor.name, "feature_dim": int(feats.shape[1]),
                        "seconds": {"features": round(extracted - start, 3),
                                    "ranking": round(time.time() - extracted, 3)}})
        for name, array in (("scores", result.scores), ("rows", result.rows), ("cols", result.cols)):
            np.save(tmp / f"{name}.npy", array.cpu().numpy())
        np.save(tmp / "index.npy", np.asarray(index, dtype=np.int64))
        (tmp / "summary.json").write_text(json.dumps(summary, indent=1))
        return {}

    path, meta = load_or_build(cache, "entangled", key, build)
    arrays = {name: np.load(path / f"{name}.npy", allow_pickle=False) for name in ("scores", "rows", "cols", "index")}
    return Subsets(path, meta["hash"], json.loads((path / "summary.json").read_text()), arrays["scores"],
                   arrays["rows"], arrays["cols"], arrays["index"])
