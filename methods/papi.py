"""PaPi (Xia, Lv, Xu, Niu, Geng, CVPR 2023, "Towards effective visual representations for partial-label learning").

Official code AlphaXia/PaPi (`main.py`, `utils/model.py`, `utils/utils_loss.py`). One SupConNet (backbone, fc,
L2-normalised projection head), a confidence bank s (initialised to Y/|S|) and class prototypes μ (zeros). Per step,
on two views x_1, x_2, their mixups x̃_v = Λ·x_v + (1 − Λ)·x_v[π] (Λ ~ Beta(α_m, α_m), π a random permutation, both
drawn once per batch):
1. s_idx ← φ·s_idx + (1 − φ)·nS(softmax(f(x_1))), before the loss, which reads the updated rows;
2. L_cls = −(1/B)·Σ_i Σ_j s_ij·log softmax(f(x_1))_ij;
3. L_PaPi = Σ_v [Λ·KL(s ‖ p̃_v) + (1 − Λ)·KL(s_π ‖ p̃_v)], p̃_v = softmax(g(x̃_v)·μᵀ/τ) with μ from before this
   step, KL a batch mean (the prototype-similarity distribution of each mixup is aligned with the mixed targets);
4. μ_c ← γ·μ_c + (1 − γ)·g(x) for every projection of x_1 then of x_2, in batch order, with pseudo-label
   argmax_{j∈S} p_j of that view, then every row L2-normalised (detached; computed in closed form with PiCO's
   `prototype_ema`, identical to the official loop);
5. L = L_cls + α(e)·L_PaPi, α(e) = min(e/10, 1)·α.
φ and γ are 0.99 during epoch 0, then φ_e = 0.95 + (e − 1)/E·(0.8 − 0.95) and γ_e = 0.9 + (e − 1)/E·(0.5 − 0.9)
(the official sets them after each epoch from that epoch's index). x_2's forward only moves BN statistics and the
prototypes, so it runs without grad (its output has no path to the loss: the same gradients, no backward).
Forwards are separate, in the official order x_1, x_2, x̃_1, x̃_2. Predictor: fc.

Views. The official x_1 is flip + reflect-padded crop, x_2 adds CIFAR10Policy and cutout: pllbench's `cls` recipe on
the paper preset (quick's `cls` has no cutout). x_1 → `weak` (random resized crop 0.2–1 + flip, plus colour jitter and
grayscale on colour datasets), since pllbench has no flip-and-crop-only view [deviation]; x_2 → `cls`.

Deviations:
- Single process: no DDP, no all-gather of the prototype updates (as PiCO, [D9]).
- log_softmax instead of log(softmax) in L_cls, and pseudo-labels as the argmax over the candidates' logits (the same
  unless a softmax underflows, where the official gives NaN or lets a non-candidate win).
- τ and α_m per dataset from the README's instance-dependent runs: FMNIST and CIFAR-100 τ = 1, α_m = 5; CIFAR-10 the
  argparse defaults τ = 0.3, α_m = 8, which pllbench also uses for Flowers and Pets [ours: no official setting].
- The α ramp (10 of the official 500 epochs, kept on the paper preset) is scaled with the run length on the CPU
  presets: 10·15/500 = 0.3 epochs on `quick`, 10·2/500 = 0.04 on `smoke` (α = 0 in epoch 0, full from epoch 1).
- Optimiser, schedule, epochs, batch and backbone are the preset's [D14] (official: ResNet-18, SGD 0.05, cosine,
  batch 256); the official candidate generators are replaced by pllbench's; the official log reports the best
  epoch, pllbench the final one [D3]. The unused `conf_th` argument is not declared.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from pllbench.losses import candidate_argmax, linear_rampup, renormalize, soft_cross_entropy
from pllbench.method import HP, Batch, SupConBankMethod, register_method
from pllbench.methods.pico import prototype_ema
from pllbench.tune_space import log_uniform


def epoch_schedule(epoch: int, epochs: int, first: float, start: float, end: float) -> float:
    """`first` during epoch 0, then start + (e − 1)/E·(end − start) (the official sets it after epoch e − 1)."""
    return first if epoch == 0 else start + (end - start) * (epoch - 1) / epochs


def bank_targets(bank_rows: torch.Tensor, logits: torch.Tensor, cands: torch.Tensor, phi: float) -> torch.Tensor:
    """s ← φ·s + (1 − φ)·nS(softmax(z)) (detached): the rows the loss reads and the bank keeps."""
    return phi * bank_rows + (1 - phi) * renormalize(torch.softmax(logits.detach().float(), dim=1), cands)


def prototype_log_probs(proj: torch.Tensor, prototypes: torch.Tensor, tau: float) -> torch.Tensor:
    """log softmax(g·μᵀ/τ): the prototype-similarity distribution (μ detached)."""
    return F.log_softmax(proj.float() @ prototypes.detach().t() / tau, dim=1)


def mixup_kl(log_probs: torch.Tensor, targets: torch.Tensor, perm: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """Λ·KL(s ‖ p) + (1 − Λ)·KL(s_π ‖ p), each KL a batch mean with 0·log 0 = 0 (torch's KLDivLoss)."""
    own = F.kl_div(log_probs, targets, reduction="batchmean")
    mixed_in = F.kl_div(log_probs, targets[perm], reduction="batchmean")
    return lam * own + (1 - lam) * mixed_in


@register_method("papi")
class PaPi(SupConBankMethod):
    summary = "PaPi (CVPR'23): mixup prototype-similarity distributions aligned with the classifier's targets"
    views = ("weak", "cls")  # x_1, x_2
    hparams = {  # each declared once: default, meaning, range (`pllbench describe`)
        "tau_proto": HP(0.3, "temperature τ of the prototype-similarity softmax", low=0, low_open=True,
                        tune=log_uniform(0.1, 1.0)),
        "alpha_mixup": HP(8.0, "concentration α_m of the mixup coefficient Λ ~ Beta(α_m, α_m)", low=0,
                          low_open=True, tune=log_uniform(1.0, 10.0)),
        "alpha_weight": HP(1.0, "weight α of the PaPi term once ramped up", low=0, tune=log_uniform(0.3, 3.0)),
        "rampup_epochs": HP(10.0, "epochs over which the PaPi weight rises linearly from 0 to α", low=0),
        "phi_first": HP(0.99, "moving-average factor φ of the bank update during epoch 0", low=0, high=1),
        "phi_start": HP(0.95, "φ at epoch 1 (then linear towards phi_end)", low=0, high=1),
        "phi_end": HP(0.8, "φ that the linear schedule reaches after the last epoch", low=0, high=1),
        "proto_first": HP(0.99, "prototype momentum γ during epoch 0", low=0, high=1),
        "proto_start": HP(0.9, "γ at epoch 1 (then linear towards proto_end)", low=0, high=1),
        "proto_end": HP(0.5, "γ that the linear schedule reaches after the last epoch", low=0, high=1),
    }
    dataset_hparams = {"fmnist": {"tau_proto": 1.0, "alpha_mixup": 5.0},
                       "cifar100": {"tau_proto": 1.0, "alpha_mixup": 5.0}}
    # the α ramp scaled with the official run length (10 of 500 epochs)
    preset_hparams = {"quick": {"rampup_epochs": 0.3}, "smoke": {"rampup_epochs": 0.04}}

    def __init__(self, ctx, hp):
        super().__init__(ctx, hp)
        self.register_buffer("prototypes", torch.zeros(ctx.num_classes, ctx.proj_dim))

    def training_step(self, batch: Batch):
        hp, cands, epoch, epochs = self.hp, batch.candidates, batch.epoch, self.ctx.epochs
        x1, x2 = batch.views["weak"], batch.views["cls"]
        perm = torch.randperm(len(x1), device=x1.device)
        concentration = torch.tensor(hp["alpha_mixup"])  # Λ on the CPU: a scalar to device ops, no copy or sync
        lam = torch.distributions.Beta(concentration, concentration, validate_args=False).sample()
        logits1, proj1 = self.net(x1)
        with torch.no_grad():
            logits2, proj2 = self.net(x2)
        mixed_projs = [self.net.project(lam * x + (1 - lam) * x[perm]) for x in (x1, x2)]
        phi = epoch_schedule(epoch, epochs, hp["phi_first"], hp["phi_start"], hp["phi_end"])
        targets = bank_targets(self.bank[batch.index], logits1, cands, phi)
        loss_cls = soft_cross_entropy(logits1.float(), targets)
        log_probs = [prototype_log_probs(p, self.prototypes, hp["tau_proto"]) for p in mixed_projs]
        loss_papi = sum(mixup_kl(lp, targets, perm, lam) for lp in log_probs)
        uniform = torch.full_like(log_probs[0], -math.log(cands.shape[1]))
        chance = len(log_probs) * mixup_kl(uniform, targets, perm, lam)  # every similarity equal
        with torch.no_grad():
            pseudo = torch.cat([candidate_argmax(z.float(), cands) for z in (logits1.detach(), logits2)])
            gamma = epoch_schedule(epoch, epochs, hp["proto_first"], hp["proto_start"], hp["proto_end"])
            self._new_prototypes = prototype_ema(self.prototypes, torch.cat([proj1.detach(), proj2]).float(), pseudo,
                                                 gamma)
        self._new_rows = targets
        weight = hp["alpha_weight"] * linear_rampup(epoch, hp["rampup_epochs"])
        return {"cls": loss_cls, "papi": loss_papi, "chance/papi": chance.detach(),
                "loss": loss_cls + weight * loss_papi}

    def after_step(self, batch: Batch):
        self.bank[batch.index] = self._new_rows
        self.prototypes.copy_(self._new_prototypes)
