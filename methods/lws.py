"""LWS (Wen et al., ICML 2021, "Leveraged weighted loss for partial label learning"), as in PLENCH.

docs/spec/methods.md §8. A sigmoid loss ψ(t) = 1/(1+e^t) weighted per label: candidates are pushed up with weight λ0·w,
non-candidates down with weight λ1·w. The weights w (initialised 1/K on every label [PLENCH]) are refreshed each
step to nS(p) + nS̄(p), each denominator being the masked row sum + K·1e-8 (PLENCH adds 1e-8 to each of the K
masked entries before summing). λ0 = 1, λ1 = 2 [PLENCH default; the LWS paper uses {1, 2}].
Deviation [ours, shared bank step order]: w comes from this step's pre-step outputs, not a second forward.
"""

from __future__ import annotations

import torch

from pllbench.losses import renormalize
from pllbench.method import HP, Batch, ClassifierMethod, register_method
from pllbench.tune_space import choice


def lws_loss(logits: torch.Tensor, cands: torch.Tensor, weights: torch.Tensor, lambda0: float,
             lambda1: float) -> torch.Tensor:
    """mean_i [λ0·Σ_{j∈S} w_ij·ψ(z_ij) + λ1·Σ_{j∉S} w_ij·ψ(−z_ij)], ψ(t) = sigmoid(−t)."""
    logits = logits.float()
    inside = (cands * weights * torch.sigmoid(-logits)).sum(dim=1)
    outside = ((1 - cands) * weights * torch.sigmoid(logits)).sum(dim=1)
    return (lambda0 * inside + lambda1 * outside).mean()


def lws_update(logits: torch.Tensor, cands: torch.Tensor) -> torch.Tensor:
    """New weight rows nS(p) + nS̄(p), denominators + K·1e-8."""
    p = torch.softmax(logits.detach().float(), dim=1)
    eps = p.shape[1] * 1e-8
    return renormalize(p, cands, eps) + renormalize(p, 1 - cands, eps)


@register_method("lws")
class LWS(ClassifierMethod):
    summary = "LWS (ICML'21): leveraged weighted sigmoid loss over candidates and non-candidates"
    hparams = {  # each declared once: default, meaning, range (`pllbench describe`)
        "lambda0": HP(1.0, "weight λ0 of the candidates' sigmoid loss", low=0),
        "lambda1": HP(2.0, "weight λ1 of the non-candidates' sigmoid loss", low=0, tune=choice(1.0, 2.0)),
    }

    def __init__(self, ctx, hp):
        super().__init__(ctx, hp)
        self.register_buffer("weights", torch.full((ctx.num_train, ctx.num_classes), 1.0 / ctx.num_classes))

    def training_step(self, batch: Batch):
        logits = self.net(batch.views["cls"])
        self._new_rows = lws_update(logits, batch.candidates)
        loss = lws_loss(logits, batch.candidates, self.weights[batch.index], self.hp["lambda0"], self.hp["lambda1"])
        return {"loss": loss}

    def after_step(self, batch: Batch):
        self.weights[batch.index] = self._new_rows

    def confidences(self):
        return self.weights
