"""Where a grid's jobs run. Each launcher calls `grid.jobs.execute_job` once per job and returns the results in job
order.

- `local`: this process (`--workers 1`), or N spawned worker processes sharing a job queue; on GPUs worker k sees
  only GPU k mod n (CUDA_VISIBLE_DEVICES), on the CPU each worker gets cores / N torch threads. A worker's output
  reaches this process line by line (WorkerOutput), which prints it: one line per epoch per run, never two mixed.
- `ray`: one Ray task per job on an existing cluster (`--address`) or a new local one; `--gpus-per-job 0.25` lets
  four small runs share a GPU.
- `slurm`: a submitit job array, one array task per job. On preemption or time-out submitit calls the task's
  `checkpoint`, which requeues the same job; the requeued task resumes from the run's last epoch checkpoint.

Jobs coordinate only through their run folders (claim locks, final.json), so launchers may overlap: two grids,
or a grid and a rerun of it, never train the same run twice.
"""

from __future__ import annotations

import io
import math
import multiprocessing
import os
import queue
import shutil
import signal
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..errors import PllbenchError
from ..interrupts import INTERRUPTS, sigterm_raises
from ..wording import plural
from .jobs import Job, RunEnv, execute_job, one_line


@dataclass
class LaunchOptions:
    launcher: str = "local"
    workers: int | None = None  # local; None → one per visible GPU, else 1
    address: str | None = None  # ray
    gpus_per_job: float | None = None  # ray, slurm
    cpus_per_job: float = 1.0  # ray, slurm
    slurm: dict = field(default_factory=dict)  # partition, timeout_min, array_parallelism, mem_gb, ...


def launch(jobs: list[Job], env: RunEnv, options: LaunchOptions, echo) -> list[dict]:
    if options.launcher == "ray":
        return run_ray(jobs, env, options, echo)
    if options.launcher == "slurm":
        return run_slurm(jobs, env, options, echo)
    return run_local(jobs, env, options.workers, echo)


def crashed(job: Job, why: str) -> dict:
    """The result of a job whose worker died before reporting (no run folder is known to hold a failed.json)."""
    return {"job": job.name, "job_id": job.id, "status": "failed", "run": None, "final": None, "error": why,
            "owner": None}


# --------------------------------------------------------------------------------------------------------- local


def visible_gpus(device: str | None) -> list[str]:
    """GPU ids local workers are spread over: none when the device is the CPU or one fixed GPU."""
    if device is not None and device != "cuda":
        return []
    import torch

    if not torch.cuda.is_available():
        return []
    listed = [d.strip() for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    return listed or [str(i) for i in range(torch.cuda.device_count())]


class WorkerOutput(io.TextIOBase):
    """A local worker's sys.stdout and sys.stderr: each complete line goes to the parent, which alone writes the
    terminal, so the lines of several workers never mix. Not a TTY: a worker prints one line per epoch, no bar."""

    def __init__(self, send):
        super().__init__()
        self._send, self._partial = send, ""

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    def write(self, text: str) -> int:
        *lines, self._partial = (self._partial + text).split("\n")
        for line in lines:
            line = line.rsplit("\r", 1)[-1]  # a carriage-return redraw: its last state
            if line.strip():
                self._send(line)
        return len(text)


def _local_worker(slot: int, gpus: list[str], threads: int, env: RunEnv, jobs, results) -> None:
    """A spawned worker: take jobs until the sentinel, its output sent to the parent as ("line", text) and each
    result as ("result", index, result). Ctrl-C is the parent's to handle: it stops us with SIGTERM, which records
    the interrupted run (grid.jobs.execute_job) and releases its claim before we exit."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.stdout = sys.stderr = WorkerOutput(lambda line: results.put(("line", line)))
    if gpus:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpus[slot % len(gpus)]
    import torch

    torch.set_num_threads(threads)
    with sigterm_raises():
        try:
            while (item := jobs.get()) is not None:
                index, job = item
                results.put(("result", index, execute_job(job, env)))
        except INTERRUPTS:
            return


def _take(message: tuple, results: list, echo) -> None:
    """One message of a worker: a line to print, or a job's result."""
    if message[0] == "line":
        echo(message[1])
    else:
        _, index, result = message
        results[index] = result


def _stop_workers(procs: list, messages, results: list, echo) -> None:
    """Stop the workers still holding jobs (SIGTERM: an interruption or an error here), then join them all while
    reading their last messages (a worker does not exit before its queued messages are read)."""
    for proc in procs:
        if proc.is_alive() and any(r is None for r in results):
            proc.terminate()
    while any(proc.is_alive() for proc in procs):
        try:
            _take(messages.get(timeout=0.2), results, echo)
        except queue.Empty:
            pass
    for proc in procs:
        proc.join()
    while True:
        try:
            _take(messages.get_nowait(), results, echo)
        except queue.Empty:
            break


def run_local(jobs: list[Job], env: RunEnv, workers: int | None, echo) -> list[dict]:
    gpus = visible_gpus(env.device)
    workers = workers or max(1, len(gpus))
    workers = min(workers, len(jobs)) or 1
    if workers == 1:
        return [execute_job(job, env, echo) for job in jobs]
    threads = max(1, (os.cpu_count() or 1) // workers)
    worker_env = replace(env, device="cuda" if gpus else env.device)
    echo(plural(workers, "local worker") + (f" over GPUs {','.join(gpus)}" if gpus else
                                             f", {plural(threads, 'thread')} each"))
    ctx = multiprocessing.get_context("spawn")
    job_queue, messages = ctx.Queue(), ctx.Queue()
    for item in enumerate(jobs):
        job_queue.put(item)
    for _ in range(workers):
        job_queue.put(None)
    procs = [ctx.Process(target=_local_worker, args=(k, gpus, threads, worker_env, job_queue, messages))
             for k in range(workers)]
    for proc in procs:
        proc.start()
    results: list[dict | None] = [None] * len(jobs)
    try:
        while any(r is None for r in results):
            try:
                _take(messages.get(timeout=1.0), results, echo)
            except queue.Empty:
                if not any(proc.is_alive() for proc in procs):
                    break
    finally:
        _stop_workers(procs, messages, results, echo)  # checkpoints are atomic; a killed worker's locks are freed
    codes = ", ".join(str(p.exitcode) for p in procs if p.exitcode)
    return [r if r is not None else crashed(job, f"its worker process died (exit codes {codes or '?'})")
            for job, r in zip(jobs, results)]


# ----------------------------------------------------------------------------------------------------------- ray


def run_ray(jobs: list[Job], env: RunEnv, options: LaunchOptions, echo) -> list[dict]:
    try:
        import ray
    except ImportError:
        raise PllbenchError("the ray launcher needs Ray: pip install 'ray[default]'") from None
    started = not ray.is_initialized()
    if started:
        try:
            ray.init(address=options.address)
        except Exception as exc:  # noqa: BLE001 — Ray raises many types for an unreachable cluster
            where = options.address or "a new local cluster"
            raise PllbenchError(f"cannot start or reach Ray ({where}): {one_line(exc)}") from None
    try:
        gpus = options.gpus_per_job
        if env.device == "cpu":
            gpus = 0.0
        elif gpus is None:
            gpus = 1.0 if ray.cluster_resources().get("GPU", 0) >= 1 else 0.0
        if gpus > 1 and gpus != int(gpus):
            raise PllbenchError(f"--gpus-per-job {gpus}: a fraction must be below 1, otherwise a whole number")
        # Ray sets CUDA_VISIBLE_DEVICES for each task: "cuda" is the task's own (share of a) GPU.
        task_env = replace(env, progress=False, device="cuda" if gpus > 0 else "cpu")
        task = ray.remote(num_cpus=options.cpus_per_job, num_gpus=gpus, max_retries=2)(execute_job)
        refs = [task.remote(job, task_env) for job in jobs]
        echo(f"submitted {len(refs)} Ray tasks ({options.cpus_per_job:g} CPU, {gpus:g} GPU each)")
        index = {ref: i for i, ref in enumerate(refs)}
        results: list[dict | None] = [None] * len(jobs)
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            i = index[done[0]]
            try:
                results[i] = ray.get(done[0])
            except ray.exceptions.RayError as exc:
                results[i] = crashed(jobs[i], f"Ray task died: {one_line(exc)}")
                echo(f"{jobs[i].name}: {results[i]['error']}")
        return results
    finally:
        if started:
            ray.shutdown()


# --------------------------------------------------------------------------------------------------------- slurm


class SubmititTask:
    """What submitit pickles per array task. On SIGUSR2 (time-out, preemption) submitit asks `checkpoint` for the
    resubmission: the same job again, which resumes from the run's last epoch checkpoint."""

    def __init__(self, env: RunEnv):
        self.env = env

    def __call__(self, job: Job) -> dict:
        return execute_job(job, self.env)

    def checkpoint(self, job: Job):
        import submitit

        return submitit.helpers.DelayedSubmission(self, job)


def submit_slurm(jobs: list[Job], env: RunEnv, options: LaunchOptions) -> tuple[Path, list]:
    """Submit the array; returns (log folder, submitit jobs in job order)."""
    try:
        import submitit
    except ImportError:
        raise PllbenchError("the slurm launcher needs submitit: pip install submitit") from None
    cfg = options.slurm
    cluster = cfg.get("cluster", "slurm")
    if cluster == "slurm" and shutil.which("sbatch") is None:
        raise PllbenchError("--launcher slurm: no sbatch on PATH; submit from a Slurm login node (or set "
                            "slurm.cluster = \"local\" in the grid file to run the array on this machine)")
    gpus = options.gpus_per_job
    if gpus is None:
        gpus = 0.0 if cluster == "local" or env.device == "cpu" else 1.0
    if gpus != int(gpus):
        raise PllbenchError(f"--gpus-per-job {gpus:g}: Slurm allocates whole GPUs (the ray launcher can share one)")
    folder = Path(env.runs).resolve() / "_submitit"
    executor = submitit.AutoExecutor(folder=folder / "%j", cluster=cluster)
    params = {"name": "pllbench", "timeout_min": cfg.get("timeout_min", 240), "gpus_per_node": int(gpus),
              "cpus_per_task": max(1, math.ceil(options.cpus_per_job)), "mem_gb": cfg.get("mem_gb"),
              "slurm_partition": cfg.get("partition"), "slurm_array_parallelism": cfg.get("array_parallelism"),
              "slurm_account": cfg.get("account"), "slurm_qos": cfg.get("qos"),
              "slurm_constraint": cfg.get("constraint")}
    executor.update_parameters(**{k: v for k, v in params.items() if v is not None})
    task_env = replace(env, progress=False, device="cuda" if gpus > 0 else "cpu")
    return folder, executor.map_array(SubmititTask(task_env), jobs)


def wait_slurm(jobs: list[Job], submitted: list, echo, poll_s: float = 30) -> list[dict]:
    import submitit

    position = {id(sj): i for i, sj in enumerate(submitted)}
    results: list[dict | None] = [None] * len(jobs)
    for sj in submitit.helpers.as_completed(submitted, poll_frequency=poll_s):
        i = position[id(sj)]
        try:
            results[i] = sj.result()
        except Exception as exc:  # noqa: BLE001 — submitit's failures (out of requeues, node failure, ...)
            results[i] = crashed(jobs[i], f"Slurm task {sj.job_id} failed: {one_line(exc)}")
        r = results[i]
        echo(f"{r['run'] or r['job']}: {r['status']}" + (f" ({r['error']})" if r["error"] else ""))
    return results


def run_slurm(jobs: list[Job], env: RunEnv, options: LaunchOptions, echo) -> list[dict]:
    folder, submitted = submit_slurm(jobs, env, options)
    echo(f"submitted {len(submitted)} array tasks (first {submitted[0].job_id}); logs in {folder}; waiting "
         f"(Ctrl-C stops waiting, not the jobs: `pllbench status` follows them)")
    local = options.slurm.get("cluster") == "local"
    return wait_slurm(jobs, submitted, echo, poll_s=1 if local else 30)
