"""Loss kernels shared by several methods: pure functions of tensors (docs/spec/methods.md §0)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def renormalize(values: torch.Tensor, mask: torch.Tensor, eps: float = 0.0) -> torch.Tensor:
    """nS(v): v⊙mask / Σ v⊙mask (row-wise)."""
    masked = values * mask
    return masked / (masked.sum(dim=1, keepdim=True) + eps)


def soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """−(1/B)·Σ_i Σ_j t_ij·log_softmax(z)_ij."""
    return -(target * F.log_softmax(logits, dim=1)).sum(dim=1).mean()


def log1m_softmax(logits: torch.Tensor) -> torch.Tensor:
    """log(1 − p_j) exactly: logsumexp_{k≠j} z_k − logsumexp_k z_k."""
    k = logits.shape[1]
    others = logits.unsqueeze(1).expand(-1, k, -1).masked_fill(torch.eye(k, dtype=torch.bool,
                                                                          device=logits.device), float("-inf"))
    return torch.logsumexp(others, dim=2) - torch.logsumexp(logits, dim=1, keepdim=True)


def moco_loss(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, tau: float) -> torch.Tensor:
    """MoCo(q, k, Q; τ) = −mean log softmax([q·k, q·Q]/τ)[0]."""
    positive = (q * k).sum(dim=1, keepdim=True)
    negatives = q @ queue.t()
    logits = torch.cat([positive, negatives], dim=1) / tau
    return -F.log_softmax(logits, dim=1)[:, 0].mean()


def moco_chance(queue_len: int) -> torch.Tensor:
    """MoCo's value when every similarity is equal (a collapsed projection): log(1 + |Q|)."""
    return torch.tensor(math.log(1 + queue_len))


def contrastive_chance(n_keys: int, tau: float, tau_base: float = 0.07, weight_mass=1.0) -> torch.Tensor:
    """A (τ/τ_b)-scaled weighted contrastive loss when every similarity is equal: each log-probability is
    −log(n_keys − 1) (the self column excluded), times the mean row mass of the weights (1 when rows sum to 1)."""
    return torch.as_tensor((tau / tau_base) * math.log(n_keys - 1) * weight_mass, dtype=torch.float32)


def contrast_log_prob(q: torch.Tensor, feats: torch.Tensor, tau: float) -> torch.Tensor:
    """ℓ_ac = s_ac − log(Σ_{c'≠a} e^{s_ac'} + 1e-12), s = q·Fᵀ/τ minus its row max (self column included)."""
    n = q.shape[0]
    scores = q @ feats.t() / tau
    scores = scores - scores.max(dim=1, keepdim=True).values.detach()
    not_self = torch.ones_like(scores, dtype=torch.bool)
    not_self[torch.arange(n), torch.arange(n)] = False
    denom = (torch.exp(scores) * not_self).sum(dim=1, keepdim=True)
    return scores - torch.log(denom + 1e-12)


def weighted_contrastive_loss(q, feats, mask, dists, tau: float, tau_d: float, tau_base: float = 0.07):
    """WCL(q, F, M, D; τ, τ_d): weights w_ac ∝ M_ac·exp(cos(D_a, D_c)/τ_d), anchors = first n rows of F.

    `mask` (n×N) must already have the self column removed.
    """
    n = q.shape[0]
    d = F.normalize(dists.float(), dim=1)
    sim = d[:n] @ d.t() / tau_d
    sim = sim - sim.max(dim=1, keepdim=True).values
    weights = mask * torch.exp(sim)
    weights = weights / weights.sum(dim=1, keepdim=True)
    log_prob = contrast_log_prob(q, feats, tau)
    return -(tau / tau_base) * (weights * log_prob).sum(dim=1).mean()


def remove_self(mask: torch.Tensor) -> torch.Tensor:
    """Zero the (a, a) entries of an n×N mask whose first n columns are the anchors."""
    n = mask.shape[0]
    mask = mask.clone()
    mask[torch.arange(n), torch.arange(n)] = 0
    return mask


def candidate_argmax(values: torch.Tensor, cands: torch.Tensor) -> torch.Tensor:
    """argmax_{j∈S_i} v_ij: non-candidates are excluded, not zeroed (the official `(v·Y).argmax` lets a
    non-candidate win when every candidate value is negative, or when the candidates' softmax underflows)."""
    return values.masked_fill(cands == 0, float("-inf")).argmax(dim=1)


def linear_rampup(epoch: int, length: float) -> float:
    """min(e / length, 1): a loss weight's linear ramp-up over `length` epochs (CRDPLL's λ(t), PaPi's α); 1 when
    length is 0."""
    return 1.0 if length <= 0 else min(epoch / length, 1.0)


def masked_mean(values: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Mean of `values` over the rows where `keep` is true, 0 when none is (an official `v[keep].mean()` is NaN
    there); a fixed-shape selection, so no host sync."""
    keep = keep.to(values.dtype)
    return (values * keep).sum() / keep.sum().clamp(min=1)
