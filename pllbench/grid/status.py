"""`pllbench status`: done / running / failed / interrupted / corrupt / pending per recorded grid, the ETA from measured
epoch times, and the finished runs whose projection collapsed."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import PllbenchError
from ..train.runs import RunFolder, read_job_failure, scan
from ..wording import clock, plural
from .jobs import GridSpec, run_signature
from .records import recorded_grids


@dataclass
class GridStatus:
    title: str
    total: int | None  # None when the spec is unknown (folders only)
    done: list[RunFolder] = field(default_factory=list)
    running: list[RunFolder] = field(default_factory=list)
    failed: list[RunFolder] = field(default_factory=list)
    incomplete: list[RunFolder] = field(default_factory=list)  # interrupted, resumable
    pending: list[tuple[str, str, int]] = field(default_factory=list)  # (method, dataset, epochs): not started
    corrupt: list[RunFolder] = field(default_factory=list)  # finished, but a file fails its manifest
    failed_jobs: list[tuple[str, str]] = field(default_factory=list)  # (job, error): failed before any run folder

    @property
    def failed_count(self) -> int:
        return len(self.failed) + len(self.failed_jobs)

    def remaining_epochs(self) -> list[tuple[str, str, int]]:
        """(method, dataset, epochs left) for every job not finished or failed."""
        return [(r.config["method"], r.config["dataset"]["name"], r.epochs - len(r.curves))
                for r in self.running + self.incomplete] + self.pending


def _epoch_seconds(folders: list[RunFolder]) -> dict[tuple[str, str], float]:
    """Median measured epoch time per (method, dataset), from curves.jsonl."""
    times: dict[tuple[str, str], list[float]] = {}
    for r in folders:
        key = (r.config["method"], r.config["dataset"]["name"])
        times.setdefault(key, []).extend(c["seconds"] for c in r.curves if isinstance(c.get("seconds"), (int, float)))
    return {k: statistics.median(v) for k, v in times.items() if v}


# A run folder's state → the GridStatus list counting it: a folder whose run died before its first epoch ("new")
# is interrupted (resumable), like one that finished some epochs.
_BUCKET = {"done": "done", "running": "running", "corrupt": "corrupt", "failed": "failed", "incomplete": "incomplete",
           "new": "incomplete"}


def grid_status(spec: GridSpec, folders: list[RunFolder], runs: Path | None = None) -> GridStatus:
    """Each job of the spec counted once: by its best run folder (done, running, corrupt, failed, interrupted), else
    failed when it failed before it had a folder (`<runs>/_jobs/<id>.failed.json`), else pending."""
    by_signature: dict[str, list[RunFolder]] = {}
    for r in folders:
        by_signature.setdefault(run_signature(r.config), []).append(r)
    order = {"done": 0, "running": 1, "corrupt": 2, "failed": 3, "incomplete": 4, "new": 5}
    jobs = spec.jobs()
    status = GridStatus(f"grid {spec.id}: {spec.describe()}", len(jobs))
    for job in jobs:
        run = job.run_config()
        matches = sorted(by_signature.get(run.signature, []), key=lambda r: order[r.state])
        if matches:
            getattr(status, _BUCKET[matches[0].state]).append(matches[0])
        elif runs is not None and (record := read_job_failure(runs, job.id)) is not None:
            status.failed_jobs.append((job.name, str(record.get("error", "?"))))
        else:
            status.pending.append((job.method, run.dataset_name, int(run.preset["epochs"])))
    return status


def folder_status(group: str, folders: list[RunFolder]) -> GridStatus:
    status = GridStatus(f"runs {group} (no grid spec: pending unknown)", None)
    for r in folders:
        getattr(status, _BUCKET[r.state]).append(r)
    return status


def render_status(status: GridStatus, epoch_seconds: dict[tuple[str, str], float]) -> str:
    counts = (f"  done {len(status.done)} · running {len(status.running)} · failed {status.failed_count} · "
              f"interrupted {len(status.incomplete)} · corrupt {len(status.corrupt)}")
    if status.total is not None:  # pending: jobs of the spec that never started (failed ones are not pending)
        counts += f" · pending {len(status.pending)} · {plural(status.total, 'job')}"
    lines = [status.title, counts]
    for r in status.running:
        owner = r.owner or {}
        speed = r.curves[-1].get("samples_per_sec") if r.curves else None
        lines.append(f"  running     {r.rel}: epoch {len(r.curves)}/{r.epochs}, pid {owner.get('pid', '?')} on "
                     f"{owner.get('host', '?')}" + (f", {speed:,.0f} samples/s" if speed else ""))
    for r in status.incomplete:
        lines.append(f"  interrupted {r.rel}: epoch {len(r.curves)}/{r.epochs} (rerun the grid to resume)")
    for r in status.failed:
        lines.append(f"  failed      {r.rel}: {(r.failed or {}).get('error', '?')}")
    for name, error in status.failed_jobs:
        lines.append(f"  failed      {name} (before training): {error}")
    for r in status.corrupt:
        lines.append(f"  corrupt     {r.rel}: {r.corrupt}")
    for r in status.done:  # finished, but its projection head collapsed (evaluate.projection_collapsed)
        projection = (r.final or {}).get("projection") or {}
        if projection.get("collapsed"):
            spent = (f", above 0.99 in {projection['collapsed_epochs']} of {plural(projection['epochs'], 'epoch')}"
                     if "collapsed_epochs" in projection else "")
            lines.append(f"  collapsed   {r.rel}: projection mean cosine {projection['mean_cos']:.4f} at the end"
                         f"{spent}, effective rank {projection['eff_rank']:.2f} (docs/calibration.md)")
    measured = [c["samples_per_sec"] for r in status.done + status.running + status.incomplete + status.failed
                for c in r.curves if isinstance(c.get("samples_per_sec"), (int, float))]
    if measured:
        live = sum(r.curves[-1].get("samples_per_sec", 0) for r in status.running if r.curves)
        lines.append(f"  throughput  {statistics.median(measured):,.0f} samples/s per job (median epoch)"
                     + (f"; {live:,.0f} samples/s now over {len(status.running)} running" if live else ""))
    left = status.remaining_epochs() if status.total is not None else [
        (r.config["method"], r.config["dataset"]["name"], r.epochs - len(r.curves)) for r in status.running]
    if left:
        all_times = list(epoch_seconds.values())
        fallback = statistics.median(all_times) if all_times else None
        per_dataset: dict[str, list[float]] = {}
        for (_, dataset), seconds in epoch_seconds.items():
            per_dataset.setdefault(dataset, []).append(seconds)
        total, unknown = 0.0, 0
        for method, dataset, epochs in left:
            seconds = epoch_seconds.get((method, dataset))
            if seconds is None and dataset in per_dataset:
                seconds = statistics.median(per_dataset[dataset])
            seconds = seconds if seconds is not None else fallback
            if seconds is None:
                unknown += 1
            else:
                total += seconds * epochs
        parallel = max(1, len(status.running))
        if unknown == len(left):
            lines.append("  ETA         unknown (no epoch measured yet)")
        else:
            lines.append(f"  ETA         {clock(total / parallel)} for {plural(sum(e for *_, e in left), 'epoch')} "
                         f"left at {plural(parallel, 'job')} in parallel (measured epoch times)"
                         + (f"; {plural(unknown, 'job')} without an estimate" if unknown else ""))
    return "\n".join(lines)


def status_report(runs: Path, spec: GridSpec | None) -> str:
    folders = scan(runs)
    epoch_seconds = _epoch_seconds(folders)
    blocks: list[str] = []
    specs = [spec] if spec is not None else recorded_grids(runs)
    claimed: set[str] = set()
    for grid in specs:
        try:
            status = grid_status(grid, folders, runs)
        except PllbenchError as exc:  # a grid recorded by another version (a method or preset that changed since)
            if spec is not None:
                raise
            blocks.append(f"grid {grid.id}: {grid.describe()}\n  cannot be resolved now ({exc}); its run folders "
                          f"are listed below")
            continue
        claimed.update(r.rel for r in status.done + status.running + status.failed + status.incomplete
                       + status.corrupt)
        blocks.append(render_status(status, epoch_seconds))
    if spec is None:
        groups: dict[str, list[RunFolder]] = {}
        for r in folders:
            if r.rel not in claimed:
                groups.setdefault(r.rel.split("/")[0], []).append(r)
        blocks += [render_status(folder_status(g, fs), epoch_seconds) for g, fs in sorted(groups.items())]
    if not blocks:
        raise PllbenchError(f"no runs and no recorded grid under {runs}; pass --runs DIR where `pllbench run` wrote, "
                            f"or name a grid with --grid FILE (or --methods and --dataset) to see its pending jobs")
    return "\n\n".join(blocks)
