"""DIRK (Wu et al., AAAI 2024) and DIRK-REF: EMA-teacher distillation of rectified confidences.

methods.md §3, official code wu-dd/DIRK. `dirk` is λ = 0, `dirk-ref` adds the weighted contrastive term (λ = 1).
Deviations [ours]: the queue's empty candidate rows are zeros (the official random normals make empty slots
spurious positives until the queue first fills); `dirk` keeps the no-grad strong forward through S (so the
student's BN statistics see strong views as in the official run) but skips the teacher key forward and the
queues, which have no effect at λ = 0; `ref_forwards=false` also skips the strong forward.
"""

from __future__ import annotations

import torch

from pllbench.losses import moco_loss, remove_self, soft_cross_entropy, weighted_contrastive_loss
from pllbench.method import Batch, EMATeacherMethod, register_method
from pllbench.queue import RingQueue


def rectify(p: torch.Tensor, cands: torch.Tensor) -> torch.Tensor:
    """R(p, Y): mix the candidate and non-candidate renormalised confidences so every candidate outranks every
    non-candidate; Σ = 1."""
    inside = p * cands
    outside = p * (1 - cands)
    pos = inside / inside.sum(dim=1, keepdim=True)
    neg = outside / (outside.sum(dim=1, keepdim=True) + 1e-20)
    c_max = neg.max(dim=1, keepdim=True).values
    s_min = pos.masked_fill(cands == 0, float("inf")).min(dim=1, keepdim=True).values
    m = 1.0 / inside.sum(dim=1, keepdim=True)
    a = m * c_max / (m * c_max + s_min)
    a = torch.where(a == 0, torch.ones_like(a), a)
    return a * pos + (1 - a) * neg


def ref_mask(cands_anchor, cands_all, dist_anchor, dist_all) -> torch.Tensor:
    """M_ac = 1[⟨Y_a, Ŷ_c⟩ > 0]·1[argmax D_a = argmax D_c], self removed."""
    overlap = (cands_anchor @ cands_all.t()) > 0
    same_top = dist_anchor.argmax(dim=1)[:, None] == dist_all.argmax(dim=1)[None, :]
    return remove_self((overlap & same_top).float())


@register_method("dirk")
class DIRK(EMATeacherMethod):
    summary = "DIRK (AAAI'24): EMA teacher, rectified confidences distilled by cross-entropy"
    views = ("cls", "strong")
    hparams = {"ref_weight": 0.0, "tau": 0.07, "tau_d": 0.4, "ema": 0.99, "queue_size": 4096, "prot_start": 1,
               "ref_forwards": True}

    def __init__(self, ctx, hp):
        super().__init__(ctx, hp)
        k = ctx.num_classes
        self.use_ref = hp["ref_weight"] > 0
        if self.use_ref:
            self.queue = RingQueue(hp["queue_size"], {"feat": ((ctx.proj_dim,), torch.float32, "unit"),
                                                      "rec": ((k,), torch.float32, "zeros"),
                                                      "cands": ((k,), torch.float32, "zeros")})

    def training_step(self, batch: Batch):
        x_cls, cands = batch.views["cls"], batch.candidates
        with torch.no_grad():
            self.teacher.train()
            rec = rectify(torch.softmax(self.teacher.logits(x_cls).float(), dim=1), cands)
        logits = self.student.logits(x_cls)
        loss_teach = soft_cross_entropy(logits, rec)
        out = {"teach": loss_teach}
        if not self.use_ref:
            if self.hp["ref_forwards"]:
                with torch.no_grad():
                    self.student.project(batch.views["strong"])
            out["loss"] = loss_teach
            return out
        with torch.no_grad():
            key = self.teacher.project(batch.views["weak"]).float()
            snap = self.queue.snapshot()
            self.queue.enqueue(feat=key, rec=rec, cands=cands)
        query = self.student.project(batch.views["strong"]).float()
        if batch.epoch >= self.hp["prot_start"]:
            feats = torch.cat([query, key, snap["feat"]])
            dists = torch.cat([rec, rec, snap["rec"]])
            all_cands = torch.cat([cands, cands, snap["cands"]])
            mask = ref_mask(cands, all_cands, rec, dists)
            loss_ref = weighted_contrastive_loss(query, feats, mask, dists, self.hp["tau"], self.hp["tau_d"])
        else:
            loss_ref = moco_loss(query, key, snap["feat"], self.hp["tau"])
        out.update(ref=loss_ref, loss=loss_teach + self.hp["ref_weight"] * loss_ref)
        return out


@register_method("dirk-ref")
class DIRKREF(DIRK):
    summary = "DIRK-REF: DIRK plus the weighted contrastive representation term (lambda = 1)"
    views = ("cls", "weak", "strong")
    hparams = {**DIRK.hparams, "ref_weight": 1.0}
    family = "dirk"


