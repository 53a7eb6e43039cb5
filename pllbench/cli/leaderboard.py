"""`pllbench leaderboard`: markdown and CSV leaderboards of the finished runs under a results root."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import PllbenchError
from .common import runs_option, runs_root


@click.command()
@runs_option
@click.option("--out", default=None, help="Folder for the markdown and CSV files [default: leaderboards/ under the "
                                         "results root, never the repository's committed leaderboards/].")
@click.option("--preset", default=None, help="Only this preset (default: one board per preset found).")
@click.option("--datasets", default=None, help="Only these datasets (the board is named after the set).")
@click.option("--methods", default=None, help="Only these methods' runs (comma-separated names, e.g. the paper's "
                                              "claims); write such a board to its own --out folder.")
@click.option("--compare", default=None, metavar="ROW:REF,...",
              help="Paired comparisons (Δ, 95% CI, p) of row labels against reference rows "
                   "[default: cad-cam:dirk and the CAD-CAM ablations].")
@click.option("--cache-dir", default=None, help="Artifact cache holding the entangled subsets "
                                                "[default: $PLLBENCH_CACHE or ~/.cache/pllbench].")
def leaderboard(runs_dir, out, preset, datasets, methods, compare, cache_dir):
    """Markdown (and CSV) leaderboards: methods × datasets, mean ± std over seeds, references (oracle, teacher),
    paired comparisons, paper reference rows."""
    from ..grid.jobs import split_datasets
    from ..leaderboard.build import write_leaderboards
    from ..leaderboard.compare import parse_comparisons
    from ..method import method_names
    from ..util import cache_root
    from .grid_options import parse_list

    root = runs_root(runs_dir)
    out = out or str(root / "leaderboards")
    if Path(out).exists() and not Path(out).is_dir():
        raise PllbenchError(f"--out {out} is a file; pass --out DIR with a folder for the leaderboards")
    comparisons = parse_comparisons(compare) if compare is not None else None
    chosen = parse_list(methods, method_names(), "method") if methods else None
    for path in write_leaderboards(root, Path(out), preset,
                                   split_datasets(datasets) if datasets else None, comparisons,
                                   cache_root(cache_dir), chosen):
        click.echo(str(path))
