"""IDGP (Qiao et al., ICLR 2023, "Decompositional Generation Process for Instance-Dependent Partial Label
Learning"), official code palm-ml/idgp (`main_idgp_benchmark.py`, per-dataset settings in `parameters.txt`).

The candidate set is generated in two steps: the correct label y ~ Cat(f(x)), then every other label j joins with
its own flipping probability g_j(x) ~ Bernoulli. Two networks of the preset's backbone model them: f, a softmax
classifier at temperature T_f (it predicts), and g, per-label sigmoids at temperature T_g. Each keeps a bank of its
previous outputs, d = f's outputs renormalised over S (PRODEN's) and b = g's outputs on S (0 elsewhere), updated
from the original view's pre-step outputs; both start from the candidates (d uniform over S, b = S). Every term is
summed over three views (the original and two augmented ones), each with its own forward.

Warm-up (epochs < W): f fits d and g fits b, L = L_f + L_g. Then, with λ = min((e − W)/R, 1):
  L_F = α·L_f + β·L_fg + λ·δ·KL(d ‖ softmax f)        (trains f; g's part detached)
  L_G = θ·L_g + γ·L_gf + λ·η·KL(b ‖ sigmoid g)        (trains g; f's part detached)
- L_f = −(1/B)·Σ d·log softmax(z/T_f); L_g = −(1/B)·Σ [b·log σ(u) + (1 − b)·log(1 − σ(u))], u = h/T_g.
- L_fg: the same cross-entropy against the MAP posterior of the correct label, q_ij ∝ (1 − g̃_ij)/g̃_ij on S_i, where
  g̃ = σ(u) except at the candidate d ranks first, where g̃ = 1 − σ(u) [official `noisy_output`].
- L_gf = −(1/B)·Σ w·log(1 − σ(u)) + the binary cross-entropy of σ(u) against S, w = softmax(z/T_f) renormalised
  over S (pushes g down on the likely correct label).
- The two KL terms use the untempered outputs (log_softmax z, log σ(h)) against the banks, 0·log 0 = 0 [official].

Faithful: the losses, banks, temperatures, the flip at the bank's top candidate, the ramp, the loss weights of
`parameters.txt` (CIFAR-10's as the defaults; FMNIST's and CIFAR-100's per dataset; the temperatures rounded to two
decimals), the bank updates from the original view's outputs computed before the step.

Deviations [ours unless marked]:
- One optimiser over f and g, stepping L_F + L_G (official: two SGDs, f's stepped before g's on the same forward).
  Each network's gradient is the same (every cross term is detached), but both use the preset's learning rate,
  schedule and weight decay [D14] (official: per dataset lr, wd for f and lr_g, wd_g for g, constant, no schedule;
  batch 256; LeNet on the MNIST family, ResNet-32 on CIFAR).
- The two warm-ups run together in epochs 0..W−1 on the same batches (official: f's W epochs, then g's W epochs,
  then E main epochs). Neither warm-up reads the other network or its bank, so only their data order differs; the
  main phase gets E − W of the preset's E epochs.
- q is computed in log space as a softmax over S of ∓u (the odds (1 − σ(u))/σ(u) = e^(−u)): the official product
  Π_{k∈S} g̃_k cancels in the normalisation and underflows at large |S| (0/0). log σ, log(1 − σ) and log softmax
  are exact (official: log of the probabilities, −inf and NaN once they saturate).
- Views: the original view is `base` (official: normalise only on CIFAR, flip + reflect-padded crop on FMNIST), the
  two augmented ones are two draws of `cls` (official: flip, padded crop, a 16-px cutout, plus CIFAR10Policy on
  CIFAR; pllbench's cls view has torchvision's AutoAugment [D13] and the preset's cutout: none on quick). The
  second cls draw is the method's own, from the run's view generator.
- No early stopping (official: patience 50 on validation accuracy); pllbench reports the final epoch [D3].
- Flowers and Pets, which the official code does not cover, use CIFAR-10's settings.
- Preset `quick` (15 epochs) scales the schedule: warm-up W 5 → 1 (FMNIST's 5 of 500 epochs, at least 1) and the
  ramp R 100 → 3 epochs (100/500 of 15); `smoke` (2 epochs): W = 1, R = 1.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pllbench.losses import candidate_argmax, linear_rampup, renormalize, soft_cross_entropy
from pllbench.method import HP, Batch, Method, register_method
from pllbench.tune_space import log_uniform


def flip_posterior(g_logits: torch.Tensor, bank_d: torch.Tensor, cands: torch.Tensor) -> torch.Tensor:
    """q_ij ∝ (1 − g̃_ij)/g̃_ij over j ∈ S_i (0 elsewhere), g̃ = σ(u) except g̃ = 1 − σ(u) at j* = argmax_{j∈S} d_ij.

    `g_logits` is u = h/T_g. The odds are e^(−u), and e^(u) at j*: a softmax over S of −u with j*'s sign flipped.
    """
    flipped = F.one_hot(candidate_argmax(bank_d, cands), cands.shape[1]).bool()
    log_odds = torch.where(flipped, g_logits, -g_logits)
    return torch.softmax(log_odds.masked_fill(cands == 0, float("-inf")), dim=1)


def bernoulli_cross_entropy(g_logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """−(1/B)·Σ_ij [t_ij·log σ(u_ij) + (1 − t_ij)·log(1 − σ(u_ij))], summed over labels, averaged over rows."""
    return F.binary_cross_entropy_with_logits(g_logits, target, reduction="sum") / len(g_logits)


def flip_loss_from_classifier(g_logits: torch.Tensor, f_probs: torch.Tensor, cands: torch.Tensor) -> torch.Tensor:
    """L_gf = −(1/B)·Σ_ij w_ij·log(1 − σ(u_ij)) + bernoulli_cross_entropy(u, S), w = f_probs renormalised over S."""
    weights = renormalize(f_probs.detach(), cands)
    return (-(weights * F.logsigmoid(-g_logits)).sum() / len(g_logits)
            + bernoulli_cross_entropy(g_logits, cands))


def classifier_consistency(logits: torch.Tensor, bank_d: torch.Tensor) -> torch.Tensor:
    """KL(d ‖ softmax z) = (1/B)·Σ_ij d_ij·(log d_ij − log_softmax(z)_ij), with 0·log 0 = 0."""
    return F.kl_div(F.log_softmax(logits, dim=1), bank_d, reduction="batchmean")


def flip_consistency(g_raw_logits: torch.Tensor, bank_b: torch.Tensor) -> torch.Tensor:
    """(1/B)·Σ_ij b_ij·(log b_ij − log σ(h_ij)), with 0·log 0 = 0 (σ is not a distribution; official as is)."""
    return F.kl_div(F.logsigmoid(g_raw_logits), bank_b, reduction="batchmean")


@register_method("idgp")
class IDGP(Method):
    summary = "IDGP (ICLR'23): MAP over a decomposed generation process, classifier f and flipping model g"
    views = ("base", "cls")  # plus a second cls draw of its own
    hparams = {  # each declared once: default, meaning, range (`pllbench describe`); defaults: CIFAR-10's
        "f_bank": HP(10.0, "α: weight of f's cross-entropy against its bank d", low=0, tune=log_uniform(1.0, 100.0)),
        "f_flip": HP(1.0, "β: weight of f's cross-entropy against the posterior from g's flip odds", low=0),
        "f_consistency": HP(1.0, "δ: weight of KL(d ‖ softmax f), ramped up", low=0),
        "g_bank": HP(0.001, "θ: weight of g's binary cross-entropy against its bank b", low=0),
        "g_from_f": HP(0.01, "γ: weight of g's loss from f's posterior and the candidates", low=0,
                       tune=log_uniform(0.001, 1.0)),
        "g_consistency": HP(1.0, "η: weight of KL(b ‖ sigmoid g), ramped up", low=0),
        "temp_f": HP(1.95, "temperature T_f of f's softmax in the cross-entropies and the bank d", low=0,
                     low_open=True),
        "temp_g": HP(5.91, "temperature T_g of g's sigmoid in its losses, the flip odds and the bank b", low=0,
                     low_open=True),
        "warmup_epochs": HP(3, "warm-up epochs W: f fits d and g fits b, no cross terms", low=0),
        "ramp_epochs": HP(100.0, "epochs R after the warm-up over which the consistency weight λ rises 0 → 1",
                          low=0),
    }
    dataset_hparams = {
        "fmnist": {"f_bank": 100.0, "f_flip": 1.0, "g_bank": 0.1, "g_from_f": 0.01, "temp_f": 4.94,
                   "temp_g": 4.42, "warmup_epochs": 5},
        "cifar100": {"f_bank": 100.0, "f_flip": 0.01, "g_bank": 0.1, "g_from_f": 1.0, "temp_f": 9.96,
                     "temp_g": 8.32, "warmup_epochs": 5},
    }
    preset_hparams = {"quick": {"warmup_epochs": 1, "ramp_epochs": 3.0},
                      "smoke": {"warmup_epochs": 1, "ramp_epochs": 1.0}}

    def __init__(self, ctx, hp):
        super().__init__(ctx, hp)
        self.f = ctx.classifier()
        self.g = ctx.classifier()
        cands = ctx.candidates.float()
        self.register_buffer("bank_d", renormalize(cands, cands))
        self.register_buffer("bank_b", cands.clone())

    def training_step(self, batch: Batch):
        hp, cands, idx = self.hp, batch.candidates, batch.index
        second = self.ctx.views(self.ctx.train_images[idx], "cls", batch.generator)
        inputs = (batch.views["base"], batch.views["cls"], second)
        f_logits = [self.f(x).float() for x in inputs]
        g_logits = [self.g(x).float() for x in inputs]
        f_tempered = [z / hp["temp_f"] for z in f_logits]
        g_tempered = [h / hp["temp_g"] for h in g_logits]
        d, b = self.bank_d[idx], self.bank_b[idx]
        self._new_d = renormalize(torch.softmax(f_tempered[0].detach(), dim=1), cands)
        self._new_b = torch.sigmoid(g_tempered[0].detach()) * cands
        loss_f = sum(soft_cross_entropy(z, d) for z in f_tempered)
        loss_g = sum(bernoulli_cross_entropy(u, b) for u in g_tempered)
        if batch.epoch < hp["warmup_epochs"]:
            return {"f": loss_f, "g": loss_g, "loss": loss_f + loss_g}
        ramp = linear_rampup(batch.epoch - hp["warmup_epochs"], hp["ramp_epochs"])
        loss_fg = sum(soft_cross_entropy(z, flip_posterior(u.detach(), d, cands))
                      for z, u in zip(f_tempered, g_tempered))
        loss_gf = sum(flip_loss_from_classifier(u, torch.softmax(z.detach(), dim=1), cands)
                      for z, u in zip(f_tempered, g_tempered))
        cons_f = sum(classifier_consistency(z, d) for z in f_logits)
        cons_g = sum(flip_consistency(h, b) for h in g_logits)
        loss_f_total = hp["f_bank"] * loss_f + hp["f_flip"] * loss_fg + ramp * hp["f_consistency"] * cons_f
        loss_g_total = hp["g_bank"] * loss_g + hp["g_from_f"] * loss_gf + ramp * hp["g_consistency"] * cons_g
        return {"f": loss_f, "fg": loss_fg, "cons_f": cons_f, "g": loss_g, "gf": loss_gf, "cons_g": cons_g,
                "loss": loss_f_total + loss_g_total}

    def after_step(self, batch: Batch):
        self.bank_d[batch.index] = self._new_d
        self.bank_b[batch.index] = self._new_b

    def predict(self, x):
        return self.f(x)

    def features(self, x):
        return self.f.features(x)

    def confidences(self):
        return self.bank_d
