"""CAVL (Zhang et al., ICLR 2022, "Exploiting class activation value for partial-label learning").

docs/spec/methods.md §8. PRODEN's loss; each step the bank rows become one-hot at the candidate with the largest class
activation value z·|1 − z| on the raw logits.
Deviations: the argmax is restricted to the candidates [ours, fix: the official code multiplies by Y, so a
non-candidate (value 0) wins when every candidate's value is negative]; the bank update reuses this step's pre-step
logits instead of a second forward after the step [ours, shared bank step order].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pllbench.losses import candidate_argmax
from pllbench.method import register_method
from pllbench.methods.proden import PRODEN


def cavl_update(logits: torch.Tensor, cands: torch.Tensor) -> torch.Tensor:
    """onehot(argmax_{j∈S} z_j·|1 − z_j|)."""
    z = logits.detach().float()
    return F.one_hot(candidate_argmax(z * (1 - z).abs(), cands), z.shape[1]).float()


@register_method("cavl")
class CAVL(PRODEN):
    summary = "CAVL (ICLR'22): one-hot targets at the candidate with the largest class activation value"
    bank_update = staticmethod(cavl_update)
