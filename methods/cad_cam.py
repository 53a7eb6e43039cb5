"""CAD-CAM: CAD with edits made online from the EMA teacher's class activation maps (docs/spec/methods.md §2).

Each step, before CAD's teacher pass, the teacher (train mode, as left by the last EMA update) forwards the base
view; for every instance i and candidate s the CAM a_s = ReLU(Σ_c W_T[s,c]·G_c) of its last conv map G is min-max
normalised (+1e-8), bilinearly upsampled to the image (align_corners false), and the edit keeps the attributed
regions and dims the rest: E = a⊙x̃ + ε·(1 − a)⊙x̃ with x̃ the base image in [0,1] and ε = `eps` (0.2). Everything
else, the ablations included, is CAD's (methods/cad.py). The paper gives the formula only: the CAM layer, the
normalisation, ε, the timing and the train-mode teacher forward are the project's choices [D6].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pllbench.method import HP, ArtifactRequest, Batch, register_method
from pllbench.methods.cad import CAD, register_ablations
from pllbench.tune_space import uniform


def cam_edits(fmap: torch.Tensor, fc_weight: torch.Tensor, images: torch.Tensor, owner: torch.Tensor,
              label: torch.Tensor, eps: float) -> torch.Tensor:
    """E_a = m_a⊙x_{owner_a} + ε·(1 − m_a)⊙x_{owner_a}, m_a = the normalised, upsampled CAM of class label_a."""
    cams = torch.relu(torch.einsum("bchw,kc->bkhw", fmap, fc_weight)[owner, label])
    low = cams.amin(dim=(1, 2), keepdim=True)
    high = cams.amax(dim=(1, 2), keepdim=True)
    cams = (cams - low) / (high - low + 1e-8)
    masks = F.interpolate(cams[:, None], size=images.shape[-2:], mode="bilinear", align_corners=False)
    return images[owner] * (masks + eps * (1 - masks))


@register_method("cad-cam")
class CADCAM(CAD):
    summary = "CAD-CAM: CAD with online edits from the EMA teacher's class activation maps"
    views = ("base", "cls")
    hparams = {**{k: v for k, v in CAD.hparams.items() if k not in ("editor", "edits")},  # CAD's declarations
               "eps": HP(0.2, "brightness kept outside the teacher's class activation map", low=0, high=1,
                         tune=uniform(0.0, 0.5))}
    preset_hparams = {}  # the family's (CAD's) apply: quick's teacher_init; its editor keys are not declared here

    @classmethod
    def run_label(cls, hp: dict) -> str:
        return cls.name

    def open_edit_source(self):
        return None  # edits are made online from the teacher

    @classmethod
    def ensure_artifacts(cls, hp: dict, request: ArtifactRequest) -> None:
        """No stored edits to make (CAD's reads its `editor`, which CAD-CAM does not declare)."""

    def edits(self, batch: Batch):
        x_base = batch.views["base"]
        owner, label = batch.candidates.nonzero(as_tuple=True)
        with torch.no_grad():
            self.teacher.train()
            fmap = self.teacher.backbone.feature_map(x_base)
            with torch.autocast(x_base.device.type, enabled=False):
                images = self.ctx.views.unnormalize(x_base.float()).clamp(0, 1)
                edits = cam_edits(fmap.float(), self.teacher.fc.weight.float(), images, owner, label,
                                  self.hp["eps"])
        return edits, owner, label


register_ablations(CADCAM)
