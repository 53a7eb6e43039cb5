"""The shared training loop: one method, one dataset, one seed; resumable, atomic, method-agnostic."""

from __future__ import annotations

import functools
import io
import json
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from . import __version__
from .artifacts import ArtifactStore, git_commit
from .errors import PllbenchError
from .evaluate import accuracy, approximated_accuracy, covering_rate, predict_logits, projection_diagnostics
from .method import Batch, MethodContext, ViewBatch, get_method
from .prepare import Prepared
from .presets import lr_at
from .runconfig import RunConfig
from .runs import verify_finished, write_finished
from .util import atomic_write_bytes, atomic_write_json, atomic_write_text, derive_seed, sha256_bytes
from .views import ViewMaker, run_view_maker


class NonFiniteLoss(PllbenchError):
    pass


def resolve_run_config(prep: Prepared, method: str, seed: int, hp_cli: dict, epochs: int | None = None,
                       val_fraction: float = 0.0, compile: bool = False, bf16: bool = False) -> dict:
    """The fully resolved config of one run on prepared data (RunConfig.resolve + its artifacts), as config.json
    holds it. `hp_cli`: the --hp overrides (optimisation settings included); `bf16`: autocast the steps to
    bfloat16 on CUDA (protocols.md §4: an option, off by default); `compile`: torch.compile the method's backbones
    (speed only)."""
    run = RunConfig.resolve(method, prep.dataset_key, prep.preset, seed, overrides=hp_cli, epochs=epochs,
                            val_fraction=val_fraction, candidate_seed=int(prep.candidates.report["seed"]),
                            bf16=bf16, compile=compile)
    return run.with_artifacts(prep).to_json()


def run_id(config: RunConfig | dict) -> str:
    """The run id of a config (a RunConfig, or config.json's content: the `environment` key is not part of it)."""
    return RunConfig.of(config).run_id


def environment(device: torch.device) -> dict:
    env = {"pllbench": __version__, "torch": torch.__version__, "python": sys.version.split()[0],
           "numpy": np.__version__, "platform": platform.platform(), "commit": git_commit(), "device": str(device)}
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    else:
        env["cpu"] = platform.processor() or platform.machine()
        env["threads"] = torch.get_num_threads()
    return env


def _torch_bytes(state) -> bytes:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def _save_checkpoint(run_dir: Path, epoch: int, state: dict) -> None:
    """checkpoint-<epoch>.pt, then progress.json naming it with its checksum, then drop older checkpoints."""
    data = _torch_bytes(state)
    name = f"checkpoint-{epoch:04d}.pt"
    atomic_write_bytes(run_dir / name, data)
    atomic_write_json(run_dir / "progress.json", {"epoch": epoch, "checkpoint": name, "sha256": sha256_bytes(data)})
    for old in run_dir.glob("checkpoint-*.pt"):
        if old.name != name:
            old.unlink(missing_ok=True)


def _write_curves(run_dir: Path, curves: list[dict]) -> None:
    atomic_write_text(run_dir / "curves.jsonl", "".join(json.dumps(r) + "\n" for r in curves))


def _load_checkpoint(run_dir: Path) -> dict | None:
    progress = run_dir / "progress.json"
    if not progress.exists():
        return None
    try:
        info = json.loads(progress.read_text())
        data = (run_dir / info["checkpoint"]).read_bytes()
    except (OSError, ValueError, KeyError):
        raise PllbenchError(f"checkpoint of {run_dir} is unreadable; delete {run_dir} to restart the run") from None
    if sha256_bytes(data) != info["sha256"]:
        raise PllbenchError(f"checkpoint {run_dir / info['checkpoint']} is corrupted (checksum mismatch); "
                            f"delete {run_dir} to restart the run")
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 — any unpickling failure means the same thing
        raise PllbenchError(f"checkpoint {run_dir / info['checkpoint']} cannot be loaded ({exc}); "
                            f"delete {run_dir} to restart the run") from None


def _write_predictions(path: Path, rows: list[tuple[str, int, torch.Tensor]], test_index, labels) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    tables = []
    for tag, epoch, logits in rows:
        logits = logits.float().cpu()
        n = len(logits)
        tables.append(pa.table({
            "tag": pa.array([tag] * n), "epoch": pa.array(np.full(n, epoch, dtype=np.int32)),
            "index": pa.array(np.asarray(test_index, dtype=np.int64)),
            "y_true": pa.array(labels.cpu().numpy().astype(np.int32)),
            "y_pred": pa.array(logits.argmax(1).numpy().astype(np.int32)),
            "logits": pa.array(list(logits.numpy()), type=pa.list_(pa.float32())),
        }))
    buffer = pa.BufferOutputStream()
    pq.write_table(pa.concat_tables(tables), buffer)
    atomic_write_bytes(path, buffer.getvalue().to_pybytes())


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory of this run so far: allocated CUDA memory, else the process's peak resident set."""
    if device.type == "cuda":
        return round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10, 1)  # KiB on Linux


def throughput_summary(curves: list[dict]) -> dict:
    """final.json's speed record: median epoch throughput and time, the peak memory."""
    timed = [r for r in curves if "train_seconds" in r]  # epochs logged before these fields existed have none
    if not timed:
        return {}
    return {"samples_per_sec": statistics.median(r["samples_per_sec"] for r in timed),
            "epoch_seconds": statistics.median(r["seconds"] for r in timed),
            "train_seconds": round(sum(r["train_seconds"] for r in timed), 2),
            "peak_mem_mb": max(r["peak_mem_mb"] for r in timed)}


COLLAPSE_COSINE = 0.99  # a final mean pairwise cosine above this marks a collapsed projection (issue #13)


def collapse_summary(curves: list[dict]) -> dict:
    """final.json's projection record: the last epoch's diagnostics and the collapse flag (empty without a head)."""
    last = curves[-1] if curves else {}
    if "proj/mean_cos" not in last:
        return {}
    return {"projection": {"mean_cos": last["proj/mean_cos"], "eff_rank": last["proj/eff_rank"],
                           "collapsed": last["proj/mean_cos"] > COLLAPSE_COSINE}}


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


def _stderr_line(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def run_header(config: dict, run_dir: Path, n_train: int, n_val: int, n_test: int, steps: int, device) -> str:
    """The one line a run prints before training: preset, data sizes, epochs, device, results folder."""
    cfg = config["preset"]
    val = f" (+{n_val} validation)" if n_val else ""
    return (f"{run_id(config)}: preset {cfg['name']}, {n_train} train{val} / {n_test} test images, {cfg['epochs']} "
            f"epochs of {steps} steps (batch {cfg['batch_size']}), device {device}; results in {run_dir}")


def wall_time_line(config: dict, device, seconds_per_step: float, probe: int, steps: int, epochs_left: int) -> str:
    """The estimate printed after the first steps; on a CPU the paper preset also gets a warning naming `quick`."""
    total = seconds_per_step * steps * epochs_left
    line = (f"{run_id(config)}: estimated wall time {_duration(total)} ({epochs_left} epochs of {steps} steps at "
            f"{seconds_per_step:.3f} s/step, measured over the first {probe} steps; evaluation not included)")
    if config["preset"]["name"] == "paper" and torch.device(device).type == "cpu":
        line = (f"warning: {line}; the paper preset is made for a GPU: on a CPU use the CPU preset "
                f"(--preset quick, Fashion-MNIST) or pass --device cuda on a GPU machine")
    return line


def epoch_line(record: dict, epochs: int) -> str:
    """`epoch 3/15  test_acc 71.20%  loss 0.8123  12.3 s` (epochs counted from 1)."""
    loss = record.get("loss/loss")
    return (f"epoch {record['epoch'] + 1}/{epochs}  test_acc {100 * record['test_acc']:.2f}%  "
            + (f"loss {loss:.4f}  " if loss is not None else "") + f"{record['seconds']:.1f} s")


def write_config(run_dir: Path, run: RunConfig, device: torch.device) -> None:
    """config.json: the run's JSON form plus the environment (not part of the run id)."""
    atomic_write_json(Path(run_dir) / "config.json", {**run.to_json(), "environment": environment(device)})


def train_run(prep: Prepared, config: RunConfig | dict, run_dir: Path, device: torch.device, progress: bool = True,
              echo=None, artifacts: ArtifactStore | None = None) -> dict:
    """Train (or resume) one run into `run_dir`; returns final.json's content. `echo` takes the run's lines (the
    header, the resume note, the wall-time estimate and, with `progress` and no TTY, one line per epoch);
    `artifacts`: the artifact store the method may ask (default: the one holding the prepared candidates)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    final_path = run_dir / "final.json"
    if final_path.exists():
        final, problem = verify_finished(run_dir)
        if problem:
            raise PllbenchError(problem)
        return final
    run = RunConfig.of(config)
    config = run.to_json()
    write_config(run_dir, run, device)
    cfg, seed, hp = config["preset"], config["seed"], config["hparams"]
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    else:
        torch.use_deterministic_algorithms(True)
    data, info = prep.data, prep.data.info
    # NHWC convolutions, BN and pooling: faster on CPU and GPU
    maker = run_view_maker(info, cfg, channels_last=True)
    train_images = data.train.images.to(device)
    test_images, test_labels = data.test.images.to(device), data.test.labels.to(device)
    cands = torch.from_numpy(prep.candidates.matrix).float().to(device)
    n = len(cands)
    train_rows = torch.arange(n)
    val_rows = None
    if config["val_fraction"] > 0:
        order = torch.randperm(n, generator=torch.Generator().manual_seed(derive_seed("val", seed)))
        n_val = max(1, round(config["val_fraction"] * n))
        val_rows, train_rows = order[:n_val].sort().values, order[n_val:].sort().values
    bs = cfg["batch_size"]
    steps = len(train_rows) // bs
    if steps == 0:
        raise PllbenchError(f"batch size {bs} exceeds the {len(train_rows)} training rows")
    store = artifacts if artifacts is not None else ArtifactStore.holding(prep.candidates.path)
    ctx = MethodContext.for_run(run, info, cands, maker, train_images, device, store)
    torch.manual_seed(derive_seed("init", seed))
    method = get_method(config["method"])(ctx, hp).to(device)
    method.to(memory_format=torch.channels_last)  # as the views
    if config.get("compile"):
        compile_backbones(method)

    def make_optimizer():
        return torch.optim.SGD(method.trainable_parameters(), lr=cfg["lr"], momentum=cfg["momentum"],
                               weight_decay=cfg["weight_decay"])

    optimizer = make_optimizer()
    curves, start_epoch, selection = [], 0, {}
    state = _load_checkpoint(run_dir)
    if state is not None:
        method.load_state_dict(state["method"])
        if state.get("rebuilt_optimizer"):
            optimizer = make_optimizer()
        optimizer.load_state_dict(state["optimizer"])
        curves, start_epoch, selection = state["curves"], state["epoch"], state["selection"]
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda and bool(config.get("bf16")))
    emit = echo or _stderr_line
    emit(run_header(config, run_dir, len(train_rows), 0 if val_rows is None else len(val_rows), len(test_labels),
                    steps, device))
    if start_epoch:
        emit(f"{run_id(config)}: resuming from epoch {start_epoch} ({start_epoch}/{cfg['epochs']} epochs done, "
             f"from its checkpoint)")
    probe = min(20, steps)  # steps timed for the wall-time estimate
    bar = None
    if progress and sys.stderr.isatty():  # without a terminal: one line per epoch instead
        from tqdm import tqdm

        bar = tqdm(total=(cfg["epochs"] - start_epoch) * steps, desc=run_id(config), leave=False, file=sys.stderr)
        emit = functools.partial(tqdm.write, file=sys.stderr)  # above the bar
    rebuilt = bool(state and state.get("rebuilt_optimizer"))
    final_logits = None
    for epoch in range(start_epoch, cfg["epochs"]):
        started = time.time()
        torch.manual_seed(derive_seed("epoch", seed, epoch))
        gen = torch.Generator(device=device).manual_seed(derive_seed("views", seed, epoch))
        order = train_rows[torch.randperm(len(train_rows), generator=torch.Generator().manual_seed(
            derive_seed("order", seed, epoch)))]
        order = order.pin_memory().to(device, non_blocking=True) if cuda else order  # the only host data left
        if method.on_epoch_start(epoch):
            optimizer, rebuilt = make_optimizer(), True
        per_step = cfg.get("schedule", "epoch") == "step"
        lr = lr_at(cfg, epoch)
        for group in optimizer.param_groups:
            group["lr"] = lr
        method.train()
        sums: dict[str, torch.Tensor] = {}
        size_sum = torch.zeros((), device=device)
        first_bad = torch.full((), -1, device=device)  # the first step with a non-finite loss, found without a sync
        loop_started = time.perf_counter()
        for s in range(steps):  # no host sync inside: metrics stay on the device until the epoch ends
            idx = order[s * bs:(s + 1) * bs]
            if per_step:
                for group in optimizer.param_groups:
                    group["lr"] = lr_at(cfg, epoch, s, steps)
            batch = make_batch(method, maker, train_images, cands, idx, epoch, epoch * steps + s, gen)
            losses = train_step(method, optimizer, batch, autocast)
            finite = torch.isfinite(losses["loss"].detach())
            first_bad = torch.where((first_bad < 0) & ~finite, s, first_bad)
            for key, value in losses.items():
                sums[key] = sums.get(key, 0) + value.detach().float()
            size_sum += batch.candidates.sum() / len(idx)
            if bar is not None:
                bar.update(1)
            if epoch == start_epoch and s + 1 == probe:  # one host sync per run, for the estimate
                if cuda:
                    torch.cuda.synchronize(device)
                emit(wall_time_line(config, device, (time.perf_counter() - loop_started) / probe, probe, steps,
                                    cfg["epochs"] - start_epoch))
        if cuda:
            torch.cuda.synchronize(device)
        train_seconds = time.perf_counter() - loop_started
        values = {k: float(v) / steps for k, v in sums.items()}
        bad = [k for k, v in values.items() if not np.isfinite(v)]
        first_bad = int(first_bad)
        if bad or first_bad >= 0:
            where = f" step {first_bad}" if first_bad >= 0 else ""
            raise NonFiniteLoss(f"non-finite loss at epoch {epoch}{where} ({', '.join(bad) or 'loss'}); "
                                "lower the learning rate or check the method's hyperparameters")
        method.eval()
        with autocast:
            test_logits = predict_logits(method.predict, test_images, maker)
        record = {"epoch": epoch, "lr": lr, "test_acc": float(accuracy(test_logits, test_labels)),
                  "mean_size": float(size_sum) / steps, **{f"loss/{k}": v for k, v in values.items()}}
        with torch.no_grad():  # eval mode: probing the head changes no state
            has_projection = method.projections(maker(test_images[:2], "base", None)) is not None
        if has_projection:  # a trained projection head: is it collapsing?
            with autocast:
                record.update(projection_diagnostics(method.projections, test_images, maker))
        if val_rows is not None:
            with autocast:
                val_logits = predict_logits(method.predict, train_images[val_rows.to(device)], maker)
            val_cands = cands[val_rows.to(device)]
            for crit, fn in (("cr", covering_rate), ("aa", approximated_accuracy)):
                value = float(fn(val_logits, val_cands))
                record[f"val_{crit}"] = value
                if crit not in selection or value >= selection[crit]["value"]:
                    selection[crit] = {"value": value, "epoch": epoch, "test_acc": record["test_acc"],
                                       "logits": test_logits.cpu()}
        record["seconds"] = round(time.time() - started, 3)
        record.update(train_seconds=round(train_seconds, 3), samples_per_sec=round(steps * bs / train_seconds, 1),
                      peak_mem_mb=peak_memory_mb(device))
        curves.append(record)
        final_logits = test_logits
        _save_checkpoint(run_dir, epoch + 1, {"epoch": epoch + 1, "method": method.state_dict(),
                                               "optimizer": optimizer.state_dict(), "curves": curves,
                                               "selection": selection, "rebuilt_optimizer": rebuilt})
        _write_curves(run_dir, curves)  # after the checkpoint: never an epoch that no checkpoint holds
        if bar is not None:
            loss = record.get("loss/loss")
            bar.set_postfix_str(f"test_acc {100 * record['test_acc']:.2f}%"
                                + (f" loss {loss:.4f}" if loss is not None else ""))
        elif progress:
            emit(epoch_line(record, cfg["epochs"]))
    if bar is not None:
        bar.close()
    if final_logits is None:  # resumed after the last epoch's checkpoint but before final.json
        method.eval()
        with autocast:
            final_logits = predict_logits(method.predict, test_images, maker)
    rows = [("final", cfg["epochs"] - 1, final_logits)]
    rows += [(f"select-{crit}", sel["epoch"], sel["logits"]) for crit, sel in selection.items()]
    _write_predictions(run_dir / "predictions.parquet", rows, data.test_index, test_labels)
    final = {"run": run.run_id, "method": config["method"], "label": run.base_label, "dataset": info.name,
             "preset": cfg["name"], "seed": seed, "test_acc": float(accuracy(final_logits, test_labels)),
             "epochs": cfg["epochs"], "seconds": round(sum(r["seconds"] for r in curves), 2),
             "selected": {c: {"epoch": s["epoch"], "test_acc": s["test_acc"]} for c, s in selection.items()},
             "candidates": config["candidates"]["hash"], "throughput": throughput_summary(curves),
             "reference": get_method(config["method"]).reference, **collapse_summary(curves),
             "teacher_test_acc": prep.candidates.report["teacher"]["test_acc"]}
    _write_curves(run_dir, curves)  # a resume after the last checkpoint may not have written it yet
    atomic_write_bytes(run_dir / "model.pt", _torch_bytes(method.state_dict()))
    write_finished(run_dir, final)  # manifest.json (every file's sha256), then final.json
    for old in run_dir.glob("checkpoint-*.pt"):
        old.unlink(missing_ok=True)
    (run_dir / "progress.json").unlink(missing_ok=True)
    return final
