"""Candidate teachers (docs/spec/candidates.md §3): trained once per (dataset, preset) on clean labels, then cached.

This is the one place the true train labels train anything. Everything that feeds the candidate generator (the
teacher's training and its logits) runs at one CPU thread (`one_thread`): CPU kernels split their reductions by
thread count, so a teacher trained at two threads has other weights, and a benchmark's "seed 0" would mean other
candidate sets on another machine. A cached teacher records how it was trained; one that predates this rule is
retrained, never served silently. Training checkpoints every epoch beside the artifact and resumes after a kill.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import shutil
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from ..artifacts import artifact_dir, load_or_build, verify
from ..dataset import DatasetInfo, Split
from ..errors import PllbenchError
from ..nets import Classifier, build_backbone
from ..util import atomic_write_bytes, derive_seed, file_lock, sha256_file
from ..views import maker as V
from ..views.families import TEACHER_AUGMENTS
from ..wording import plural

TEACHER_VERSION = "teacher-v1"
CPU_THREADS = 1  # the thread count every CPU teacher trains and scores at


@contextlib.contextmanager
def one_thread(device: torch.device):
    """Run the block at `CPU_THREADS` intra-op threads (CPU) or with deterministic cuDNN kernels (CUDA)."""
    threads = torch.get_num_threads()
    cudnn = torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
    torch.set_num_threads(CPU_THREADS)
    if device.type == "cuda":
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = cudnn


def teacher_key(dataset: dict, train_spec: dict, recipe: dict, init_sha: str | None = None,
                device: torch.device | None = None) -> dict:
    """The teacher's identity. A teacher trained on an accelerator is another artifact than the CPU's (other
    kernels, other weights); CPU keys carry no device field, so they keep the hashes they always had."""
    train_recipe = {k: v for k, v in recipe.items() if k not in ("mode",)}
    key = {"kind": "teacher", "dataset": dataset, "train": train_spec, "recipe": train_recipe,
           "init_sha256": init_sha, "version": TEACHER_VERSION}
    if device is not None and device.type != "cpu":
        key["compute"] = device.type
    return key


def training_record(device: torch.device) -> dict:
    """How a teacher is trained here, stored in its meta: what its weights depend on besides its key."""
    record = {"device": device.type, "torch": torch.__version__}
    if device.type == "cpu":
        record["threads"] = CPU_THREADS
    else:
        record["device_name"] = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
    return record


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


def _load_checkpoint(path: Path | None, model, opt, gen, cpu_gen) -> tuple[int, list[str]]:
    """Restore an epoch checkpoint of an interrupted training: (epochs done, their log lines); (0, []) if none."""
    if path is None or not path.is_file():
        return 0, []
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        gen.set_state(state["gen"])
        cpu_gen.set_state(state["cpu_gen"])
        return int(state["epochs_done"]), list(state["log"])
    except (RuntimeError, KeyError, ValueError, EOFError):
        path.unlink(missing_ok=True)  # a checkpoint torn by a crash of an older writer: start over
        return 0, []


def _save_checkpoint(path: Path | None, model, opt, gen, cpu_gen, epochs_done: int, log: list[str]) -> None:
    if path is None:
        return
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "gen": gen.get_state(),
                "cpu_gen": cpu_gen.get_state(), "epochs_done": epochs_done, "log": log}, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def train_teacher(train: Split, info: DatasetInfo, recipe: dict, device: torch.device, log=None,
                  checkpoint: Path | None = None, echo=None) -> Classifier:
    """Train the teacher; with `checkpoint`, save every epoch there and resume from it (bit-identical to an
    uninterrupted training). `echo` gets one line per epoch; `log` the JSON lines of every epoch."""
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
    done, lines = _load_checkpoint(checkpoint, model, opt, gen, cpu_gen)
    if done and echo is not None:
        echo(f"resuming the candidate teacher after epoch {done}/{recipe['epochs']} (checkpoint {checkpoint})")
    images, labels = train.images.to(device), train.labels.to(device)
    step = done * steps_per_epoch
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")
    for epoch in range(done, recipe["epochs"]):
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
        seconds = time.time() - start
        lines.append(json.dumps({"epoch": epoch, "loss": loss_sum.item() / steps_per_epoch,
                                 "seconds": round(seconds, 3)}))
        _save_checkpoint(checkpoint, model, opt, gen, cpu_gen, epoch + 1, lines)
        if echo is not None:
            echo(f"teacher epoch {epoch + 1}/{recipe['epochs']}: loss {loss_sum.item() / steps_per_epoch:.4f}, "
                 f"{seconds:.1f} s")
    if log is not None:
        log.write("".join(line + "\n" for line in lines))
    model.eval()
    return model


@torch.no_grad()
def teacher_logits(model: Classifier, images: torch.Tensor, info: DatasetInfo, device: torch.device,
                   mode: str = "eval", batch_size: int | None = None, seed: int = 0) -> torch.Tensor:
    """Logits of the teacher's eval pipeline (base view), in dataset order, as float32 on the CPU; computed under
    `one_thread`, since they feed the candidate generator."""
    with one_thread(device):
        return _teacher_logits(model, images, info, device, mode, batch_size, seed)


def _teacher_logits(model, images, info, device, mode, batch_size, seed) -> torch.Tensor:
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


def _retire_untrusted(path: Path, kind_key: dict, device: torch.device, echo) -> None:
    """Move aside a cached teacher not trained the way this version trains it (no record, or another thread count),
    so that it is retrained instead of served; say so in one line. A torch version change is noted, not retrained."""
    if not path.exists():
        return
    meta = verify(path, "teacher", kind_key)
    record, wanted = meta.get("training", {}), training_record(device)
    if device.type == "cpu" and record.get("threads") != CPU_THREADS:
        with file_lock(path.with_name(path.name + ".lock")):
            if path.exists():
                aside = path.with_name(f"{path.name}.untrusted-{int(time.time())}")
                os.replace(path, aside)
                echo(f"note: the cached teacher {path.name} was trained at "
                     f"{record.get('threads', 'an unrecorded number of')} threads, so its weights may differ from "
                     f"what its key trains; retraining it at {CPU_THREADS} (the old one is kept at {aside})")
    elif record.get("torch") not in (None, wanted["torch"]):
        echo(f"note: the cached teacher {path.name} was trained with torch {record['torch']}, this is torch "
             f"{wanted['torch']}: a new training here could give other weights (its candidates follow the cached one)")


def get_teacher(cache: Path, dataset: dict, train: Split, train_spec: dict, info: DatasetInfo, recipe: dict,  # noqa: F821
                device: torch.device, echo=print) -> tuple[Classifier, dict, str]:
    """The cached teacher for this (dataset, train rows, recipe, device kind); trains it on first use, at one thread
    on a CPU, with a checkpoint per epoch beside the artifact (`<hash>.partial`) that a rerun resumes from."""
    key = teacher_key(dataset, train_spec, recipe, device=device)
    path = artifact_dir(cache, "teacher", key)
    _retire_untrusted(path, key, device, echo)
    partial = path.with_name(path.name + ".partial")

    def build(tmp):
        how = plural(CPU_THREADS, "CPU thread") if device.type == "cpu" else "deterministic kernels"
        echo(f"training the {recipe['arch']} candidate teacher ({plural(recipe['epochs'], 'epoch')} on {len(train)} "
             f"images, {how})")
        start = time.time()
        partial.mkdir(parents=True, exist_ok=True)
        with one_thread(device), open(tmp / "train_log.jsonl", "w") as log:
            model = train_teacher(train, info, recipe, device, log, partial / "checkpoint.pt", echo)
        buffer = io.BytesIO()
        torch.save({k: v.cpu() for k, v in model.state_dict().items()}, buffer)
        (tmp / "weights.pt").write_bytes(buffer.getvalue())
        return {"train_seconds": round(time.time() - start, 2), "training": training_record(device)}

    path, meta = load_or_build(cache, "teacher", key, build)
    if partial.exists():
        shutil.rmtree(partial, ignore_errors=True)
    model = build_teacher(info, recipe)
    model.load_state_dict(torch.load(path / "weights.pt", map_location="cpu", weights_only=True))
    model.to(device).eval()
    return model, key, sha256_file(path / "weights.pt")
