"""Candidate teachers (candidates.md §3): trained once per (dataset, preset) on clean labels, then cached.

This is the one place the true train labels train anything.
"""

from __future__ import annotations

import io
import json
import math
import time

import torch
import torch.nn.functional as F

from . import views as V
from .artifacts import load_or_build
from .dataset import DatasetInfo, Split
from .errors import PllbenchError
from .nets import Classifier, build_backbone
from .util import derive_seed, sha256_file
from .view_families import TEACHER_AUGMENTS

TEACHER_VERSION = "teacher-v1"


def teacher_key(dataset: dict, train_spec: dict, recipe: dict, init_sha: str | None = None) -> dict:
    train_recipe = {k: v for k, v in recipe.items() if k not in ("mode",)}
    return {"kind": "teacher", "dataset": dataset, "train": train_spec, "recipe": train_recipe,
            "init_sha256": init_sha, "version": TEACHER_VERSION}


def build_teacher(info: DatasetInfo, recipe: dict) -> Classifier:
    return Classifier(build_backbone(recipe["arch"]), info.num_classes)


def _augment(x: torch.Tensor, kind: str, maker: V.ViewMaker, gen: torch.Generator) -> torch.Tensor:
    """The teacher's train pipeline (`kind`: one of view_families.TEACHER_AUGMENTS) on float [0,1] images; returns
    normalised input. The flip-crop pads 4 px the family's way (reflect at 32 px, zeros at 28 px)."""
    size = maker.size
    if kind == "flip-crop":
        x = V.pad_crop(V.hflip(x, gen), gen, size, 4, maker.recipe.teacher_pad_mode)
    elif kind == "rrc-flip-jitter":
        x = V.random_resized_crop(x, gen, size, (0.08, 1.0))
        x = V.color_jitter(V.hflip(x, gen), gen, 0.4, 0.4, 0.4, 0.0, p=1.0)
    elif kind != "none":
        raise PllbenchError(f"unknown teacher augment {kind!r}; known: {', '.join(TEACHER_AUGMENTS)}")
    elif x.shape[-1] != size:
        x = V.center_crop(x, size)
    return maker.normalize(x)


def train_teacher(train: Split, info: DatasetInfo, recipe: dict, device: torch.device, log=None) -> Classifier:
    torch.manual_seed(recipe["seed"])
    model = build_teacher(info, recipe).to(device)
    maker = V.ViewMaker(info)
    opt = torch.optim.SGD(model.parameters(), lr=recipe["lr"], momentum=recipe["momentum"],
                          nesterov=recipe["nesterov"], weight_decay=recipe["weight_decay"])
    n, bs = len(train), recipe["batch_size"]
    steps_per_epoch = max(1, n // bs)
    total = steps_per_epoch * recipe["epochs"]
    warm = steps_per_epoch * recipe["warmup_epochs"]
    gen = torch.Generator(device=device).manual_seed(derive_seed("teacher", recipe["seed"]))
    cpu_gen = torch.Generator().manual_seed(derive_seed("teacher-order", recipe["seed"]))
    images, labels = train.images.to(device), train.labels.to(device)
    step = 0
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")
    for epoch in range(recipe["epochs"]):
        model.train()
        order = torch.randperm(n, generator=cpu_gen).to(device)
        start, loss_sum = time.time(), torch.zeros((), device=device)
        for s in range(steps_per_epoch):
            idx = order[s * bs:(s + 1) * bs]
            if step < warm:
                lr = recipe["lr"] * (step + 1) / warm
            else:
                lr = recipe["lr"] * 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))
            for group in opt.param_groups:
                group["lr"] = lr
            x = _augment(maker.to_unit(images[idx]), recipe["augment"], maker, gen)
            with autocast:
                loss = F.cross_entropy(model(x), labels[idx], label_smoothing=recipe["label_smoothing"])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += loss.detach()
            step += 1
        if log is not None:
            log.write(json.dumps({"epoch": epoch, "loss": loss_sum.item() / steps_per_epoch,
                                  "seconds": round(time.time() - start, 3)}) + "\n")
    model.eval()
    return model


@torch.no_grad()
def teacher_logits(model: Classifier, images: torch.Tensor, info: DatasetInfo, device: torch.device,
                   mode: str = "eval", batch_size: int | None = None, seed: int = 0) -> torch.Tensor:
    """Logits of the teacher's eval pipeline (base view), in dataset order, as float32 on the CPU."""
    import copy

    maker = V.ViewMaker(info)
    batch_size = batch_size or (512 if info.input_size >= 224 else 2000)
    net = model
    if mode == "train":  # the originals' behaviour: batch statistics, dropout on, on a throw-away copy
        net = copy.deepcopy(model).train()
        torch.manual_seed(seed)
    else:
        net.eval()
    out = []
    for start in range(0, len(images), batch_size):
        x = maker(images[start:start + batch_size].to(device), "base", None)
        out.append(net(x).float().cpu())
    return torch.cat(out)


def get_teacher(cache: Path, dataset: dict, train: Split, train_spec: dict, info: DatasetInfo, recipe: dict,  # noqa: F821
                device: torch.device, echo=print) -> tuple[Classifier, dict, str]:
    """The cached teacher for this (dataset, train rows, recipe); trains it on first use."""
    key = teacher_key(dataset, train_spec, recipe)

    def build(tmp):
        echo(f"training the {recipe['arch']} candidate teacher ({recipe['epochs']} epochs on {len(train)} images)")
        start = time.time()
        with open(tmp / "train_log.jsonl", "w") as log:
            model = train_teacher(train, info, recipe, device, log)
        buffer = io.BytesIO()
        torch.save({k: v.cpu() for k, v in model.state_dict().items()}, buffer)
        (tmp / "weights.pt").write_bytes(buffer.getvalue())
        return {"train_seconds": round(time.time() - start, 2)}

    path, meta = load_or_build(cache, "teacher", key, build)
    model = build_teacher(info, recipe)
    model.load_state_dict(torch.load(path / "weights.pt", map_location="cpu", weights_only=True))
    model.to(device).eval()
    return model, key, sha256_file(path / "weights.pt")
