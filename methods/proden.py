"""PRODEN (Lv et al., ICML 2020): self-training on a confidence bank renormalised over the candidates.

docs/spec/methods.md §8. Deviation [ours, shared bank step order]: the bank update reuses this step's pre-step outputs
instead of the official second no-grad forward after the optimiser step (half the cost, no extra BN update).
"""

from __future__ import annotations

import torch

from pllbench.losses import renormalize, soft_cross_entropy
from pllbench.method import Batch, ClassifierMethod, register_method


def proden_update(logits: torch.Tensor, cands: torch.Tensor) -> torch.Tensor:
    """s_idx ← nS(softmax(z)): the new bank rows."""
    return renormalize(torch.softmax(logits.detach().float(), dim=1), cands)


@register_method("proden")
class PRODEN(ClassifierMethod):
    """PRODEN's loss on a bank initialised to Y/|S|; subclasses change only `bank_update` (CAVL) or which outputs
    the new rows come from (RC: a post-step forward)."""

    summary = "PRODEN (ICML'20): self-training on a candidate-renormalised confidence bank"
    hparams: dict = {}
    bank_update = staticmethod(proden_update)

    def __init__(self, ctx, hp):
        super().__init__(ctx, hp)
        cands = ctx.candidates.float()
        self.register_buffer("bank", renormalize(cands, cands))

    def training_step(self, batch: Batch):
        logits = self.net(batch.views["cls"])
        self._new_rows = self.bank_update(logits, batch.candidates)
        return {"loss": soft_cross_entropy(logits, self.bank[batch.index])}

    def after_step(self, batch: Batch):
        self.bank[batch.index] = self._new_rows

    def confidences(self):
        return self.bank
