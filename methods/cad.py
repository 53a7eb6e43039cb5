"""CAD (CVPR'26): EMA-teacher weighted penalty distillation plus alignment over class-specific edits.

docs/spec/methods.md §1 (official CAD code, a fork of DIRK; see methods/dirk.py). The teacher's confidences,
renormalised separately over the candidates and the non-candidates (posneg), weight −log p on the candidates and −log(1
− p) on the non-candidates. One edit per instance and candidate label feeds a weighted contrastive loss whose positives
are the edits of the same class (the other edits of the same image are hard negatives), weighted by the similarity of
the teacher's logits on the edits; epoch < prot_start uses MoCo instead.

Editors (hyperparameter `editor`): `ip2p` (the paper's, default) or any other stored edit artifact for the run's
candidates (pllbench/cad_edits/edits.py; `edits` pins one by hash prefix), or `identity` (E_{i,s} = the base image, made
on the fly; a control, labelled `cad[identity]` by `run_label`). Ablations: `-norl` (λ = 0, no edit forwards at all),
`-noca` (no non-candidate term), `-noboth`.

Deviations and choices [ours]:
- log(1 − p) is computed exactly (pllbench.losses.log1m_softmax) instead of the official log(1 − p + 1e-20).
- The official third student forward through the unused `fc_neg` head (it only moves BN statistics) is dropped.
- Edits are keyed by the candidate artifact hash (official: by dataset only, so seeds ≠ 0 got mismatched edits).
- The teacher and the student forward each input set separately (x^c, E^w, E^c for T; x^c, E^s for S), so every
  forward normalises with its own batch statistics, as DIRK does for its views.
- Edit views are drawn after the teacher's x^c forward, from the run's view generator, outside autocast.
- A batch with more edits than queue rows (A > Q) stops with a one-line error instead of an assert.
- How the paper implemented the ablations is unknown; the flags above are the project's reading (D5).
- Preset `quick` only: the EMA teacher starts as a copy of the student (`teacher_init=student`; official: its own
  random initialisation), for CAD, CAD-CAM and their ablations, as for DIRK: with a separately initialised teacher
  the projection head can stay collapsed for most of quick's 15 epochs (docs/calibration.md, "Collapse").
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pllbench.cad_edits.edits import augment_command, find_edits, open_edits
from pllbench.errors import PllbenchError
from pllbench.losses import (
    contrastive_chance,
    log1m_softmax,
    moco_chance,
    moco_loss,
    remove_self,
    weighted_contrastive_loss,
)
from pllbench.method import HP, ArtifactRequest, Batch, EMATeacherMethod, register_method
from pllbench.queue import RingQueue
from pllbench.tune_space import choice, log_uniform


def posneg_weights(p: torch.Tensor, cands: torch.Tensor) -> torch.Tensor:
    """ω: p renormalised over the candidates, and separately over the non-candidates (+1e-20; zero if none)."""
    inside, outside = p * cands, p * (1 - cands)
    return inside / inside.sum(dim=1, keepdim=True) + outside / (outside.sum(dim=1, keepdim=True) + 1e-20)


def weighted_penalty_loss(logits: torch.Tensor, weights: torch.Tensor, cands: torch.Tensor,
                          penalize_noncandidates: bool = True) -> torch.Tensor:
    """(1/B)·Σ_i [−Σ_{j∈S_i} ω_ij·log p_ij − Σ_{j∉S_i} ω_ij·log(1 − p_ij)], the second sum optional."""
    loss = -(weights * cands * F.log_softmax(logits, dim=1)).sum(dim=1)
    if penalize_noncandidates:
        loss = loss - (weights * (1 - cands) * log1m_softmax(logits)).sum(dim=1)
    return loss.mean()


def class_mask(anchor_labels: torch.Tensor, all_labels: torch.Tensor) -> torch.Tensor:
    """M_ac = 1[l_a = l_c] with the self column removed (anchors are the first rows of the contrast set)."""
    return remove_self((anchor_labels[:, None] == all_labels[None, :]).float())


@register_method("cad")
class CAD(EMATeacherMethod):
    summary = "CAD (CVPR'26): EMA-teacher weighted penalty + alignment over class-specific edits (stored edits)"
    family = "cad"
    views = ("cls",)
    hparams = {  # each declared once: default, meaning, range (`pllbench describe`)
        "editor": HP("ip2p", "edit source: ip2p = InstructPix2Pix edits made by `pllbench augment` (the paper's); "
                             "identity = the unedited image (a control)", note="ip2p, identity, stored"),
        "edits": HP("", "pin one stored edit artifact when several match the run's candidates",
                    note="hash prefix or ''"),
        "align_weight": HP(1.5, "weight λ of the alignment term over the edits (0: no edit forwards, as cad-norl)",
                           low=0, tune=log_uniform(0.3, 3.0)),
        "penalize_noncandidates": HP(True, "include the −ω·log(1 − p) penalty on the non-candidates in L_cls"),
        "tau": HP(0.12, "temperature τ of the alignment term (WCL; MoCo before prot_start)", low=0, low_open=True,
                  tune=log_uniform(0.05, 0.3)),
        "tau_d": HP(0.1, "temperature τ_d of the WCL weights (cosine of the teacher's logits on the edits)", low=0,
                    low_open=True, tune=log_uniform(0.05, 0.5)),
        "queue_size": HP(4096, "rows Q of the edit key, logit and class queues", low=1, note=">= edits per batch"),
        "prot_start": HP(1, "first epoch of the WCL term; earlier epochs use MoCo", low=0),
        **EMATeacherMethod.hparams,  # the shell's own (ema, teacher_init)
        "ema": EMATeacherMethod.hp_specs["ema"].with_tune(choice(0.5, 0.9, 0.99)),  # as DIRK's
    }
    # the CPU presets train with the identity editor (a control, labelled cad[identity]; see `pllbench augment`);
    # quick's teacher starts as the student, or the head can stay collapsed for most of 15 epochs (docs/calibration.md)
    preset_hparams = {"quick": {"editor": "identity", "teacher_init": "student"}, "smoke": {"editor": "identity"}}

    def __init__(self, ctx, hp):
        super().__init__(ctx, hp)
        self.align = self.uses_projection = hp["align_weight"] > 0
        if self.align:
            self.queue = RingQueue(hp["queue_size"], {"feat": ((ctx.proj_dim,), torch.float32, "unit"),
                                                      "logit": ((ctx.num_classes,), torch.float32, "zeros"),
                                                      "label": ((), torch.long, "minus_one")})
            self.edit_source = self.open_edit_source()

    @classmethod
    def run_label(cls, hp: dict) -> str:
        if hp["align_weight"] > 0 and hp["editor"] != "ip2p":
            return f"{cls.name}[{hp['editor']}]"
        return cls.name

    def open_edit_source(self):
        return open_edits(self.ctx, self.hp["editor"], self.hp["edits"])

    @classmethod
    def ensure_artifacts(cls, hp: dict, request: ArtifactRequest) -> None:
        """Stored edits on demand: made by `pllbench augment`'s code when the editor's model is available (the
        Hugging Face cache, or --download); otherwise one line naming the command that makes them."""
        if hp["align_weight"] <= 0 or hp["editor"] == "identity" or hp["edits"]:
            return
        if find_edits(request.cache, request.candidates_hash, hp["editor"]) is not None:
            return
        command = augment_command(request.dataset, request.preset, request.candidate_seed, hp["editor"])
        try:
            from pllbench.cad_edits.augment import DEFAULT_MODEL, TINY, augment, resolve_model
        except ImportError:  # the optional `augment` extra (diffusers) is not installed
            raise PllbenchError(f"{cls.name}: no {hp['editor']!r} edits for candidates {request.candidates_hash} and "
                                f"diffusers is not installed (pip install 'pllbench[augment]'); then `{command}`, "
                                f"or use --hp editor=identity") from None
        try:
            model = resolve_model(TINY if hp["editor"] == TINY else DEFAULT_MODEL, request.download)
        except PllbenchError as exc:
            raise PllbenchError(f"{cls.name}: cannot make the {hp['editor']!r} edits here ({exc}); make them with "
                                f"`{command} --model DIR`, or use --hp editor=identity") from None
        request.echo(f"{cls.name}: making the {hp['editor']!r} edits of candidates {request.candidates_hash} "
                     f"(as `{command}` does)")
        augment(request.dataset, request.preset, request.candidate_seed, model=model, cache=request.cache,
                device=request.device, root=request.data_root, download=request.download, progress=False,
                echo=request.echo)

    def edits(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(edits as float RGB in [0,1] (A×3×H×W), owner position in the batch, class id), store order."""
        edits, owner, label = self.edit_source.gather(batch.index, batch.candidates)
        return self.ctx.views.to_unit(edits), owner, label

    def training_step(self, batch: Batch):
        x_cls, cands = batch.views["cls"], batch.candidates
        if self.align:
            edits, owner, label = self.edits(batch)
        with torch.no_grad():
            self.teacher.train()
            weights = posneg_weights(torch.softmax(self.teacher.logits(x_cls).float(), dim=1), cands)
        loss_cls = weighted_penalty_loss(self.student.logits(x_cls).float(), weights, cands,
                                         self.hp["penalize_noncandidates"])
        if not self.align:
            return {"cls": loss_cls, "loss": loss_cls}
        if len(label) > self.queue.size:
            raise PllbenchError(f"{self.name}: a batch has {len(label)} edits but queue_size is {self.queue.size}; "
                                f"raise it with --hp queue_size=N")
        with torch.autocast(edits.device.type, enabled=False):
            e_weak, e_strong, e_cls = [self.ctx.views.from_unit(edits, view, batch.generator)
                                       for view in ("weak", "strong", "cls")]
        with torch.no_grad():
            key = self.teacher.project(e_weak).float()
            edit_logits = self.teacher.logits(e_cls).float()
            snap = self.queue.snapshot()
            self.queue.enqueue(feat=key, logit=edit_logits, label=label)
        query = self.student.project(e_strong).float()
        if batch.epoch >= self.hp["prot_start"]:
            feats = torch.cat([query, key, snap["feat"]])
            labels = torch.cat([label, label, snap["label"]])
            dists = torch.cat([edit_logits, edit_logits, snap["logit"]])
            loss_align = weighted_contrastive_loss(query, feats, class_mask(label, labels), dists, self.hp["tau"],
                                                   self.hp["tau_d"])
            chance = contrastive_chance(len(feats), self.hp["tau"])
        else:
            loss_align = moco_loss(query, key, snap["feat"], self.hp["tau"])
            chance = moco_chance(len(snap["feat"]))
        return {"cls": loss_cls, "align": loss_align, "chance/align": chance,
                "loss": loss_cls + self.hp["align_weight"] * loss_align}


ABLATIONS = {
    "norl": ({"align_weight": 0.0}, "without the alignment term (lambda = 0, no edit forwards)"),
    "noca": ({"penalize_noncandidates": False}, "without the non-candidate penalty term"),
    "noboth": ({"align_weight": 0.0, "penalize_noncandidates": False}, "without both terms"),
}


def register_ablations(base: type[CAD]) -> None:
    """Register `<base>-norl`, `<base>-noca` and `<base>-noboth` as hyperparameter variants of `base`. A variant's
    pinned values are not tuned, nor are the alignment term's temperatures once the term is off."""
    for suffix, (overrides, what) in ABLATIONS.items():
        untuned = set(overrides) | ({"tau", "tau_d"} if overrides.get("align_weight") == 0 else set())
        pinned = {k: base.hp_specs[k].with_tune(None, default=overrides.get(k, base.hparams[k])) for k in untuned}
        variant = type(f"{base.__name__}_{suffix}", (base,), {
            "__module__": base.__module__, "__doc__": f"{base.name} {what}.",
            "summary": f"{base.name} ablation: {what}", "hparams": {**base.hparams, **pinned}})
        register_method(f"{base.name}-{suffix}")(variant)


register_ablations(CAD)
