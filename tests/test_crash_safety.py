"""Crash safety (issue 9): SIGKILL `pllbench run`, grids and `augment` at seeded random points and rerun each command
until it completes. After every kill nothing finished or trusted may be damaged; at the end of every round the outputs
must equal an uninterrupted run's and no temporary file may be left.

Kills are cheap because no child imports anything: children fork from a forkserver that preloaded torch, the diffusers
pieces of the tiny editor and pllbench (the server never ran OpenMP, so forking it is safe), set one thread and run the
CLI in-process. Each child leads its own process group, so a kill takes a grid's workers with it. Two kinds of
kill: after a delay drawn uniformly over an uninterrupted run's measured duration (from t=0, so on an empty cache the
teacher and candidate builds are hit too), or by the child itself right before or right after its n-th `os.replace`
(the commit point of every atomic write and artifact), which reaches the torn states deterministically.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import shutil
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from pllbench.artifacts import verify
from pllbench.cad_edits.edits import EditStore
from pllbench.train.run_files import load_checkpoint

SEED = 9
RUN = ["run", "--dataset", "synthetic:train=64,test=16", "--preset", "smoke", "--no-progress", "--device", "cpu"]
SINGLE = RUN + ["--methods", "dirk", "--epochs", "3", "--val-fraction", "0.25"]  # EMA teacher, queue, selection
GRID = RUN + ["--methods", "proden,cc", "--seeds", "0,1", "--epochs", "1"]
AUGMENT = ["augment", "--dataset", "synthetic:train=8", "--preset", "smoke", "--model", "tiny-ip2p", "--resolution",
           "16", "--batch-size", "8", "--no-progress", "--device", "cpu"]  # 21 edits in 3 resumable chunks
KILLS = {"run": 48, "grid": 24, "grid-2-workers": 12, "augment": 16}  # 100 in all: the cheapest scenario gets most
WRITE_KILL_SHARE = 0.3  # attempts whose child kills itself at an os.replace instead of being killed on a timer
CHILD_LIMIT_S = 120  # a hang guard: an attempt not killed on a timer that runs longer fails the test
PRELOAD = ["torch", "pyarrow.parquet", "diffusers", "transformers",
           "diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion_instruct_pix2pix",
           "diffusers.models.autoencoders.autoencoder_kl", "diffusers.models.unets.unet_2d_condition",
           "diffusers.schedulers.scheduling_dpmsolver_multistep", "transformers.models.clip.modeling_clip",
           "transformers.models.clip.tokenization_clip", "pllbench.cli", "pllbench.grid.jobs",
           "pllbench.grid.launchers", "pllbench.train.loop", "pllbench.methods",
           __name__]  # this module: each child unpickles `_child` from it
TIMING = {"seconds", "train_seconds", "samples_per_sec", "peak_mem_mb", "throughput"}


# ------------------------------------------------------------------------------------------------ the child


def _child(argv: list[str], work: str, kill_at: int = 0, before: bool = False) -> None:
    """Run the CLI in this forked process (output to work/child.log, os.replace count to work/replaces).

    With `kill_at` = n it SIGKILLs its process group right before or right after its n-th os.replace, after saving in
    work/committed.json the finished work it saw committed at its os.replace calls: what the kill must not lose.
    A grid's local workers are forked from here instead of spawned: the same worker code without an interpreter start
    per kill (this process has not run OpenMP either)."""
    os.setpgrp()
    root = Path(work)
    fd = os.open(root / "child.log", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.environ.update(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    torch.set_num_threads(1)
    from pllbench.cli import main

    # fork semaphores (tqdm's lock, the grid's queues) are unlinked at once, never left to the test's resource tracker
    multiprocessing.set_start_method("fork", force=True)
    get_context = multiprocessing.get_context
    multiprocessing.get_context = lambda method=None: get_context("fork")
    real, calls, committed = os.replace, [0], {}

    def die():
        (root / "committed.json").write_text(json.dumps(committed))
        os.killpg(0, signal.SIGKILL)

    def replace(src, dst, **kwargs):
        calls[0] += 1
        if calls[0] == kill_at and before:
            die()
        real(src, dst, **kwargs)
        if kill_at:
            for key, value in done_work(root / "runs", root / "cache").items():
                committed[key] = max(value, committed.get(key, 0))
            if calls[0] == kill_at:
                die()

    os.replace = replace
    os.fsync = lambda fd: None  # only a power cut loses unsynced data: a killed process's writes stay in the page cache
    code = main(argv)
    (root / "replaces").write_text(str(calls[0]))
    sys.exit(code)


def _group_alive(pgid: int) -> bool:
    """Whether a process of the group is still running (zombies do not count: they write nothing)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def attempt(ctx, argv: list[str], work: Path, delay: float | None = None, **plan) -> int:
    """The exit code of one child; a timer kill after `delay` seconds takes its whole process group."""
    proc = ctx.Process(target=_child, args=(argv, str(work)), kwargs=plan)
    proc.start()
    proc.join(CHILD_LIMIT_S if delay is None else delay)
    hung = proc.exitcode is None and delay is None
    if proc.exitcode is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:  # killed before it made its group
            os.kill(proc.pid, signal.SIGKILL)
        proc.join()
    while _group_alive(proc.pid):  # a dying worker may finish its current write
        time.sleep(0.005)
    assert not hung, f"{argv[0]} still running after {CHILD_LIMIT_S} s:\n{tail(work)}"
    return proc.exitcode


def tail(work: Path) -> str:
    log = work / "child.log"
    return log.read_text()[-3000:] if log.exists() else "(no output)"


# ------------------------------------------------------------------------------------------------ the checks


def is_temporary(path: Path, root: Path) -> bool:
    """What nothing trusts: atomic-write temp files and builders' `<h>.tmp-<pid>` folders."""
    parts = path.relative_to(root).parts
    return (path.name.startswith(".") and path.name.endswith(".tmp")) or any(".tmp-" in part for part in parts)


def run_dirs(runs: Path) -> list[Path]:
    return sorted(p for p in runs.glob("*/*") if p.is_dir() and not p.parent.name.startswith("_"))


@dataclass
class Seen:
    """What the earlier attempts of a round finished: bytes that must not change, progress that must not shrink."""

    results: dict[Path, bytes] = field(default_factory=dict)
    done: dict[str, int] = field(default_factory=dict)  # epochs of a run, rows of an edit store


def done_work(runs: Path, cache: Path) -> dict[str, int]:
    """Finished work by its own records: the epochs of every run, the rows of every edit store."""
    done = {}
    for meta in cache.glob("edits/*/meta.json"):
        if "." not in meta.parent.name:
            done[f"edits/{meta.parent.name}"] = json.loads(meta.read_text())["num_edits"]
    for progress in cache.glob("edits/*.partial/progress.json"):
        done.setdefault(f"edits/{progress.parent.name.removesuffix('.partial')}",
                        json.loads(progress.read_text())["written"])
    for run_dir in run_dirs(runs):
        final, progress = run_dir / "final.json", run_dir / "progress.json"
        if final.exists() or progress.exists():
            record = json.loads((final if final.exists() else progress).read_text())
            done[run_dir.relative_to(runs).as_posix()] = record["epochs" if final.exists() else "epoch"]
    return done


def check_tree(runs: Path, cache: Path, seen: Seen) -> None:
    """After any kill: every JSON parses, every artifact and checkpoint verifies, finished results are unchanged and
    no finished epoch or edit row is lost."""
    for root in (runs, cache):
        for path in root.rglob("*.json"):
            if not is_temporary(path, root):
                json.loads(path.read_text())
        for path in root.rglob("*.jsonl"):
            if not is_temporary(path, root):
                for line in path.read_text().splitlines():
                    json.loads(line)
    for meta_path in cache.glob("*/*/meta.json"):
        folder, kind = meta_path.parent, meta_path.parent.parent.name
        if "." in folder.name:  # .tmp-<pid> builders and .partial edit folders
            continue
        verify(folder, kind, json.loads(meta_path.read_text())["key"])
        if kind == "edits":
            store = EditStore(folder)
            assert len(store.edits) == store.offsets[-1] == store.meta["num_edits"]
    for progress in cache.glob("edits/*.partial/progress.json"):
        if not progress.parent.with_suffix("").is_dir():  # else a leftover being removed, trusted by nothing
            assert json.loads(progress.read_text())["written"] <= len(np.load(progress.parent / "edits.npy",
                                                                                mmap_mode="r"))
    for run_dir in run_dirs(runs):
        if (run_dir / "final.json").exists():
            pq.read_table(run_dir / "predictions.parquet")
            torch.load(run_dir / "model.pt", weights_only=True)
            for name in ("final.json", "predictions.parquet", "model.pt"):
                seen.results.setdefault(run_dir / name, (run_dir / name).read_bytes())
        elif (run_dir / "progress.json").exists():  # raises on a missing, torn or mismatching checkpoint
            assert load_checkpoint(run_dir)["epoch"] == json.loads((run_dir / "progress.json").read_text())["epoch"]
    for path, data in seen.results.items():
        assert path.read_bytes() == data, f"{path} changed after it was finished"
    done = done_work(runs, cache)
    for key, before in seen.done.items():
        assert done.get(key, 0) >= before, f"{key}: finished work lost ({before} -> {done.get(key, 0)})"
    seen.done.update(done)


def leftovers(runs: Path, cache: Path) -> list[str]:
    """What a completed command must not leave behind (`_grids/` is written once per grid and never tidied)."""
    found = [p for root in (runs, cache) for p in root.rglob("*") if is_temporary(p, root)
             and "_grids" not in p.parts]
    found += list(cache.glob("edits/*.partial"))
    for run_dir in run_dirs(runs):
        found += list(run_dir.glob("checkpoint-*.pt")) + list(run_dir.glob("progress.json"))
        found += list(run_dir.glob("failed.json"))
    return [str(p) for p in found]


def outputs(runs: Path, cache: Path) -> dict:
    """The results an uninterrupted run must reproduce: metrics, curves without timings, prediction and edit bytes."""
    out = {}
    for run_dir in run_dirs(runs):
        final = json.loads((run_dir / "final.json").read_text())
        curves = [json.loads(line) for line in (run_dir / "curves.jsonl").read_text().splitlines()]
        weights = torch.load(run_dir / "model.pt", weights_only=True)
        out[run_dir.relative_to(runs).as_posix()] = {
            "final": {k: v for k, v in final.items() if k not in TIMING},
            "curves": [{k: v for k, v in row.items() if k not in TIMING} for row in curves],
            "predictions": (run_dir / "predictions.parquet").read_bytes(),
            "weights": {k: v.numpy().tobytes() for k, v in weights.items()}}
    for folder in sorted(cache.glob("edits/*/")):
        if "." not in folder.name:
            out[f"edits/{folder.name}"] = {name: (folder / name).read_bytes() for name in ("edits.npy", "offsets.npy")}
    return out


# ------------------------------------------------------------------------------------------------ the rounds


@dataclass
class Timing:
    """An uninterrupted run: its duration (the range of timer kills) and its os.replace calls (of in-write kills)."""

    seconds: float
    replaces: int


@dataclass
class Tally:
    kills: int = 0
    in_write: int = 0
    attempts: int = 0
    rounds: int = 0
    seconds: float = 0.0


@pytest.fixture(scope="module")
def ctx():
    """The forkserver every child forks from; stopped after the module (it holds torch and diffusers)."""
    from multiprocessing import forkserver

    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)
    started = context.Process(target=time.sleep, args=(0,))  # wait for the preload: not part of any measured run
    started.start()
    started.join()
    yield context
    os.kill(forkserver._forkserver._forkserver_pid, signal.SIGTERM)  # no interpreter teardown of torch and diffusers
    forkserver._forkserver._stop()


def command(argv: list[str], work: Path) -> list[str]:
    """`argv` on the results root work/runs and the cache work/cache."""
    return argv + (["--runs", str(work / "runs")] if argv[0] == "run" else []) + ["--cache-dir", str(work / "cache")]


def reference(ctx, argv: list[str], work: Path) -> tuple[dict, Timing]:
    """(outputs, timing) of an uninterrupted run on an empty cache."""
    work.mkdir(parents=True)
    started = time.perf_counter()
    code = attempt(ctx, command(argv, work), work)
    seconds = time.perf_counter() - started
    assert code == 0, tail(work)
    expected = outputs(work / "runs", work / "cache")
    assert expected
    return expected, Timing(seconds, int((work / "replaces").read_text()))


def crash_rounds(ctx, name: str, argv: list[str], work: Path, expected: dict, timing: Timing,
                 cold_every: int = 1, warm_reset: tuple[str, ...] = (), in_write: bool = True) -> Tally:
    """Kill and rerun `argv` until it completes, round after round (each from an empty results root, every
    `cold_every`-th from an empty cache, the others without the cache folders `warm_reset`), until KILLS[name] kills
    were made; check the tree after every attempt, the outputs and leftovers after every round."""
    rng = random.Random(f"{SEED}/{name}")
    runs, cache, committed = work / "runs", work / "cache", work / "committed.json"
    work.mkdir(parents=True)
    tally, started = Tally(), time.perf_counter()
    while tally.kills < KILLS[name]:
        shutil.rmtree(runs, ignore_errors=True)
        for folder in [cache] if tally.rounds % cold_every == 0 else [cache / n for n in warm_reset]:
            shutil.rmtree(folder, ignore_errors=True)
        seen = Seen()
        while True:
            plan = {}
            if tally.kills < KILLS[name]:
                if in_write and rng.random() < WRITE_KILL_SHARE:
                    plan = {"kill_at": rng.randint(1, timing.replaces), "before": rng.random() < 0.5}
                else:
                    plan = {"delay": rng.uniform(0, timing.seconds)}
            committed.unlink(missing_ok=True)
            code = attempt(ctx, command(argv, work), work, **plan)
            tally.attempts += 1
            assert code in (0, -signal.SIGKILL), f"{name}: exit code {code} after {tally.kills} kills:\n{tail(work)}"
            if committed.exists():
                for key, value in json.loads(committed.read_text()).items():
                    seen.done[key] = max(value, seen.done.get(key, 0))
            check_tree(runs, cache, seen)
            if code == 0:
                break
            tally.kills += 1
            tally.in_write += "kill_at" in plan
        assert outputs(runs, cache) == expected, f"{name}: round {tally.rounds} differs from the uninterrupted run"
        assert not leftovers(runs, cache), leftovers(runs, cache)
        tally.rounds += 1
    tally.seconds = round(time.perf_counter() - started, 1)
    print(f"\n{name}: {tally}")
    return tally


# ------------------------------------------------------------------------------------------------ the tests


def test_a_killed_run_resumes_to_the_uninterrupted_result(ctx, tmp_path, record_property):
    expected, timing = reference(ctx, SINGLE, tmp_path / "reference")
    tally = crash_rounds(ctx, "run", SINGLE, tmp_path / "crash", expected, timing, cold_every=3)
    record_property("kills", tally.kills)


def test_a_killed_grid_keeps_its_finished_jobs_with_one_or_two_workers(ctx, tmp_path, record_property):
    one, two = GRID + ["--workers", "1"], GRID + ["--workers", "2"]
    expected, timing = reference(ctx, one, tmp_path / "reference")
    tally = crash_rounds(ctx, "grid", one, tmp_path / "one", expected, timing, cold_every=3)
    two_expected, two_timing = reference(ctx, two, tmp_path / "reference-2")
    assert two_expected == expected  # two workers train the same runs as one
    two_tally = crash_rounds(ctx, "grid-2-workers", two, tmp_path / "two", expected, two_timing, cold_every=2,
                             in_write=False)
    record_property("kills", tally.kills + two_tally.kills)


def test_a_killed_augment_resumes_to_the_same_edit_bytes(ctx, tmp_path, record_property):
    expected, timing = reference(ctx, AUGMENT, tmp_path / "reference")
    tally = crash_rounds(ctx, "augment", AUGMENT, tmp_path / "crash", expected, timing, cold_every=3,
                         warm_reset=("edits",))
    record_property("kills", tally.kills)


def test_the_tiny_editor_key_is_the_same_in_every_process():
    """diffusers lists a config's defaulted keys in string-hash order; the weights hash must not see that order."""
    from pllbench.cad_edits.augment import _config_text

    config = {"sample_size": 32, "_use_default_values": ["act_fn", "scaling_factor", "shift_factor"]}
    shuffled = {**config, "_use_default_values": config["_use_default_values"][::-1]}
    assert _config_text(config) == _config_text(shuffled)
