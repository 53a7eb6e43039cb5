"""`pllbench tune`: a seeded, pruned search per method on a candidate-only validation split, selection by a
label-free criterion, the chosen configuration trained on the final seeds, and the tuned board (docs/tuning.md)."""

from __future__ import annotations

import os
from pathlib import Path

import click

from ..errors import PllbenchError
from .common import DEFAULT_PRESET, common_data_options, echo_err, parse_device, runs_option, runs_root
from .grid_options import merge_duplicates, parse_list, parse_seeds


def final_seeds(text: str) -> list[int]:
    """--final-seeds: integers like 0,1,2, or none."""
    return [] if text.strip().lower() in ("none", "") else merge_duplicates(parse_seeds(text), "final seed")


def study_specs(methods, dataset, preset, select, seed, epochs, val_fraction, sampler, pruner, hp_items) -> list:
    from ..method import method_names, parse_hp_overrides
    from ..tune.study import StudySpec

    names = merge_duplicates(parse_list(methods, method_names(), "method"), "method")
    hp = parse_hp_overrides(list(hp_items))
    specs = [StudySpec(m, dataset, preset, select, seed, epochs, val_fraction, sampler, pruner, hp) for m in names]
    for spec in specs:
        spec.job({}).run_config()  # unknown dataset, preset or a bad fixed --hp: one line before any work
        _ = spec.name  # a search space that does not fit its hyperparameter: one line
    return specs


def measured_cost(studies, trials_root: Path) -> str:
    from ..tune.report import compute_text, trial_rows

    parts = []
    for _, study in studies:
        parts += [row.compute for row in trial_rows(study, trials_root)]
    return f"measured: the trials used {compute_text(parts)}"


@click.command()
@click.option("--methods", required=True, help="Comma-separated method names, or 'all' (reference rows refused).")
@click.option("--dataset", required=True, help="One dataset (options allowed: synthetic:train=384,test=64).")
@click.option("--preset", default=DEFAULT_PRESET, show_default=True, help="Preset (batch size and epochs are its).")
@click.option("--trials", default=12, show_default=True, type=click.IntRange(min=1),
              help="Trials per method (a rerun with more extends the study).")
@click.option("--select", "criterion", default="aa", show_default=True, type=click.Choice(["aa", "cr"]),
              help="Label-free criterion on the validation split: approximated accuracy or covering rate.")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0),
              help="Seeds the sampler and every trial's run (the same for every method).")
@click.option("--sampler", default="tpe", show_default=True, type=click.Choice(["tpe", "random"]),
              help="How trials pick hyperparameters: Optuna's TPE, or independent random draws from the space.")
@click.option("--pruner", default="halving", show_default=True, type=click.Choice(["halving", "hyperband", "none"]),
              help="Stops poor trials from the per-epoch criterion (successive halving, Hyperband, or never).")
@click.option("--val-fraction", default=0.1, show_default=True, type=click.FloatRange(0.0, 0.5, min_open=True),
              help="Share of the train rows held out as the candidate-only validation split of every trial.")
@click.option("--epochs", default=None, type=click.IntRange(min=1), help="Override the preset's epochs (all runs).")
@click.option("--hp", "hp_items", multiple=True,
              help="key=value or method.key=value fixed for every trial and final run (a fixed key is not tuned).")
@click.option("--final-seeds", "final_seed_text", default="0,1,2", show_default=True,
              help="Seeds the chosen configuration and the defaults train on (full train split, test split), or "
                   "none.")
@click.option("--storage", default=None,
              help="Optuna RDB URL shared by several processes (default: SQLite <runs>/_tune/<study>.db).")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(min=1),
              help="Local processes drawing trials (and running the final runs on the local launcher).")
@click.option("--launcher", type=click.Choice(["local", "ray", "slurm"]), default="local", show_default=True,
              help="Where the final runs go (trials: --workers here, or more `pllbench tune` on one --storage).")
@click.option("--report", "report_only", is_flag=True, help="Only print the tuned board of finished studies.")
@click.option("--out", default=None, help="Write the board and one plot per study here (default <runs>/_tune).")
@runs_option
@common_data_options
@click.pass_context
def tune(ctx, methods, dataset, preset, trials, criterion, seed, sampler, pruner, val_fraction, epochs, hp_items,
         final_seed_text, storage, workers, launcher, report_only, out, runs_dir, data_root, download, cache_dir,
         device):
    """Tune every method alike: the same seeded sampler, trial budget and pruning schedule over the shared lr and
    weight decay and each method's declared search spaces (`pllbench describe METHOD`); each trial is an ordinary
    run with a candidate-only validation split, selected by a label-free criterion; then the chosen configuration
    and the defaults train on the final seeds, and the tuned board prints."""
    from ..grid.jobs import RunEnv
    from ..grid.launchers import LaunchOptions, launch
    from ..tune.cost import tune_estimate
    from ..tune.report import render
    from ..tune.study import TRIALS_ROOT, existing_study, final_jobs, open_study, run_studies, storage_url
    from ..util import cache_root

    specs = study_specs(methods, dataset, preset, criterion, seed, epochs, val_fraction, sampler, pruner, hp_items)
    seeds = final_seeds(final_seed_text)
    root = runs_root(runs_dir)
    urls = [storage_url(spec, root, storage) for spec in specs]
    local = parse_device(device)
    data = data_root or os.environ.get("PLLBENCH_DATA")
    env = RunEnv(runs=str((root / TRIALS_ROOT).resolve()), cache=str(cache_root(cache_dir).resolve()),
                 data_root=str(Path(data).resolve()) if data else None, download=download, device=device,
                 debug=ctx.obj["debug"], session=os.urandom(8).hex())
    out_dir = Path(out) if out else root / "_tune"
    board = {"runs": root, "trials_root": Path(env.runs), "cache": Path(env.cache), "device": local,
             "seeds": seeds, "out": out_dir, "data_root": env.data_root}
    if report_only:
        studies = [(spec, existing_study(spec, url)) for spec, url in zip(specs, urls)]
        click.echo(render(studies, **board))
        return
    for line in tune_estimate(root, specs, trials, len(seeds), workers):
        echo_err(line)
    studies = [(spec, open_study(spec, url)) for spec, url in zip(specs, urls)]
    for spec, url in zip(specs, urls):
        echo_err(f"study {spec.name}: {trials} trials in {url}")
    run_studies(list(zip(specs, urls)), trials, env, workers, echo_err)
    echo_err(measured_cost(studies, Path(env.runs)))
    jobs = [job for spec, study in studies for job in final_jobs(spec, study, seeds)]
    if seeds and len(jobs) < 2 * len(seeds) * len(studies):
        echo_err("no final runs for a study without a finished trial (every trial pruned or failed)")
    results = []
    if jobs:
        final_env = RunEnv(runs=str(root.resolve()), cache=env.cache, data_root=env.data_root, download=download,
                           device=device, debug=env.debug, session=env.session)
        echo_err(f"final runs: {len(jobs)} (defaults and chosen configurations) on the {launcher} launcher")
        results = launch(jobs, final_env, LaunchOptions(launcher=launcher, workers=workers), echo_err)
    click.echo(render(studies, budget=trials, **board))
    failed = [r for r in results if r["status"] in ("failed", "corrupt")]
    if failed:
        first = failed[0]
        raise PllbenchError(f"{len(failed)} of {len(jobs)} final runs failed (first: {first['run'] or first['job']}: "
                            f"{first['error']}); rerun the same command to retry them")
