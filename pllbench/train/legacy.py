"""Readers of the run formats older pllbench versions wrote; each reads one format into the current one.

- config.json without a candidate seed or without views (written before those fields were recorded): the candidate
  seed is the run seed, the views are the method's for the run's hyperparameters (`with_missing_fields`, used by
  RunConfig.from_json).
- A run recorded with its preset's whole method table instead of the entries that apply to its method: its folder
  has another run id than the same run recorded today; `recorded_earlier` finds it so a grid resumes or skips it
  there (RunConfig.signature already treats the two as the same run).

Nothing here writes: a run in an older format keeps its folder, its files and its id.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ..errors import PllbenchError
from ..method import get_method
from .runs import inside_root, read_json


def with_missing_fields(config: dict) -> dict:
    """config.json with the fields later versions added at the values those runs had: the candidate seed (the run
    seed) and the views (the method's for the run's hyperparameters; none for a method no longer registered)."""
    out = dict(config)
    out["candidates"] = {"seed": config["seed"], **(config.get("candidates") or {})}
    if out.get("views") is None:
        try:
            out["views"] = list(get_method(str(config["method"])).views_for(dict(config.get("hparams") or {})))
        except (PllbenchError, KeyError):
            out["views"] = []
    return out


def recorded_earlier(runs: Path, run):
    """The folder of the same run (`run`: a RunConfig) recorded with its preset's whole method table, when it has
    another id than `run` (RunConfig.with_own_method_table); that folder's own config then stands, so the job resumes
    or skips it there rather than training the same run again under the new id. None when there is no such folder."""
    folder = inside_root(runs, run.run_id)
    if folder.exists():
        return None
    for path in sorted(folder.parent.glob(f"{run.method}-s{run.seed}-*/config.json")):
        try:
            old = type(run).from_json(read_json(path) or {})
        except PllbenchError:
            continue
        named_by_it = old.run_id == f"{folder.parent.name}/{path.parent.name}"
        if named_by_it and old.with_own_method_table().run_id == run.run_id:
            return dataclasses.replace(old, compile=run.compile)
    return None
