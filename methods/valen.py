"""VALEN (Xu et al., NeurIPS 2021, "Instance-dependent partial label learning"), conference code palm-ml/valen.

docs/spec/methods.md §7. Each instance's label distribution d is latent, d ~ Dir(c(x)). After a PRODEN warm-up of W
epochs on the classifier `net` (bank o), an encoder `enc` (a copy of net) infers c from the base view, a reparameterised
Dirichlet sample δ is decoded back into the input, the candidate vector and the instance's row of a kNN graph of
warm-up features, and δ (mixed with o) gives net its soft targets d_arr. At epoch W, `on_epoch_start` builds the
graph, copies net into enc, sets d_arr ← o and returns True, so the trainer builds a fresh SGD over net+enc+dec.

Graph [D10]: k = 3 nearest *other* instances by Euclidean distance between net's penultimate features of every train
instance (base view, eval mode), computed blockwise (never an N×N matrix) and kept as an N×k index array; the
normalised adjacency A = row-normalise(A_kNN + I) (directed kNN, as the official `gen_adj_matrix2`) has every row's
k+1 entries equal to 1/(k+1), so a batch's dense B×B block A[idx, idx] is rebuilt from the index array.

Deviations [ours unless marked]:
- enc is a copy of net taken at the end of warm-up (the official code does so for CIFAR-10/KMNIST, and copies the
  initial net for FMNIST).
- Reconstruction target: the normalised base view, flattened; first channel (784) for 28-px gray data; 3×s×s for
  s ≤ 32; larger images are area-downsampled to 32×32 first (3072) [D10; the official code has no 224-px config].
- Decoder Linear(K, h) → ReLU → Linear(h, r) with Xavier-normal weights and 0.01 biases [official]; h is the
  `decoder_dim` hyperparameter, and 0 (the default) means h = r, the official shape (h = r = the input size).
- The graph lives in the run's state (the official cache is keyed by dataset only).
- Stage-2 SGD follows the global cosine schedule (the official stage-2 LR is constant; its CIFAR-10 run uses Adam),
  and the optimiser comes from the preset [D14].
- L_d, L_o and the warm-up use the exact log-softmax (the conference code uses log(softmax + 1e-12)); lnΓ(K) in the
  Dirichlet KL is exact.
- γ = 5, κ = 1.0 on FMNIST and γ = 10, κ = 0.2 elsewhere: the official README's FMNIST and CIFAR-10 settings; the
  sets it has no setting for (CIFAR-100, Flowers, Pets) copy CIFAR-10's [ours].
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from pllbench.errors import PllbenchError
from pllbench.losses import renormalize, soft_cross_entropy
from pllbench.method import HP, Batch, Method, register_method
from pllbench.methods.proden import proden_update
from pllbench.tune_space import int_range, log_uniform, uniform

RECON_SIDE = 32  # images larger than this are area-downsampled to 32×32 for the reconstruction target


def knn_graph(feats: torch.Tensor, k: int, max_block_elems: int = 1 << 24) -> torch.Tensor:
    """N×k indices of each row's k nearest *other* rows (Euclidean), ascending distance.

    Distances are computed for a block of rows against all N at a time (block·N ≤ max_block_elems), never N×N.
    """
    n = len(feats)
    if n <= k:
        raise PllbenchError(f"valen: the kNN graph needs more than k = {k} training instances, got {n}")
    feats = feats.float()
    feats = feats - feats.mean(dim=0)  # distances are shift-invariant; centring limits cancellation below
    sq = (feats * feats).sum(dim=1)
    block = max(1, min(n, max_block_elems // n))
    out = torch.empty(n, k, dtype=torch.long, device=feats.device)
    buffer = torch.empty(block, n, device=feats.device)  # reused: one block of squared distances at a time
    for start in range(0, n, block):
        stop = min(n, start + block)
        dist = buffer[:stop - start]
        torch.addmm(sq[None, :], feats[start:stop], feats.t(), alpha=-2, out=dist)  # ‖b‖² − 2a·b
        dist.add_(sq[start:stop, None])
        rows = torch.arange(stop - start, device=feats.device)
        dist[rows, rows + start] = float("inf")
        out[start:stop] = dist.topk(k, dim=1, largest=False).indices
    return out


def adjacency_block(neighbours: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Dense B×B block A[idx, idx] of A = row-normalise(A_kNN + I), from the batch's neighbour rows (B×k)."""
    k = neighbours.shape[1]
    linked = (neighbours[:, :, None] == index[None, None, :]).any(dim=1)
    self_loop = index[:, None] == index[None, :]
    return (linked | self_loop).float() / (k + 1)


def dirichlet_concentration(enc_logits: torch.Tensor, cands: torch.Tensor) -> torch.Tensor:
    """c = softmax(a)·Y / Σ(softmax(a)·Y) + 0.01, the renormalising sum detached [official]."""
    masked = torch.softmax(enc_logits, dim=1) * cands
    return masked / masked.sum(dim=1, keepdim=True).detach() + 0.01


def dirichlet_kl_uniform(alpha: torch.Tensor) -> torch.Tensor:
    """mean_i KL(Dir(α_i) ‖ Dir(1_K)) = lnΓ(Σα) − Σ lnΓ(α_j) − lnΓ(K) + Σ (α_j − 1)(ψ(α_j) − ψ(Σα))."""
    total = alpha.sum(dim=1, keepdim=True)
    kl = (torch.lgamma(total).squeeze(1) - torch.lgamma(alpha).sum(dim=1) - math.lgamma(alpha.shape[1])
          + ((alpha - 1) * (torch.digamma(alpha) - torch.digamma(total))).sum(dim=1))
    return kl.mean()


def reconstruction_loss(decoded: torch.Tensor, target: torch.Tensor, delta: torch.Tensor, cands: torch.Tensor,
                        adjacency: torch.Tensor) -> torch.Tensor:
    """0.01·MSE(dec(δ), r) + 0.01·BCEWithLogits(δ, Y) + MSE(rowsoftmax(sigmoid(δδᵀ)), A[idx, idx]).

    δ is fed to the BCE as logits [official quirk, kept].
    """
    graph = torch.softmax(torch.sigmoid(delta @ delta.t()), dim=1)
    return (0.01 * F.mse_loss(decoded, target) + 0.01 * F.binary_cross_entropy_with_logits(delta, cands)
            + F.mse_loss(graph, adjacency))


def reconstruction_target(base: torch.Tensor, gray: bool) -> torch.Tensor:
    """The flattened normalised base view: first channel when gray, area-downsampled to 32×32 when larger."""
    if gray:
        return base[:, 0].flatten(1)
    if base.shape[-1] > RECON_SIDE:
        base = F.interpolate(base, size=(RECON_SIDE, RECON_SIDE), mode="area")
    return base.flatten(1)


def recon_dim(channels: int, side: int) -> int:
    return side * side if channels == 1 else 3 * min(side, RECON_SIDE) ** 2


class LabelDecoder(nn.Sequential):
    """δ (K) → Linear(K, h) → ReLU → Linear(h, r), Xavier-normal weights and 0.01 biases [official]."""

    def __init__(self, num_classes: int, hidden: int, out: int):
        super().__init__(nn.Linear(num_classes, hidden), nn.ReLU(), nn.Linear(hidden, out))
        for layer in (self[0], self[2]):
            nn.init.xavier_normal_(layer.weight)
            nn.init.constant_(layer.bias, 0.01)


@register_method("valen")
class VALEN(Method):
    summary = "VALEN (NeurIPS'21): variational label enhancement with a Dirichlet latent label distribution"
    views = ("cls", "base")
    hparams = {  # each declared once: default, meaning, range (`pllbench describe`)
        "warmup_epochs": HP(10, "PRODEN warm-up epochs W before the kNN graph, the encoder and stage 2", low=0),
        "decoder_dim": HP(0, "hidden width of the input decoder; 0 = the input size (the official shape)", low=0),
        "knn": HP(3, "neighbours k in the kNN graph of warm-up features", low=1, tune=int_range(2, 6)),
        "alpha": HP(1.0, "weight α_r of the reconstruction loss L_rec", low=0),
        "beta": HP(0.1, "weight β of the Dirichlet KL term L_α", low=0, tune=log_uniform(0.01, 1.0)),
        "gamma": HP(10.0, "weight γ of the encoder's fit to the bank (L_d)", low=0, tune=log_uniform(1.0, 20.0)),
        "theta": HP(1.0, "weight θ of the classifier's fit to the targets d (L_o)", low=0),
        "correct": HP(0.2, "κ: share of the Dirichlet sample in the new targets d (the rest is the bank o)",
                      low=0, high=1, tune=uniform(0.2, 1.0)),
    }
    preset_hparams = {"quick": {"warmup_epochs": 2, "decoder_dim": 784},
                      "smoke": {"warmup_epochs": 1, "decoder_dim": 768}}
    dataset_hparams = {"fmnist": {"gamma": 5.0, "correct": 1.0}}

    def __init__(self, ctx, hp):
        super().__init__(ctx, hp)
        self.net = ctx.classifier()
        self.enc = ctx.classifier()  # overwritten by a copy of net at the end of warm-up
        info = ctx.views.info
        self.gray = info.channels == 1
        target_dim = recon_dim(info.channels, info.input_size)
        self.dec = LabelDecoder(ctx.num_classes, hp["decoder_dim"] or target_dim, target_dim)
        cands = ctx.candidates.float()
        self.register_buffer("bank", renormalize(cands, cands).cpu())  # o
        self.register_buffer("targets", torch.zeros(ctx.num_train, ctx.num_classes))  # d_arr
        self.register_buffer("neighbours", torch.zeros(ctx.num_train, hp["knn"], dtype=torch.long))
        self.register_buffer("stage2", torch.zeros((), dtype=torch.bool))

    def trainable_parameters(self):
        if not bool(self.stage2):
            return list(self.net.parameters())
        return [*self.net.parameters(), *self.enc.parameters(), *self.dec.parameters()]

    def on_epoch_start(self, epoch: int) -> bool:
        if epoch != self.hp["warmup_epochs"] or bool(self.stage2):
            return False
        self.neighbours.copy_(knn_graph(self.train_features(), self.hp["knn"]))
        self.enc.load_state_dict(self.net.state_dict())
        self.targets.copy_(self.bank)
        self.stage2.fill_(True)
        return True

    @torch.no_grad()
    def train_features(self) -> torch.Tensor:
        """net's penultimate features of every train instance on the base view, in eval mode.

        Chunks of 4 training batches: no-grad activations of that many fit wherever a training step does.
        """
        images, was_training = self.ctx.train_images, self.net.training
        chunk = 4 * self.ctx.batch_size
        self.net.eval()
        feats = torch.cat([self.net.features(self.ctx.views(images[s:s + chunk], "base", None)).float()
                           for s in range(0, len(images), chunk)])
        self.net.train(was_training)
        return feats

    def training_step(self, batch: Batch):
        cands, idx, hp = batch.candidates, batch.index, self.hp
        logits = self.net(batch.views["cls"])
        self._new_bank = proden_update(logits, cands)
        rows_o = self.bank[idx]
        if not bool(self.stage2):
            self._new_targets = None
            return {"loss": soft_cross_entropy(logits, rows_o)}
        enc_logits = self.enc(batch.views["base"]).float()
        loss_d = soft_cross_entropy(enc_logits, rows_o)
        loss_alpha = dirichlet_kl_uniform(torch.exp(enc_logits / 4).clamp(0.01, 30))
        delta = torch.distributions.Dirichlet(dirichlet_concentration(enc_logits, cands),
                                              validate_args=False).rsample()
        target = reconstruction_target(batch.views["base"].float(), self.gray)
        loss_rec = reconstruction_loss(self.dec(delta).float(), target, delta, cands,
                                       adjacency_block(self.neighbours[idx], idx))
        loss_o = soft_cross_entropy(logits, self.targets[idx])
        self._new_targets = hp["correct"] * renormalize(delta.detach(), cands) + (1 - hp["correct"]) * rows_o
        loss = hp["alpha"] * loss_rec + hp["beta"] * loss_alpha + hp["gamma"] * loss_d + hp["theta"] * loss_o
        return {"rec": loss_rec, "kl": loss_alpha, "enc": loss_d, "cls": loss_o, "loss": loss}

    def after_step(self, batch: Batch):
        if self._new_targets is not None:
            self.targets[batch.index] = self._new_targets
        self.bank[batch.index] = self._new_bank

    def predict(self, x):
        return self.net(x)

    def features(self, x):
        return self.net.features(x)

    def confidences(self):
        return self.targets if bool(self.stage2) else self.bank
