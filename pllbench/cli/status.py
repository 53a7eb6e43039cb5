"""`pllbench status`: done / running / failed / interrupted / corrupt / pending jobs per grid, with an ETA."""

from __future__ import annotations

import click

from .common import runs_option, runs_root
from .grid_options import GridOptions, grid_spec_options


@click.command()
@grid_spec_options
@runs_option
def status(grid: GridOptions, runs_dir):
    """Done / running / failed / interrupted / corrupt / pending jobs per grid, with throughput and an ETA from
    measured epoch times (failed and corrupt jobs are not pending and not in the ETA).

    Without grid options: every grid `pllbench run` recorded under the results root, then folders of no grid."""
    from ..grid.status import status_report

    spec, _ = grid.spec(required=False)
    click.echo(status_report(runs_root(runs_dir), spec))
