"""Paired comparisons of two methods run on the same seeds and test items, as pure functions of arrays.

- `paired_bootstrap(correct_a, correct_b)`: Δ = mean accuracy of A − B in points, with a 95 % percentile CI and a
  two-sided bootstrap p from a two-level bootstrap: each replicate resamples the seeds with replacement, then the
  test items with replacement. The test items are the same for every seed (the design is crossed, not nested), so
  one item resample per replicate applies to all the replicate's seeds, which keeps each item's correlation across
  seeds.
- `sign_flip_test(diff_per_seed)`: the exact paired permutation test over seeds: under H0 each seed's difference is
  as likely to have either sign, so p = the share of the 2^n sign patterns whose |mean| is at least the observed one.
  Its smallest value is 2 / 2^n (0.0625 for 5 seeds).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MAX_EXACT_SEEDS = 20  # 2^20 sign patterns
_CELLS_PER_CHUNK = 2_000_000


@dataclass(frozen=True)
class PairedResult:
    delta: float  # mean accuracy difference A − B, in points
    ci_low: float
    ci_high: float
    p: float  # two-sided bootstrap p, floored at 1 / n_boot
    n_seeds: int
    n_items: int
    n_boot: int


def _as_matrix(correct, name: str) -> np.ndarray:
    array = np.asarray(correct)
    if array.ndim != 2 or array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"{name} must be a non-empty (seeds, test items) array, got shape {array.shape}")
    return array.astype(np.float64)


def bootstrap_deltas(diff: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """Δ* in points for each replicate of the seeds × items resampling of a (seeds, items) matrix of a − b."""
    rng = np.random.default_rng(seed)
    n_seeds, n_items = diff.shape
    out = np.empty(n_boot)
    chunk = max(1, _CELLS_PER_CHUNK // n_items)
    for start in range(0, n_boot, chunk):
        size = min(chunk, n_boot - start)
        seed_counts = np.zeros((size, n_seeds))
        np.add.at(seed_counts, (np.repeat(np.arange(size), n_seeds), rng.integers(0, n_seeds, size * n_seeds)), 1)
        per_item = seed_counts @ diff  # (size, items): Σ over the drawn seeds
        items = rng.integers(0, n_items, (size, n_items))
        out[start:start + size] = np.take_along_axis(per_item, items, axis=1).mean(axis=1) / n_seeds
    return 100 * out


def paired_bootstrap(correct_a, correct_b, n_boot: int = 10000, seed: int = 0) -> PairedResult:
    """Δ (points), 95 % percentile CI and two-sided p = 2·min(P(Δ* ≤ 0), P(Δ* ≥ 0)), floored at 1 / n_boot.

    correct_a, correct_b: bool arrays of shape (seeds, test items), row s of both from the same seed and column i
    of both the same test item."""
    a, b = _as_matrix(correct_a, "correct_a"), _as_matrix(correct_b, "correct_b")
    if a.shape != b.shape:
        raise ValueError(f"correct_a and correct_b differ in shape: {a.shape} vs {b.shape}")
    if n_boot < 1:
        raise ValueError("n_boot must be at least 1")
    diff = a - b
    deltas = bootstrap_deltas(diff, n_boot, seed)
    low, high = np.percentile(deltas, [2.5, 97.5])
    tail = min(np.mean(deltas <= 0), np.mean(deltas >= 0))
    p = float(min(1.0, max(2 * tail, 1 / n_boot)))
    return PairedResult(float(100 * diff.mean()), float(low), float(high), p, a.shape[0], a.shape[1], n_boot)


def sign_flip_test(diff_per_seed) -> float:
    """Exact two-sided p of the paired sign-flip (permutation) test: all 2^n sign patterns of the differences."""
    d = np.asarray(diff_per_seed, dtype=np.float64).ravel()
    n = len(d)
    if n == 0:
        raise ValueError("sign_flip_test needs at least one difference")
    if n > MAX_EXACT_SEEDS:
        raise ValueError(f"exact enumeration of 2^{n} sign patterns is too large (at most {MAX_EXACT_SEEDS} seeds)")
    patterns = np.arange(2 ** n)[:, None] >> np.arange(n)[None, :] & 1
    signs = 1 - 2 * patterns.astype(np.int8)
    observed = abs(d.sum())
    sums = np.abs(signs @ d)
    tolerance = 1e-9 * max(1.0, np.abs(d).sum())
    return float(np.mean(sums >= observed - tolerance))
