"""The evaluator: test accuracy, and label-free selection criteria on a candidate-only validation split."""

from __future__ import annotations

import torch

from .views import ViewMaker


@torch.no_grad()
def predict_logits(predict, images: torch.Tensor, maker: ViewMaker, batch_size: int = 1000) -> torch.Tensor:
    """Eval-mode logits of `predict` on the base view of uint8 images (stays on the images' device)."""
    return torch.cat([predict(maker(images[s:s + batch_size], "base", None)).float()
                      for s in range(0, len(images), batch_size)])


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return (logits.argmax(dim=1) == labels).float().mean()


def covering_rate(logits: torch.Tensor, cands: torch.Tensor) -> torch.Tensor:
    """CR = mean 1[ŷ ∈ S]."""
    pred = logits.argmax(dim=1)
    return cands.gather(1, pred[:, None]).squeeze(1).float().mean()


def approximated_accuracy(logits: torch.Tensor, cands: torch.Tensor) -> torch.Tensor:
    """AA = mean 1[ŷ ∈ S]·p_ŷ / Σ_{k∈S} p_k."""
    p = torch.softmax(logits.float(), dim=1)
    pred = p.argmax(dim=1, keepdim=True)
    inside = cands.gather(1, pred).squeeze(1).float()
    return (inside * p.gather(1, pred).squeeze(1) / (p * cands).sum(dim=1).clamp_min(1e-30)).mean()
