"""POP (Xu et al., ICML 2023, "Progressive Purification for Instance-Dependent Partial Label Learning"), official
code palm-ml/POP (`main.py`, loss `pop`).

PRODEN's self-training, plus a purification of the candidate sets: every `window` epochs from `warmup_epochs` on,
the bank rows averaged over the last `window` epochs, f̄, decide which candidates stay: label j leaves S_i for good
when f̄_ij / max_k f̄_ik < e, and the bank becomes f̄ renormalised over the purified set. The threshold e starts at
`threshold` and grows by the factor (1 + `threshold_growth`) after a purification that changed fewer than 1e-4·N·K
entries of the purified matrix, while e < `threshold_max` [official].

The loss is PRODEN's soft cross-entropy against the bank s on three views, averaged: the original view and two
augmented ones, all against the same rows; the bank rows come from the original view's pre-step outputs,
s_i ← softmax(z_i) renormalised over the purified set [official]. Each epoch logs `size/purified`, the mean size of
the purified sets of its batches (next to `mean_size`, the candidate sets').

Implementation: the official keeps a ring of the last 5 epochs' banks (window·N·K floats); here one running sum,
restarted at the first epoch after each multiple of `window`, gives the same average after the row normalisation
(the only use of the average). The purification that the official runs at the end of epoch e runs at the start of
epoch e + 1 (`on_epoch_start`): nothing trains in between.

Deviations [ours unless marked]:
- Views: the original view is `base` (official: normalise only on CIFAR, flip + reflect-padded crop on the MNIST
  family), the two augmented ones are two draws of `cls` (official: flip, padded crop, a 16-px cutout, plus
  CIFAR10Policy on CIFAR; pllbench's cls view has torchvision's AutoAugment [D13] and the preset's cutout: none on
  quick). The second cls draw is the method's own, from the run's view generator.
- The bank update renormalises over the purified set (official: over the bank row's non-zero entries, the same set
  unless a softmax underflows to 0, which would drop that label for good).
- The soft cross-entropy uses the exact log-softmax (official: log(softmax)).
- Optimiser, schedule, batch and backbone are the preset's [D14] (official: SGD lr 0.05, wd 1e-3, MultiStep at
  100/150, batch 256, an MLP on the MNIST family and ResNet-32 on CIFAR-10); the official logs the test accuracy of
  the best validation epoch, pllbench the final epoch [D3].
- Preset `quick` (15 epochs) scales the schedule to the run: warm-up 20 → 1 epoch and window 5 → 1 epoch (20/500 and
  5/500 of 15 epochs, at least 1), so purification runs after every epoch from epoch 1 on; `smoke` (2 epochs)
  purifies once, after epoch 0.
"""

from __future__ import annotations

import torch

from pllbench.losses import renormalize, soft_cross_entropy
from pllbench.method import HP, Batch, ClassifierMethod, register_method
from pllbench.tune_space import log_uniform, uniform

STALL_FRACTION = 1e-4  # a purification changing fewer than this share of the N·K entries raises e [official]


def purify(window_sum: torch.Tensor, purified: torch.Tensor, threshold: torch.Tensor):
    """(purified set, bank) after one purification: j stays in S_i iff it was there and f̄_ij / max_k f̄_ik ≥ e;
    the bank is f̄ renormalised over what stays. `window_sum` (N×K) is any positive multiple of f̄ per row."""
    ratio = window_sum / window_sum.max(dim=1, keepdim=True).values
    kept = purified * (ratio >= threshold).to(purified.dtype)
    return kept, renormalize(window_sum, kept)


def grow_threshold(threshold: torch.Tensor, changed: torch.Tensor, entries: int, growth: float,
                   cap: float) -> torch.Tensor:
    """e·(1 + growth) when e < cap and fewer than STALL_FRACTION·entries entries changed, else e [official]."""
    stalled = (threshold < cap) & (changed < STALL_FRACTION * entries)
    return torch.where(stalled, threshold * (1 + growth), threshold)


def pop_loss(logits_per_view: list[torch.Tensor], bank_rows: torch.Tensor) -> torch.Tensor:
    """(1/V)·Σ_v −(1/B)·Σ_i Σ_j s_ij·log_softmax(z^v_i)_j: PRODEN's loss averaged over the views."""
    return sum(soft_cross_entropy(z.float(), bank_rows) for z in logits_per_view) / len(logits_per_view)


@register_method("pop")
class POP(ClassifierMethod):
    summary = "POP (ICML'23): PRODEN with progressive purification of the candidate sets"
    views = ("base", "cls")  # plus a second cls draw of its own
    hparams = {  # each declared once: default, meaning, range (`pllbench describe`)
        "warmup_epochs": HP(20, "epochs of plain PRODEN before the first purification", low=0),
        "window": HP(5, "epochs whose banks are averaged; purification runs when the epoch is a multiple of it",
                     low=1),
        "threshold": HP(1e-3, "initial threshold e: a candidate leaves when its averaged confidence ÷ the row's "
                              "largest is below e", low=0, high=1, tune=log_uniform(1e-4, 1e-2)),
        "threshold_growth": HP(1e-3, "relative growth of e after a purification that changed almost nothing",
                               low=0),
        "threshold_max": HP(0.4, "e grows only while below this", low=0, high=1, tune=uniform(0.2, 0.6)),
    }
    preset_hparams = {"quick": {"warmup_epochs": 1, "window": 1}, "smoke": {"warmup_epochs": 0, "window": 1}}

    def __init__(self, ctx, hp):
        super().__init__(ctx, hp)
        cands = ctx.candidates.float()
        self.register_buffer("purified", cands.clone())  # the purified candidate sets (N×K, {0, 1})
        self.register_buffer("bank", renormalize(cands, cands))
        self.register_buffer("window_sum", torch.zeros_like(cands))
        self.register_buffer("threshold", torch.tensor(float(hp["threshold"]), dtype=torch.float64))

    def on_epoch_start(self, epoch: int) -> bool:
        """Record the bank of epoch e = epoch − 1 into the window, then purify when e is due."""
        done, hp = epoch - 1, self.hp
        if done < 0:
            return False
        if done % hp["window"] == 1 % hp["window"]:
            self.window_sum.zero_()
        self.window_sum.add_(self.bank)
        if done >= hp["warmup_epochs"] and done % hp["window"] == 0:
            kept, bank = purify(self.window_sum, self.purified, self.threshold.float())
            changed = (kept != self.purified).sum()
            self.threshold.copy_(grow_threshold(self.threshold, changed, kept.numel(), hp["threshold_growth"],
                                                hp["threshold_max"]))
            self.purified.copy_(kept)
            self.bank.copy_(bank)
        return False

    def training_step(self, batch: Batch):
        views = batch.views
        second = self.ctx.views(self.ctx.train_images[batch.index], "cls", batch.generator)
        logits_orig = self.net(views["base"])
        logits = [logits_orig, self.net(views["cls"]), self.net(second)]
        self._new_rows = renormalize(torch.softmax(logits_orig.detach().float(), dim=1), self.purified[batch.index])
        return {"loss": pop_loss(logits, self.bank[batch.index]),
                "size/purified": self.purified[batch.index].sum(dim=1).mean()}

    def after_step(self, batch: Batch):
        self.bank[batch.index] = self._new_rows

    def confidences(self):
        return self.bank
