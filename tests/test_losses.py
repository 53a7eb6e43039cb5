"""Shared loss kernels kernels on hand-computed values: each expected number is derived in the comment next to it."""

from __future__ import annotations

import torch

from pllbench.losses import candidate_argmax


def test_candidate_argmax_ignores_non_candidates_even_when_they_win():
    # Row 0: the official (v·Y).argmax gives [−2, 0, −6] → column 1, a non-candidate; restricted → column 0.
    values = torch.tensor([[-2.0, 5.0, -6.0], [0.1, 0.3, 0.2]])
    cands = torch.tensor([[1.0, 0.0, 1.0], [1.0, 0.0, 1.0]])
    assert candidate_argmax(values, cands).tolist() == [0, 2]
