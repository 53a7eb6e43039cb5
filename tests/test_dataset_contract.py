"""The dataset contract (issue #14, docs/adding-a-dataset.md): resolved presets and run ids unchanged by the move of
RATES / TEACHERS / PAPER_DATA into the dataset files, registration checks, entry points, view families, and the doc's
SVHN example installed as ONE file through the `pllbench.datasets` entry point and run end to end at smoke size."""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import pytest
import torch

from pllbench import dataset as contract
from pllbench.data import prepare as prepare_module
from pllbench.data import registry as data_module
from pllbench.data.registry import dataset_class, dataset_names, get_dataset, paper_datasets
from pllbench.dataset import Dataset, DatasetInfo, Split, register_dataset
from pllbench.errors import PllbenchError
from pllbench.presets import PRESETS, TEACHERS, preset_datasets, resolve_preset
from pllbench.views.families import TEACHER_AUGMENTS, ViewFamily, register_view_family, view_family

REPO = Path(__file__).resolve().parents[1]
GOLDEN = REPO / "tests" / "golden" / "resolved_presets.json"
DOC = REPO / "docs" / "adding-a-dataset.md"
BUILTIN = ["cifar10", "cifar100", "flowers", "fmnist", "pets", "synthetic"]


@pytest.fixture
def registry(monkeypatch):
    """Registrations made in the test are dropped afterwards (the registry and the loaded flag are restored)."""
    data_module.load_datasets()
    monkeypatch.setattr(contract, "_DATASETS", dict(contract._DATASETS))
    prepare_module._load.cache_clear()
    yield
    prepare_module._load.cache_clear()


# --------------------------------------------------------------------------- resolved presets, run ids: unchanged


def resolved_table() -> tuple[dict, list[str]]:
    resolved, refused = {}, []
    for preset in PRESETS:
        for name in BUILTIN:
            try:
                resolved[f"{preset}/{name}"] = json.loads(json.dumps(resolve_preset(preset, name)))
            except PllbenchError as exc:
                assert "\n" not in str(exc) and f"preset {preset!r} is not made for dataset {name!r}" in str(exc)
                refused.append(f"{preset}/{name}")
    return resolved, sorted(refused)


def test_resolve_preset_is_unchanged_for_every_pair():
    """Every (preset, built-in dataset) pair resolves as it did before the contract (captured first), so run ids do
    not change; the pairs a preset refuses are the same. PLLBENCH_UPDATE_GOLDEN=1 rewrites the table when a preset
    is changed on purpose (its run ids then change with it)."""
    golden = json.loads(GOLDEN.read_text())
    resolved, refused = resolved_table()
    if os.environ.get("PLLBENCH_UPDATE_GOLDEN"):
        golden.update(resolved=resolved, unsupported=sorted(refused + [k for k in golden["unsupported"]
                                                                       if k.endswith("/nope")]))
        GOLDEN.write_text(json.dumps(golden, indent=1, sort_keys=True) + "\n")
    assert sorted(resolved) == sorted(golden["resolved"])
    for pair, cfg in resolved.items():
        assert cfg == golden["resolved"][pair], pair
    assert refused == sorted(k for k in golden["unsupported"] if not k.endswith("/nope"))


def test_smoke_dataset_keys_teacher_keys_and_run_ids_are_unchanged(tmp_path):
    """The dataset key, the teacher's key hash and the run id (its candidate hash replaced by a placeholder: the real
    one depends on the CPU's float arithmetic) of smoke runs, as before the contract. DIRK's ids changed once since,
    when it gained the `teacher_init` hyperparameter (a new key in every DIRK config), and every smoke id once when a
    run began to record only its own entries of the preset's method table (smoke's table has CEL, VALEN and CAD
    entries)."""
    from pllbench.data.prepare import prepare
    from pllbench.train.loop import resolve_run_config
    from pllbench.train.runconfig import run_id

    for key, want in json.loads(GOLDEN.read_text())["smoke_runs"].items():
        spec, method = key.rsplit("/", 1)
        prep = prepare(spec, "smoke", 0, cache=tmp_path, device=torch.device("cpu"), echo=lambda *_: None)
        config = resolve_run_config(prep, method, 0, {})
        blind = dict(config, candidates=dict(config["candidates"], hash="0" * 16, mean_size=0.0))
        got = {"run_id_without_candidates": run_id(blind), "teacher_key": prep.teacher_hash,
               "dataset": config["dataset"]}
        assert json.loads(json.dumps(got)) == want, key


def test_a_preset_refuses_a_dataset_in_one_line_naming_a_preset_that_fits():
    with pytest.raises(PllbenchError) as info:
        resolve_preset("quick", "synthetic")
    assert str(info.value) == ("preset 'quick' is not made for dataset 'synthetic' (it is for: fmnist); "
                               "pass --preset smoke")
    with pytest.raises(PllbenchError, match="unknown dataset 'nope'; choose one of: cifar10"):
        resolve_preset("paper", "nope")
    assert preset_datasets("paper") == paper_datasets() == ["fmnist", "cifar10", "cifar100", "flowers", "pets"]
    assert preset_datasets("smoke") == ["fmnist", "cifar10", "pets", "synthetic"]
    assert not any("datasets" in preset for preset in PRESETS.values())  # one source of truth: the datasets


def test_the_builtins_keep_the_contract():
    assert dataset_names() == BUILTIN
    for name in BUILTIN:
        cls = dataset_class(name)
        assert issubclass(cls, Dataset) and cls.name == name
        info = get_dataset(name).info()
        assert info.name == name and view_family(info.view_family).name == info.view_family
        assert get_dataset(name).key() == {"name": name, "options": get_dataset(name).options()}
        for preset in cls.presets:
            assert preset in PRESETS, (name, preset)
            resolve_preset(preset, name)
    assert all(recipe["augment"] in TEACHER_AUGMENTS for recipe in TEACHERS.values())


def test_no_loader_is_duck_typed():
    for folder in ("pllbench", "datasets"):
        for path in (REPO / folder).rglob("*.py"):
            text = path.read_text()
            assert not re.search(r"hasattr\(\w*(loader|dataset)\w*,", text), path


# ------------------------------------------------------------------------------------------ registration checks


def make(name="toy", base=Dataset, **attrs):
    def info(self):
        return DatasetInfo(name, 4, 3, 16, (0.5,) * 3, (0.25,) * 3, "32")

    def load(self, root, download):
        from pllbench.datasets.synthetic import make_split

        return make_split("train", 32, 4, 3, 16, 0), make_split("test", 16, 4, 3, 16, 0)

    body = {"info": info, "load": load, "presets": ("smoke",), "__module__": "toy_module", **attrs}
    return type("Toy", (base,), body)


RECIPE = dict(TEACHERS["smoke"])


@pytest.mark.parametrize("name,attrs,message", [
    ("Bad Name", {}, "needs a name matching"),
    ("toy", {"presets": ()}, "must name the presets made for it"),
    ("toy", {"rate": 0.0}, "candidate rate in (0, 1]"),
    ("toy", {"teachers": {"paper": RECIPE}}, "teacher for preset 'paper', which is not in its presets"),
    ("toy", {"teachers": {"smoke": {"arch": "cnn-xs"}}}, "must have exactly the keys"),
    ("toy", {"teachers": {"*": dict(RECIPE, augment="mixup")}}, "teacher augment 'mixup'"),
    ("toy", {"preset_settings": {"quick": {"epochs": 1}}}, "preset_settings for 'quick'"),
    ("toy", {"paper_column": 0}, "paper column 0, which is 'fmnist''s"),
])
def test_registration_refuses_a_broken_dataset_in_one_line(registry, name, attrs, message):
    with pytest.raises(PllbenchError) as info:
        register_dataset(name)(make(**attrs))
    assert message in str(info.value) and "\n" not in str(info.value) and "toy_module.Toy" in str(info.value)
    assert name not in contract.registered_datasets()


def test_registration_refuses_non_datasets_and_duplicates(registry):
    with pytest.raises(PllbenchError, match="must subclass pllbench.dataset.Dataset"):
        register_dataset("toy")(make(base=object))
    with pytest.raises(PllbenchError, match="does not implement load"):
        register_dataset("toy")(type("Half", (Dataset,), {"info": lambda self: None, "presets": ("smoke",)}))
    with pytest.raises(PllbenchError) as info:
        register_dataset("synthetic")(make())
    assert str(info.value) == ("dataset 'synthetic' registered twice: by pllbench.datasets.synthetic.Synthetic and by "
                               "toy_module.Toy; rename one")
    cls = make()
    assert register_dataset("toy")(cls) is cls and register_dataset("toy")(cls) is cls  # the same class again: fine


def test_teacher_fallbacks_and_settings(registry):
    own = dict(RECIPE, arch="cnn-s", epochs=1)
    register_dataset("toy")(make(teachers={"*": own}, preset_settings={"smoke": {"batch_size": 8}}, rate=0.25))
    cfg = resolve_preset("smoke", "toy")
    assert cfg["teacher"]["arch"] == "cnn-s" and cfg["teacher"]["epochs"] == 1 and cfg["teacher"]["seed"] == 0
    assert cfg["batch_size"] == 8 and cfg["rate"] == 0.25 and cfg["epochs"] == PRESETS["smoke"]["epochs"]
    register_dataset("toy2")(make("toy2", presets=("paper",)))
    with pytest.raises(PllbenchError, match="no candidate teacher for dataset 'toy2'; give Toy.teachers a 'paper'"):
        resolve_preset("paper", "toy2")
    register_dataset("toy3")(make("toy3", preset_settings={"smoke": {"epochz": 1}}))
    with pytest.raises(PllbenchError, match="sets epochz for preset 'smoke', which has no such field"):
        resolve_preset("smoke", "toy3")
    assert "toy" in preset_datasets("smoke") and "toy2" not in preset_datasets("smoke")


def test_info_must_match_the_registered_name(registry, tmp_path):
    from pllbench.data.prepare import prepare

    register_dataset("toy-renamed")(make("toy"))
    with pytest.raises(PllbenchError, match="names the dataset 'toy', but it is registered as 'toy-renamed'"):
        prepare("toy-renamed", "smoke", 0, cache=tmp_path, device=torch.device("cpu"), echo=lambda *_: None)


def test_view_families_are_data_and_a_dataset_file_may_add_one():
    from pllbench.views.maker import ViewMaker

    with pytest.raises(PllbenchError, match="unknown view family '48'; known: 28, 32, 224"):
        DatasetInfo("t", 4, 3, 48, (0.5,) * 3, (0.25,) * 3, "48")
    family = register_view_family(ViewFamily("test-48", cls_crop="pad", cls_policy=None, cls_cutout=False,
                                             crop_scale=(0.5, 1.0), colour=False, teacher_pad_mode="reflect",
                                             pad=6, reference_side=48))
    assert register_view_family(family) is family  # the same recipe again: fine
    with pytest.raises(PllbenchError, match="registered twice"):
        register_view_family(ViewFamily("test-48", "rrc", None, False, (0.5, 1.0), False, "reflect"))
    maker = ViewMaker(DatasetInfo("t", 4, 3, 24, (0.5,) * 3, (0.25,) * 3, "test-48"))
    assert maker.pad == 3 and maker.family == "test-48"
    images = torch.randint(0, 256, (5, 3, 24, 24), dtype=torch.uint8)
    gen = torch.Generator().manual_seed(0)
    for view in ("base", "cls", "weak", "strong"):
        assert maker(images, view, gen).shape == (5, 3, 24, 24)
    # the built-in families keep their pad and cutout sides (protocols.md §3)
    sides = {(fam, size): (ViewMaker(DatasetInfo("t", 4, 3, size, (0.5,) * 3, (0.25,) * 3, fam)).pad,
                           ViewMaker(DatasetInfo("t", 4, 3, size, (0.5,) * 3, (0.25,) * 3, fam)).cutout)
             for fam, size in (("28", 28), ("32", 32), ("32", 16), ("224", 224))}
    assert sides == {("28", 28): (4, 16), ("32", 32): (4, 16), ("32", 16): (2, 8), ("224", 224): (4, 16)}


# ------------------------------------------------------------------ the doc's example: one file, an entry point


def doc_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)


def install_entry_point(tmp_path: Path, monkeypatch, module: str, source: str) -> None:
    """`source` as module `module`, found through the `pllbench.datasets` entry point of a dist-info (nothing in
    pllbench is edited); the registry is reloaded on the next lookup."""
    site = tmp_path / "site"
    dist = site / f"{module}-0.1.dist-info"
    dist.mkdir(parents=True)
    (site / f"{module}.py").write_text(source)
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[pllbench.datasets]\n{module} = {module}\n")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setattr(data_module, "_datasets_loaded", False)


def test_the_doc_example_is_one_file_found_through_an_entry_point_and_runs(registry, tmp_path, monkeypatch, capsys):
    (dataset_source,) = [b for b in doc_blocks() if '@register_dataset("svhn")' in b]
    (tests_source,) = [b for b in doc_blocks() if "def write_svhn" in b]
    install_entry_point(tmp_path, monkeypatch, "pllbench_svhn", dataset_source)
    try:
        assert "svhn" in dataset_names() and dataset_class("svhn").__module__ == "pllbench_svhn"
        assert "svhn" in preset_datasets("smoke") and "svhn" in preset_datasets("paper")
        assert "svhn" not in paper_datasets()
        with pytest.raises(PllbenchError, match="preset 'quick' is not made for dataset 'svhn'"):
            resolve_preset("quick", "svhn")
        paper = resolve_preset("paper", "svhn")
        assert paper["teacher"]["arch"] == "wrn28-10" and paper["batch_size"] == 64 and paper["rate"] == 1.0
        assert resolve_preset("smoke", "svhn")["teacher"] == resolve_preset("smoke", "synthetic")["teacher"]

        # the doc's tests, as written there
        namespace: dict = {"__name__": "svhn_doc_tests"}
        exec(compile(tests_source, str(DOC), "exec"), namespace)
        namespace["test_svhn_reads_its_files"](tmp_path / "t1")
        namespace["test_svhn_damaged_or_missing_files_are_one_line"](tmp_path / "t2")
        namespace["test_svhn_trains_a_smoke_epoch"](tmp_path / "t3")

        # and `pllbench run` / `pllbench list` on it
        from pllbench.cli import main

        namespace["write_svhn"](tmp_path / "data")
        runs = tmp_path / "runs"
        code = main(["run", "--methods", "proden", "--dataset", "svhn", "--preset", "smoke", "--seeds", "0",
                     "--epochs", "1", "--data-root", str(tmp_path / "data"), "--cache-dir", str(tmp_path / "cache"),
                     "--runs", str(runs), "--no-progress"])
        assert code == 0, capsys.readouterr().err
        (final,) = runs.glob("svhn-smoke/proden-s0-*/final.json")
        assert 0.0 <= json.loads(final.read_text())["test_acc"] <= 1.0
        config = json.loads((final.parent / "config.json").read_text())
        assert config["dataset"] == {"name": "svhn", "options": {}}
        capsys.readouterr()
        assert main(["list"]) == 0
        listing = capsys.readouterr().out
        assert "svhn" in listing and "SVHN: 73,257 / 26,032 cropped house-number digits" in listing
    finally:
        sys.modules.pop("pllbench_svhn", None)


def test_a_plugin_that_fails_or_clashes_is_one_line(registry, tmp_path, monkeypatch):
    install_entry_point(tmp_path / "a", monkeypatch, "broken_plugin", "import no_such_module_here\n")
    with pytest.raises(PllbenchError) as info:
        dataset_names()
    assert "broken_plugin = broken_plugin (entry point pllbench.datasets) failed to import" in str(info.value)
    assert "no_such_module_here" in str(info.value) and "\n" not in str(info.value)
    sys.modules.pop("broken_plugin", None)
    clash = ("from pllbench.dataset import register_dataset\nfrom pllbench.datasets.synthetic import Synthetic\n\n"
             "@register_dataset('cifar10')\nclass Again(Synthetic):\n    pass\n")
    (tmp_path / "a" / "site" / "broken_plugin.py").write_text(clash)  # the same entry point, now a clash
    with pytest.raises(PllbenchError, match="dataset 'cifar10' registered twice: by pllbench.datasets.cifar.Cifar10 "
                                            "and by broken_plugin.Again; rename one"):
        dataset_names()
    sys.modules.pop("broken_plugin", None)


def test_load_image_data_and_teacher_split_default(registry):
    train = Split(torch.zeros(2, 3, 8, 8, dtype=torch.uint8), torch.tensor([0, 1]))
    assert get_dataset("synthetic").teacher_split(None, train) is train
