"""`pllbench entangle`: build (or reuse) the entangled subsets of a split and score every finished run on them
(pllbench.entangle.pairs finds the pairs, pllbench.entangle.report scores the runs; this module holds only the
command)."""

from __future__ import annotations

from pathlib import Path

import click

from ..entangle.pairs import DEFAULT_BLOCK, DEFAULT_THRESHOLDS, DEFAULT_TOP
from ..errors import PllbenchError
from ..wording import plural
from .common import DEFAULT_PRESET, common_data_options, echo_err, parse_device, runs_option, runs_root


def parse_top_option(text: str) -> list[str]:
    """--top's percentages as labels, largest first; a repeated one (0.1,0.10) is merged with a one-line warning,
    as --methods does."""
    from decimal import Decimal
    from fractions import Fraction

    from ..entangle.pairs import parse_top

    top = parse_top(text)
    values = [Fraction(Decimal(item.strip())) for item in str(text).split(",") if item.strip()]
    repeated = [label for label, p in top if values.count(p) > 1]
    if repeated:
        echo_err(f"warning: --top {', '.join(repeated)} listed more than once; each is scored once")
    return [label for label, _ in top]


def parse_threshold_option(text: str) -> list[float]:
    """--threshold's cosines, each in [-1, 1]; a repeated one is merged with a one-line warning."""
    from ..entangle.pairs import parse_thresholds

    taus = parse_thresholds(text)
    outside = [t for t in taus if not -1 <= t <= 1]
    if outside:
        raise PllbenchError(f"--threshold {outside[0]:g}: a threshold is a cosine similarity, in [-1, 1]")
    values = [float(item) for item in str(text).split(",") if item.strip()]
    repeated = [f"{t:g}" for t in taus if values.count(t) > 1]
    if repeated:
        echo_err(f"warning: --threshold {', '.join(repeated)} listed more than once; each is counted once")
    return taus


def with_earlier(asked: list, earlier: list[str], parse, option: str) -> list:
    """The values asked for plus those an earlier analysis of these runs holds (entangle_report.earlier_analysis),
    so that a narrower rerun adds to the runs' results instead of erasing them; says so in one line. `parse` reads
    one value as the option does (a list, largest first)."""
    kept = []
    for text in earlier:
        try:
            kept += [value for value in parse(text) if value not in asked and value not in kept]
        except PllbenchError:  # a foreign value in an entangle.json: not ours to keep
            continue
    if kept:
        kept = parse(",".join(map(str, kept)))  # largest first
        echo_err(f"{option}: also {', '.join(map(str, kept))}, which these runs' entangle.json already hold (kept, "
                 f"rescored on the same subsets)")
    return asked + kept


@click.command("entangle")
@click.option("--dataset", required=True, help="The dataset whose runs to score (options allowed: synthetic:size=16).")
@click.option("--preset", default=DEFAULT_PRESET, show_default=True,
              help="The preset of the runs to score (its teacher is the default extractor).")
@click.option("--top", default=DEFAULT_TOP, show_default=True, help="Percentages p of the cross-class pairs.")
@click.option("--split", type=click.Choice(["test", "train"]), default="test", show_default=True,
              help="train gives the candidate-sharing rates.")
@click.option("--extractor", default="teacher", show_default=True,
              help="teacher, timm:NAME[@WEIGHTS_FILE] or ckpt:RUN_DIR.")
@click.option("--threshold", "thresholds", default=DEFAULT_THRESHOLDS, show_default=True,
              help="Cosines τ for the counts n(τ) = #{s > τ} (comma-separated).")
@runs_option
@click.option("--plots", "plots_dir", default=None, help="Write PNG plots into this folder.")
@click.option("--tsne-points", default=1500, show_default=True, type=click.IntRange(min=0),
              help="Points per t-SNE plot (one per method and one of the extractor); 0 skips t-SNE.")
@click.option("--rescore", is_flag=True,
              help="Score runs again even when their entangle.json already holds this analysis of the same subsets "
                   "(after a change to the scoring code).")
@click.option("--float64", "use_float64", is_flag=True, help="Score the pairs in float64 (default float32).")
@click.option("--block", default=DEFAULT_BLOCK, show_default=True, type=click.IntRange(min=1),
              help="Row and column block size of the pair search.")
@common_data_options
def entangle(dataset, preset, top, split, extractor, thresholds, runs_dir, plots_dir, tsne_points, rescore, use_float64,
             block, data_root, download, cache_dir, device):
    """Entangled subsets (top p% most similar cross-class pairs) and every finished run's accuracy on them."""
    import numpy as np
    import torch

    from ..data.prepare import load_data
    from ..entangle.extractors import make_extractor, teacher_extractor
    from ..entangle.pairs import get_subsets, parse_thresholds, parse_top
    from ..entangle.report import analysis_key, earlier_analysis, render_report, score_runs, write_plots
    from ..presets import resolve_preset
    from ..util import cache_root

    top_labels, tau_list = parse_top_option(top), parse_threshold_option(thresholds)
    root, dev, cache = runs_root(runs_dir), parse_device(device), cache_root(cache_dir)
    if runs_dir is not None and not root.is_dir():
        raise PllbenchError(f"no runs under {root}: no such folder; pass --runs DIR where `pllbench run` wrote")
    info, data, teacher_train, dataset_key = load_data(dataset, preset, data_root, download)
    cfg = resolve_preset(preset, info.name)
    chosen = make_extractor(extractor, cache=cache, device=dev, data_root=data_root,
                            teacher=lambda: teacher_extractor(cache, dataset_key, teacher_train, info, cfg, dev,
                                                              echo_err))
    if chosen.identity.get("dataset", dataset_key) != dataset_key:
        raise PllbenchError(f"extractor {chosen.name} was trained on {chosen.identity['dataset']['name']}, "
                            f"not on {dataset}")
    earlier_tops, earlier_taus = earlier_analysis(root, dataset_key, preset, analysis_key(split, chosen.name))
    top_labels = with_earlier(top_labels, earlier_tops, lambda t: [label for label, _ in parse_top(t)], "--top")
    tau_list = sorted(with_earlier(tau_list, earlier_taus, parse_thresholds, "--threshold"), reverse=True)
    top_list = parse_top(",".join(top_labels))
    part = data.test if split == "test" else data.train
    index = np.asarray(data.test_index if split == "test" else data.train_index)
    subsets = get_subsets(cache, dataset_key, split, index, part.labels, part.images, chosen, top_list, tau_list,
                          device=dev, dtype=torch.float64 if use_float64 else torch.float32, block=block,
                          echo=echo_err)
    records, extras, unscored, reused = score_runs(root, dataset_key, preset, subsets, split, data, chosen, cache, dev,
                                                   data_root, echo_err, rescore,
                                                   want_features=bool(plots_dir) and tsne_points > 0)
    if reused:
        echo_err(f"{reused} of {plural(len(records), 'run')} already had this analysis in entangle.json and "
                 f"{'was' if reused == 1 else 'were'} not scored again (--rescore scores again)")
    click.echo(render_report(subsets, records, split, dataset, info.classes, chosen.name))
    if plots_dir:
        written = write_plots(Path(plots_dir), subsets, records, extras, split, chosen, data,
                              f"{info.name}-{preset}", echo_err, tsne_points)
        click.echo(f"\nplots: {', '.join(str(p) for p in written)}")
    if unscored:
        raise PllbenchError(f"{plural(len(unscored), 'finished run')} could not be scored (see above: the "
                            f"entangle.json of each is removed); delete those run folders and rerun them")
