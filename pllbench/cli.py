"""The `pllbench` command line."""

from __future__ import annotations

import os
import statistics
import sys
from pathlib import Path

import click

from .augment import augment_cmd
from .cli_options import common_data_options
from .entangle_cli import entangle
from .errors import PllbenchError, os_error_message


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
        raise PllbenchError("--device cuda asked for, but no CUDA device is available; pass --device cpu")
    return device




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
    """Markdown table: method × dataset, mean ± std of final test accuracy (%) over seeds."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in results:
        groups.setdefault((r.get("label", r["method"]), r.get("dataset", "")), []).append(r)
    lines = ["| method | dataset | test acc (%) | n | seeds |", "|---|---|---|---|---|"]
    for (method, dataset), rows in groups.items():
        accs = [100 * r["test_acc"] for r in rows]
        std = statistics.stdev(accs) if len(accs) > 1 else 0.0
        seeds = ",".join(str(r["seed"]) for r in rows)
        lines.append(f"| {method} | {dataset} | {statistics.mean(accs):.2f} ± {std:.2f} | {len(accs)} | {seeds} |")
    return "\n".join(lines)


def grid_spec_options(fn):
    """The options that say which jobs a grid holds (`run` and `status`); a --grid file supplies the unset ones."""
    fn = click.option("--candidate-seed", default=None, type=click.IntRange(min=0),
                      help="Fix the candidates across training seeds.")(fn)
    fn = click.option("--val-fraction", default=None, type=click.FloatRange(0.0, 0.5),
                      help="Hold out this share of the train rows for label-free selection (default 0).")(fn)
    fn = click.option("--hp", "hp_items", multiple=True, help="key=value or method.key=value (repeatable).")(fn)
    fn = click.option("--epochs", default=None, type=click.IntRange(min=1), help="Override the preset's epochs.")(fn)
    fn = click.option("--seeds", default=None, help="Comma-separated seeds (default 0).")(fn)
    fn = click.option("--preset", default=None, help="Preset (default quick).")(fn)
    fn = click.option("--datasets", "--dataset", "datasets", default=None,
                      help="Comma-separated datasets (options allowed: synthetic:train=384,test=64).")(fn)
    fn = click.option("--methods", default=None, help="Comma-separated method names, or 'all'.")(fn)
    fn = click.option("--grid", "grid_file", default=None, help="A grid TOML (docs/grids.md); options override it.")(fn)
    return fn


def grid_spec(grid_file, methods, datasets, preset, seeds, epochs, hp_items, val_fraction, candidate_seed,
              required: bool = True):
    """(GridSpec or None when nothing names a grid and `required` is false, launch fields of the grid file)."""
    from .grid import GridSpec, load_grid_file, split_datasets
    from .method import method_names, parse_hp_overrides

    file_spec, launch = load_grid_file(grid_file) if grid_file else ({}, {})
    methods = methods or file_spec.get("methods")
    dataset_list = split_datasets(datasets) if datasets else file_spec.get("datasets")
    if not required and not (methods or dataset_list):
        return None, launch
    if not dataset_list:
        raise PllbenchError("no dataset given: pass --dataset NAME (or --datasets A,B, or --grid FILE)")
    if not methods:
        raise PllbenchError("no methods given: pass --methods NAMES (or 'all', or --grid FILE)")
    hp = {scope: dict(values) for scope, values in file_spec.get("hp", {}).items()}
    for scope, values in parse_hp_overrides(list(hp_items)).items():
        hp.setdefault(scope, {}).update(values)
    spec = GridSpec(methods=parse_list(methods, method_names(), "method"), datasets=dataset_list,
                    seeds=parse_seeds(seeds) if seeds else file_spec.get("seeds", [0]),
                    preset=preset or file_spec.get("preset", "quick"),
                    epochs=epochs if epochs is not None else file_spec.get("epochs"), hp=hp,
                    val_fraction=val_fraction if val_fraction is not None else file_spec.get("val_fraction", 0.0),
                    candidate_seed=candidate_seed if candidate_seed is not None else file_spec.get("candidate_seed"))
    spec.validate()
    return spec, launch


@cli.command()
@grid_spec_options
@click.option("--launcher", type=click.Choice(["local", "ray", "slurm"]), default=None,
              help="Where jobs run (default local).")
@click.option("--workers", default=None, type=click.IntRange(min=1),
              help="local: worker processes (default: one per visible GPU, else 1).")
@click.option("--address", default=None, help="ray: cluster address (default: start a local Ray).")
@click.option("--gpus-per-job", default=None, type=click.FloatRange(min=0.0),
              help="ray: fraction of a GPU per job (0.25 packs four); slurm: whole GPUs per job.")
@click.option("--cpus-per-job", default=None, type=click.FloatRange(min=0.0, min_open=True),
              help="ray/slurm: CPUs per job (default 1).")
@click.option("--runs", "runs_dir", default=None, help="Results root (else $PLLBENCH_RUNS, ./runs).")
@click.option("--no-progress", is_flag=True)
@click.option("--compile", "compile_nets", is_flag=True, help="torch.compile the methods' backbones (speed only).")
@click.option("--bf16", is_flag=True, help="bfloat16 autocast on CUDA (default fp32; a separate run id).")
@common_data_options
@click.pass_context
def run(ctx, grid_file, methods, datasets, preset, seeds, epochs, hp_items, val_fraction, candidate_seed, launcher,
        workers, address, gpus_per_job, cpus_per_job, runs_dir, no_progress, compile_nets, bf16, data_root, download,
        cache_dir, device):
    """Run a grid (methods × datasets × seeds): finished jobs are skipped, interrupted ones resume, failed ones
    are recorded without stopping the grid; then print a table of final accuracies and a line per failed job."""
    from .grid import RunEnv, record_grid
    from .launchers import LaunchOptions, launch
    from .util import cache_root

    spec, file_launch = grid_spec(grid_file, methods, datasets, preset, seeds, epochs, hp_items, val_fraction,
                                  candidate_seed)
    options = LaunchOptions(launcher=launcher or file_launch.get("launcher", "local"),
                            workers=workers or file_launch.get("workers"),
                            address=address or file_launch.get("address"),
                            gpus_per_job=gpus_per_job if gpus_per_job is not None else file_launch.get("gpus_per_job"),
                            cpus_per_job=cpus_per_job or file_launch.get("cpus_per_job", 1.0),
                            slurm=file_launch.get("slurm", {}))
    root = runs_root(runs_dir)
    if options.launcher == "local":
        _device(device)  # refuse a missing CUDA here; remote launchers check on their own machines
    data = data_root or os.environ.get("PLLBENCH_DATA")
    env = RunEnv(runs=str(root.resolve()), cache=str(cache_root(cache_dir).resolve()),
                 data_root=str(Path(data).resolve()) if data else None, download=download, device=device,
                 progress=not no_progress, debug=ctx.obj["debug"], session=os.urandom(8).hex(),
                 compile=compile_nets, bf16=bf16)
    jobs = spec.jobs()
    record_grid(root, spec)
    _echo_err(f"grid {spec.id}: {len(jobs)} jobs ({spec.describe()}) on the {options.launcher} launcher")
    results = launch(jobs, env, options, _echo_err)
    finals = [{**r["final"], "dataset": job.dataset} for job, r in zip(jobs, results) if r["final"] is not None]
    if finals:
        click.echo(summarize(finals))
    for r in results:
        if r["status"] == "busy":
            owner = r["owner"] or {}
            click.echo(f"running elsewhere: {r['run']} (pid {owner.get('pid', '?')} on {owner.get('host', '?')})")
    failed = [r for r in results if r["status"] == "failed"]
    for r in failed:
        click.echo(f"failed: {r['run'] or r['job']}: {r['error']}")
    if failed:
        first = failed[0]
        where = first["run"] or first["job"]
        if len(failed) == 1:
            raise PllbenchError(f"{where}: {first['error']}")
        raise PllbenchError(f"{len(failed)} of {len(jobs)} jobs failed (first: {where}: {first['error']}); "
                            f"rerun the grid to retry them")


@cli.command()
@grid_spec_options
@click.option("--runs", "runs_dir", default=None, help="Results root (else $PLLBENCH_RUNS, ./runs).")
def status(grid_file, methods, datasets, preset, seeds, epochs, hp_items, val_fraction, candidate_seed, runs_dir):
    """Done / running / failed / pending jobs per grid, with throughput and an ETA from measured epoch times.

    Without grid options: every grid `pllbench run` recorded under the results root, then folders of no grid."""
    from .grid import status_report

    spec, _ = grid_spec(grid_file, methods, datasets, preset, seeds, epochs, hp_items, val_fraction, candidate_seed,
                        required=False)
    click.echo(status_report(runs_root(runs_dir), spec))


@cli.command()
@click.option("--runs", "runs_dir", default=None, help="Results root (else $PLLBENCH_RUNS, ./runs).")
@click.option("--out", default="leaderboards", show_default=True, help="Folder for the markdown and CSV files.")
@click.option("--preset", default=None, help="Only this preset (default: one board per preset found).")
@click.option("--datasets", default=None, help="Only these datasets (the board is named after the set).")
def leaderboard(runs_dir, out, preset, datasets):
    """Markdown (and CSV) leaderboards: methods × datasets, mean ± std over seeds, paper reference rows."""
    from .grid import split_datasets
    from .leaderboard import write_leaderboards

    if Path(out).exists() and not Path(out).is_dir():
        raise PllbenchError(f"--out {out} is a file; pass --out DIR with a folder for the leaderboards")
    for path in write_leaderboards(runs_root(runs_dir), Path(out), preset,
                                   split_datasets(datasets) if datasets else None):
        click.echo(str(path))


cli.add_command(entangle)
cli.add_command(augment_cmd)


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
        message = " ".join(exc.format_message().split())
        if isinstance(exc, click.UsageError):
            message += f" (see `{exc.ctx.command_path if exc.ctx else 'pllbench'} --help`)"
        _echo_err(f"error: {message}")
        return exc.exit_code or 2
    except PllbenchError as exc:
        if debug:
            raise
        _echo_err(f"error: {exc}")
        return 2
    except OSError as exc:  # a full disk, a refused write, ...: finished files are complete (atomic writes)
        if debug:
            raise
        _echo_err(f"error: {os_error_message(exc)}")
        return 2
    except KeyboardInterrupt:
        _echo_err("error: interrupted; finished work is kept, rerun the same command to resume")
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
