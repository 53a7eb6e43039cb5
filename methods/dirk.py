"""DIRK (Wu et al., AAAI 2024) and DIRK-REF: EMA-teacher distillation of rectified confidences.

docs/spec/methods.md §3, official code wu-dd/DIRK. `dirk` is λ = 0, `dirk-ref` adds the weighted contrastive term (λ =
1). Deviations [ours]: the queue's empty candidate rows are zeros (the official random normals make empty slots
spurious positives until the queue first fills); `dirk` keeps the no-grad strong forward through S (so the
student's BN statistics see strong views as in the official run) but skips the teacher key forward and the
queues, which have no effect at λ = 0; `ref_forwards=false` also skips the strong forward. Preset `quick` only: the
EMA teacher starts as a copy of the student (`teacher_init=student`; official: its own random initialisation), for
DIRK and DIRK-REF alike (and the CAD family), since with a separately initialised teacher DIRK-REF's projection head
can stay collapsed for most of quick's 15 epochs (docs/calibration.md, "Collapse"). Plain DIRK has no head; what
the copy changes for it is measured in docs/calibration.md, and quick's board also runs it with the official
`teacher_init=separate`.
"""

from __future__ import annotations

import torch

from pllbench.losses import (
    contrastive_chance,
    moco_chance,
    moco_loss,
    remove_self,
    soft_cross_entropy,
    weighted_contrastive_loss,
)
from pllbench.method import HP, Batch, EMATeacherMethod, check_at_least_batch, register_method
from pllbench.queue import RingQueue
from pllbench.tune_space import choice, log_uniform, uniform


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
    # quick's teacher starts as the student, or DIRK-REF's head can stay collapsed for most of 15 epochs
    # (docs/calibration.md); plain DIRK shares it so the family (and CAD, a DIRK fork) keeps one teacher shell
    preset_hparams = {"quick": {"teacher_init": "student"}}
    hparams = {  # each declared once: default, meaning, range (`pllbench describe`)
        "ref_weight": HP(0.0, "weight λ of the weighted contrastive REF term (0: plain DIRK, no queues, no key "
                              "forwards)", low=0),
        "tau": HP(0.07, "temperature τ of the REF term (WCL; MoCo before prot_start)", low=0, low_open=True),
        "tau_d": HP(0.4, "temperature τ_d of the WCL positive weights (cosine of the rectified confidences)",
                    low=0, low_open=True),
        "queue_size": HP(4096, "rows Q of the key, confidence and candidate queues (REF only)", low=1,
                         note=">= batch"),
        "prot_start": HP(1, "first epoch of the WCL term; earlier epochs use MoCo", low=0),
        "ref_forwards": HP(True, "at λ = 0, keep the no-grad strong forward that moves the student's BN statistics"),
        **EMATeacherMethod.hparams,  # the shell's own (ema, teacher_init)
        "ema": EMATeacherMethod.hp_specs["ema"].with_tune(choice(0.5, 0.9, 0.99)),
    }

    @classmethod
    def views_for(cls, hp: dict) -> tuple[str, ...]:
        """The REF term (λ > 0) reads the weak view (teacher keys) as well as cls and strong."""
        return ("cls", "weak", "strong") if hp["ref_weight"] > 0 else tuple(cls.views)

    @classmethod
    def check_hparams(cls, hp: dict, run: dict) -> None:
        if hp["ref_weight"] > 0:  # plain DIRK has no queue
            check_at_least_batch(cls.name, "queue_size", hp, run, "every REF step enqueues a whole batch of keys")

    def __init__(self, ctx, hp):
        super().__init__(ctx, hp)
        k = ctx.num_classes
        self.use_ref = self.uses_projection = hp["ref_weight"] > 0
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
            chance = contrastive_chance(len(feats), self.hp["tau"])
        else:
            loss_ref = moco_loss(query, key, snap["feat"], self.hp["tau"])
            chance = moco_chance(len(snap["feat"]))
        out.update({"ref": loss_ref, "chance/ref": chance, "loss": loss_teach + self.hp["ref_weight"] * loss_ref})
        return out


@register_method("dirk-ref")
class DIRKREF(DIRK):
    summary = "DIRK-REF: DIRK plus the weighted contrastive representation term (lambda = 1)"
    views = ("cls", "weak", "strong")
    hparams = {**DIRK.hparams,  # the REF term's own hyperparameters are tuned only where the term is on
               "ref_weight": DIRK.hp_specs["ref_weight"].with_tune(uniform(0.1, 1.0), default=1.0),
               "tau": DIRK.hp_specs["tau"].with_tune(log_uniform(0.03, 0.1)),
               "tau_d": DIRK.hp_specs["tau_d"].with_tune(uniform(0.2, 0.6))}
    family = "dirk"


