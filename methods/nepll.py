"""NEPLL (He et al., ICCV 2023, "Candidate-aware selective disambiguation based on normalized entropy for
instance-dependent partial-label learning"), official code ShuoHe1995/NE_PLL (`train.py`, `run.sh`).

Two classifiers f_1, f_2 (same architecture, own initialisation, one optimiser), each with its own bank c_m
(initialised Y/|S|; after every step c_m[idx] ← nS(softmax(f_m(x_1))), PRODEN's update from the step's outputs).
A row's normalised entropy is NE(s) = −Σ_{j∈S} s_j log s_j / log|S| (0 when |S| = 1), s = nS(softmax(z)).

- Warm-up (epochs < warmup_epochs): each f_m fits its bank by cross-entropy on the cls view.
- Selective disambiguation: at the start of every later epoch each f_m scores every train row once (base view,
  eval mode); the ceil(η·N) rows of lowest NE are its well-disambiguated (WD) set, and its class-wise WD threshold
  is τ_c = Σ_{WD rows predicted c} NE / |WD|. In the epoch, on its WD rows: cross-entropy of c_m on the cls view (x_1)
  and on the strong view (x_2), and mixup of x_1 among WD rows towards one-hot argmax c_m (λ ~ Beta(4, 4), kept
  ≥ 0.5); on the other rows, until expand_epoch, the complementary loss −Σ_{j∉S} log(1 − p_j) on x_1.
  Loss_m = CE_1 + w·(CE_2 + mix [+ complementary]), w = min(e / rampup_epochs, 1); the loss is Loss_1 + Loss_2.
- Candidate-aware thresholding (epochs ≥ expand_epoch), per step and network: a non-WD row with NE < τ_{pred} joins
  WD with target s; a remaining (UD) row with NE below the UD threshold u_m and the same prediction from both networks
  joins with target sharpen(s, T) = s^(1/T)/Σ s^(1/T); then u_m ← λ·u_m + (1 − λ)·mean NE of the remaining UD rows.
  u_m restarts at 0 every epoch (the official EMA lives in a local variable of the epoch function).
Test predictions are the mean of the two networks' logits [official].

Faithful: the terms and their weights, the selection, thresholds and their timing (τ per epoch from the same pass
as the WD set; u per step, used before it is updated), the bank updates (the official code also uses the step's own
outputs), run.sh's settings (warm-up 60, ramp-up 100, expansion from 300 of 450 epochs, η 0.6, λ 0.99) and
train.py's T 0.5. The formulas are the official code's (τ_c, for one, divides by the whole WD set, not by the WD
rows predicted c).

Deviations:
- Views [D13]: x_1 is pllbench's cls view, x_2 its strong view, the scoring pass its base view (the official test
  transform, as the official pass). Official x_1 is flip + padded crop: the cls view on FMNIST with quick's
  cutout 0 (the paper preset adds a 16-px cutout; CIFAR's cls view adds AutoAugment and cutout). Official x_2 is
  the same plus a 16-px cutout on FMNIST (pllbench's strong view there: random resized crop, flip, jitter) and
  RandAugment(3, 5) before the flip-crop on CIFAR (strong: random resized crop, flip, RandAugment, erasing).
- The mixup forward runs on the whole batch: WD rows are mixed among themselves (a uniform permutation of the WD
  rows, as the official `randperm` over them) and the other rows among themselves with zero loss weight (official: a
  forward of the WD rows only). Fixed shapes, no host sync; that forward's BN batch statistics also see the other
  rows.
- An empty part of a batch contributes 0 to its mean, and an empty UD pool leaves u_m unchanged. Official: an empty
  WD part makes the loss NaN; an empty complementary part (NaN) leaves that network's loss unassigned for the step
  (the previous step's loss is back-propagated again, an error); an empty UD pool makes u_m NaN, which stops UD
  expansion for the rest of the epoch.
- log(1 − p) is exact (official log(1.0000001 − p)); the WD ranking breaks ties by row order (official: unstable
  sort); rows of a --val-fraction hold-out are scored and ranked like the others (they are never trained on).
- features() (diagnostics) are f_1's; confidences() the mean of the two banks [ours].
- Preset `quick` (15 epochs against the official 450): warm-up 2, ramp-up 3, expansion from 10 (the official epochs
  × 15/450); `smoke`: warm-up 1, ramp-up 2, expansion from 1, so two epochs reach warm-up, selection and expansion.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from pllbench.losses import linear_rampup, log1m_softmax, masked_mean, renormalize, soft_cross_entropy
from pllbench.method import HP, Batch, Method, register_method
from pllbench.methods.pico_plus import mixup_lambda
from pllbench.methods.proden import proden_update
from pllbench.tune_space import log_uniform, uniform


def normalized_entropy(scores: torch.Tensor, cands: torch.Tensor) -> torch.Tensor:
    """NE = −Σ_j s_j ln s_j / ln|S| over the last dimension (0·ln 0 = 0; ln|S| taken as 1 when |S| = 1)."""
    entropy = -torch.special.xlogy(scores * cands, scores * cands).sum(dim=-1)
    log_size = torch.log(cands.sum(dim=-1))
    return entropy / torch.where(log_size == 0, torch.ones_like(log_size), log_size)


def sharpen(scores: torch.Tensor, tau: float) -> torch.Tensor:
    """s^(1/T) / Σ s^(1/T) over the last dimension."""
    powered = scores ** (1 / tau)
    return powered / powered.sum(dim=-1, keepdim=True)


def lowest(values: torch.Tensor, count: int) -> torch.Tensor:
    """N bool: the `count` smallest values (ties by position)."""
    order = torch.argsort(values, stable=True)
    rank = torch.empty_like(order).scatter_(0, order, torch.arange(len(order), device=order.device))
    return rank < count


def class_thresholds(entropy: torch.Tensor, pred: torch.Tensor, selected: torch.Tensor, k: int) -> torch.Tensor:
    """τ_c = Σ_{selected rows predicted c} NE / (number of selected rows) [the official mean over the WD rows of
    NE·onehot(pred)]."""
    onehot = F.one_hot(pred, k).to(entropy.dtype) * selected[:, None].to(entropy.dtype)
    return (entropy[:, None] * onehot).sum(dim=0) / selected.sum().clamp(min=1)


def expansions(entropy, pred, selected, class_threshold, ud_threshold):
    """(WD joins, UD joins, the UD pool) for both networks (2×B each): a non-selected row whose NE is below its
    predicted class's τ joins WD; of the rest (the pool), a row whose NE is below u and whose two predictions agree
    joins as UD."""
    wd = (entropy < class_threshold.gather(1, pred)) & ~selected
    pool = ~selected & ~wd
    ud = (entropy < ud_threshold[:, None]) & (pred[0] == pred[1]) & pool
    return wd, ud, pool


def ud_threshold_update(ud_threshold, entropy, pool, momentum: float) -> torch.Tensor:
    """u ← λ·u + (1 − λ)·mean NE over the pool, per network; unchanged where the pool is empty."""
    size = pool.sum(dim=1)
    mean = (entropy * pool).sum(dim=1) / size.clamp(min=1)
    return torch.where(size > 0, momentum * ud_threshold + (1 - momentum) * mean, ud_threshold)


def within_group_permutation(keep: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """A permutation π of the batch with π(kept) = kept: the kept rows shuffled among themselves by `noise` (uniform
    in [0, 1)), likewise the others."""
    in_order = torch.argsort((~keep).to(torch.uint8), stable=True)
    shuffled = torch.argsort(noise + 2 * (~keep).to(noise.dtype))
    return torch.empty_like(in_order).scatter_(0, in_order, shuffled)


def complementary_rows(logits: torch.Tensor, cands: torch.Tensor) -> torch.Tensor:
    """−Σ_{j∉S} log(1 − p_j) per row."""
    return -((1 - cands) * log1m_softmax(logits.float())).sum(dim=1)


@register_method("nepll")
class NEPLL(Method):
    summary = "NEPLL (ICCV'23): two networks, normalised-entropy selection, class-wise and UD thresholds"
    views = ("cls", "strong")
    hparams = {  # run.sh's settings; T from train.py
        "warmup_epochs": HP(60, "epochs of warm-up (each network fits its bank) before selection", low=0),
        "expand_epoch": HP(300, "first epoch of WD/UD expansion by the NE thresholds; before it the non-selected "
                                "rows get the complementary loss", low=0),
        "rampup_epochs": HP(100, "epochs of the linear ramp-up of w, the weight of the strong-view, mixup and "
                                 "complementary terms", low=0),
        "select_ratio": HP(0.6, "share η of rows of lowest normalised entropy selected (WD) at each epoch start",
                           low=0, high=1, low_open=True, tune=uniform(0.4, 0.8)),
        "ud_ema": HP(0.99, "momentum λ of the UD threshold u (EMA of the UD rows' mean NE, per step)", low=0,
                     high=1),
        "sharpen_tau": HP(0.5, "temperature T sharpening the targets of UD rows that join", low=0, low_open=True),
        "mix_alpha": HP(4.0, "α of the mixup coefficient λ ~ Beta(α, α), kept ≥ 0.5", low=0, low_open=True,
                        tune=log_uniform(1.0, 8.0)),
    }
    preset_hparams = {"quick": {"warmup_epochs": 2, "rampup_epochs": 3, "expand_epoch": 10},
                      "smoke": {"warmup_epochs": 1, "rampup_epochs": 2, "expand_epoch": 1}}

    def __init__(self, ctx, hp):
        super().__init__(ctx, hp)
        self.nets = nn.ModuleList([ctx.classifier(), ctx.classifier()])
        cands = ctx.candidates.float()
        uniform = renormalize(cands, cands).cpu()
        self.register_buffer("bank", torch.stack([uniform, uniform]))  # c_1, c_2: 2×N×K
        self.register_buffer("selected", torch.zeros(2, ctx.num_train, dtype=torch.bool))  # WD sets of the epoch
        self.register_buffer("class_entropy", torch.zeros(2, ctx.num_classes))  # τ_c per network
        self.register_buffer("ud_entropy", torch.zeros(2))  # u per network

    def on_epoch_start(self, epoch: int) -> bool:
        if epoch < self.hp["warmup_epochs"]:
            return False
        entropy, pred = self.score_train_rows()
        count = math.ceil(self.ctx.num_train * self.hp["select_ratio"])
        for m in range(2):
            self.selected[m] = lowest(entropy[m], count)
            self.class_entropy[m] = class_thresholds(entropy[m], pred[m], self.selected[m], self.ctx.num_classes)
        self.ud_entropy.zero_()
        return False

    @torch.no_grad()
    def score_train_rows(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(NE, prediction) of every train row for both networks (2×N), base view, eval mode, in chunks of four
        training batches."""
        images, cands, chunk = self.ctx.train_images, self.ctx.candidates.float(), 4 * self.ctx.batch_size
        was_training = self.training
        self.eval()
        entropy, pred = [], []
        for start in range(0, len(images), chunk):
            x = self.ctx.views(images[start:start + chunk], "base", None)
            rows = cands[start:start + chunk]
            scores = torch.stack([proden_update(net(x), rows) for net in self.nets])
            entropy.append(normalized_entropy(scores, rows))
            pred.append(scores.argmax(dim=-1))
        self.train(was_training)
        return torch.cat(entropy, dim=1), torch.cat(pred, dim=1)

    def training_step(self, batch: Batch):
        cands, idx, x1 = batch.candidates, batch.index, batch.views["cls"]
        logits1 = [net(x1) for net in self.nets]
        targets = torch.stack([proden_update(z, cands) for z in logits1])  # s_m = nS(softmax(f_m(x_1))), no grad
        self._new_rows = targets
        if batch.epoch < self.hp["warmup_epochs"]:
            loss = sum(soft_cross_entropy(z, self.bank[m, idx]) for m, z in enumerate(logits1))
            return {"ce1": loss, "loss": loss}
        selected, conf = self.training_targets(targets, cands, idx, batch.epoch)
        logits2 = [net(batch.views["strong"]) for net in self.nets]
        onehot = F.one_hot(conf.argmax(dim=-1), cands.shape[1]).float()
        w = linear_rampup(batch.epoch, self.hp["rampup_epochs"])
        terms = {"ce1": 0.0, "ce2": 0.0, "mix": 0.0, "comp": 0.0}
        for m, net in enumerate(self.nets):
            log_p1, log_p2 = F.log_softmax(logits1[m].float(), dim=1), F.log_softmax(logits2[m].float(), dim=1)
            terms["ce1"] = terms["ce1"] + masked_mean(-(conf[m] * log_p1).sum(dim=1), selected[m])
            terms["ce2"] = terms["ce2"] + masked_mean(-(conf[m] * log_p2).sum(dim=1), selected[m])
            terms["mix"] = terms["mix"] + self.mixup_term(net, x1, onehot[m], selected[m])
            if batch.epoch < self.hp["expand_epoch"]:
                terms["comp"] = terms["comp"] + masked_mean(complementary_rows(logits1[m], cands), ~selected[m])
        out = {k: torch.as_tensor(v, device=x1.device) for k, v in terms.items()}
        out["loss"] = out["ce1"] + w * (out["ce2"] + out["mix"] + out["comp"])
        out["share/selected"] = selected.float().mean()
        return out

    @torch.no_grad()
    def training_targets(self, targets, cands, idx, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(selected rows 2×B, their targets 2×B×K): the epoch's WD rows with their bank rows; from expand_epoch on,
        plus the WD joins (target s) and the UD joins (target sharpen(s)); updates u."""
        selected, conf = self.selected[:, idx], self.bank[:, idx]
        if epoch < self.hp["expand_epoch"]:
            return selected, conf
        entropy = normalized_entropy(targets, cands)
        wd, ud, pool = expansions(entropy, targets.argmax(dim=-1), selected, self.class_entropy, self.ud_entropy)
        conf = torch.where(wd[..., None], targets, conf)
        conf = torch.where(ud[..., None], sharpen(targets, self.hp["sharpen_tau"]), conf)
        self.ud_entropy.copy_(ud_threshold_update(self.ud_entropy, entropy, pool, self.hp["ud_ema"]))
        return selected | wd | ud, conf

    def mixup_term(self, net, x, onehot, keep) -> torch.Tensor:
        """Mixup of the selected rows among themselves towards their mixed one-hot targets (mean over them)."""
        lam = mixup_lambda(self.hp["mix_alpha"], x.device)
        partner = within_group_permutation(keep, torch.rand(len(x), device=x.device))
        mixed_target = lam * onehot + (1 - lam) * onehot[partner]
        log_p = F.log_softmax(net(lam * x + (1 - lam) * x[partner]).float(), dim=1)
        return masked_mean(-(mixed_target * log_p).sum(dim=1), keep)

    def after_step(self, batch: Batch):
        self.bank[:, batch.index] = self._new_rows

    def predict(self, x):
        return (self.nets[0](x) + self.nets[1](x)) / 2

    def features(self, x):
        return self.nets[0].features(x)

    def confidences(self):
        return self.bank.mean(dim=0)
