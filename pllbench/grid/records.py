"""Grid records (`<runs>/_grids/<id>.json`): which grids a results root has seen, so that `pllbench status` can
count their jobs; and their removal when a grid did nothing."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

from ..train.runs import job_failure_path, read_json
from ..util import atomic_write_json
from .jobs import GridSpec

GRIDS_DIR = "_grids"


def grid_record(runs: Path, spec: GridSpec) -> Path:
    return Path(runs) / GRIDS_DIR / f"{spec.id}.json"


def record_grid(runs: Path, spec: GridSpec) -> Path:
    path = grid_record(runs, spec)
    if not path.exists():
        atomic_write_json(path, {"id": spec.id, "spec": spec.identity(), "created": round(time.time(), 3),
                                 "jobs": len(spec.jobs())})
    return path


def forget_grid(runs: Path, spec: GridSpec, made: list[Path]) -> None:
    """Undo a grid that did nothing (every job failed before it had a run folder: missing data, say): its record,
    its jobs' failure records, and the folders in `made` (this command made them) once they are empty."""
    with contextlib.suppress(OSError):
        grid_record(runs, spec).unlink(missing_ok=True)
        for job in spec.jobs():
            job_failure_path(runs, job.id).unlink(missing_ok=True)
    for folder in sorted(made, key=lambda p: len(p.parts), reverse=True):
        with contextlib.suppress(OSError):
            folder.rmdir()


def recorded_grids(runs: Path) -> list[GridSpec]:
    out = []
    for path in sorted((Path(runs) / GRIDS_DIR).glob("*.json"), key=lambda p: p.stat().st_mtime):
        data = read_json(path)
        try:
            out.append(GridSpec.from_identity(data["spec"]))
        except (TypeError, KeyError, ValueError):
            continue
    return out
