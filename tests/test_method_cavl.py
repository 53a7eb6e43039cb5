"""CAVL kernels on hand-computed values: each expected number is derived in the comment next to it."""

from __future__ import annotations

import torch

from pllbench.methods.cavl import cavl_update


def test_cavl_update_one_hot_at_largest_candidate_activation():
    # z·|1 − z|: row 0 (2, −1, .5) → (2, −2, .25) → 0. Row 1 (−1, 5, −2) → (−2, 20, −6): the non-candidate 1 would win
    # the official (v·Y).argmax over (−2, 0, −6); restricted to S = {0, 2} it is 0.
    logits = torch.tensor([[2.0, -1.0, 0.5], [-1.0, 5.0, -2.0]])
    cands = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 1.0]])
    assert cavl_update(logits, cands).tolist() == [[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]]
