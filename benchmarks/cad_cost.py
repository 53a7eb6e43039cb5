"""CAD / CAD-CAM cost per training step relative to plain cross-entropy, beside their image-pass ratio.

Setting: cnn-s at batch 128 on 28-px Fashion-MNIST (the quick preset's 4,000-image subset when the data is present,
else 28-px synthetic gray images), queue 2048, candidate sets drawn at random with the true label plus each other
label with probability (mean_size − 1)/(K − 1) (benchmark-only; no method sees labels). A step is what the trainer
does: the method's declared views, `training_step`, backward, SGD step, `after_step`; epoch 1, so the weighted
contrastive path (not the epoch-0 MoCo) is timed.

Pass count: forward hooks on every backbone count the images each forward sees; an image forwarded without gradient
counts 1, one forwarded with gradient (so also back-propagated) counts 3 (a backward ≈ two forwards). The ratio is
that total over plain CE's 3·B. Edit memory per instance: E|S|·3·H·W bytes (uint8), measured on an artifact built here.

Usage: .venv/bin/python benchmarks/cad_cost.py [--steps 20] [--warmup 3] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from pllbench.artifacts import ArtifactStore
from pllbench.cad_edits.edits import IdentityEdits, build_edits, edits_key
from pllbench.data.registry import DatasetInfo, get_dataset, stratified_subset
from pllbench.losses import renormalize, soft_cross_entropy
from pllbench.method import Batch, Method, MethodContext, get_method
from pllbench.nets import SmallCNN
from pllbench.views.maker import ViewMaker


class PlainCE(Method):
    """The reference step: one cls view, one classifier, CE against the uniform candidate target."""

    name = "plain-ce"
    views = ("cls",)

    def __init__(self, ctx, hp):
        super().__init__(ctx, hp)
        self.net = ctx.classifier()

    def training_step(self, batch):
        target = renormalize(batch.candidates, batch.candidates)
        return {"loss": soft_cross_entropy(self.net(batch.views["cls"]), target)}


def load_images(per_class: int) -> tuple[DatasetInfo, torch.Tensor, torch.Tensor, str]:
    loader = get_dataset("fmnist")
    try:
        train, _ = loader.load(None, False)
        index = torch.from_numpy(stratified_subset(train.labels, per_class))
        return loader.info(), train.images[index], train.labels[index], "fmnist quick subset"
    except Exception:  # noqa: BLE001 — no Fashion-MNIST here: fall back to synthetic data of the same shape
        from pllbench.datasets.synthetic import Synthetic

        syn = Synthetic(size=28, classes=10, channels=1, train=10 * per_class)
        split, _ = syn.load(None, False)
        return syn.info(), split.images, split.labels, "synthetic 28-px gray"


def random_candidates(labels: torch.Tensor, k: int, mean_size: float, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    cands = (torch.rand(len(labels), k, generator=gen) < (mean_size - 1) / (k - 1)).float()
    cands[torch.arange(len(labels)), labels] = 1
    return cands


def count_passes(method: torch.nn.Module) -> list:
    """Hook every cnn-s body (what both `forward` and `feature_map` run); collects (images, with_grad)."""
    seen = []
    for module in method.modules():
        if isinstance(module, SmallCNN):
            module.body.register_forward_hook(
                lambda _m, inputs, _o: seen.append((len(inputs[0]), torch.is_grad_enabled())))
    return seen


class Timed:
    """One method with its optimiser, view generator and pass counter; `step(s)` times one trainer step."""

    def __init__(self, label, method, ctx, images, cands, batch, device):
        self.label, self.method, self.ctx = label, method.to(device).train(), ctx
        self.images, self.cands, self.batch, self.device = images, cands, batch, device
        self.optimizer = torch.optim.SGD(method.trainable_parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
        self.gen = torch.Generator(device=device).manual_seed(0)
        self.seen = count_passes(method)
        self.order = torch.randperm(len(images), generator=torch.Generator().manual_seed(0)).to(device)
        self.times, self.passes = [], []

    def step(self, s: int, record: bool) -> None:
        idx = self.order[(s * self.batch) % (len(self.images) - self.batch):][:self.batch]
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        views = {v: self.ctx.views(self.images[idx], v, self.gen) for v in self.method.views}
        batch = Batch(views, self.cands[idx], idx, 1, s, self.gen)
        self.seen.clear()
        losses = self.method.training_step(batch)
        self.optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        self.optimizer.step()
        self.method.after_step(batch)
        float(losses["loss"].detach())
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        if record:
            self.times.append(time.perf_counter() - start)
            self.passes.append(sum(n * (3 if grad else 1) for n, grad in self.seen))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--mean-size", type=float, default=4.0)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    info, images, labels, source = load_images(400)
    images = images.to(device)
    cands = random_candidates(labels, info.num_classes, args.mean_size).to(device)
    mean_size = float(cands.sum(1).mean())
    maker = ViewMaker(info)
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp)
        identity = IdentityEdits(images.cpu(), info.input_size)
        start = time.perf_counter()
        store = build_edits(cache, edits_key("bench", "identity-stored", seed=0), cands.cpu().numpy().astype(np.uint8),
                            info.input_size, lambda inst, lab: identity.base[torch.from_numpy(inst)], chunk=4096)
        build_s = time.perf_counter() - start
        edit_bytes = (store.folder / "edits.npy").stat().st_size
        runs = []
        for name, hp in (("plain-ce", {}), ("cad", {"editor": "identity"}), ("cad", {"editor": "identity-stored"}),
                         ("cad-cam", {}), ("cad-norl", {"editor": "identity"})):
            cls = PlainCE if name == "plain-ce" else get_method(name)
            ctx = MethodContext(num_classes=info.num_classes, num_train=len(images), candidates=cands,
                                backbone="cnn-s", proj_dim=64, epochs=15, steps_per_epoch=len(images) // args.batch,
                                batch_size=args.batch, dataset=info.name, views=maker, train_images=images,
                                device=device,
                                artifacts=ArtifactStore(cache, "bench", {"preset": "quick"}))
            full_hp = {**cls.hparams, "queue_size": 2048, **hp}
            torch.manual_seed(0)
            label = cls.run_label(full_hp) if name != "plain-ce" else name
            runs.append(Timed(label, cls(ctx, full_hp), ctx, images, cands, args.batch, device))
        for s in range(args.warmup + args.steps):  # round robin: load drift on a shared machine hits every method
            for run in runs:
                run.step(s, record=s >= args.warmup)
        rows = [{"method": r.label, "s_per_step": float(np.median(r.times)), "passes": float(np.mean(r.passes))}
                for r in runs]
        del store, runs
    base = rows[0]
    print(f"data: {source}; device {device} ({torch.get_num_threads()} threads); batch {args.batch}; "
          f"E|S| = {mean_size:.3f}; {args.steps} timed steps each (median; methods in turn) after {args.warmup} "
          f"warm-up")
    print("| method | s/step | time ÷ plain CE | passes ÷ plain CE |")
    print("|---|---|---|---|")
    for r in rows:
        r["time_ratio"] = r["s_per_step"] / base["s_per_step"]
        r["pass_ratio"] = r["passes"] / base["passes"]
        print(f"| {r['method']} | {r['s_per_step']:.4f} | {r['time_ratio']:.2f} | {r['pass_ratio']:.2f} |")
    per_instance = edit_bytes / len(images)
    print(f"edit store: {edit_bytes / 2**20:.1f} MiB for {len(images)} instances = {per_instance:.0f} B/instance "
          f"(E|S|·3·{info.input_size}²·1 B = {mean_size * 3 * info.input_size ** 2:.0f}); built in {build_s:.2f} s")
    print(json.dumps({"rows": rows, "mean_size": mean_size, "edit_bytes_per_instance": per_instance}))


if __name__ == "__main__":
    main()
