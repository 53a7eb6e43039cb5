"""RC (Feng et al., NeurIPS 2020, "Provably consistent partial-label learning"): risk-consistent reweighting.

docs/spec/methods.md §8: PRODEN's loss on a confidence bank s (initialised Y/|S|). RC's own target update, as in its
official code (`confidence_update`, called after `optimizer.step()`): a second, no-grad forward of the same batch
through the *updated* network (still in train mode, so BatchNorm's running statistics see the batch again),
s_idx ← nS(softmax).

Deviation from the spec [ours, evidence]: docs/spec/methods.md §8 specified a once-per-epoch commit of the pre-step
outputs. Each row is visited once per epoch, so that commit reads exactly what a per-step commit would, and `rc` trained
bit-identically to `proden`. The post-step forward is what makes RC RC; it costs one extra forward.
"""

from __future__ import annotations

import torch

from pllbench.losses import soft_cross_entropy
from pllbench.method import Batch, register_method
from pllbench.methods.proden import PRODEN


@register_method("rc")
class RC(PRODEN):
    summary = "RC (NeurIPS'20): risk-consistent confidence reweighting, targets from a post-step forward"

    def training_step(self, batch: Batch):
        """PRODEN's loss on the bank; the new rows come from the post-step forward (after_step), so none are made
        here."""
        return {"loss": soft_cross_entropy(self.net(batch.views["cls"]), self.bank[batch.index])}

    def after_step(self, batch: Batch):
        with torch.no_grad():
            logits = self.net(batch.views["cls"])
        self.bank[batch.index] = self.bank_update(logits, batch.candidates)
