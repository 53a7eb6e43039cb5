"""PiCO (Wang et al., ICLR 2022, "Contrastive label disambiguation for partial label learning"), single process.

docs/spec/methods.md §6, official code hbzju/PiCO. A query encoder E_q (SupConNet) and a momentum key encoder E_k (a
copy of E_q at init, m = 0.999, parameters only) feed a MoCo-style SupCon loss whose positives share the classifier's
pseudo-label argmax_{j∈S} p_j. Class prototypes μ (an EMA of the query embeddings, γ = 0.99, rows L2-normalised)
disambiguate: from epoch prot_start on, each bank row moves towards the one-hot candidate whose prototype is nearest,
s ← φ·s + (1−φ)·onehot, with φ going 0.95 → 0.8 linearly over the run. Epoch 0 uses plain MoCo.

Deviations:
- Single process [D9]: no DDP, no all-gather, no batch shuffle of the key forward.
- The prototype EMA over the batch runs vectorised: for class c with members r_1..r_n in batch order,
  μ_c ← γ^n·μ_c + (1−γ)·Σ_t γ^{n−t}·q_{r_t}, then L2-normalise — identical to the official sequential loop.
- The pseudo-label argmax of p·Y is taken over the candidates' logits (identical unless every candidate's softmax
  underflows to 0).
- φ runs one epoch ahead of the official schedule: epoch e uses φ_e where the official uses φ_{e−1} (it updates φ
  after each epoch), i.e. (0.95 − 0.8)/E lower at every epoch from prot_start on. PiCO+ follows the official order.
- The official candidate generator (uniform) is replaced by pllbench's; the official logs report the best test
  accuracy over epochs, pllbench the final epoch [D3].
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from pllbench.losses import (
    candidate_argmax,
    contrast_log_prob,
    contrastive_chance,
    moco_chance,
    moco_loss,
    remove_self,
    renormalize,
    soft_cross_entropy,
)
from pllbench.method import HP, Batch, Method, check_at_least_batch, register_method
from pllbench.nets import ema_update
from pllbench.queue import RingQueue
from pllbench.tune_space import choice, log_uniform


def prototype_ema(prototypes: torch.Tensor, feats: torch.Tensor, labels: torch.Tensor, momentum: float,
                  keep: torch.Tensor | None = None):
    """The batch-order EMA μ_y ← γ·μ_y + (1−γ)·q for each (q, y) in turn, then row-normalised, in closed form.

    `keep` (B bool, optional): only these rows update (PiCO+'s reliable rows); the others are skipped."""
    onehot = F.one_hot(labels, prototypes.shape[0]).to(feats.dtype)
    if keep is not None:
        onehot = onehot * keep[:, None].to(feats.dtype)
    counts = onehot.sum(dim=0)
    rank = (onehot.cumsum(dim=0) * onehot).sum(dim=1)  # 1-based position of each sample among its class's members
    later = counts[labels] - rank  # members of the same class after this one
    weight = (1 - momentum) * momentum ** later
    if keep is not None:
        weight = weight * keep.to(feats.dtype)
    summed = torch.zeros_like(prototypes).index_add_(0, labels, weight[:, None] * feats)
    return F.normalize(prototypes * momentum ** counts[:, None] + summed, dim=1)


def phi_schedule(epoch: int, epochs: int, start: float, end: float) -> float:
    """φ_e = start + (end − start)·e/E during epoch e (0.95 → 0.8 by default). The official code sets this value
    after epoch e, so its epoch e uses φ_{e−1} (epoch 0: 0.99): a one-epoch shift, listed in the deviations."""
    return start + (end - start) * epoch / epochs


def supcon_loss(q: torch.Tensor, feats: torch.Tensor, mask: torch.Tensor, tau: float,
                tau_base: float = 0.07, weights: torch.Tensor | None = None) -> torch.Tensor:
    """−(τ/τ_b)·mean_a [w_a·Σ_c M_ac·ℓ_ac / Σ_c M_ac], ℓ from `contrast_log_prob`; `mask` has the self column
    removed; `weights` w (B, optional: 1) weigh the anchors (PiCO+'s reliable and kNN rows)."""
    log_prob = contrast_log_prob(q, feats, tau)
    per_anchor = (mask * log_prob).sum(dim=1) / mask.sum(dim=1)
    if weights is not None:
        per_anchor = per_anchor * weights
    return -(tau / tau_base) * per_anchor.mean()


@register_method("pico")
class PiCO(Method):
    summary = "PiCO (ICLR'22): MoCo SupCon on pseudo-labels, prototype-based label disambiguation"
    views = ("weak", "strong")
    hparams = {  # each declared once: default, meaning, range (`pllbench describe`)
        "queue_size": HP(8192, "rows of the key feature and pseudo-label queue", low=1, note=">= batch"),
        "ema": HP(0.999, "momentum m of the key encoder", low=0, high=1, high_open=True,
                  tune=choice(0.9, 0.99, 0.999)),
        "proto_ema": HP(0.99, "momentum γ of the class prototypes", low=0, high=1, high_open=True,
                        tune=choice(0.9, 0.99)),
        "cont_weight": HP(0.5, "weight λ of the contrastive term", low=0, tune=log_uniform(0.25, 1.0)),
        "prot_start": HP(1, "first epoch of prototype disambiguation and SupCon; earlier epochs use MoCo", low=0),
        "tau": HP(0.07, "temperature of the contrastive term", low=0, low_open=True),
        "phi_start": HP(0.95, "moving-average factor φ of the label update at epoch 0", low=0, high=1),
        "phi_end": HP(0.8, "φ at the last epoch (linear from phi_start)", low=0, high=1),
    }

    @classmethod
    def check_hparams(cls, hp: dict, run: dict) -> None:
        check_at_least_batch(cls.name, "queue_size", hp, run, "every step enqueues a whole batch of keys")

    def __init__(self, ctx, hp):
        super().__init__(ctx, hp)
        self.query_net = ctx.supcon_net()
        self.key_net = copy.deepcopy(self.query_net)
        for p in self.key_net.parameters():
            p.requires_grad_(False)
        self.queue = RingQueue(hp["queue_size"], {"feat": ((ctx.proj_dim,), torch.float32, "unit"),
                                                  "label": ((), torch.long, "minus_one")})
        cands = ctx.candidates.float()
        self.register_buffer("bank", renormalize(cands, cands).cpu())
        self.register_buffer("prototypes", torch.zeros(ctx.num_classes, ctx.proj_dim))

    def training_step(self, batch: Batch):
        cands, hp = batch.candidates, self.hp
        logits, query = self.query_net(batch.views["weak"])
        query = query.float()
        pseudo = candidate_argmax(logits.detach().float(), cands)
        with torch.no_grad():
            score = torch.softmax(query.detach() @ self.prototypes.t(), dim=1)
            self.prototypes.copy_(prototype_ema(self.prototypes, query.detach(), pseudo, hp["proto_ema"]))
            ema_update(self.key_net, self.query_net, hp["ema"])
            key = self.key_net.project(batch.views["strong"]).float()
            snap = self.queue.snapshot()
            self.queue.enqueue(feat=key, label=pseudo)
        if batch.epoch >= hp["prot_start"]:
            phi = phi_schedule(batch.epoch, self.ctx.epochs, hp["phi_start"], hp["phi_end"])
            nearest = F.one_hot(candidate_argmax(score, cands), cands.shape[1]).float()
            self.bank[batch.index] = phi * self.bank[batch.index] + (1 - phi) * nearest
            feats = torch.cat([query, key, snap["feat"]])
            labels = torch.cat([pseudo, pseudo, snap["label"]])
            mask = remove_self((pseudo[:, None] == labels[None, :]).float())
            loss_cont = supcon_loss(query, feats, mask, hp["tau"])
            chance = contrastive_chance(len(feats), hp["tau"])
        else:
            loss_cont = moco_loss(query, key, snap["feat"], hp["tau"])
            chance = moco_chance(len(snap["feat"]))
        loss_cls = soft_cross_entropy(logits, self.bank[batch.index])
        return {"cls": loss_cls, "cont": loss_cont, "chance/cont": chance,
                "loss": loss_cls + hp["cont_weight"] * loss_cont}

    def predict(self, x):
        return self.query_net.logits(x)

    def features(self, x):
        return self.query_net.features(x)

    def projections(self, x):
        return self.query_net.project(x)

    def confidences(self):
        return self.bank
