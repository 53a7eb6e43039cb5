"""`pllbench augment` (pllbench/cad_edits/augment.py): the tiny InstructPix2Pix editor on synthetic smoke data."""

from __future__ import annotations

import json
import shutil
import socket
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from pllbench.cad_edits.augment import (
    PIPELINE_PARAMS,
    TINY,
    EditModel,
    Ip2pEditor,
    augment,
    load_prompts,
    modules_fingerprint,
    prompts_sha256,
    ready_pipeline,
    shipped_prompts,
    tiny_pipeline,
    weights_fingerprint,
)
from pllbench.cad_edits.edits import edit_pairs
from pllbench.cad_edits.tiny_editor import tiny_tokenizer
from pllbench.cli import main as cli_main
from pllbench.errors import PllbenchError
from pllbench.util import derive_seed

SMALL = "synthetic:train=12"  # 12 instances, about 35 edits at the smoke rate
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def tiny():
    """One tiny pipeline for the module (building it costs a second) and its weights hash."""
    pipe = ready_pipeline(tiny_pipeline(), CPU)
    return pipe, modules_fingerprint(pipe)


def tiny_model(tiny, wrap=lambda pipe: pipe) -> EditModel:
    pipe, sha = tiny
    return EditModel(TINY, sha, lambda dtype: wrap(pipe))


def run_augment(cache, model, dataset=SMALL, **kwargs):
    kwargs = {"batch_size": 8, "resolution": 16, "device": CPU, "progress": False, "echo": lambda *_: None,
              **kwargs}
    return augment(dataset, "smoke", 0, model=model, cache=cache, **kwargs)


@pytest.fixture
def no_network(monkeypatch):
    """Every outgoing connection or name look-up fails and is recorded."""
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args[1:] or args)
        raise OSError("network disabled by the test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    return attempts


def error_lines(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]


def test_tokenizer_is_byte_level_with_word_ends():
    tok = tiny_tokenizer()
    vocab = tok.get_vocab()
    ids = tok("ab c")["input_ids"]
    assert ids == [vocab["<|startoftext|>"], ord("a"), 256 + ord("b"), 256 + ord("c"), vocab["<|endoftext|>"]]
    assert tok.model_max_length == 77 and len(vocab) == 514


def test_tiny_pipeline_is_seeded(tiny):
    assert modules_fingerprint(tiny_pipeline()) == tiny[1]
    assert tiny[0].unet.config.in_channels == 8


def test_cli_smoke_run_builds_then_reuses_the_artifact(tmp_path, capsys):
    args = ["augment", "--dataset", SMALL, "--preset", "smoke", "--model", TINY, "--resolution", "32",
            "--batch-size", "16", "--no-progress", "--device", "cpu", "--cache-dir", str(tmp_path / "cache")]
    assert cli_main(args) == 0
    first = capsys.readouterr().out.strip().splitlines()[-1]
    assert first.startswith("augment: ") and "edits/s" in first and "bytes" in first
    folder = Path(first.rsplit(": ", 1)[1])
    edits = np.load(folder / "edits.npy")
    meta = json.loads((folder / "meta.json").read_text())
    assert edits.dtype == np.uint8 and edits.shape[1:] == (3, 16, 16) and edits.shape[0] == meta["num_edits"]
    key = meta["key"]
    assert key["editor"] == TINY and key["seed"] == 0 and key["params"]["resolution"] == 32
    assert key["params"]["steps"] == 10 and key["params"]["dtype"] == "float32"
    assert key["prompts_sha256"] == prompts_sha256([f"class {c}" for c in range(4)])
    assert edits.std() > 0
    assert cli_main(args) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith(f"augment: 0 edits made in 0.0 s (0.00 edits"
                                                                         f"/s); artifact {folder.name}")


class StampPipe:
    """A stand-in editor: channel 0 keeps the input, channel 1 = the class of the prompt, channel 2 = seed mod 251."""

    scheduler = SimpleNamespace(config={})

    def set_progress_bar_config(self, **_):
        pass

    def to(self, *_, **__):
        return self

    def __call__(self, prompt, image, generator, output_type, **params):
        self.params = params
        out = image.clone()
        out[:, 1] = torch.tensor([int(p.split()[-1]) for p in prompt], dtype=torch.float32)[:, None, None] / 255
        out[:, 2] = torch.tensor([g.initial_seed() % 251 for g in generator], dtype=torch.float32)[:, None, None] / 255
        return SimpleNamespace(images=out)


def test_rows_follow_the_candidate_rows_with_their_own_prompt_and_seed(tmp_path):
    pipe = StampPipe()
    store, summary = run_augment(tmp_path, EditModel("stamp-test", "0" * 64, lambda dtype: pipe), batch_size=5)
    assert pipe.params == {"num_inference_steps": 10, "guidance_scale": 5.0, "image_guidance_scale": 1.5,
                           "negative_prompt": None}
    from pllbench.data.prepare import prepare

    prep = prepare(SMALL, "smoke", 0, cache=tmp_path, device=CPU, echo=lambda *_: None)
    instances, labels = edit_pairs(prep.candidates.matrix)
    edits = np.asarray(store.edits)
    assert summary["edits"] == summary["total"] == len(instances) == len(edits)
    assert np.array_equal(edits[:, 0], prep.data.train.images.numpy()[instances, 0])
    assert np.array_equal(edits[:, 1, 0, 0], labels)
    seeds = [derive_seed("edit", "synthetic", 0, i, s) % 251 for i, s in zip(instances, labels)]
    assert edits[:, 2, 0, 0].tolist() == seeds
    prompt_file = tmp_path / "prompts.json"
    prompt_file.write_text(json.dumps({f"class {c}": f"paint it as class {c}" for c in range(4)}))
    described, _ = run_augment(tmp_path, EditModel("stamp-test", "0" * 64, lambda dtype: pipe),
                               prompts=str(prompt_file))
    assert described.folder != store.folder  # the instructions are part of the key
    assert described.meta["key"]["prompts_sha256"] == prompts_sha256([f"paint it as class {c}" for c in range(4)])
    assert np.array_equal(np.asarray(described.edits), edits)


def test_an_edit_does_not_depend_on_its_batch(tiny):
    images = torch.randint(0, 256, (6, 1, 16, 16), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    editor = Ip2pEditor(tiny[0], images, ["a", "b", "c"], "synthetic", 0, 16, 16, CPU)
    batch = editor(np.array([0, 1, 2, 5]), np.array([2, 0, 1, 1]))
    alone = editor(np.array([2]), np.array([1]))
    assert batch.shape == (4, 3, 16, 16) and np.array_equal(batch[2:3], alone)
    assert not np.array_equal(batch[2], batch[3])  # another instance, another seed


class CrashAfter:
    """The tiny pipeline that dies on its (k+1)-th call, like a killed build."""

    def __init__(self, pipe, k):
        self.pipe, self.k, self.calls = pipe, k, 0
        self.scheduler = pipe.scheduler

    def set_progress_bar_config(self, **kwargs):
        self.pipe.set_progress_bar_config(**kwargs)

    def to(self, *args, **kwargs):
        return self

    def __call__(self, **kwargs):
        if self.calls == self.k:
            raise RuntimeError("killed")
        self.calls += 1
        return self.pipe(**kwargs)


def test_killed_build_resumes_to_the_same_bytes(tmp_path, tiny):
    full, summary = run_augment(tmp_path, tiny_model(tiny))
    expected = {name: (full.folder / name).read_bytes() for name in ("edits.npy", "offsets.npy")}
    total = summary["total"]
    assert total > 16
    shutil.rmtree(tmp_path / "edits")  # keep the teacher and candidates, drop the edits
    with pytest.raises(RuntimeError, match="killed"):
        run_augment(tmp_path, tiny_model(tiny, lambda pipe: CrashAfter(pipe, 2)))
    resumed, summary = run_augment(tmp_path, tiny_model(tiny))
    assert summary["edits"] == total - 16  # two chunks of 8 were kept
    assert resumed.folder == full.folder
    for name, data in expected.items():
        assert (resumed.folder / name).read_bytes() == data
    assert not list((tmp_path / "edits").glob("*.partial"))


@pytest.mark.slow
def test_cad_trains_on_tiny_ip2p_edits(tmp_path, tiny):
    from conftest import smoke_run

    cache = tmp_path / "cache"
    store, _ = run_augment(cache, tiny_model(tiny), dataset="synthetic", batch_size=64)
    final, run_dir, prep = smoke_run("cad", cache, tmp_path / "runs", hp={"editor": TINY}, epochs=1)
    assert final["label"] == f"cad[{TINY}]" and 0 <= final["test_acc"] <= 1
    queue_labels = torch.load(run_dir / "model.pt", weights_only=True)["queue.label"]
    assert (queue_labels >= 0).any()


def test_a_local_folder_and_a_cached_hub_id_give_the_in_code_model_edits(tmp_path, tiny, no_network, monkeypatch):
    """The tiny pipeline saved as a hub snapshot: found by folder and, offline, by hub id; same weights, same edits."""
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    repo = tmp_path / "hub" / "models--pllbench-tests--tiny"
    folder = repo / "snapshots" / ("0" * 40)
    tiny_pipeline().save_pretrained(folder)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    built, _ = run_augment(tmp_path / "cache", tiny_model(tiny), batch_size=16)
    local, made = run_augment(tmp_path / "cache", str(folder), batch_size=16)
    assert made["edits"] == made["total"] and local.meta["key"]["editor"] == "ip2p"
    assert local.meta["key"]["weights_sha256"] == weights_fingerprint(folder)
    assert np.array_equal(np.asarray(local.edits), np.asarray(built.edits))
    cached, reused = run_augment(tmp_path / "cache", "pllbench-tests/tiny", batch_size=16)
    assert cached.folder == local.folder and reused["edits"] == 0
    assert not no_network


def test_weights_fingerprint_reads_big_files_at_their_ends(tmp_path):
    (tmp_path / "unet").mkdir()
    big = tmp_path / "unet" / "weights.safetensors"
    data = bytearray(np.random.default_rng(0).integers(0, 256, 6 << 20, dtype=np.uint8).tobytes())
    big.write_bytes(bytes(data))
    (tmp_path / "unet" / "config.json").write_text("{}")
    base = weights_fingerprint(tmp_path)
    for position in (0, len(data) - 1):
        changed = bytearray(data)
        changed[position] ^= 1
        big.write_bytes(bytes(changed))
        assert weights_fingerprint(tmp_path) != base
    big.write_bytes(bytes(data) + b"\0")
    assert weights_fingerprint(tmp_path) != base
    big.write_bytes(bytes(data))
    (tmp_path / "unet" / "config.json").write_text('{"a": 1}')
    assert weights_fingerprint(tmp_path) != base
    (tmp_path / "unet" / "config.json").write_text("{}")
    (tmp_path / "safety_checker").mkdir()
    (tmp_path / "safety_checker" / "model.safetensors").write_bytes(b"not loaded, not hashed")
    assert weights_fingerprint(tmp_path) == base


@pytest.mark.parametrize("model", ["pllbench-tests/no-such-model", "./no/such/folder", "EMPTY_DIR"])
def test_a_missing_model_is_one_line_and_the_hub_is_not_contacted(model, tmp_path, capsys, no_network):
    if model == "EMPTY_DIR":
        model = str(tmp_path)
    code = cli_main(["augment", "--dataset", SMALL, "--preset", "smoke", "--model", model, "--download",
                     "--cache-dir", str(tmp_path / "cache"), "--device", "cpu", "--no-progress"])
    errors = error_lines(capsys)
    assert code == 2 and len(errors) == 1
    assert "--model DIR" in errors[0] and "--download" in errors[0]
    assert not no_network


def test_without_download_the_hub_is_not_contacted_even_when_online(tmp_path, capsys, monkeypatch, no_network):
    monkeypatch.delenv("HF_HUB_OFFLINE")
    code = cli_main(["augment", "--dataset", SMALL, "--preset", "smoke", "--cache-dir", str(tmp_path / "cache"),
                     "--device", "cpu", "--model", "pllbench-tests/no-such-model"])
    errors = error_lines(capsys)
    assert code == 2 and len(errors) == 1 and "no --download" in errors[0]
    assert not no_network


def test_hf_hub_offline_wins_over_download(tmp_path, capsys, no_network):
    code = cli_main(["augment", "--dataset", SMALL, "--preset", "smoke", "--cache-dir", str(tmp_path / "cache"),
                     "--device", "cpu", "--download"])
    errors = error_lines(capsys)
    assert code == 2 and len(errors) == 1 and "HF_HUB_OFFLINE=1" in errors[0]
    assert "'timbrooks/instruct-pix2pix'" in errors[0]
    assert not no_network


def test_prompt_sets(tmp_path):
    classes = ["class 0", "class 1"]
    assert load_prompts("names", "synthetic", classes) == classes
    good = tmp_path / "p.json"
    good.write_text(json.dumps({"class 1": "a blue square", "class 0": "a red disc"}))
    assert load_prompts(str(good), "synthetic", classes) == ["a red disc", "a blue square"]
    for bad in ({"class 0": "x"}, {"class 0": "x", "class 1": "y", "class 2": "z"}, {"class 0": "", "class 1": "y"},
                ["x", "y"]):
        good.write_text(json.dumps(bad))
        with pytest.raises(PllbenchError) as err:
            load_prompts(str(good), "synthetic", classes)
        assert "\n" not in str(err.value)
    with pytest.raises(PllbenchError, match="no detailed prompts"):
        load_prompts("detailed", "synthetic", classes)
    with pytest.raises(PllbenchError, match="neither names nor detailed"):
        load_prompts("fancy", "synthetic", classes)


def test_shipped_detailed_prompts_name_every_class():
    import torchvision

    from pllbench.datasets.fmnist import CLASSES

    cifar10 = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    for dataset, classes in (("fmnist", CLASSES), ("cifar10", cifar10),
                             ("flowers", torchvision.datasets.Flowers102.classes)):
        prompts = load_prompts("detailed", dataset, list(classes))
        assert len(prompts) == len(classes) and len(set(prompts)) == len(classes)
    for dataset, count in (("cifar100", 100), ("pets", 37)):
        table = shipped_prompts(dataset)
        assert len(table) == count and load_prompts("detailed", dataset, list(table)) == list(table.values())
    assert all(name == name.title() for name in shipped_prompts("pets"))
    assert {"American Pit Bull Terrier", "German Shorthaired", "Yorkshire Terrier"} <= set(shipped_prompts("pets"))
    assert {"aquarium_fish", "maple_tree", "sweet_pepper"} <= set(shipped_prompts("cifar100"))


def test_pipeline_parameters_are_the_official_ones():
    assert PIPELINE_PARAMS == {"scheduler": "DPMSolverMultistepScheduler", "steps": 10, "guidance_scale": 5.0,
                               "image_guidance_scale": 1.5, "negative_prompt": None}
