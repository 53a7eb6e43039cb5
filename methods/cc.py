"""CC (Feng et al., NeurIPS 2020, "Provably consistent partial-label learning"): classifier-consistent risk.

docs/spec/methods.md §8. L = −(1/B)·Σ_i log Σ_{j∈S_i} p_ij, computed stably as logsumexp over the candidates minus
logsumexp over all labels (the official code takes log of a summed softmax, which underflows to −inf when every
candidate's probability does). No state, no bank.
"""

from __future__ import annotations

import torch

from pllbench.method import Batch, ClassifierMethod, register_method


def cc_loss(logits: torch.Tensor, cands: torch.Tensor) -> torch.Tensor:
    """−mean_i [logsumexp_{j∈S_i} z_ij − logsumexp_j z_ij] = −mean_i log Σ_{j∈S_i} softmax(z)_ij."""
    logits = logits.float()
    inside = torch.logsumexp(logits.masked_fill(cands == 0, float("-inf")), dim=1)
    return -(inside - torch.logsumexp(logits, dim=1)).mean()


@register_method("cc")
class CC(ClassifierMethod):
    summary = "CC (NeurIPS'20): maximise the total probability of the candidate set"
    hparams: dict = {}

    def training_step(self, batch: Batch):
        return {"loss": cc_loss(self.net(batch.views["cls"]), batch.candidates)}
