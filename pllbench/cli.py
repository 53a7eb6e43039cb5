"""The `pllbench` command line."""

from __future__ import annotations

import os
import statistics
import sys
from pathlib import Path

import click

from .errors import PllbenchError


def _echo_err(msg: str) -> None:
    click.echo(msg, err=True)


def runs_root(explicit: str | None) -> Path:
    root = Path(explicit or os.environ.get("PLLBENCH_RUNS") or "runs")
    if root.exists() and not root.is_dir():
        raise PllbenchError(f"results root {root} is a file; pass --runs DIR with a folder")
    return root


def parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise PllbenchError(f"malformed --seeds {text!r}: expected integers like 0,1,2") from None
    if not seeds or any(s < 0 for s in seeds):
        raise PllbenchError(f"malformed --seeds {text!r}: expected non-negative integers like 0,1,2")
    return seeds


def parse_list(text: str, known: list[str], what: str) -> list[str]:
    items = [s.strip() for s in text.split(",") if s.strip()]
    if items == ["all"]:
        return list(known)
    unknown = [s for s in items if s not in known]
    if unknown or not items:
        raise PllbenchError(f"unknown {what} {', '.join(unknown) or repr(text)}; choose from: {', '.join(known)}")
    return items


def _device(name: str | None):
    import torch

    from .prepare import default_device

    if not name:
        return default_device()
    try:
        device = torch.device(name)
    except RuntimeError:
        raise PllbenchError(f"unknown device {name!r}; use cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise PllbenchError("--device cuda asked for, but no CUDA device is available")
    return device


def common_data_options(fn):
    fn = click.option("--data-root", default=None, help="Folder holding the datasets (else $PLLBENCH_DATA).")(fn)
    fn = click.option("--download", is_flag=True, help="Allow fetching a missing dataset over the network.")(fn)
    fn = click.option("--cache-dir", default=None, help="Artifact cache (else $PLLBENCH_CACHE, ~/.cache/pllbench).")(fn)
    fn = click.option("--device", default=None, help="cpu, cuda or cuda:N (default: cuda when available).")(fn)
    return fn


@click.group()
@click.option("--debug", is_flag=True, help="Show tracebacks.")
@click.pass_context
def cli(ctx, debug):
    """pllbench: partial-label learning under instance-dependent candidate labels."""
    ctx.obj = {"debug": debug}


@cli.command("list")
def list_cmd():
    """List methods, datasets and presets."""
    from .data import dataset_names, get_dataset
    from .method import get_method, method_names
    from .presets import PRESETS

    click.echo("methods:")
    for name in method_names():
        cls = get_method(name)
        doc = cls.summary or (sys.modules[cls.__module__].__doc__ or "").strip().splitlines()[0]
        click.echo(f"  {name:<14} {doc}")
    click.echo("datasets:")
    for name in dataset_names():
        doc = (type(get_dataset(name)).__doc__ or sys.modules[type(get_dataset(name)).__module__].__doc__ or "")
        click.echo(f"  {name:<14} {doc.strip().splitlines()[0] if doc.strip() else ''}")
    click.echo("presets:")
    for name, preset in PRESETS.items():
        click.echo(f"  {name:<14} {preset['description']}")


@cli.command()
@click.option("--dataset", required=True)
@click.option("--preset", default="quick", show_default=True)
@click.option("--seed", default=0, show_default=True, type=int, help="Candidate seed.")
@common_data_options
def candidates(dataset, preset, seed, data_root, download, cache_dir, device):
    """Build (or reuse) the ID candidate artifact and print its report."""
    from .prepare import prepare
    from .util import cache_root

    prep = prepare(dataset, preset, seed, root=data_root, download=download, cache=cache_root(cache_dir),
                   device=_device(device), echo=_echo_err)
    click.echo((prep.candidates.path / "report.md").read_text())
    click.echo(f"artifact: {prep.candidates.path}")


def summarize(results: list[dict]) -> str:
    """Markdown table: method × mean ± std of final test accuracy (%) over seeds."""
    by_method: dict[str, list[float]] = {}
    for r in results:
        by_method.setdefault(r.get("label", r["method"]), []).append(100 * r["test_acc"])
    lines = ["| method | test acc (%) | n | seeds |", "|---|---|---|---|"]
    for method, accs in by_method.items():
        std = statistics.stdev(accs) if len(accs) > 1 else 0.0
        seeds = ",".join(str(r["seed"]) for r in results if r.get("label", r["method"]) == method)
        lines.append(f"| {method} | {statistics.mean(accs):.2f} ± {std:.2f} | {len(accs)} | {seeds} |")
    return "\n".join(lines)


@cli.command()
@click.option("--methods", required=True, help="Comma-separated method names, or 'all'.")
@click.option("--dataset", required=True)
@click.option("--preset", default="quick", show_default=True)
@click.option("--seeds", default="0", show_default=True, help="Comma-separated seeds.")
@click.option("--epochs", default=None, type=click.IntRange(min=1), help="Override the preset's epochs.")
@click.option("--hp", "hp_items", multiple=True, help="key=value or method.key=value (repeatable).")
@click.option("--val-fraction", default=0.0, type=click.FloatRange(0.0, 0.5), show_default=True)
@click.option("--candidate-seed", default=None, type=int, help="Fix the candidates across training seeds.")
@click.option("--runs", "runs_dir", default=None, help="Results root (else $PLLBENCH_RUNS, ./runs).")
@click.option("--no-progress", is_flag=True)
@common_data_options
def run(methods, dataset, preset, seeds, epochs, hp_items, val_fraction, candidate_seed, runs_dir, no_progress,
        data_root, download, cache_dir, device):
    """Train methods on a dataset for each seed, then print a table of final accuracies."""
    from .data import get_dataset
    from .method import check_unscoped_hp, get_method, method_names, parse_hp_overrides, resolve_hparams
    from .prepare import prepare
    from .presets import method_overrides, resolve_preset
    from .trainer import resolve_run_config, run_id, train_run
    from .util import cache_root

    method_list = parse_list(methods, method_names(), "method")
    seed_list = parse_seeds(seeds)
    hp_cli = parse_hp_overrides(list(hp_items))
    check_unscoped_hp([get_method(m) for m in method_list], hp_cli)
    dataset_name = dataset.partition(":")[0]
    get_dataset(dataset)  # validates the name and options
    preset_cfg = resolve_preset(preset, dataset_name)
    for name in method_list:  # validate every --hp before any expensive work
        cls = get_method(name)
        resolve_hparams(cls, dataset_name, method_overrides(preset_cfg, cls.name, cls.family), hp_cli)
    root, dev, cache = runs_root(runs_dir), _device(device), cache_root(cache_dir)
    results = []
    for seed in seed_list:
        prep = prepare(dataset, preset, seed, root=data_root, download=download, cache=cache, device=dev,
                       candidate_seed=candidate_seed, echo=_echo_err)
        if seed == seed_list[0]:
            rep = prep.candidates.report
            _echo_err(f"candidates {prep.candidates.hash}: mean |S| {rep['size']['mean']:.3f}, teacher test "
                      f"accuracy {rep['teacher']['test_acc']:.4f}")
        for method in method_list:
            config = resolve_run_config(prep, method, seed, hp_cli, epochs, val_fraction)
            run_dir = root / run_id(config)
            final = train_run(prep, config, run_dir, dev, progress=not no_progress)
            _echo_err(f"{run_id(config)}: test accuracy {100 * final['test_acc']:.2f}%")
            results.append(final)
    click.echo(summarize(results))


cli.add_command(__import__("pllbench.entangle_cli", fromlist=["entangle"]).entangle)


def main(argv=None) -> int:
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        cli.main(args=argv, prog_name="pllbench", standalone_mode=False)
    except click.exceptions.Abort:
        _echo_err("error: interrupted")
        return 130
    except click.ClickException as exc:
        if debug:
            raise
        _echo_err(f"error: {exc.format_message()}")
        return exc.exit_code or 2
    except PllbenchError as exc:
        if debug:
            raise
        _echo_err(f"error: {exc}")
        return 2
    except KeyboardInterrupt:
        _echo_err("error: interrupted; finished epochs are checkpointed, rerun the same command to resume")
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
