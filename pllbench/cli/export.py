"""`pllbench export`: every run folder under a results root as one table (results.load_runs), as CSV or Parquet."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import PllbenchError
from .common import runs_option, runs_root


def export_table(root: Path, out: Path, fmt: str) -> int:
    """Write load_runs(root) to `out` (atomically) as csv or parquet; returns the number of rows."""
    import io

    from ..leaderboard.results import load_runs
    from ..util import atomic_write_bytes, atomic_write_text

    frame = load_runs(root)
    if frame.empty:
        raise PllbenchError(f"no runs under {root}; run `pllbench run` first (or pass --runs DIR)")
    if out.is_dir():
        raise PllbenchError(f"--out {out} is a folder; pass --out FILE")
    if fmt == "csv":
        atomic_write_text(out, frame.to_csv(index=False))
    else:
        buffer = io.BytesIO()
        frame.to_parquet(buffer, index=False)
        atomic_write_bytes(out, buffer.getvalue())
    return len(frame)


@click.command("export")
@click.option("--format", "fmt", type=click.Choice(["csv", "parquet"]), default="csv", show_default=True,
              help="The table's file format.")
@click.option("--out", required=True, help="The file to write.")
@runs_option
def export(fmt, out, runs_dir):
    """Every run folder as one row (config, final and entangled metrics, collapse, costs, state, environment)."""
    rows = export_table(runs_root(runs_dir), Path(out), fmt)
    click.echo(f"{out}: {rows} run folders")
