"""RC (Feng et al., NeurIPS 2020, "Provably consistent partial-label learning"): risk-consistent reweighting.

methods.md §8. PRODEN's loss on a confidence bank s (initialised Y/|S|), but the bank is refreshed **once per epoch**
[ours, following the original's per-epoch update; PLENCH updates per batch]: during an epoch the detached nS(p_i) of
every visited row is written to a pending copy, and at the epoch's last step the bank takes the pending copy. Rows
that drop_last skipped this epoch keep their old value (their pending row still equals the bank row).
Deviation [ours, shared bank step order]: p comes from this step's pre-step outputs, not a second forward.

Consequence: each row is visited at most once per epoch (a permutation, drop_last), and its bank row is read only at
that visit, so committing at the epoch's end reads exactly what a per-step commit would. With PRODEN's loss and the
same update, `rc` therefore trains bit-identically to `proden` (measured: identical curves over 15 smoke epochs).
RC differs from PRODEN only where the update uses other outputs (the PLENCH RC recomputes p with a no-grad forward
after each step).
"""

from __future__ import annotations

from pllbench.method import Batch, register_method
from pllbench.methods.proden import PRODEN


@register_method("rc")
class RC(PRODEN):
    summary = "RC (NeurIPS'20): risk-consistent confidence reweighting, bank refreshed once per epoch"

    def __init__(self, ctx, hp):
        super().__init__(ctx, hp)
        self.register_buffer("pending", self.bank.clone())

    def after_step(self, batch: Batch):
        self.pending[batch.index] = self._new_rows
        if (batch.step + 1) % self.ctx.steps_per_epoch == 0:  # the epoch's last step: commit
            self.bank.copy_(self.pending)
