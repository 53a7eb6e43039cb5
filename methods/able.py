"""ABLE (Xia et al., IJCAI 2022, "Ambiguity-induced contrastive learning for instance-dependent PLL").

docs/spec/methods.md §4, official code AlphaXia/ABLE. One SupConNet with a PRODEN-style confidence bank s. The weak and
strong views are forwarded together as one 2B batch (BN statistics over both). The contrastive term treats as positives
of an anchor every batch sample predicted (argmax of p·Y) as one of the anchor's candidates, weighted by the anchor's
bank confidence in that class and divided by that class's count in the batch; the weight rows are not normalised
[official]. Both losses read the bank as it was; after the step the bank rows idx become nS(p) of the weak view.

Deviations:
- Fixed bug [D8]: the official contrastive weights read bank rows 0..B−1 (the position in the batch) instead of the
  instances' dataset rows; pllbench reads rows idx (PLENCH keeps the bug). `weight_lookup=batch_position` reads the
  rows the official code reads, to compare with it (benchmarks/parity, docs/parity.md).
- The pseudo-label argmax_j p_j·Y_j is taken over the candidates' logits (identical unless the softmax of every
  candidate underflows to 0, where the official product lets a non-candidate win).
- The contrastive log-probability uses an exact logsumexp over b' ≠ a (the official subtracts the row max first,
  which cancels).
"""

from __future__ import annotations

import torch

from pllbench.losses import candidate_argmax, contrastive_chance, soft_cross_entropy
from pllbench.method import HP, Batch, SupConBankMethod, register_method
from pllbench.methods.proden import proden_update
from pllbench.tune_space import log_uniform


def able_weights(bank_rows: torch.Tensor, cands: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
    """W_ib = s_{i,ŷ_b}·Y_{i,ŷ_b} / n_{ŷ_b} (B×B), n_c = #{b : ŷ_b = c}."""
    counts = torch.bincount(pred, minlength=cands.shape[1]).to(bank_rows.dtype)
    return bank_rows[:, pred] * cands[:, pred] / counts[pred][None, :]


def able_weight_rows(bank: torch.Tensor, index: torch.Tensor, lookup: str) -> torch.Tensor:
    """The bank rows the contrastive weights read for a batch of dataset rows `index`: the anchors' own rows
    (`instance`, as the paper describes) or rows 0..B−1, the anchors' positions in the batch (`batch_position`, what
    the official code reads)."""
    return bank[index] if lookup == "instance" else bank[:len(index)]


def able_contrastive_loss(feats: torch.Tensor, weights: torch.Tensor, tau: float,
                          tau_base: float = 0.07) -> torch.Tensor:
    """−(τ/τ_b)·mean_a Σ_b W'_ab·ℓ_ab over the 2B rows of f = [f^w; f^s].

    W' tiles the B×B `weights` over both views with a zero diagonal; ℓ_ab = f_a·f_b/τ − log Σ_{b'≠a} e^{f_a·f_b'/τ}.
    """
    n = feats.shape[0]
    self_mask = torch.eye(n, dtype=torch.bool, device=feats.device)
    tiled = weights.repeat(2, 2).masked_fill(self_mask, 0.0)
    sim = feats @ feats.t() / tau
    log_prob = sim - torch.logsumexp(sim.masked_fill(self_mask, float("-inf")), dim=1, keepdim=True)
    return -(tau / tau_base) * (tiled * log_prob).sum(dim=1).mean()


@register_method("able")
class ABLE(SupConBankMethod):
    summary = "ABLE (IJCAI'22): confidence-weighted contrastive positives from candidate-set predictions"
    views = ("weak", "strong")
    hparams = {  # each declared once: default, meaning, range (`pllbench describe`)
        "tau": HP(0.1, "temperature τ of the contrastive term", low=0, low_open=True, tune=log_uniform(0.03, 0.3)),
        "cont_weight": HP(1.0, "weight of the contrastive term L_con", low=0, tune=log_uniform(0.5, 2.0)),
        "weight_lookup": HP("instance", "bank rows of the contrastive weights: the anchors' own (paper) or rows "
                                        "0..B-1 by batch position (the official code's)",
                            choices=("instance", "batch_position"), implicit="instance"),
    }

    def training_step(self, batch: Batch):
        cands, b = batch.candidates, batch.candidates.shape[0]
        logits, feats = self.net(torch.cat([batch.views["weak"], batch.views["strong"]]))
        weak_logits = logits[:b]
        rows = self.bank[batch.index]
        loss_cls = soft_cross_entropy(weak_logits, rows)
        weight_rows = able_weight_rows(self.bank, batch.index, self.hp["weight_lookup"])
        weights = able_weights(weight_rows, cands, candidate_argmax(weak_logits.detach().float(), cands))
        loss_con = able_contrastive_loss(feats.float(), weights, self.hp["tau"])
        tiled = weights.detach().repeat(2, 2)
        mass = (tiled.sum(dim=1) - tiled.diagonal()).mean()  # W' has a zero diagonal
        self._new_rows = proden_update(weak_logits, cands)
        chance = contrastive_chance(2 * b, self.hp["tau"], weight_mass=mass)
        return {"cls": loss_cls, "con": loss_con, "chance/con": chance,
                "loss": loss_cls + self.hp["cont_weight"] * loss_con}

    def after_step(self, batch: Batch):
        self.bank[batch.index] = self._new_rows
