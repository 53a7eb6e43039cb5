"""The lines a run prints: its header, the wall-time estimate after the first steps, one line per epoch."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from ..wording import clock, plural
from .runconfig import run_id


def stderr_line(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run_header(config: dict, run_dir: Path, n_train: int, n_val: int, n_test: int, steps: int, device) -> str:
    """The one line a run prints before training: preset, data sizes, epochs, device, results folder."""
    cfg = config["preset"]
    val = f" (+{n_val} validation)" if n_val else ""
    return (f"{run_id(config)}: preset {cfg['name']}, {n_train} train{val} / {n_test} test images, "
            f"{plural(cfg['epochs'], 'epoch')} of {plural(steps, 'step')} (batch {cfg['batch_size']}), "
            f"device {device}; results in {run_dir}")


def wall_time_line(config: dict, device, seconds_per_step: float, probe: int, steps: int, epochs_left: int) -> str:
    """The estimate printed after the first steps; on a CPU the paper preset also gets a warning naming `quick`."""
    total = seconds_per_step * steps * epochs_left
    line = (f"{run_id(config)}: estimated wall time {clock(total)} ({plural(epochs_left, 'epoch')} of "
            f"{plural(steps, 'step')} at {seconds_per_step:.3f} s/step, measured over the first "
            f"{plural(probe, 'step')}; evaluation not included)")
    if config["preset"]["name"] == "paper" and torch.device(device).type == "cpu":
        line = (f"warning: {line}; the paper preset is made for a GPU: on a CPU use the CPU preset "
                f"(--preset quick, Fashion-MNIST) or pass --device cuda on a GPU machine")
    return line


def epoch_line(record: dict, epochs: int, run: str) -> str:
    """`<run id>: epoch 3/15  test_acc 71.20%  loss 0.8123  12.3 s` (epochs counted from 1; the run id keeps the lines
    of runs training side by side apart)."""
    loss = record.get("loss/loss")
    return (f"{run}: epoch {record['epoch'] + 1}/{epochs}  test_acc {100 * record['test_acc']:.2f}%  "
            + (f"loss {loss:.4f}  " if loss is not None else "") + f"{record['seconds']:.1f} s")


def bar_label(run: str, epoch: int, epochs: int) -> str:
    """The progress bar's description while epoch `epoch` (from 0) trains: `<run id> epoch 3/15`."""
    return f"{run} epoch {epoch + 1}/{epochs}"


def paper_on_cpu_warning(preset: str, datasets: list[str], epochs: int | None) -> str | None:
    """The warning printed before any work when the paper preset is to train on a CPU (None for other presets):
    its epochs and networks, the candidate teacher's included (--epochs does not shorten it). `datasets` as typed
    (options allowed), `epochs` the --epochs override."""
    from ..data.registry import parse_dataset_name
    from ..presets import resolve_preset

    if preset != "paper":
        return None
    parts = []
    for dataset in datasets:
        name = parse_dataset_name(dataset)[0]
        cfg = resolve_preset(preset, name)
        teacher = cfg["teacher"]
        parts.append(f"{plural(epochs or cfg['epochs'], 'epoch')} of {cfg['backbone']} per run on {name}, after a "
                     f"{teacher['epochs']}-epoch {teacher['arch']} candidate teacher")
    return (f"warning: preset paper on a CPU: {'; '.join(parts)}: expect days; use --preset quick (the CPU preset, "
            f"Fashion-MNIST), or --device cuda on a GPU machine")
