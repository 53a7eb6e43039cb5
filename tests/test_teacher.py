"""The candidate teacher: the same candidate sets at any thread count, per-epoch lines, bit-identical resume after an
interrupt, cached teachers that cannot be trusted retrained (never served), input bundles exported and imported."""

from __future__ import annotations

import json
import re
import subprocess
import tarfile

import pytest
import torch
from conftest import cli_command

from pllbench.data.prepare import prepare
from pllbench.errors import PllbenchError
from pllbench.util import sha256_file

CPU = torch.device("cpu")


def _teacher_dir(cache):
    (folder,) = [p for p in (cache / "teacher").iterdir() if p.is_dir() and "." not in p.name]
    return folder


def _candidates_line(out: str) -> str:
    return re.search(r"seed 0: candidates (\w+), teacher (\w+)", out).group(0)


def test_candidates_do_not_depend_on_the_thread_count(tmp_path):
    """The smoke teacher trained in a process with 1 and with 2 torch threads: the same weights, the same sets."""
    seen = {}
    for threads in ("1", "2"):
        cache = tmp_path / f"cache-{threads}"
        cmd, env = cli_command(["candidates", "--dataset", "synthetic", "--preset", "smoke"], cache)
        env.update(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr
        teacher = _teacher_dir(cache)
        meta = json.loads((teacher / "meta.json").read_text())
        assert meta["training"]["threads"] == 1
        seen[threads] = (_candidates_line(out.stdout), sha256_file(teacher / "weights.pt"))
    assert seen["1"] == seen["2"]


def test_teacher_prints_each_epoch_and_resumes_bit_identically(tmp_path):
    whole = tmp_path / "whole"
    lines = []
    prepare("synthetic", "smoke", 0, cache=whole, device=CPU, echo=lines.append)
    assert [line.split(":")[0] for line in lines if line.startswith("teacher epoch")] == \
        ["teacher epoch 1/3", "teacher epoch 2/3", "teacher epoch 3/3"]

    def stop_after_two(line):
        if line.startswith("teacher epoch 2/"):
            raise KeyboardInterrupt

    cut = tmp_path / "cut"
    with pytest.raises(KeyboardInterrupt):
        prepare("synthetic", "smoke", 0, cache=cut, device=CPU, echo=stop_after_two)
    assert list((cut / "teacher").glob("*.partial/checkpoint.pt"))
    resumed = []
    prepare("synthetic", "smoke", 0, cache=cut, device=CPU, echo=resumed.append)
    assert any(line.startswith("resuming the candidate teacher after epoch 2/3") for line in resumed)
    assert [line.split(":")[0] for line in resumed if line.startswith("teacher epoch")] == ["teacher epoch 3/3"]
    assert sha256_file(_teacher_dir(cut) / "weights.pt") == sha256_file(_teacher_dir(whole) / "weights.pt")
    assert (_teacher_dir(cut) / "train_log.jsonl").read_text().count("\n") == 3
    assert not list((cut / "teacher").glob("*.partial"))


def test_a_cached_teacher_without_a_training_record_is_retrained_not_served(tmp_path):
    """A teacher cached before thread-independent training (no record, maybe other weights) is moved aside."""
    good = prepare("synthetic", "smoke", 0, cache=tmp_path, device=CPU, echo=lambda *_: None).candidates.hash
    folder = _teacher_dir(tmp_path)
    weights = torch.load(folder / "weights.pt", weights_only=True)
    torch.save({k: v + 0.01 if v.is_floating_point() else v for k, v in weights.items()}, folder / "weights.pt")
    meta = json.loads((folder / "meta.json").read_text())
    meta.pop("training")
    meta["files"]["weights.pt"] = sha256_file(folder / "weights.pt")
    (folder / "meta.json").write_text(json.dumps(meta))
    lines = []
    again = prepare("synthetic", "smoke", 0, cache=tmp_path, device=CPU, echo=lines.append)
    assert any(line.startswith(f"note: the cached teacher {folder.name} was trained at an unrecorded number of "
                               f"threads") for line in lines)
    assert again.candidates.hash == good
    assert len(list((tmp_path / "teacher").glob(f"{folder.name}.untrusted-*"))) == 1


def test_bundles_carry_exact_candidate_sets_between_caches(tmp_path):
    from pllbench.cli import cli as main

    src, dst = tmp_path / "src", tmp_path / "dst"
    bundle = tmp_path / "inputs.tar.gz"
    out = _invoke(main, ["candidates", "--dataset", "synthetic", "--preset", "smoke", "--seed", "0,1",
                         "--export", str(bundle), "--cache-dir", str(src)])
    assert "exported 3 artifacts" in out  # one teacher, two candidate sets
    out = _invoke(main, ["candidates", "--import", str(bundle), "--cache-dir", str(dst)])
    assert out.count("imported") == 3
    for seed in (0, 1):
        a = prepare("synthetic", "smoke", seed, cache=src, device=CPU, echo=lambda *_: None).candidates
        lines = []
        b = prepare("synthetic", "smoke", seed, cache=dst, device=CPU, echo=lines.append).candidates
        assert (a.hash, a.matrix.tolist()) == (b.hash, b.matrix.tolist())
        assert not any("training" in line for line in lines)  # served from the bundle, nothing retrained
    assert _invoke(main, ["candidates", "--import", str(bundle), "--cache-dir", str(dst)]).count("identical") == 3


def test_an_import_never_overwrites_another_teacher_and_damaged_bundles_are_refused(tmp_path):
    from pllbench.data.bundle import export_bundle, import_bundle

    src, dst = tmp_path / "src", tmp_path / "dst"
    path = prepare("synthetic", "smoke", 0, cache=src, device=CPU, echo=lambda *_: None).candidates.path
    bundle = tmp_path / "b.tar.gz"
    export_bundle(src, [path], bundle)
    prepare("synthetic", "smoke", 0, cache=dst, device=CPU, echo=lambda *_: None)
    folder = _teacher_dir(dst)
    torch.save({"other": torch.zeros(1)}, folder / "weights.pt")
    meta = json.loads((folder / "meta.json").read_text())
    meta["files"]["weights.pt"] = sha256_file(folder / "weights.pt")
    (folder / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(PllbenchError, match="holds another teacher under the key"):
        import_bundle(dst, bundle)
    evil = tmp_path / "evil.tar.gz"
    with tarfile.open(evil, "w:gz") as tar:
        tar.add(bundle, arcname="../escape")
    with pytest.raises(PllbenchError, match="outside a bundle's layout"):
        import_bundle(tmp_path / "other", evil)
    (tmp_path / "plain.tar.gz").write_text("not a tar")
    with pytest.raises(PllbenchError, match="is not a pllbench input bundle"):
        import_bundle(tmp_path / "other", tmp_path / "plain.tar.gz")


def _invoke(main, args):
    from click.testing import CliRunner

    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output
