"""CRDPLL (Wu, Wang, Zhang, ICML 2022, "Revisiting consistency regularization for deep partial label learning").

Official code wu-dd/PLCR (`main.py`). One classifier f; per instance three augmentations x_0, x_1, x_2 and a
confidence row q, initialised to Y/|S|. The loss is

    L = −(1/B)·Σ_i Σ_{j∉S_i} log(1 − f_j(x_{i,0}))  +  λ(t)·Σ_v KL(q_i ‖ f(x_{i,v})),   λ(t) = min(t/T′, 1)·λ,

supervised learning on the non-candidates of x_0 and consistency of all three augmentations to the conformal label
distribution q, whose closed form is q_i ∝ Y_i ⊙ Π_v f(x_{i,v})^{1/3}. Faithful to the official code: the KL terms
are batch means, summed over the views; the three views go through three separate forwards (each normalises with
its own batch statistics); q is read as it was and rows idx are rewritten after the optimiser step from this step's
pre-step outputs (the official order, also pllbench's shared bank order); λ = 1, T′ = 100 epochs.

Views. The official x_0 is flip + reflect-padded crop; x_1 and x_2 add cutout (and CIFAR10Policy on CIFAR), which is
pllbench's `cls` recipe on the paper preset. x_0 → `weak` (random resized crop 0.2–1 + flip, plus colour jitter and
grayscale on colour datasets): pllbench has no flip-and-crop-only view, and `weak` is its weak augmentation
[deviation]. x_1 → the batch's `cls` view; x_2 → a second, independent `cls` draw that the method makes itself from
the run's view generator, outside autocast (the trainer draws each named view once per step). The quick preset's `cls`
has no cutout (its `cls_cutout = 0`), so there x_1 and x_2 are flip + crop.

Deviations:
- log(1 − p) is computed exactly (pllbench.losses.log1m_softmax) instead of log(1.0000001 − p).
- q is the softmax over the candidates of the views' mean log-probability: the official product of p^{1/3},
  renormalised, in log space (the official 0/0 gives NaN when every candidate's product underflows).
- T′ = 100 epochs (the paper's) on the paper preset, whose 500 epochs make the ramp a fifth of the run (official: 200
  epochs, half). Presets `quick` (15 epochs) and `smoke` (2) scale T′ with the official run length: 100·15/200 = 7.5
  and 100·2/200 = 1.
- Optimiser, schedule, epochs and backbone are the preset's [D14] (official: WRN-34-10 / LeNet, SGD 0.1, steps at
  100 and 150 of 200 epochs); the official uniform and MLP-based candidate generators are replaced by pllbench's;
  the official log reports the best epoch, pllbench the final one [D3].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pllbench.errors import PllbenchError
from pllbench.losses import linear_rampup, log1m_softmax, renormalize
from pllbench.method import HP, Batch, ClassifierMethod, register_method
from pllbench.tune_space import log_uniform


def non_candidate_loss(logits: torch.Tensor, cands: torch.Tensor) -> torch.Tensor:
    """L_sup = −(1/B)·Σ_i Σ_{j∉S_i} log(1 − p_ij), with log(1 − p) exact."""
    return -(log1m_softmax(logits.float()) * (1 - cands)).sum(dim=1).mean()


def conformal_targets(logits_per_view: list[torch.Tensor], cands: torch.Tensor) -> torch.Tensor:
    """q_i ∝ Y_i ⊙ Π_v p_{i,v}^{1/V}, normalised over the candidates (detached)."""
    log_probs = torch.stack([F.log_softmax(z.detach().float(), dim=1) for z in logits_per_view])
    return torch.softmax(log_probs.mean(dim=0).masked_fill(cands == 0, float("-inf")), dim=1)


def consistency_loss(logits_per_view: list[torch.Tensor], targets: torch.Tensor) -> torch.Tensor:
    """Ψ = Σ_v (1/B)·Σ_i KL(q_i ‖ p_{i,v}), 0·log 0 = 0 (torch's KLDivLoss, reduction batchmean)."""
    return sum(F.kl_div(F.log_softmax(z.float(), dim=1), targets, reduction="batchmean") for z in logits_per_view)


@register_method("crdpll")
class CRDPLL(ClassifierMethod):
    summary = "CRDPLL (ICML'22): non-candidate supervision plus consistency to a conformal label distribution"
    views = ("weak", "cls")  # x_0, x_1; x_2 is a second cls draw made in the step
    hparams = {  # each declared once: default, meaning, range (`pllbench describe`)
        "lam": HP(1.0, "weight λ of the consistency term once ramped up", low=0, tune=log_uniform(0.3, 3.0)),
        "rampup_epochs": HP(100.0, "T′: epochs over which the consistency weight rises linearly from 0 to λ",
                            low=0),
    }
    # T′ scaled with the official run length (100 of 200 epochs): 15·0.5 and 2·0.5
    preset_hparams = {"quick": {"rampup_epochs": 7.5}, "smoke": {"rampup_epochs": 1.0}}

    def __init__(self, ctx, hp):
        super().__init__(ctx, hp)
        if ctx.train_images is None:
            raise PllbenchError("crdpll draws a second cls view per step and needs the train images in its context")
        cands = ctx.candidates.float()
        self.register_buffer("bank", renormalize(cands, cands))

    def training_step(self, batch: Batch):
        images = self.ctx.train_images[batch.index]
        with torch.autocast(images.device.type, enabled=False):
            second_cls = self.ctx.views(images, "cls", batch.generator)
        logits = [self.net(x) for x in (batch.views["weak"], batch.views["cls"], second_cls)]
        cands = batch.candidates
        loss_sup = non_candidate_loss(logits[0], cands)
        loss_cons = consistency_loss(logits, self.bank[batch.index])
        self._new_rows = conformal_targets(logits, cands)
        weight = self.hp["lam"] * linear_rampup(batch.epoch, self.hp["rampup_epochs"])
        return {"sup": loss_sup, "cons": loss_cons, "loss": loss_sup + weight * loss_cons}

    def after_step(self, batch: Batch):
        self.bank[batch.index] = self._new_rows

    def confidences(self):
        return self.bank
