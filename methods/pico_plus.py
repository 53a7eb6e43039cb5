"""PiCO+ (Wang et al., TPAMI 2023, "PiCO+: Contrastive label disambiguation for robust partial label learning").

Official code: hbzju/PiCO, `train_pico_plus.py`, `model.py` (class PiCO_PLUS) and `utils_plus/`. PiCO+ is PiCO
(methods/pico.py, whose encoders, queue, prototypes and bank it inherits) made robust to candidate sets that miss the
true label:

- Selection: every step records each row's distance to the prototype of its classifier prediction within the
  candidates, d_i = −q_i·μ_{argmax_{j∈S} p_ij}; from epoch prot_start on, each epoch starts by keeping the share
  pure_ratio of rows with the smallest d as reliable, the rest unreliable.
- Pseudo-labels: argmax of p within the candidates for reliable rows, over all classes for unreliable ones; only
  reliable rows move the prototypes.
- Contrast: SupCon with positives of the same pseudo-label among reliable anchors and reliable columns, every anchor's
  own key a positive, unweighted (weight 1, not cont_weight); from epoch knn_start on, an unreliable anchor's
  positives are its knn_neighbors nearest columns of [queries, keys, queue] and anchors are weighted cont_weight
  (reliable) or ur_weight (unreliable); plus ur_weight × SupCon on every row's pseudo-label.
- Classifier: the PiCO bank's cross-entropy on reliable rows (× cls_weight); on unreliable rows the guessed label
  softmax(q·μᵀ/guess_tau) (× ur_weight); mixup of the weak views of the whole batch towards the bank rows (reliable)
  or guessed labels (unreliable), λ ~ Beta(4, 4) kept ≥ 0.5.
Epochs before prot_start are PiCO's MoCo warm-up.

In pllbench's ID candidates the true label is always in the set, so there is no noise to find; PiCO+ still runs as
published: the selection keeps a fixed share, so each epoch it calls the (1 − pure_ratio) = 40 % of rows farthest
from their prototype unreliable even though none is noisy. Those rows' pseudo-labels, guessed labels and mixup
targets range over all classes (their candidate set is ignored there; their bank rows still move within it), and
from knn_start on their contrastive positives are kNN columns. What that costs or gains on noise-free candidates is
what a run measures.

Faithful: the terms, weights and their schedules above; the bank, prototype, queue and key encoder of PiCO; the
selection from the distances of each row's last visit; φ of epoch e is φ(e − 1) of the linear 0.95 → 0.8 schedule
(the official φ is set after each epoch; methods/pico.py uses φ(e)); the official hyperparameters (README CIFAR-10
command: prot_start 5, queue 8192; argparse defaults: pure_ratio 0.6, knn_start 100, 16 neighbours, guess
temperature 0.07, ur_weight 0.1, cls_weight 2) and the README's CIFAR-100 setting (prot_start 50, 5 neighbours).

Deviations:
- PiCO's (single process, the closed-form prototype EMA — here restricted to the reliable rows —, candidate argmax
  over logits, pllbench's candidate generator, final-epoch accuracy).
- At epoch 0 (reached only with prot_start = 0) φ is phi_start; the official code uses its initial 0.99.
- An empty reliable or unreliable part of a batch contributes 0 to its mean (official: the mean of nothing is NaN).
- The guessed label is computed as softmax(q·μᵀ/T): equal to the official (softmax(q·μᵀ))^(1/T), renormalised, but
  the power cannot underflow.
- Only rows visited since the run began are ranked (rows never visited, as a --val-fraction hold-out, stay reliable
  and take no share); the official ranks every row, initial distances 0.
- The mixup forward skips the projection head, whose output the official forward discards (no BN there).
- Preset `quick` (15 epochs against the official 800): prot_start 1 and knn_start 2, the official epochs scaled
  (5·15/800 ≈ 0.1, kept at 1 so that epoch 0 stays PiCO's MoCo warm-up; 100·15/800 ≈ 1.9); `smoke`: both 1, so two
  epochs reach every term.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pllbench.errors import PllbenchError
from pllbench.losses import (
    candidate_argmax,
    contrastive_chance,
    masked_mean,
    moco_chance,
    moco_loss,
    remove_self,
    soft_cross_entropy,
)
from pllbench.method import HP, Batch, register_method
from pllbench.methods.pico import PiCO, phi_schedule, prototype_ema, supcon_loss
from pllbench.nets import ema_update
from pllbench.queue import RingQueue
from pllbench.tune_space import log_uniform, uniform


def select_reliable(distance: torch.Tensor, seen: torch.Tensor, ratio: float) -> torch.Tensor:
    """N bool: the floor(ratio·n) visited rows with the smallest distance (n = rows visited), plus every row never
    visited. Ties keep row order (a stable sort)."""
    order = torch.argsort(distance.masked_fill(~seen, float("inf")), stable=True)
    rank = torch.empty_like(order).scatter_(0, order, torch.arange(len(order), device=order.device))
    chosen = torch.floor(seen.sum().double() * ratio)
    return (rank < chosen) | ~seen


def knn_mask(anchors: torch.Tensor, feats: torch.Tensor, k: int) -> torch.Tensor:
    """n×N {0,1}: each anchor's k columns of F with the largest cosine similarity (its own column included, as the
    official top-k over [queries, keys, queue])."""
    nearest = (anchors @ feats.t()).topk(k, dim=1).indices
    return torch.zeros(anchors.shape[0], feats.shape[0], device=feats.device).scatter_(1, nearest, 1.0)


def reliable_contrast_mask(same_label: torch.Tensor, reliable: torch.Tensor, reliable_cols: torch.Tensor,
                           knn: torch.Tensor | None = None) -> torch.Tensor:
    """PiCO+'s positives, n×N {0, 1} with the self column removed (`reliable`: n bool, `reliable_cols`: N bool):
    same pseudo-label between a reliable anchor and a reliable column; an unreliable anchor's kNN columns when `knn`
    is given (else none); every anchor's own key (column n + a)."""
    n = same_label.shape[0]
    mask = same_label * (reliable[:, None] & reliable_cols[None, :])
    if knn is not None:
        mask = torch.where(reliable[:, None], mask, knn)
    rows = torch.arange(n, device=mask.device)
    mask[rows, rows + n] = 1.0
    return remove_self(mask)


def guessed_labels(proto_logits: torch.Tensor, tau: float) -> torch.Tensor:
    """softmax(q·μᵀ/T) = the official sharpened prototype score s^(1/T)/Σ s^(1/T), with s = softmax(q·μᵀ)."""
    return torch.softmax(proto_logits / tau, dim=1)


def mixup_lambda(alpha: float, device: torch.device) -> torch.Tensor:
    """λ ~ Beta(α, α), then max(λ, 1 − λ): the mix stays nearer its first image [official]."""
    concentration = torch.tensor(float(alpha), device=device)
    lam = torch.distributions.Beta(concentration, concentration, validate_args=False).sample()
    return torch.maximum(lam, 1 - lam)


@register_method("pico+")
class PiCOPlus(PiCO):
    summary = "PiCO+ (TPAMI'23): PiCO with prototype-distance sample selection, kNN contrast, label guessing, mixup"
    family = "pico+"  # its own: PiCO's presets and run ids stay untouched
    hparams = {  # PiCO's, then PiCO+'s own (official argparse defaults and README command)
        **PiCO.hparams,
        "prot_start": HP(5, "first epoch of selection, disambiguation and the SupCon terms (earlier: MoCo warm-up)",
                         low=0),
        "pure_ratio": HP(0.6, "share of visited rows, nearest their predicted prototype, kept reliable each epoch",
                         low=0, high=1, tune=uniform(0.4, 0.9)),
        "knn_start": HP(100, "first epoch of kNN positives for unreliable anchors and of the anchor weights", low=0),
        "knn_neighbors": HP(16, "k nearest columns of [queries, keys, queue] taken as an unreliable anchor's "
                                "positives", low=1, note=">= 1, <= 2 × batch + queue_size"),
        "guess_tau": HP(0.07, "temperature T of the guessed labels softmax(q·μ/T) of unreliable rows", low=0,
                        low_open=True),
        "ur_weight": HP(0.1, "weight of the unreliable rows' terms and of the SupCon term over every row", low=0,
                        tune=log_uniform(0.03, 0.3)),
        "cls_weight": HP(2.0, "weight of the reliable rows' cross-entropy on the bank", low=0),
        "mix_alpha": HP(4.0, "α of the mixup coefficient λ ~ Beta(α, α), kept ≥ 0.5", low=0, low_open=True),
    }
    dataset_hparams = {"cifar100": {"prot_start": 50, "knn_neighbors": 5}}
    preset_hparams = {"quick": {"prot_start": 1, "knn_start": 2}, "smoke": {"prot_start": 1, "knn_start": 1}}

    @classmethod
    def check_hparams(cls, hp: dict, run: dict) -> None:
        super().check_hparams(hp, run)  # PiCO's: queue_size >= batch
        columns = 2 * run["batch_size"] + hp["queue_size"]
        if hp["knn_neighbors"] > columns:
            raise PllbenchError(f"{cls.name}: knn_neighbors {hp['knn_neighbors']} exceeds the {columns} contrast "
                                f"columns (2 × batch + queue_size); pass --hp {cls.name}.knn_neighbors={columns} "
                                f"or less")

    def __init__(self, ctx, hp):
        super().__init__(ctx, hp)
        self.reliable_queue = RingQueue(hp["queue_size"], {"reliable": ((), torch.bool, "zeros")})
        self.register_buffer("distance", torch.zeros(ctx.num_train))  # −q·μ at each row's last visit
        self.register_buffer("seen", torch.zeros(ctx.num_train, dtype=torch.bool))
        self.register_buffer("reliable", torch.ones(ctx.num_train, dtype=torch.bool))

    def on_epoch_start(self, epoch: int) -> bool:
        if epoch >= self.hp["prot_start"]:
            self.reliable.copy_(select_reliable(self.distance, self.seen, self.hp["pure_ratio"]))
        return False

    def training_step(self, batch: Batch):
        cands, idx, hp = batch.candidates, batch.index, self.hp
        reliable = self.reliable[idx]
        logits, query = self.query_net(batch.views["weak"])
        query = query.float()
        with torch.no_grad():
            detached, q = logits.detach().float(), query.detach()
            within = candidate_argmax(detached, cands)
            pseudo = torch.where(reliable, within, detached.argmax(dim=1))
            proto_logits = q @ self.prototypes.t()
            self.distance[idx] = -(q * self.prototypes[within]).sum(dim=1)
            self.seen[idx] = True
            self.prototypes.copy_(prototype_ema(self.prototypes, q, pseudo, hp["proto_ema"], keep=reliable))
            ema_update(self.key_net, self.query_net, hp["ema"])
            key = self.key_net.project(batch.views["strong"]).float()
            snap = {**self.queue.snapshot(), **self.reliable_queue.snapshot()}
            self.queue.enqueue(feat=key, label=pseudo)
            self.reliable_queue.enqueue(reliable=reliable)
        if batch.epoch < hp["prot_start"]:  # PiCO's warm-up
            loss_cls = soft_cross_entropy(logits, self.bank[idx])
            loss_cont = moco_loss(query, key, snap["feat"], hp["tau"])
            return {"cls": loss_cls, "cont": loss_cont, "chance/cont": moco_chance(len(snap["feat"])),
                    "loss": loss_cls + hp["cont_weight"] * loss_cont}
        with torch.no_grad():
            phi = phi_schedule(max(batch.epoch - 1, 0), self.ctx.epochs, hp["phi_start"], hp["phi_end"])
            nearest = F.one_hot(candidate_argmax(torch.softmax(proto_logits, dim=1), cands), cands.shape[1])
            self.bank[idx] = phi * self.bank[idx] + (1 - phi) * nearest.float()
        out = self.contrastive_terms(query, key, snap, pseudo, reliable, batch.epoch)
        out.update(self.classifier_terms(logits, proto_logits, batch, reliable))
        out["loss"] = out["mix"] + hp["cls_weight"] * out["cls"] + hp["ur_weight"] * out["ur"] + out["cont"] \
            + hp["ur_weight"] * out["cont_all"]
        return out

    def contrastive_terms(self, query, key, snap, pseudo, reliable, epoch: int) -> dict:
        """The reliable/kNN SupCon (weighted per anchor from knn_start on) and the SupCon over every row."""
        hp = self.hp
        feats = torch.cat([query, key, snap["feat"]])
        labels = torch.cat([pseudo, pseudo, snap["label"]])
        reliable_cols = torch.cat([reliable, reliable, snap["reliable"]])
        same = (pseudo[:, None] == labels[None, :]).float()
        loss_all = supcon_loss(query, feats, remove_self(same), hp["tau"])
        use_knn = epoch >= hp["knn_start"]
        knn = knn_mask(query.detach(), feats.detach(), hp["knn_neighbors"]) if use_knn else None
        mask = reliable_contrast_mask(same, reliable, reliable_cols, knn)
        weights = torch.where(reliable, hp["cont_weight"], hp["ur_weight"]) if use_knn else None
        loss_rel = supcon_loss(query, feats, mask, hp["tau"], weights=weights)
        mass = weights.mean() if use_knn else 1.0
        return {"cont": loss_rel, "cont_all": loss_all,
                "chance/cont": contrastive_chance(len(feats), hp["tau"], weight_mass=mass)}

    def classifier_terms(self, logits, proto_logits, batch: Batch, reliable) -> dict:
        """Cross-entropy on the bank (reliable rows), on the guessed labels (unreliable rows), and the mixup term."""
        hp, rows = self.hp, self.bank[batch.index]
        guess = guessed_labels(proto_logits, hp["guess_tau"])
        log_p = F.log_softmax(logits.float(), dim=1)
        loss_cls = masked_mean(-(rows * log_p).sum(dim=1), reliable)
        loss_ur = masked_mean(-(guess * log_p).sum(dim=1), ~reliable)
        target = torch.where(reliable[:, None], rows, guess)
        x = batch.views["weak"]
        lam = mixup_lambda(hp["mix_alpha"], x.device)
        perm = torch.randperm(len(x), device=x.device)
        mixed = lam * x + (1 - lam) * x[perm]
        loss_mix = soft_cross_entropy(self.query_net.logits(mixed).float(), lam * target + (1 - lam) * target[perm])
        return {"cls": loss_cls, "ur": loss_ur, "mix": loss_mix}
