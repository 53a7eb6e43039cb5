"""`pllbench candidates`: build (or reuse) the ID candidate artifact of a dataset and preset, print its report."""

from __future__ import annotations

import click

from .common import DEFAULT_PRESET, common_data_options, echo_err, parse_device


@click.command()
@click.option("--dataset", required=True)
@click.option("--preset", default=DEFAULT_PRESET, show_default=True)
@click.option("--seed", default=0, show_default=True, type=int, help="Candidate seed.")
@common_data_options
def candidates(dataset, preset, seed, data_root, download, cache_dir, device):
    """Build (or reuse) the ID candidate artifact and print its report."""
    from ..prepare import prepare
    from ..util import cache_root

    prep = prepare(dataset, preset, seed, root=data_root, download=download, cache=cache_root(cache_dir),
                   device=parse_device(device), echo=echo_err)
    click.echo((prep.candidates.path / "report.md").read_text())
    click.echo(f"artifact: {prep.candidates.path}")
