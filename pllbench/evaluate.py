"""The evaluator: test accuracy, and label-free selection criteria on a candidate-only validation split."""

from __future__ import annotations

import torch

from .views.maker import ViewMaker

COLLAPSE_COSINE = 0.99  # a mean pairwise cosine of the test projections above this is a collapsed head



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


@torch.no_grad()
def mean_pairwise_cosine(z: torch.Tensor) -> float:
    """Mean cosine over distinct pairs of the rows of z (L2-normalised here): (‖Σ ẑ‖² − n) / (n(n−1)).
    1 when every row points the same way (a collapsed projection), about 0 for spread-out rows."""
    z = torch.nn.functional.normalize(z.double(), dim=1)
    n = len(z)
    return float((z.sum(dim=0).square().sum() - n) / (n * (n - 1)))


@torch.no_grad()
def effective_rank(z: torch.Tensor) -> float:
    """exp of the entropy of the normalised singular values of z (Roy & Vetterli, 2007): 1 for a rank-one matrix,
    r for r orthogonal rows of equal norm."""
    s = torch.linalg.svdvals(z.double())
    p = s / s.sum()
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


@torch.no_grad()
def projection_diagnostics(project, images: torch.Tensor, maker: ViewMaker, limit: int = 2000,
                           batch_size: int = 1000) -> dict[str, float]:
    """Collapse diagnostics of a method's projection head on the base view of the first `limit` test images."""
    z = torch.cat([project(maker(images[s:s + batch_size], "base", None)).float()
                   for s in range(0, min(limit, len(images)), batch_size)])
    return {"proj/mean_cos": mean_pairwise_cosine(z), "proj/eff_rank": effective_rank(z)}


def projection_collapsed(cosines: list[float]) -> bool:
    """A run's projection collapsed when its mean cosine ends above COLLAPSE_COSINE, or stays above it for at least
    half the epochs: a head that escapes late trains for too few (docs/calibration.md, "Collapse")."""
    if not cosines:
        return False
    return cosines[-1] > COLLAPSE_COSINE or 2 * collapsed_epochs(cosines) >= len(cosines)


def collapsed_epochs(cosines: list[float]) -> int:
    """The epochs whose mean cosine is above COLLAPSE_COSINE."""
    return sum(c > COLLAPSE_COSINE for c in cosines)
