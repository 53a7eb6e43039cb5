"""Shared pieces of the step-cost benchmarks: the plain cross-entropy reference step, the image-pass counter, and
the data + candidates + preset a benchmark runs on.

Pass units: every image through a backbone counts 1 forward, plus 2 for its backward when it was forwarded with
grad enabled. Plain CE = 1 forward + 2 backward per image = 3 units.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from pllbench.data.registry import DatasetInfo, Split, data_root, get_dataset, stratified_subset
from pllbench.method import Method, MethodContext, get_method, resolve_hparams
from pllbench.presets import method_overrides, resolve_preset
from pllbench.views.maker import ViewMaker


class PlainCE(Method):
    """The reference step: CE on the cls view against a label-free stand-in target (the first candidate)."""

    views = ("cls",)

    def __init__(self, ctx, hp):
        super().__init__(ctx, hp)
        self.net = ctx.classifier()

    def training_step(self, batch):
        return {"loss": F.cross_entropy(self.net(batch.views["cls"]), batch.candidates.argmax(dim=1))}


class PassCounter:
    """Counts images through every backbone's `feature_map` (which `forward` calls too, and CAM/CEL call directly),
    with and without grad, by wrapping it on the instance."""

    def __init__(self, module: torch.nn.Module):
        self.units = 0
        for sub in module.modules():
            if hasattr(sub, "feature_map"):
                sub.feature_map = self._counted(sub.feature_map)

    def _counted(self, feature_map):
        def counted(x):
            self.units += x.shape[0] * (3 if torch.is_grad_enabled() else 1)
            return feature_map(x)

        return counted


@dataclass
class BenchData:
    """What a benchmark trains on: uint8 images and candidate rows (CPU), the resolved preset, a description."""

    info: DatasetInfo
    train: Split
    candidates: torch.Tensor  # N×K float
    preset: dict
    source: str  # how the candidates were made


def random_candidates(labels: torch.Tensor, num_classes: int, mean_size: float, seed: int = 0) -> torch.Tensor:
    """The true label plus each other label with probability (mean_size − 1)/(K − 1): benchmark-only candidate
    sets of a chosen mean size (no method sees the labels)."""
    gen = torch.Generator().manual_seed(seed)
    q = (mean_size - 1) / (num_classes - 1)
    cands = (torch.rand(len(labels), num_classes, generator=gen) < q).float()
    cands[torch.arange(len(labels)), labels] = 1.0
    return cands


def load_bench_data(dataset: str, preset: str, *, like: str | None = None, mean_size: float | None = None,
                    batch_size: int | None = None, cache=None, device=None) -> BenchData:
    """The preset's data and candidates: the cached teacher's (pllbench.data.prepare) unless `mean_size` is given, then
    random sets of that mean size without any teacher. `like` resolves the preset as for another dataset (e.g. the
    paper preset's CIFAR-10 backbone and batch for CIFAR-shaped synthetic data)."""
    if mean_size is None:
        from pllbench.data.prepare import prepare

        prep = prepare(dataset, preset, 0, cache=cache, device=device, echo=lambda *_: None)
        cfg, train, info = dict(prep.preset), prep.data.train, prep.data.info
        cands = torch.from_numpy(prep.candidates.matrix).float()
        source = f"teacher candidates {prep.candidates.hash} (mean |S| {cands.sum(1).mean():.2f})"
    else:
        loader = get_dataset(dataset)
        info = loader.info()
        train, _ = loader.load(data_root(None), False)
        cfg = resolve_preset(preset, like or info.name)
        if cfg["train_per_class"]:
            train = train.subset(stratified_subset(train.labels, cfg["train_per_class"]))
        cands = random_candidates(train.labels, info.num_classes, mean_size)
        source = f"random candidates, mean |S| {cands.sum(1).mean():.2f} (target {mean_size})"
    if batch_size:
        cfg["batch_size"] = int(batch_size)
    return BenchData(info, train, cands, cfg, source)


def method_hparams(name: str, data: BenchData) -> dict:
    cls = get_method(name)
    return resolve_hparams(cls, data.info.name, method_overrides(data.preset, cls.name, cls.family), {})


def context(data: BenchData, maker: ViewMaker, device: torch.device, steps_per_epoch: int = 10) -> MethodContext:
    cfg = data.preset
    return MethodContext(data.info.num_classes, len(data.candidates), data.candidates.to(device), cfg["backbone"],
                         cfg["proj_dim"], cfg["epochs"], steps_per_epoch, cfg["batch_size"], data.info.name, maker,
                         data.train.images.to(device), device)


def bench_epoch(method: Method, epochs: int) -> int:
    """Walk the method's epoch hooks to mid-training (so warm-up stages, MoCo epochs and VALEN's stage 1 are past)
    and return that epoch; the timed steps run there."""
    epoch = epochs // 2
    for e in range(epoch + 1):
        method.on_epoch_start(e)
    return epoch
