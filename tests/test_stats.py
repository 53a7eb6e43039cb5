"""Paired comparisons on constructed predictions with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from pllbench.stats import paired_bootstrap, sign_flip_test


def test_identical_methods_give_no_difference():
    rng = np.random.default_rng(1)
    correct = rng.random((5, 400)) < 0.7
    result = paired_bootstrap(correct, correct.copy(), n_boot=2000)
    assert result.delta == 0 and result.p == 1.0
    assert result.ci_low <= 0 <= result.ci_high
    assert (result.n_seeds, result.n_items, result.n_boot) == (5, 400, 2000)


def test_a_method_right_where_the_other_is_wrong_on_30_percent():
    a = np.ones((5, 1000), dtype=bool)
    b = np.ones((5, 1000), dtype=bool)
    b[:, :300] = False
    result = paired_bootstrap(a, b, n_boot=2000, seed=3)
    assert result.delta == pytest.approx(30.0)
    assert result.ci_low > 0 and result.ci_low < 30 < result.ci_high
    assert result.p == pytest.approx(1 / 2000)  # floored: no replicate reaches 0


def test_bootstrap_is_deterministic_and_two_sided():
    rng = np.random.default_rng(0)
    a = rng.random((4, 300)) < 0.6
    b = rng.random((4, 300)) < 0.6
    first, again = paired_bootstrap(a, b, n_boot=500, seed=7), paired_bootstrap(a, b, n_boot=500, seed=7)
    assert first == again
    swapped = paired_bootstrap(b, a, n_boot=500, seed=7)
    assert swapped.delta == pytest.approx(-first.delta)
    assert 0 < first.p <= 1


def test_seed_noise_widens_the_interval():
    """Seeds that disagree (A better on some, worse on others) give a wider CI than seeds that agree."""
    a = np.ones((4, 500), dtype=bool)
    steady = np.ones((4, 500), dtype=bool)
    steady[:, :50] = False  # A ahead by 10 points on every seed
    noisy = np.ones((4, 500), dtype=bool)
    noisy[0, :200] = False
    noisy[1, :200] = False  # A ahead by 40, 40, 0, 0 points: the same mean of 20 would need more seeds
    narrow, wide = paired_bootstrap(a, steady, n_boot=2000), paired_bootstrap(a, noisy, n_boot=2000)
    assert narrow.ci_high - narrow.ci_low < wide.ci_high - wide.ci_low


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="differ in shape"):
        paired_bootstrap(np.ones((2, 3), bool), np.ones((3, 3), bool))
    with pytest.raises(ValueError, match="non-empty"):
        paired_bootstrap(np.ones(3, bool), np.ones(3, bool))


def test_sign_flip_exact_p():
    assert sign_flip_test([1.0, 2.0, 0.5, 3.0, 1.5]) == pytest.approx(2 / 32)  # 5 seeds, all positive
    assert sign_flip_test([-1.0, -2.0, -0.5, -3.0, -1.5]) == pytest.approx(2 / 32)
    assert sign_flip_test([0.0, 0.0, 0.0]) == 1.0
    # against a brute-force enumeration of the 8 sign patterns
    d = np.array([1.0, -1.0, 2.0])
    brute = np.mean([abs((np.array(s) * d).sum()) >= 2 - 1e-12
                     for s in np.array(np.meshgrid(*[[-1, 1]] * 3)).T.reshape(-1, 3)])
    assert sign_flip_test(d) == pytest.approx(brute)
    with pytest.raises(ValueError):
        sign_flip_test([])
