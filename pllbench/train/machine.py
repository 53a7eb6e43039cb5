"""What machine a run ran on and how much memory it took: config.json's `environment`, the per-run peak memory."""

from __future__ import annotations

import os
import platform
import resource
import sys
from pathlib import Path

import numpy as np
import torch

from .. import __version__
from ..artifacts import git_commit


def environment(device: torch.device) -> dict:
    env = {"pllbench": __version__, "torch": torch.__version__, "python": sys.version.split()[0],
           "numpy": np.__version__, "platform": platform.platform(), "commit": git_commit(), "device": str(device)}
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    else:
        env["cpu"] = cpu_name()
        env["cores"] = os.cpu_count()
        env["threads"] = torch.get_num_threads()
    return env


def _proc_value(path: str, key: str) -> str | None:
    """The value of `key: value` in a Linux /proc file, None where there is no such file or line."""
    try:
        for line in Path(path).read_text().splitlines():
            name, sep, value = line.partition(":")
            if sep and name.strip() == key:
                return value.strip()
    except OSError:
        pass
    return None


def cpu_name() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux; platform.processor() is often empty there), else the machine."""
    return _proc_value("/proc/cpuinfo", "model name") or platform.processor() or platform.machine()


def native_bf16_flags() -> list[str] | None:
    """The CPU flags present here that make bfloat16 native (avx512_bf16, amx_bf16); without them oneDNN emulates it
    and a bf16 step is slower than fp32. None where /proc/cpuinfo has no flags line (not Linux on x86: unknown)."""
    flags = _proc_value("/proc/cpuinfo", "flags")
    return None if flags is None else [f for f in ("avx512_bf16", "amx_bf16") if f in flags.split()]


def status_kib(field: str) -> int | None:
    """A KiB field of /proc/self/status (VmRSS, VmHWM: the peak resident set since the last reset), else None."""
    value = _proc_value("/proc/self/status", field)
    return int(value.split()[0]) if value else None


def reset_peak_memory(device: torch.device) -> str:
    """Start this run's peak at the current usage and say what the peak will cover: "run" when the reset took,
    "process" when it could not (the process's peak since it started stands). A grid worker trains run after run in
    one process, so without the reset a cheap run would report the peak of an expensive one before it. On the CPU
    this resets the process's peak resident set (Linux: writing 5 to /proc/self/clear_refs resets VmHWM)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return "run"
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return "process"
    return "run" if status_kib("VmHWM") is not None else "process"


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory of this run so far (from `reset_peak_memory`): allocated CUDA memory, else the resident set
    (VmHWM; where there is none, ru_maxrss: the process's peak since it started, KiB on Linux)."""
    if device.type == "cuda":
        return round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    kib = status_kib("VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(kib / 2**10, 1)
