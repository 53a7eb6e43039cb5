"""`pllbench run`: a grid (methods × datasets × seeds) on a launcher, then a table of final-epoch accuracies."""

from __future__ import annotations

import os
import statistics
from pathlib import Path

import click

from ..cad_edits.edits import identity_editor_note
from ..errors import PllbenchError
from ..train import machine
from ..wording import plural
from .common import common_data_options, echo_err, parse_device, runs_option, runs_root
from .grid_options import GridOptions, grid_spec_options


def summarize(results: list[dict]) -> str:
    """A caption saying what the numbers are, then a markdown table: method × dataset, the final-epoch test accuracy
    (%), mean ± sample std over seeds (no ± for one seed)."""
    groups: dict[tuple[str, str], list[dict]] = {}
    sizes: dict[str, int] = {}
    for r in results:
        groups.setdefault((r.get("label", r["method"]), r.get("dataset", "")), []).append(r)
        if r.get("test_images"):
            sizes[r.get("dataset", "")] = int(r["test_images"])
    if len(set(sizes.values())) == 1:
        on = f"{next(iter(sizes.values()))} test images"
    elif sizes:
        on = "the test images of each dataset (" + ", ".join(f"{d}: {n}" for d, n in sizes.items()) + ")"
    else:
        on = "the test split"
    several = any(len(rows) > 1 for rows in groups.values())
    lines = [f"final-epoch test accuracy (%) on {on}" + ("; mean ± sample std over seeds" if several else ""),
             "| method | dataset | test acc (%) | n | seeds |", "|---|---|---|---|---|"]
    for (method, dataset), rows in groups.items():
        accs = [100 * r["test_acc"] for r in rows]
        cell = f"{statistics.mean(accs):.2f}" + (f" ± {statistics.stdev(accs):.2f}" if len(accs) > 1 else "")
        seeds = ",".join(str(r["seed"]) for r in rows)
        lines.append(f"| {method} | {dataset} | {cell} | {len(accs)} | {seeds} |")
    return "\n".join(lines)


def failure_summary(failed: list[dict], corrupt: list[dict], total: int) -> str:
    """The command's closing line. Each failed or corrupt job of a grid of several already printed its own line."""
    problems = failed + corrupt
    if len(problems) == 1:
        r = problems[0]
        return r["error"] if r["status"] == "corrupt" else f"{r['run'] or r['job']}: {r['error']}"
    parts = []
    if failed:
        first = failed[0]
        parts.append(f"{len(failed)} of {plural(total, 'job')} failed (first: {first['run'] or first['job']}: "
                     f"{first['error']}); rerun the grid to retry them")
    if corrupt:
        one = len(corrupt) == 1
        parts.append(f"{plural(len(corrupt), 'corrupt finished run')} skipped (see above); delete "
                     f"{'its folder' if one else 'their folders'} to rerun {'it' if one else 'them'}")
    return "; ".join(parts)


def launch_options(file_launch: dict, launcher, workers, address, gpus_per_job, cpus_per_job):
    """The launcher settings: an option given on the command line, else the grid file's, else the default."""
    from ..grid.launchers import LaunchOptions

    return LaunchOptions(launcher=launcher or file_launch.get("launcher", "local"),
                         workers=workers or file_launch.get("workers"),
                         address=address or file_launch.get("address"),
                         gpus_per_job=gpus_per_job if gpus_per_job is not None else file_launch.get("gpus_per_job"),
                         cpus_per_job=cpus_per_job or file_launch.get("cpus_per_job", 1.0),
                         slurm=file_launch.get("slurm", {}))


def _column(job) -> str:
    """The dataset as the board's column names it: another candidate source than id/oracle is its own column."""
    source = job.run_config().candidate_source
    return job.dataset + (f" [{source}]" if source not in ("id", "oracle") else "")


def report_results(jobs: list, results: list[dict]) -> None:
    """The accuracy table, a line per job running elsewhere, then the closing error when jobs failed."""
    finals = [{**r["final"], "dataset": _column(job), "test_images": r.get("test_images")}
              for job, r in zip(jobs, results) if r["final"] is not None]
    if finals:
        click.echo(summarize(finals))
    for r in results:
        if r["status"] == "busy":
            owner = r["owner"] or {}
            click.echo(f"running elsewhere: {r['run']} (pid {owner.get('pid', '?')} on {owner.get('host', '?')})")
    failed = [r for r in results if r["status"] == "failed"]
    corrupt = [r for r in results if r["status"] == "corrupt"]
    if failed or corrupt:
        raise PllbenchError(failure_summary(failed, corrupt, len(jobs)))


@click.command()
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
@runs_option
@click.option("--no-progress", is_flag=True,
              help="No progress bar (on a terminal) or per-epoch lines (otherwise); the header still prints.")
@click.option("--compile", "compile_nets", is_flag=True, help="torch.compile the methods' backbones (speed only).")
@click.option("--bf16", is_flag=True,
              help="bfloat16 autocast (default fp32; a separate run id); on a CPU it pays only with native "
                   "bfloat16 (avx512_bf16, AMX), and the run says so when they are missing.")
@common_data_options
@click.pass_context
def run(ctx, grid: GridOptions, launcher, workers, address, gpus_per_job, cpus_per_job, runs_dir, no_progress,
        compile_nets, bf16, data_root, download, cache_dir, device):
    """Run a grid (methods × datasets × seeds) under a preset (default paper): finished jobs are skipped,
    interrupted ones resume, failed ones are recorded without stopping the grid; then print a table of final-epoch
    test accuracies and, when jobs failed, one summary line (each failed job also prints one line as it fails)."""
    from ..grid.jobs import RunEnv
    from ..grid.launchers import launch
    from ..grid.records import GRIDS_DIR, forget_grid, record_grid
    from ..train.messages import paper_on_cpu_warning
    from ..train.runs import JOBS_DIR
    from ..util import cache_root

    spec, file_launch = grid.spec()
    spec.bf16 = bf16  # a bf16 run is another run: the recorded grid and its jobs say so (status matches on it)
    options = launch_options(file_launch, launcher, workers, address, gpus_per_job, cpus_per_job)
    root = runs_root(runs_dir)
    if options.launcher == "local":
        local = parse_device(device)  # refuse a missing CUDA here; remote launchers check on their own machines
        if bf16 and local.type == "cpu" and machine.native_bf16_flags() == []:
            echo_err("note: this CPU has no native bfloat16 (avx512_bf16 or AMX), so --bf16 is emulated here and "
                     "slower than fp32 (benchmarks/cpu_variants.py)")
        if local.type == "cpu" and (warning := paper_on_cpu_warning(spec.preset, spec.datasets, spec.epochs)):
            echo_err(warning)  # before the teacher and the candidates, not after the first steps
    data = data_root or os.environ.get("PLLBENCH_DATA")
    jobs = spec.jobs()
    env = RunEnv(runs=str(root.resolve()), cache=str(cache_root(cache_dir).resolve()),
                 data_root=str(Path(data).resolve()) if data else None, download=download, device=device,
                 progress=not no_progress, debug=ctx.obj["debug"], session=os.urandom(8).hex(),
                 compile=compile_nets, bf16=bf16, quiet_failures=len(jobs) == 1)
    # A results root this command makes is removed again when no job gets as far as a run folder (missing data, a
    # refused launcher): a failed first try leaves nothing behind. In an existing root the failures stay on record
    # for `pllbench status`.
    made = [path for path in (root, root / GRIDS_DIR, root / JOBS_DIR) if not path.exists()]
    undo = root in made
    record_grid(root, spec)
    echo_err(f"grid {spec.id}: {plural(len(jobs), 'job')} ({spec.describe()}) on the {options.launcher} launcher")
    if note := identity_editor_note(spec):
        echo_err(note)
    try:
        results = launch(jobs, env, options, echo_err)
    except PllbenchError:  # the launcher refused (Ray or sbatch missing, ...) before any job ran
        if undo:
            forget_grid(root, spec, made)
        raise
    if undo and all(r["status"] == "failed" and not (r["run"] and (root / r["run"]).exists()) for r in results):
        forget_grid(root, spec, made)
    report_results(jobs, results)
