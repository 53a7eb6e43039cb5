"""`pllbench candidates`: build (or reuse) the ID candidate artifact of a dataset and preset, print its report; export
or import the exact candidate sets of some seeds with their teacher (a hash-checked bundle)."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import PllbenchError
from ..wording import plural
from .common import DEFAULT_PRESET, common_data_options, echo_err, parse_device


def parse_seeds(text: str) -> list[int]:
    """`0` or `0,1,2` → [0, 1, 2]; a repeated seed or a non-integer is a one-line error."""
    try:
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise PllbenchError(f"--seed {text!r}: give integers separated by commas, e.g. --seed 0,1,2") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise PllbenchError(f"--seed {text!r}: give each seed once, e.g. --seed 0,1,2")
    return seeds


@click.command()
@click.option("--dataset", default=None, help="Dataset name, with options (e.g. synthetic:size=16); not needed "
                                              "with --import.")
@click.option("--preset", default=DEFAULT_PRESET, show_default=True, help="Preset whose teacher and subsets to use.")
@click.option("--seed", "seed_text", default="0", show_default=True,
              help="Candidate seed, or seeds separated by commas (0,1,2).")
@click.option("--export", "export_path", default=None, type=click.Path(dir_okay=False),
              help="Also write these seeds' candidate sets and their teacher to this file (.tar.gz).")
@click.option("--import", "import_path", default=None, type=click.Path(exists=True, dir_okay=False),
              help="Add the candidate sets and teacher of a bundle written by --export to the cache, checked.")
@common_data_options
def candidates(dataset, preset, seed_text, export_path, import_path, data_root, download, cache_dir, device):
    """Build (or reuse) the ID candidate artifact and print its report.

    Candidate sets depend only on the dataset, the preset and the seed (the teacher trains at one CPU thread), so
    the same command gives the same sets on every machine with the same package versions; --export and --import
    carry them between machines whose arithmetic differs (another CPU family, a GPU teacher)."""
    from ..util import cache_root

    cache = cache_root(cache_dir)
    if import_path:
        if dataset or export_path:
            raise PllbenchError("--import takes no --dataset or --export; it adds a bundle's artifacts to the cache")
        from ..data.bundle import import_bundle

        for kind, digest, status in import_bundle(cache, Path(import_path)):
            click.echo(f"{kind} {digest}: {'imported' if status == 'added' else 'already in the cache, identical'}")
        return
    if not dataset:
        raise PllbenchError("pass --dataset NAME (or --import FILE)")
    from ..data.prepare import prepare

    seeds = parse_seeds(seed_text)
    paths = []
    for seed in seeds:
        prep = prepare(dataset, preset, seed, root=data_root, download=download, cache=cache,
                       device=parse_device(device), echo=echo_err)
        paths.append(prep.candidates.path)
        if len(seeds) == 1:
            click.echo((prep.candidates.path / "report.md").read_text())
        click.echo(f"seed {seed}: candidates {prep.candidates.hash}, teacher {prep.teacher_hash} (artifact: "
                   f"{prep.candidates.path})")
    if export_path:
        from ..data.bundle import export_bundle

        index = export_bundle(cache, paths, Path(export_path))
        click.echo(f"exported {plural(len(index['artifacts']), 'artifact')} to {export_path}")
