"""The shared training loop: one method, one dataset, one seed; resumable, atomic, method-agnostic."""

from __future__ import annotations

import functools
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..artifacts import ArtifactStore
from ..data.prepare import Prepared
from ..errors import PllbenchError
from ..evaluate import (
    accuracy,
    approximated_accuracy,
    collapsed_epochs,
    covering_rate,
    predict_logits,
    projection_collapsed,
    projection_diagnostics,
)
from ..method import Batch, Method, MethodContext, ViewBatch, get_method
from ..util import atomic_write_bytes, atomic_write_json, derive_seed
from ..views.maker import ViewMaker, run_view_maker
from .machine import environment, peak_memory_mb, reset_peak_memory
from .messages import bar_label, epoch_line, run_header, stderr_line, wall_time_line
from .run_files import load_checkpoint, save_checkpoint, torch_bytes, write_curves, write_predictions
from .runconfig import RunConfig
from .runs import verify_finished, write_finished


class NonFiniteLoss(PllbenchError):
    pass


def lr_at(cfg: dict, epoch: int, step: int = 0, steps: int = 1) -> float:
    """Cosine from lr to η: lr_t = η + (lr − η)(1 + cos(π t / T))/2 with t = e, T = E (schedule "epoch", the
    official codes') or t = e + s/steps (schedule "step": a per-step cosine, which short CPU schedules need)."""
    import math

    eta, lr0, total = cfg["eta_min"], cfg["lr"], cfg["epochs"]
    t = epoch + step / steps if cfg.get("schedule", "epoch") == "step" else epoch
    return eta + (lr0 - eta) * (1 + math.cos(math.pi * t / total)) / 2


def resolve_run_config(prep: Prepared, method: str, seed: int, hp_cli: dict, epochs: int | None = None,
                       val_fraction: float = 0.0, compile: bool = False, bf16: bool = False) -> dict:
    """The fully resolved config of one run on prepared data (RunConfig.resolve + its artifacts), as config.json
    holds it. `hp_cli`: the --hp overrides (optimisation settings included); `bf16`: autocast the steps to
    bfloat16, on CUDA or the CPU (docs/spec/protocols.md §4: an option, off by default); `compile`: torch.compile the
    method's backbones (speed only)."""
    run = RunConfig.resolve(method, prep.dataset_key, prep.preset, seed, overrides=hp_cli, epochs=epochs,
                            val_fraction=val_fraction, candidate_seed=int(prep.candidates.report["seed"]),
                            bf16=bf16, compile=compile)
    return run.with_artifacts(prep).to_json()


def throughput_summary(curves: list[dict]) -> dict:
    """final.json's speed record: median epoch throughput and time, the peak memory, and what that peak covers:
    "run" only when every epoch's peak was counted from its run's start (a resumed run has epochs from several
    processes), else "process" (epochs logged before the per-run reset existed say nothing and count as such)."""
    timed = [r for r in curves if "train_seconds" in r]  # epochs logged before these fields existed have none
    if not timed:
        return {}
    return {"samples_per_sec": statistics.median(r["samples_per_sec"] for r in timed),
            "epoch_seconds": statistics.median(r["seconds"] for r in timed),
            "train_seconds": round(sum(r["train_seconds"] for r in timed), 2),
            "peak_mem_mb": max(r["peak_mem_mb"] for r in timed),
            "peak_mem_scope": "run" if all(r.get("peak_mem_scope") == "run" for r in timed) else "process"}


def collapse_summary(curves: list[dict]) -> dict:
    """final.json's projection record: the last epoch's diagnostics, how many epochs the head spent collapsed, and
    the collapse flag (evaluate.projection_collapsed); empty without a head."""
    if not curves or "proj/mean_cos" not in curves[-1]:
        return {}
    last = curves[-1]
    cosines = [r["proj/mean_cos"] for r in curves if "proj/mean_cos" in r]
    return {"projection": {"mean_cos": last["proj/mean_cos"], "eff_rank": last["proj/eff_rank"],
                           "collapsed_epochs": collapsed_epochs(cosines), "epochs": len(cosines),
                           "collapsed": projection_collapsed(cosines)}}


def compile_backbones(method: torch.nn.Module) -> None:
    """torch.compile each backbone's `feature_map` in place (forward and the CAM/CEL calls go through it):
    parameters, state_dict keys and the method's own code are untouched; the convolutions dominate every step.
    Shape-generic graphs (CAD's edit batches vary every step, and the disk cache then serves every batch size);
    teacher/student × grad mode × train/eval still need more graphs than dynamo's default 8."""
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
    for module in method.modules():
        if hasattr(module, "feature_map"):
            module.feature_map = torch.compile(module.feature_map, dynamic=True)


def make_batch(method, maker: ViewMaker, images, cands, idx, epoch: int, step: int, gen) -> Batch:
    """The views a method declared, drawn batched from the run's generator, plus its candidate rows."""
    batch_images = images[idx]
    views = ViewBatch(method.name, {v: maker(batch_images, v, gen) for v in method.views})
    return Batch(views, cands[idx], idx, epoch, step, gen)


def train_step(method, optimizer, batch: Batch, autocast) -> dict:
    """One optimisation step: the method's losses, backward, SGD step, then the method's after-step hook."""
    with autocast:
        losses = method.training_step(batch)
    optimizer.zero_grad(set_to_none=True)
    losses["loss"].backward()
    optimizer.step()
    method.after_step(batch)
    return losses


def write_config(run_dir: Path, run: RunConfig, device: torch.device) -> None:
    """config.json: the run's JSON form plus the environment (not part of the run id)."""
    atomic_write_json(Path(run_dir) / "config.json", {**run.to_json(), "environment": environment(device)})


@dataclass
class Training:
    """One run being trained: its config, data on the device, method, optimiser and what the epochs recorded."""

    run: RunConfig
    config: dict
    run_dir: Path
    device: torch.device
    maker: ViewMaker
    train_images: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    cands: torch.Tensor
    train_rows: torch.Tensor
    val_rows: torch.Tensor | None
    steps: int
    method: Method
    optimizer: torch.optim.Optimizer
    autocast: torch.autocast
    curves: list = field(default_factory=list)
    selection: dict = field(default_factory=dict)
    start_epoch: int = 0
    rebuilt: bool = False  # the method changed its trained parameters once (VALEN): the optimiser was rebuilt
    has_projection: bool | None = None  # a trained projection head (collapse diagnostics); probed at the first test
    peak_scope: str = "process"  # what peak_memory_mb covers in this process: "run" once the reset took

    @property
    def cfg(self) -> dict:
        return self.config["preset"]

    def make_optimizer(self) -> torch.optim.Optimizer:
        cfg = self.cfg
        return torch.optim.SGD(self.method.trainable_parameters(), lr=cfg["lr"], momentum=cfg["momentum"],
                               weight_decay=cfg["weight_decay"])


def split_rows(n: int, val_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(train rows, candidate-only validation rows or None), a seeded split of the n training rows."""
    if val_fraction <= 0:
        return torch.arange(n), None
    order = torch.randperm(n, generator=torch.Generator().manual_seed(derive_seed("val", seed)))
    n_val = max(1, round(val_fraction * n))
    return order[n_val:].sort().values, order[:n_val].sort().values


def start_training(prep: Prepared, run: RunConfig, run_dir: Path, device: torch.device,
                   artifacts: ArtifactStore | None) -> Training:
    """Data on the device, the method built from its seed, the optimiser, and the last checkpoint if any."""
    config = run.to_json()
    cfg, seed = config["preset"], config["seed"]
    peak_scope = reset_peak_memory(device)
    if device.type != "cuda":
        torch.use_deterministic_algorithms(True)
    data, info = prep.data, prep.data.info
    maker = run_view_maker(info, cfg, channels_last=True)  # NHWC convolutions, BN and pooling: faster on CPU and GPU
    train_images = data.train.images.to(device)
    cands = torch.from_numpy(prep.candidates.matrix).float().to(device)
    train_rows, val_rows = split_rows(len(cands), config["val_fraction"], seed)
    steps = len(train_rows) // cfg["batch_size"]
    if steps == 0:
        raise PllbenchError(f"batch size {cfg['batch_size']} exceeds the {len(train_rows)} training rows")
    store = artifacts if artifacts is not None else ArtifactStore.holding(prep.candidates.path)
    ctx = MethodContext.for_run(run, info, cands, maker, train_images, device, store)
    torch.manual_seed(derive_seed("init", seed))
    method = get_method(config["method"])(ctx, config["hparams"]).to(device)
    method.to(memory_format=torch.channels_last)  # as the views
    if config.get("compile"):
        compile_backbones(method)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=bool(config.get("bf16")))
    t = Training(run, config, run_dir, device, maker, train_images, data.test.images.to(device),
                 data.test.labels.to(device), cands, train_rows, val_rows, steps, method, None, autocast)
    t.optimizer, t.peak_scope = t.make_optimizer(), peak_scope
    state = load_checkpoint(run_dir)
    if state is not None:
        method.load_state_dict(state["method"])
        t.rebuilt = bool(state.get("rebuilt_optimizer"))
        if t.rebuilt:
            t.optimizer = t.make_optimizer()
        t.optimizer.load_state_dict(state["optimizer"])
        t.curves, t.start_epoch, t.selection = state["curves"], state["epoch"], state["selection"]
    return t


def train_epoch(t: Training, epoch: int, on_step) -> tuple[dict, float, float, float]:
    """One epoch of steps, no host sync inside (metrics stay on the device until the end); returns (mean losses,
    mean |S|, training seconds, the epoch's starting LR). `on_step(s, loop_started)` runs after every step."""
    cfg, seed, device, steps, bs = t.cfg, t.config["seed"], t.device, t.steps, t.cfg["batch_size"]
    cuda = device.type == "cuda"
    torch.manual_seed(derive_seed("epoch", seed, epoch))
    gen = torch.Generator(device=device).manual_seed(derive_seed("views", seed, epoch))
    order = t.train_rows[torch.randperm(len(t.train_rows), generator=torch.Generator().manual_seed(
        derive_seed("order", seed, epoch)))]
    order = order.pin_memory().to(device, non_blocking=True) if cuda else order  # the only host data left
    if t.method.on_epoch_start(epoch):
        t.optimizer, t.rebuilt = t.make_optimizer(), True
    per_step = cfg.get("schedule", "epoch") == "step"
    lr = lr_at(cfg, epoch)
    for group in t.optimizer.param_groups:
        group["lr"] = lr
    t.method.train()
    sums: dict[str, torch.Tensor] = {}
    size_sum = torch.zeros((), device=device)
    first_bad = torch.full((), -1, device=device)  # the first step with a non-finite loss, found without a sync
    loop_started = time.perf_counter()
    for s in range(steps):
        idx = order[s * bs:(s + 1) * bs]
        if per_step:
            for group in t.optimizer.param_groups:
                group["lr"] = lr_at(cfg, epoch, s, steps)
        batch = make_batch(t.method, t.maker, t.train_images, t.cands, idx, epoch, epoch * steps + s, gen)
        losses = train_step(t.method, t.optimizer, batch, t.autocast)
        first_bad = torch.where((first_bad < 0) & ~torch.isfinite(losses["loss"].detach()), s, first_bad)
        for key, value in losses.items():
            sums[key] = sums.get(key, 0) + value.detach().float()
        size_sum += batch.candidates.sum() / len(idx)
        on_step(s, loop_started)
    if cuda:
        torch.cuda.synchronize(device)
    train_seconds = time.perf_counter() - loop_started
    values = {k: float(v) / steps for k, v in sums.items()}
    bad, first_bad = [k for k, v in values.items() if not np.isfinite(v)], int(first_bad)
    if bad or first_bad >= 0:
        where = f" step {first_bad}" if first_bad >= 0 else ""
        raise NonFiniteLoss(f"non-finite loss at epoch {epoch}{where} ({', '.join(bad) or 'loss'}); "
                            "lower the learning rate (--hp lr=...) or check the method's hyperparameters")
    return values, float(size_sum) / steps, train_seconds, lr


def evaluate_epoch(t: Training, epoch: int, record: dict) -> torch.Tensor:
    """Test accuracy, the projection diagnostics of a method with a trained head, and the label-free selection
    criteria on the validation rows, into `record`; returns the test logits."""
    method, maker, device = t.method, t.maker, t.device
    method.eval()
    with t.autocast:
        test_logits = predict_logits(method.predict, t.test_images, maker)
    record["test_acc"] = float(accuracy(test_logits, t.test_labels))
    if t.has_projection is None:
        with torch.no_grad():  # eval mode: probing the head changes no state
            t.has_projection = method.projections(maker(t.test_images[:2], "base", None)) is not None
    if t.has_projection:  # a trained projection head: is it collapsing?
        with t.autocast:
            record.update(projection_diagnostics(method.projections, t.test_images, maker))
    if t.val_rows is not None:
        with t.autocast:
            val_logits = predict_logits(method.predict, t.train_images[t.val_rows.to(device)], maker)
        val_cands = t.cands[t.val_rows.to(device)]
        for crit, fn in (("cr", covering_rate), ("aa", approximated_accuracy)):
            value = float(fn(val_logits, val_cands))
            record[f"val_{crit}"] = value
            if crit not in t.selection or value >= t.selection[crit]["value"]:
                t.selection[crit] = {"value": value, "epoch": epoch, "test_acc": record["test_acc"],
                                     "logits": test_logits.cpu()}
    return test_logits


def finish_training(t: Training, prep: Prepared, final_logits: torch.Tensor | None) -> dict:
    """predictions.parquet, curves.jsonl, model.pt, then manifest.json and final.json; drops the resume state."""
    cfg, config, run_dir = t.cfg, t.config, t.run_dir
    if final_logits is None:  # resumed after the last epoch's checkpoint but before final.json
        t.method.eval()
        with t.autocast:
            final_logits = predict_logits(t.method.predict, t.test_images, t.maker)
    rows = [("final", cfg["epochs"] - 1, final_logits)]
    rows += [(f"select-{crit}", sel["epoch"], sel["logits"]) for crit, sel in t.selection.items()]
    write_predictions(run_dir / "predictions.parquet", rows, prep.data.test_index, t.test_labels)
    final = {"run": t.run.run_id, "method": config["method"], "label": t.run.base_label,
             "dataset": prep.data.info.name, "preset": cfg["name"], "seed": config["seed"],
             "test_acc": float(accuracy(final_logits, t.test_labels)), "epochs": cfg["epochs"],
             "seconds": round(sum(r["seconds"] for r in t.curves), 2),
             "selected": {c: {"epoch": s["epoch"], "test_acc": s["test_acc"]} for c, s in t.selection.items()},
             "candidates": config["candidates"]["hash"], "throughput": throughput_summary(t.curves),
             "reference": get_method(config["method"]).reference, **collapse_summary(t.curves),
             "teacher_test_acc": prep.candidates.report["teacher"]["test_acc"]}
    write_curves(run_dir, t.curves)  # a resume after the last checkpoint may not have written it yet
    atomic_write_bytes(run_dir / "model.pt", torch_bytes(t.method.state_dict()))
    write_finished(run_dir, final)  # manifest.json (every file's sha256), then final.json
    for old in run_dir.glob("checkpoint-*.pt"):
        old.unlink(missing_ok=True)
    (run_dir / "progress.json").unlink(missing_ok=True)
    return final


def train_run(prep: Prepared, config: RunConfig | dict, run_dir: Path, device: torch.device, progress: bool = True,
              echo=None, artifacts: ArtifactStore | None = None, on_epoch=None) -> dict:
    """Train (or resume) one run into `run_dir`; returns final.json's content. `echo` takes the run's lines (the
    header, the resume note, the wall-time estimate and, with `progress` and no TTY, one line per epoch);
    `artifacts`: the artifact store the method may ask (default: the one holding the prepared candidates);
    `on_epoch(record)` runs after each epoch's checkpoint and curves are written (`pllbench tune` reports the
    validation criterion there): an exception it raises stops the run, which resumes from that checkpoint."""
    run_dir.mkdir(parents=True, exist_ok=True)
    if (run_dir / "final.json").exists():
        final, problem = verify_finished(run_dir)
        if problem:
            raise PllbenchError(problem)
        return final
    run = RunConfig.of(config)
    write_config(run_dir, run, device)
    t = start_training(prep, run, run_dir, device, artifacts)
    config, epochs = t.config, t.cfg["epochs"]
    emit = echo or stderr_line
    n_val = 0 if t.val_rows is None else len(t.val_rows)
    emit(run_header(config, run_dir, len(t.train_rows), n_val, len(t.test_labels), t.steps, device))
    if t.start_epoch:
        emit(f"{run.run_id}: resuming from epoch {t.start_epoch} ({t.start_epoch}/{epochs} epochs done, "
             f"from its checkpoint)")
    probe = min(20, t.steps)  # steps timed for the wall-time estimate
    bar = None
    if progress and sys.stderr.isatty():  # without a terminal: one line per epoch instead
        from tqdm import tqdm

        bar = tqdm(total=(epochs - t.start_epoch) * t.steps, desc=bar_label(run.run_id, t.start_epoch, epochs),
                   leave=False, file=sys.stderr)
        emit = functools.partial(tqdm.write, file=sys.stderr)  # above the bar

    def on_step(s: int, loop_started: float, epoch_box: list) -> None:
        if bar is not None:
            bar.update(1)
        if epoch_box[0] == t.start_epoch and s + 1 == probe:  # one host sync per run, for the estimate
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            emit(wall_time_line(config, device, (time.perf_counter() - loop_started) / probe, probe, t.steps,
                                epochs - t.start_epoch))

    final_logits = None
    for epoch in range(t.start_epoch, epochs):
        started = time.time()
        if bar is not None:
            bar.set_description_str(bar_label(run.run_id, epoch, epochs), refresh=False)
        values, mean_size, train_seconds, lr = train_epoch(
            t, epoch, functools.partial(on_step, epoch_box=[epoch]))
        record = {"epoch": epoch, "lr": lr, "test_acc": None, "mean_size": mean_size,
                  **{f"loss/{k}": v for k, v in values.items()}}
        final_logits = evaluate_epoch(t, epoch, record)
        record["seconds"] = round(time.time() - started, 3)
        record.update(train_seconds=round(train_seconds, 3),
                      samples_per_sec=round(t.steps * t.cfg["batch_size"] / train_seconds, 1),
                      peak_mem_mb=peak_memory_mb(device), peak_mem_scope=t.peak_scope)
        t.curves.append(record)
        save_checkpoint(run_dir, epoch + 1, {"epoch": epoch + 1, "method": t.method.state_dict(),
                                             "optimizer": t.optimizer.state_dict(), "curves": t.curves,
                                             "selection": t.selection, "rebuilt_optimizer": t.rebuilt})
        write_curves(run_dir, t.curves)  # after the checkpoint: never an epoch that no checkpoint holds
        if on_epoch is not None:
            on_epoch(record)
        if bar is not None:
            loss = record.get("loss/loss")
            bar.set_postfix_str(f"test_acc {100 * record['test_acc']:.2f}%"
                                + (f" loss {loss:.4f}" if loss is not None else ""))
        elif progress:
            emit(epoch_line(record, epochs, run.run_id))
    if bar is not None:
        bar.close()
    return finish_training(t, prep, final_logits)
