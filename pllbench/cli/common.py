"""What several commands share: the default preset, the results root, the device, error output, shared options."""

from __future__ import annotations

import os
from pathlib import Path

import click

from ..errors import PllbenchError

# The preset a command uses without --preset: the paper's protocol (each preset names the datasets it is made for;
# `quick` is the CPU preset, Fashion-MNIST only).
DEFAULT_PRESET = "paper"


def echo_err(msg: str) -> None:
    """One line on stderr (warnings, progress notes, `error: ...`)."""
    click.echo(msg, err=True)


def runs_root(explicit: str | None) -> Path:
    """The results root: --runs DIR, else $PLLBENCH_RUNS, else ./runs."""
    if explicit is not None and not explicit.strip():
        raise PllbenchError("--runs is empty; pass --runs DIR with a folder (or leave it out: $PLLBENCH_RUNS, else "
                            "./runs)")
    root = Path(explicit or os.environ.get("PLLBENCH_RUNS") or "runs")
    if root.exists() and not root.is_dir():
        raise PllbenchError(f"results root {root} is a file; pass --runs DIR with a folder")
    return root


def parse_device(name: str | None):
    """--device as a torch.device (default: cuda when available); a missing CUDA is refused in one line."""
    import torch

    from ..data.prepare import default_device

    if not name:
        return default_device()
    try:
        device = torch.device(name)
    except RuntimeError:
        raise PllbenchError(f"unknown device {name!r}; use cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise PllbenchError("--device cuda asked for, but no CUDA device is available; pass --device cpu")
    return device


def runs_option(fn):
    """--runs DIR (into the parameter `runs_dir`)."""
    return click.option("--runs", "runs_dir", default=None, help="Results root (else $PLLBENCH_RUNS, ./runs).")(fn)


def data_options(download_help: str = "Allow fetching a missing dataset over the network."):
    """--data-root, --download, --cache-dir, --device: where the data and artifacts are, and what computes."""

    def decorate(fn):
        fn = click.option("--data-root", default=None, help="Folder holding the datasets (else $PLLBENCH_DATA).")(fn)
        fn = click.option("--download", is_flag=True, help=download_help)(fn)
        fn = click.option("--cache-dir", default=None,
                          help="Artifact cache (else $PLLBENCH_CACHE, ~/.cache/pllbench).")(fn)
        fn = click.option("--device", default=None, help="cpu, cuda or cuda:N (default: cuda when available).")(fn)
        return fn

    return decorate


common_data_options = data_options()
