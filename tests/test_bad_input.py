"""The bad-input matrix (issue 9): every command meets bad names, options, files, artifacts and a hostile disk.

Each case must end with exit != 0 and exactly one `error: ` line on stderr that names the problem and the fix,
without a traceback (`--debug` re-raises instead), and every file that existed before (a finished smoke run, an
interrupted one, the cached teacher, candidates, entangled subsets and edits) must keep its bytes.
"""

from __future__ import annotations

import errno
import gzip
import json
import os
import pickle
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import DATA, error_line

from pllbench.cad_edits.edits import build_edits, edits_key
from pllbench.cli import main
from pllbench.train.runs import read_attempts

RUN = ["run", "--dataset", DATA, "--preset", "smoke", "--no-progress"]
ENTANGLE = ["entangle", "--dataset", DATA, "--preset", "smoke", "--top", "10", "--tsne-points", "0", "--device", "cpu"]
CANDIDATES = ["candidates", "--dataset", DATA, "--preset", "smoke", "--device", "cpu"]
AUGMENT = ["augment", "--preset", "smoke", "--device", "cpu", "--no-progress"]
BOOKKEEPING = {"attempts.jsonl", "failed.json", "job.lock"}  # rewritten by every attempt at a run, by design


def fsync_refused(fragment: str, code: int):
    """os.fsync that fails with `code` for files whose name contains `fragment` (a write the disk refuses)."""
    real = os.fsync

    def fsync(fd):
        if fragment in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(code, os.strerror(code))
        return real(fd)

    return fsync


@pytest.fixture(scope="session")
def pristine(tmp_path_factory):
    """A finished proden run, a dirk run interrupted after epoch 1 (its disk filled up), the cached teacher and
    candidates, the entangled subsets of the test split and a stored `stamp` edit artifact."""
    base = tmp_path_factory.mktemp("bad-input-world")
    runs, cache = base / "runs", base / "cache"
    where = ["--runs", str(runs), "--cache-dir", str(cache)]
    assert main(RUN + ["--methods", "proden"] + where) == 0
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(os, "fsync", fsync_refused(".checkpoint-0002.pt.", errno.ENOSPC))
        assert main(RUN + ["--methods", "dirk"] + where) == 2
    assert main(ENTANGLE + where) == 0
    finished = next(runs.glob("*/proden-*/final.json")).parent
    cand_hash = json.loads((finished / "config.json").read_text())["candidates"]["hash"]
    cands = np.load(cache / "candidates" / cand_hash / "candidates.npy")
    build_edits(cache, edits_key(cand_hash, "stamp", seed=0), cands, 16,
                lambda inst, lab: np.zeros((len(inst), 3, 16, 16), dtype=np.uint8))
    return base


@dataclass
class World:
    runs: Path
    cache: Path
    tmp: Path


def one(root: Path, pattern: str) -> Path:
    found = sorted(root.glob(pattern))
    assert len(found) == 1, (pattern, found)
    return found[0]


@pytest.fixture
def world(pristine, isolated_dirs) -> World:
    """A private copy of the pristine world at $PLLBENCH_RUNS / $PLLBENCH_CACHE (conftest points them here)."""
    shutil.copytree(pristine / "runs", isolated_dirs / "runs")
    shutil.copytree(pristine / "cache", isolated_dirs / "cache")
    return World(isolated_dirs / "runs", isolated_dirs / "cache", isolated_dirs)


def snapshot(world: World) -> dict[Path, bytes]:
    return {p: p.read_bytes() for root in (world.runs, world.cache) for p in root.rglob("*")
            if p.is_file() and p.name not in BOOKKEEPING and p.suffix != ".lock"}


def assert_kept(before: dict[Path, bytes]) -> None:
    changed = [str(p) for p, data in before.items() if not p.is_file() or p.read_bytes() != data]
    assert not changed, f"finished work lost or overwritten: {changed}"


def fails_with_one_line(capsys, argv: list[str], needles) -> str:
    code = main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert code != 0 and len(lines) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


# ------------------------------------------------------------------------------------------------ set-ups


def flip_last_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


def cut_in_half(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def refuse_mkdir_under(root: Path, monkeypatch) -> None:
    """Creating anything under `root` fails as on a folder without write permission (root ignores chmod)."""
    real = Path.mkdir

    def mkdir(self, *args, **kwargs):
        if Path(self).is_relative_to(root):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", mkdir)


def write_idx(path: Path, array: np.ndarray, gz: bool) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if gz else data)


def fmnist_root(w: World, gz: bool) -> Path:
    """torchvision's Fashion-MNIST layout whose train images file stopped half way (an interrupted download)."""
    raw = w.tmp / "data" / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    suffix = ".gz" if gz else ""
    for prefix in ("train", "t10k"):
        write_idx(raw / f"{prefix}-images-idx3-ubyte{suffix}", np.zeros((20, 28, 28)), gz)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte{suffix}", np.arange(20) % 10, gz)
    cut_in_half(raw / f"train-images-idx3-ubyte{suffix}")
    return w.tmp / "data"


def cifar_root(w: World) -> Path:
    base = w.tmp / "data" / "cifar-10-batches-py"
    base.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, (10, 3072), dtype=np.uint8), b"labels": list(range(10))}
        (base / name).write_bytes(pickle.dumps(batch))
    (base / "batches.meta").write_bytes(pickle.dumps({"label_names": [f"c{i}" for i in range(10)]}))
    cut_in_half(base / "data_batch_3")
    return w.tmp / "data"


def pets_root(w: World) -> Path:
    from PIL import Image

    base = w.tmp / "data" / "oxford-iiit-pet"
    (base / "images").mkdir(parents=True)
    (base / "annotations").mkdir()
    for split, names in (("trainval", ["Abyssinian_1", "beagle_1"]), ("test", ["Abyssinian_2"])):
        for i, name in enumerate(names):
            Image.new("RGB", (64, 48), (40 * i, 90, 160)).save(base / "images" / f"{name}.jpg", quality=95)
        (base / "annotations" / f"{split}.txt").write_text(
            "".join(f"{n} {1 + n.startswith('beagle')} 1 1\n" for n in names))
    cut_in_half(base / "images" / "beagle_1.jpg")
    return w.tmp / "data"


def grid_file(w: World, text: str) -> str:
    path = w.tmp / "grid.toml"
    path.write_text(f'datasets = ["{DATA}"]\npreset = "smoke"\n' + text)
    return str(path)


def a_file(w: World) -> str:
    path = w.tmp / "a-file"
    path.write_text("not a folder")
    return str(path)


# ------------------------------------------------------------------------------------------------ the matrix


@dataclass(frozen=True)
class Case:
    name: str
    argv: Callable[[World], list[str]]
    needles: Callable[[World], tuple[str, ...]] | tuple[str, ...]  # the problem, the fix (and the path)
    setup: Callable[[World, pytest.MonkeyPatch], None] | None = None


CASES = [
    # list, and the command line itself
    Case("list-extra-argument", lambda w: ["list", "extra"], ("unexpected extra argument", "pllbench list --help")),
    Case("unknown-command", lambda w: ["trian"], ("No such command 'trian'", "pllbench --help")),
    # run: options, grid files, data, tampered artifacts, a refused write
    Case("run-negative-seed", lambda w: RUN + ["--methods", "proden", "--seeds", "-1"],
         ("malformed --seeds '-1'", "non-negative integers like 0,1,2")),
    Case("run-zero-epochs", lambda w: RUN + ["--methods", "proden", "--epochs", "0"],
         ("'--epochs': 0 is not in the range x>=1", "pllbench run --help")),
    Case("run-unknown-device", lambda w: RUN + ["--methods", "proden", "--device", "tpu9"],
         ("unknown device 'tpu9'", "use cpu, cuda or cuda:N")),
    Case("run-dataset-option-without-value", lambda w: ["run", "--methods", "proden", "--dataset", "synthetic:train"],
         ("malformed dataset option 'train'", "expected key=value")),
    Case("grid-file-missing", lambda w: ["run", "--grid", str(w.tmp / "nope.toml")],
         ("cannot read grid file", "pass --grid with the path of a grid TOML")),
    Case("grid-file-wrong-key", lambda w: ["run", "--grid", grid_file(w, 'methods = ["proden"]\nsedes = [0]\n')],
         ("unknown key 'sedes'", "allowed keys: methods, datasets, seeds")),
    Case("grid-file-wrong-type", lambda w: ["run", "--grid", grid_file(w, 'methods = ["proden"]\nepochs = "2"\n')],
         ("key 'epochs' must be a positive integer", "got '2'")),
    Case("grid-file-unknown-method", lambda w: ["run", "--grid", grid_file(w, 'methods = ["prodne"]\n')],
         ("unknown method prodne", "choose from:")),
    Case("run-truncated-fmnist-idx",
         lambda w: ["run", "--methods", "proden", "--dataset", "fmnist", "--preset", "smoke", "--data-root",
                    str(w.tmp / "data")],
         lambda w: ("train-images-idx3-ubyte is truncated or corrupt", "interrupted download",
                    "delete it and rerun with --download"),
         lambda w, mp: fmnist_root(w, gz=False)),
    Case("run-tampered-checkpoint", lambda w: RUN + ["--methods", "dirk"],
         lambda w: (f"checkpoint {one(w.runs, '*/dirk-*/checkpoint-0001.pt')} is corrupted (checksum mismatch)",
                    f"delete {one(w.runs, '*/dirk-*')} to restart the run"),
         lambda w, mp: flip_last_byte(one(w.runs, "*/dirk-*/checkpoint-0001.pt"))),
    Case("run-tampered-edits", lambda w: RUN + ["--methods", "cad", "--hp", "cad.editor=stamp"],
         lambda w: (f"edits artifact {one(w.cache, 'edits/*/edits.npy').parent} is corrupted (edits.npy fails its "
                    f"checksum)", "delete the folder to rebuild it"),
         lambda w, mp: flip_last_byte(one(w.cache, "edits/*/edits.npy"))),
    Case("run-truncated-edits-meta", lambda w: RUN + ["--methods", "cad", "--hp", "cad.editor=stamp"],
         lambda w: (f"edits artifact {one(w.cache, 'edits/*/edits.npy').parent} has no readable meta.json",
                    "delete the folder to rebuild it"),
         lambda w, mp: cut_in_half(one(w.cache, "edits/*/meta.json"))),
    Case("run-results-root-without-permission", lambda w: RUN + ["--methods", "proden", "--seeds", "1"],
         lambda w: (f"permission denied ({w.runs / '_grids'})", "pass --runs / --cache-dir with a folder you can"),
         lambda w, mp: refuse_mkdir_under(w.runs, mp)),
    # status
    Case("status-without-a-grid", lambda w: ["status", "--runs", str(w.tmp / "empty")],
         ("no runs and no recorded grid under", "name a grid with --grid FILE")),
    Case("status-results-root-is-a-file", lambda w: ["status", "--runs", a_file(w)],
         ("is a file", "pass --runs DIR")),
    Case("status-grid-file-wrong-type",
         lambda w: ["status", "--grid", grid_file(w, 'methods = "proden"\nseeds = "0"\n')],
         ("key 'seeds' must be a list of non-negative integers", "got '0'")),
    # leaderboard
    Case("leaderboard-missing-runs", lambda w: ["leaderboard", "--runs", str(w.tmp / "empty"), "--out",
                                                str(w.tmp / "boards")],
         ("no runs under", "run `pllbench run` first")),
    Case("leaderboard-out-is-a-file", lambda w: ["leaderboard", "--out", a_file(w)],
         ("is a file", "pass --out DIR")),
    Case("leaderboard-results-root-is-a-file", lambda w: ["leaderboard", "--runs", a_file(w)],
         ("is a file", "pass --runs DIR")),
    # candidates
    Case("candidates-unknown-dataset", lambda w: ["candidates", "--dataset", "mnist", "--preset", "smoke"],
         ("unknown dataset 'mnist'", "choose one of: cifar10, cifar100, flowers, fmnist")),
    Case("candidates-tampered-artifact", lambda w: CANDIDATES,
         lambda w: (f"candidates artifact {one(w.cache, 'candidates/*/candidates.npy').parent} is corrupted "
                    f"(candidates.npy fails its checksum)", "delete the folder to rebuild it"),
         lambda w, mp: flip_last_byte(one(w.cache, "candidates/*/candidates.npy"))),
    Case("candidates-tampered-teacher", lambda w: CANDIDATES + ["--seed", "1"],
         lambda w: (f"teacher artifact {one(w.cache, 'teacher/*/weights.pt').parent} is corrupted (weights.pt fails "
                    f"its checksum)", "delete the folder to rebuild it"),
         lambda w, mp: flip_last_byte(one(w.cache, "teacher/*/weights.pt"))),
    Case("candidates-cache-without-permission", lambda w: CANDIDATES + ["--seed", "1"],
         lambda w: (f"permission denied ({w.cache / 'candidates'})", "pass --runs / --cache-dir with a folder"),
         lambda w, mp: refuse_mkdir_under(w.cache, mp)),
    Case("candidates-truncated-fmnist-gz",
         lambda w: ["candidates", "--dataset", "fmnist", "--preset", "smoke", "--data-root", str(w.tmp / "data")],
         ("train-images-idx3-ubyte.gz is truncated or corrupt", "damaged gzip data",
          "delete it and rerun with --download"),
         lambda w, mp: fmnist_root(w, gz=True)),
    Case("candidates-truncated-pets-jpeg",
         lambda w: ["candidates", "--dataset", "pets", "--preset", "smoke", "--data-root", str(w.tmp / "data")],
         ("beagle_1.jpg is truncated or corrupt", "delete it and rerun with --download"),
         lambda w, mp: pets_root(w)),
    # entangle
    Case("entangle-negative-top", lambda w: ENTANGLE + ["--top", "-1"], ("--top -1", "greater than 0")),
    Case("entangle-top-above-100", lambda w: ENTANGLE + ["--top", "200"], ("--top 200", "at most 100")),
    Case("entangle-empty-top", lambda w: ENTANGLE + ["--top", ","],
         ("malformed --top ','", "expected percentages like 0.1,0.01")),
    Case("entangle-infinite-threshold", lambda w: ENTANGLE + ["--threshold", "inf"],
         ("--threshold inf", "must be a finite number")),
    Case("entangle-extractor-without-run", lambda w: ENTANGLE + ["--extractor", "ckpt:"],
         ("unknown --extractor 'ckpt:'", "use teacher, timm:NAME[@WEIGHTS_FILE] or ckpt:RUN_DIR")),
    Case("entangle-unknown-split", lambda w: ENTANGLE + ["--split", "val"],
         ("'--split': 'val' is not one of 'test', 'train'", "pllbench entangle --help")),
    Case("entangle-results-root-is-a-file", lambda w: ENTANGLE + ["--runs", a_file(w)],
         ("is a file", "pass --runs DIR")),
    Case("entangle-data-root-without-the-dataset",
         lambda w: ["entangle", "--dataset", "cifar100", "--data-root", str(w.tmp)],
         ("dataset 'cifar100' not found", "or add --download to fetch it")),
    Case("entangle-truncated-cifar-batch",
         lambda w: ["entangle", "--dataset", "cifar10", "--preset", "smoke", "--data-root", str(w.tmp / "data")],
         ("data_batch_3 is truncated or corrupt", "delete it and rerun with --download"),
         lambda w, mp: cifar_root(w)),
    Case("entangle-tampered-subsets", lambda w: ENTANGLE,
         lambda w: (f"entangled artifact {one(w.cache, 'entangled/*/scores.npy').parent} is corrupted (scores.npy "
                    f"fails its checksum)", "delete the folder to rebuild it"),
         lambda w, mp: flip_last_byte(one(w.cache, "entangled/*/scores.npy"))),
    # augment
    Case("augment-unknown-dataset", lambda w: AUGMENT + ["--dataset", "mnist", "--model", "tiny-ip2p"],
         ("unknown dataset 'mnist'", "choose one of:")),
    Case("augment-unknown-preset", lambda w: AUGMENT + ["--dataset", DATA, "--preset", "huge", "--model", "tiny-ip2p"],
         ("unknown preset 'huge'", "choose one of: paper, quick, demo, smoke")),
    Case("augment-resolution-off-the-latent-grid", lambda w: AUGMENT + ["--dataset", DATA, "--resolution", "12"],
         ("--resolution 12", "must be a multiple of 8")),
    Case("augment-editor-and-model-disagree",
         lambda w: AUGMENT + ["--dataset", DATA, "--editor", "tiny-ip2p", "--model", "some/model"],
         ("disagree", "pass --model tiny-ip2p alone")),
    Case("augment-missing-prompt-file", lambda w: AUGMENT + ["--dataset", DATA, "--prompts", "nope.json"],
         ("--prompts 'nope.json' is neither names nor detailed", "nor an existing .json file")),
]


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_bad_input_is_one_line_and_keeps_finished_work(case, world, capsys, monkeypatch):
    if case.setup is not None:
        case.setup(world, monkeypatch)
    needles = case.needles(world) if callable(case.needles) else case.needles
    before = snapshot(world)
    fails_with_one_line(capsys, case.argv(world), needles)
    assert_kept(before)


def test_disk_full_mid_run_keeps_finished_work_and_the_rerun_resumes(world, capsys):
    """The disk fills while the second epoch's checkpoint is written: one line with the path and the fix, no
    half-written file, the first epoch's checkpoint intact, and the rerun resumes from it."""
    before = snapshot(world)
    argv = RUN + ["--methods", "cc"]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(os, "fsync", fsync_refused(".checkpoint-0002.pt.", errno.ENOSPC))
        line = fails_with_one_line(capsys, argv, ("the disk is full", "free some space and rerun the same command"))
    run_dir = one(world.runs, "*/cc-*")
    assert f"({run_dir / 'checkpoint-0002.pt'})" in line  # the file whose write failed
    assert_kept(before)
    assert not [p for p in world.tmp.rglob("*.tmp*")], "a half-written file was left behind"
    assert sorted(p.name for p in run_dir.glob("checkpoint-*")) == ["checkpoint-0001.pt"]
    assert main(argv) == 0
    assert [a["from_epoch"] for a in read_attempts(run_dir) if a["event"] == "start"] == [0, 1]
    assert (run_dir / "final.json").is_file()
    assert_kept(before)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through chmod; the simulated case covers it")
def test_results_root_without_write_permission(world, capsys):
    before = snapshot(world)
    world.runs.chmod(0o555)
    try:
        fails_with_one_line(capsys, RUN + ["--methods", "proden", "--seeds", "1"],
                            (f"permission denied ({world.runs / '_grids'})", "pass --runs / --cache-dir"))
    finally:
        world.runs.chmod(0o755)
    assert_kept(before)


def test_debug_shows_the_traceback(tmp_path):
    """The real entry point with --debug: the interpreter prints the traceback, and no `error: ` line."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-m", "pllbench", "--debug", "run", "--methods", "prodne", "--dataset",
                           DATA], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert done.returncode != 0
    assert "Traceback (most recent call last)" in done.stderr and "PllbenchError: unknown method prodne" in done.stderr
    assert not any(line.startswith("error: ") for line in done.stderr.splitlines())


def test_debug_reraises_an_os_error(world, capsys, monkeypatch):
    refuse_mkdir_under(world.cache, monkeypatch)
    with pytest.raises(PermissionError):
        main(["--debug"] + CANDIDATES + ["--seed", "1"])
    assert "error: " not in capsys.readouterr().err


@pytest.mark.parametrize("argv,needles", [
    (["--seeds", "0,,1"], ["malformed --seeds '0,,1'", "an empty item"]),
    (["--seeds", "0,1,"], ["malformed --seeds '0,1,'", "an empty item"]),
    (["--methods", "dirk,,cc"], ["malformed --methods 'dirk,,cc'", "an empty item"]),
    (["--runs", ""], ["--runs is empty", "pass --runs DIR"]),
    (["--runs", " "], ["--runs is empty"]),
    (["--preset", ""], ["--preset is empty"]),
])
def test_empty_items_are_one_line_errors(capsys, tmp_path, argv, needles):
    base = ["run", "--dataset", DATA, "--preset", "smoke"]
    if "--methods" not in argv:
        base += ["--methods", "cc"]
    if "--runs" not in argv:
        base += ["--runs", str(tmp_path / "r")]
    error_line(capsys, base + argv, *needles)
    assert not (tmp_path / "r").exists() and not Path("runs").exists()


def test_empty_dataset_item_is_an_error(capsys):
    error_line(capsys, ["run", "--methods", "cc", "--datasets", "fmnist,,cifar10"], "an empty item")


def test_non_utf8_grid_file_is_one_line(capsys, tmp_path):
    grid = tmp_path / "grid.toml"
    grid.write_bytes(b'methods = ["cc"]\n\xff\xfe datasets = ["synthetic"]\n')
    error_line(capsys, ["run", "--grid", str(grid)], "grid.toml is not UTF-8 text (byte 0xff at offset 17)")
    error_line(capsys, ["status", "--grid", str(grid)], "is not UTF-8 text")
