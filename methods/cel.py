"""CEL (Yang et al., KDD 2025, "Mixed blessing: class-wise embedding guided instance-dependent PLL").

docs/spec/methods.md §5, official code Yangfc-ML/CEL. A class-wise decoder on the unpooled backbone map gives each
sample one embedding per class (frozen random queries cross-attending to the map's positions; group-FC logits). The
class- associative loss pulls the embeddings of a sample's candidate classes together and pushes them from its
non-candidate ones; after warm-up (wp epochs, default floor(E/2)) the prototype-discriminative loss pulls the
predicted class's embedding towards a global class prototype and away from the others. Labels are disambiguated
PRODEN-style from the weak view, and both views' logits fit the bank.

Deviations and fixes [D11]:
- The official script reads the undefined `lambda1_`/`lambda2_` and crashes; they are α and β here.
- Prototypes: the official loop writes every row indexed by the batch at each iteration; here each class predicted
  in the batch gets P_c ← normalise(P_c + Σ_{i: ĉ_i = c} e_{i,c}) once per step, the others are untouched.
- ĉ = argmax over the candidates' logits [fix: the official multiplies raw logits by Y, so a non-candidate wins
  when every candidate logit is negative]; the same ĉ serves the prototype update and both views' L_pdl.
- The backbone is trained from scratch [D14] (the official code used an ImageNet-pretrained RN-34 on its
  fine-grained sets), and the loss weights of the official CIFAR-100 row are used on every dataset, because the
  code has no FMNIST/CIFAR-10/Flowers/Pets settings [ours].
- The decoder layer follows the official one, including its query pre-step (queries + dropout(queries), then
  LayerNorm) before the cross-attention, which the spec's summary omits; there is no positional encoding [ours
  where unread]. The queries are N(0, 1) like the official frozen nn.Embedding; the group-FC weights are
  Xavier-normal (fan_in D, fan_out K) and the biases zero [official].
- L_cls uses the exact log-softmax (the official takes the log of the softmax, −∞ where it underflows).
- features() is the GAP of the backbone map [ours].
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from pllbench.errors import PllbenchError
from pllbench.losses import candidate_argmax, renormalize, soft_cross_entropy
from pllbench.method import HP, Batch, Method, register_method
from pllbench.methods.proden import proden_update
from pllbench.nets import build_backbone
from pllbench.tune_space import log_uniform


class ClassWiseDecoder(nn.Module):
    """Map (B×C×h×w) → (unit embeddings B×K×D, logits B×K): one cross-attention decoder layer, no self-attention."""

    def __init__(self, in_dim: int, num_classes: int, dim: int, heads: int, ffn: int, dropout: float):
        super().__init__()
        self.embed = nn.Linear(in_dim, dim)
        self.register_buffer("queries", torch.randn(num_classes, dim))  # frozen, N(0, 1)
        self.query_dropout = nn.Dropout(dropout)
        self.query_norm = nn.LayerNorm(dim)
        self.attention = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.attention_dropout = nn.Dropout(dropout)
        self.attention_norm = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn), nn.ReLU(), nn.Dropout(dropout), nn.Linear(ffn, dim))
        self.ffn_dropout = nn.Dropout(dropout)
        self.ffn_norm = nn.LayerNorm(dim)
        self.class_weight = nn.Parameter(torch.empty(num_classes, dim))
        nn.init.normal_(self.class_weight, std=(2.0 / (num_classes + dim)) ** 0.5)
        self.class_bias = nn.Parameter(torch.zeros(num_classes))

    def forward(self, fmap: torch.Tensor):
        tokens = F.relu(self.embed(fmap.flatten(2).transpose(1, 2)))
        queries = self.queries.expand(len(fmap), -1, -1)
        h = self.query_norm(queries + self.query_dropout(queries))
        h = self.attention_norm(h + self.attention_dropout(self.attention(h, tokens, tokens, need_weights=False)[0]))
        h = self.ffn_norm(h + self.ffn_dropout(self.ffn(h)))
        logits = (h * self.class_weight).sum(dim=2) + self.class_bias
        return F.normalize(h.float(), dim=2), logits


def class_associative_loss(emb: torch.Tensor, cands: torch.Tensor, gamma: float) -> torch.Tensor:
    """mean_i [(1 − pm_i) + γ·nm_i]: pm = mean ⟨e_j, e_k⟩ over ordered candidate pairs j ≠ k, nm = mean |⟨e_j, e_k⟩|
    over ordered pairs with exactly one candidate (each mean's denominator + 1e-6)."""
    gram = emb @ emb.transpose(1, 2)
    inside, outside = cands[:, :, None], (1 - cands)[:, :, None]
    off_diagonal = 1 - torch.eye(cands.shape[1], device=cands.device)
    pos = inside * inside.transpose(1, 2) * off_diagonal
    neg = inside * outside.transpose(1, 2) + outside * inside.transpose(1, 2)
    pm = (pos * gram).sum(dim=(1, 2)) / (pos.sum(dim=(1, 2)) + 1e-6)
    nm = (neg * gram.abs()).sum(dim=(1, 2)) / (neg.sum(dim=(1, 2)) + 1e-6)
    return ((1 - pm) + gamma * nm).mean()


def prototype_discriminative_loss(emb: torch.Tensor, prototypes: torch.Tensor, pred: torch.Tensor,
                                  gamma: float) -> torch.Tensor:
    """mean_i [(1 − ⟨e_{i,ĉ}, P_ĉ⟩/(1 + 1e-6)) + γ·Σ_{k≠ĉ} |⟨e_{i,ĉ}, P_k⟩|/(K − 1 + 1e-6)]."""
    k = prototypes.shape[0]
    picked = emb[torch.arange(len(pred), device=pred.device), pred]
    sims = picked @ prototypes.t()
    is_pred = F.one_hot(pred, k).bool()
    pos = sims.masked_fill(~is_pred, 0.0).sum(dim=1)
    neg = sims.abs().masked_fill(is_pred, 0.0).sum(dim=1)
    return ((1 - pos / (1 + 1e-6)) + gamma * neg / (k - 1 + 1e-6)).mean()


def update_prototypes(prototypes: torch.Tensor, emb: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
    """P_c ← normalise(P_c + Σ_{i: ĉ_i = c} e_{i,c}) for every class c predicted in the batch; others unchanged."""
    picked = emb[torch.arange(len(pred), device=pred.device), pred]
    summed = torch.zeros_like(prototypes).index_add_(0, pred, picked)
    hit = torch.bincount(pred, minlength=prototypes.shape[0]) > 0
    return torch.where(hit[:, None], F.normalize(prototypes + summed, dim=1), prototypes)


@register_method("cel")
class CEL(Method):
    summary = "CEL (KDD'25): class-wise embeddings from a query decoder, associative and prototype losses"
    views = ("weak", "strong")
    hparams = {  # each declared once: default, meaning, range (`pllbench describe`)
        "alpha": HP(0.5, "weight α of the class-associative loss L_cal", low=0, tune=log_uniform(0.05, 1.0)),
        "gamma1": HP(1.0, "weight γ1 of the non-candidate pairs inside L_cal", low=0, tune=log_uniform(0.5, 2.0)),
        "beta": HP(1.0, "weight β of the prototype-discriminative loss L_pdl (after warm-up)", low=0,
                   tune=log_uniform(0.25, 2.0)),
        "gamma2": HP(1.0, "weight γ2 of the other prototypes inside L_pdl", low=0, tune=log_uniform(0.5, 5.0)),
        "dim": HP(512, "width D of the class-wise decoder's embeddings", low=1, note="divisible by heads"),
        "heads": HP(8, "heads of the decoder's cross-attention", low=1),
        "ffn": HP(2048, "hidden width of the decoder's feed-forward block", low=1),
        "dropout": HP(0.1, "dropout inside the decoder layer", low=0, high=1, high_open=True),
        "warmup_epochs": HP(-1, "epochs wp before L_pdl starts; < 0 means floor(epochs / 2)", note="any integer"),
    }
    preset_hparams = {"quick": {"dim": 64, "heads": 4, "ffn": 128, "warmup_epochs": 7},
                      "smoke": {"dim": 16, "heads": 2, "ffn": 32, "warmup_epochs": 1}}

    @classmethod
    def check_hparams(cls, hp: dict, run: dict) -> None:
        if hp["dim"] % hp["heads"]:
            raise PllbenchError(f"{cls.name}: dim {hp['dim']} is not divisible by heads {hp['heads']} (each head "
                                f"takes dim / heads features); pass --hp {cls.name}.dim=N with N a multiple of "
                                f"{hp['heads']}")

    def __init__(self, ctx, hp):
        super().__init__(ctx, hp)
        self.backbone = build_backbone(ctx.backbone)
        self.decoder = ClassWiseDecoder(self.backbone.out_dim, ctx.num_classes, hp["dim"], hp["heads"], hp["ffn"],
                                        hp["dropout"])
        self.warmup = hp["warmup_epochs"] if hp["warmup_epochs"] >= 0 else ctx.epochs // 2
        cands = ctx.candidates.float()
        self.register_buffer("bank", renormalize(cands, cands).cpu())
        self.register_buffer("prototypes", torch.zeros(ctx.num_classes, hp["dim"]))

    def decode(self, x):
        return self.decoder(self.backbone.feature_map(x))

    def training_step(self, batch: Batch):
        cands, hp = batch.candidates, self.hp
        emb_w, logits_w = self.decode(batch.views["weak"])
        emb_s, logits_s = self.decode(batch.views["strong"])
        pred = candidate_argmax(logits_w.detach().float(), cands)
        with torch.no_grad():
            self.prototypes.copy_(update_prototypes(self.prototypes, emb_w.detach(), pred))
        rows = self.bank[batch.index]
        loss_cls = soft_cross_entropy(logits_w, rows) + soft_cross_entropy(logits_s, rows)
        loss_cal = class_associative_loss(emb_w, cands, hp["gamma1"]) + class_associative_loss(emb_s, cands,
                                                                                              hp["gamma1"])
        out = {"cls": loss_cls, "cal": loss_cal}
        loss = loss_cls + hp["alpha"] * loss_cal
        if batch.epoch >= self.warmup:
            protos = self.prototypes.clone()
            loss_pdl = (prototype_discriminative_loss(emb_w, protos, pred, hp["gamma2"])
                        + prototype_discriminative_loss(emb_s, protos, pred, hp["gamma2"]))
            out["pdl"] = loss_pdl
            loss = loss + hp["beta"] * loss_pdl
        self._new_rows = proden_update(logits_w, cands)
        out["loss"] = loss
        return out

    def after_step(self, batch: Batch):
        self.bank[batch.index] = self._new_rows

    def predict(self, x):
        return self.decode(x)[1]

    def features(self, x):
        return self.backbone(x)

    def confidences(self):
        return self.bank
