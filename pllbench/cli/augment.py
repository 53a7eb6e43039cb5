"""`pllbench augment`: CAD's class-specific InstructPix2Pix edits of a run's candidates (pllbench.cad_edits.augment does
the work; this module holds only the command)."""

from __future__ import annotations

import click

from ..cad_edits.augment import DEFAULT_MODEL, RESOLUTION, TINY, augment
from ..errors import PllbenchError
from ..wording import plural
from .common import DEFAULT_PRESET, data_options, echo_err, parse_device


@click.command("augment")
@click.option("--dataset", required=True, help="The dataset whose candidates to edit (options allowed).")
@click.option("--preset", default=DEFAULT_PRESET, show_default=True,
              help="The preset whose candidates (teacher, subsets) to edit.")
@click.option("--seed", default=0, show_default=True, type=int, help="Candidate seed (the run's seed).")
@click.option("--editor", type=click.Choice(["ip2p", TINY]), default=None,
              help=f"ip2p (default) or {TINY} (a random miniature pipeline for tests; same as --model {TINY}).")
@click.option("--model", default=None,
              help=f"A local diffusers folder, or a hub id (default {DEFAULT_MODEL}), or {TINY}.")
@click.option("--prompts", default="names", show_default=True,
              help="names (bare class names), detailed (shipped descriptions) or FILE.json {class: instruction}.")
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(min=1),
              help="Edits per pipeline call (and per resumable chunk).")
@click.option("--resolution", default=RESOLUTION, show_default=True, type=click.IntRange(min=8),
              help="Working resolution of the editor (the paper's 256).")
@click.option("--no-progress", is_flag=True, help="No progress bar while the edits are made.")
@data_options(download_help="Allow fetching a missing dataset or model over the network.")
def augment_cmd(dataset, preset, seed, editor, model, prompts, batch_size, resolution, no_progress, data_root,
                download, cache_dir, device):
    """Make CAD's class-specific InstructPix2Pix edits of a run's candidates (resumable)."""
    from ..util import cache_root

    if editor == TINY or model == TINY:
        if model not in (None, TINY) or editor not in (None, TINY):
            raise PllbenchError(f"--editor {editor} and --model {model} disagree; pass --model {TINY} alone for the "
                                f"miniature editor")
        model = TINY
    store, summary = augment(dataset, preset, seed, model=model or DEFAULT_MODEL, prompts=prompts,
                             batch_size=batch_size, resolution=resolution, cache=cache_root(cache_dir),
                             device=parse_device(device), root=data_root, download=download, progress=not no_progress,
                             echo=echo_err)
    click.echo(f"augment: {plural(summary['edits'], 'edit')} made in {summary['seconds']:.1f} s "
               f"({summary['rate']:.2f} edits/s); artifact {summary['hash']} holds {plural(summary['total'], 'edit')}, "
               f"{plural(summary['bytes'], 'byte')}: {summary['path']}")
