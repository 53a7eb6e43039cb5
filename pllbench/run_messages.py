"""The lines a run prints: its header, the wall-time estimate after the first steps, one line per epoch."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from .runconfig import RunConfig


def run_id(config) -> str:
    return RunConfig.of(config).run_id


def stderr_line(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def duration(seconds: float) -> str:
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
    line = (f"{run_id(config)}: estimated wall time {duration(total)} ({epochs_left} epochs of {steps} steps at "
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
