"""Constraints checked before work: rules across hyperparameters and the run (Method.check_hparams, called when a
run is resolved), dataset options, repeated --hp keys, --top and --threshold; each refusal is one line and leaves no
folder behind, and a first run that fails for missing data leaves none either."""

from __future__ import annotations

import pytest

from pllbench.cli import main
from pllbench.errors import PllbenchError
from pllbench.method import method_names
from pllbench.presets import preset_datasets
from pllbench.train.runconfig import RunConfig

SMOKE = ["--dataset", "synthetic", "--preset", "smoke", "--device", "cpu"]


def one_error(capsys, argv: list[str], *phrases: str) -> str:
    code = main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    for phrase in phrases:
        assert phrase in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("method,hp,phrase", [
    ("pico", ["queue_size=8"], "pico: queue_size 8 is below the batch size 16"),
    ("dirk-ref", ["queue_size=8"], "dirk-ref: queue_size 8 is below the batch size 16"),
    ("pico", ["batch_size=32", "queue_size=16"], "queue_size 16 is below the batch size 32"),
    ("cel", ["cel.dim=15"], "cel: dim 15 is not divisible by heads 2"),
])
def test_a_broken_rule_is_one_line_before_any_folder(method, hp, phrase, capsys, tmp_path):
    runs = tmp_path / "runs"
    argv = ["run", "--methods", method, *SMOKE, "--runs", str(runs)]
    for item in hp:
        argv += ["--hp", item]
    one_error(capsys, argv, phrase, "--hp")
    assert not runs.exists()


def test_rules_bind_only_where_they_apply():
    """Plain DIRK has no queue; a batch the queue holds passes."""
    RunConfig.resolve("dirk", "synthetic", "smoke", 0, overrides={"*": {"queue_size": 8}})
    RunConfig.resolve("pico", "synthetic", "smoke", 0, overrides={"*": {"queue_size": 16}})
    with pytest.raises(PllbenchError, match="below the batch size"):
        RunConfig.resolve("pico", "synthetic", "smoke", 0, overrides={"*": {"queue_size": 15}})


@pytest.mark.parametrize("preset", ["smoke", "quick", "paper"])
def test_every_method_passes_its_rules_with_its_defaults(preset):
    """No rule refuses what a preset itself sets, on every dataset the preset is made for."""
    for dataset in preset_datasets(preset):
        for method in method_names():
            RunConfig.resolve(method, dataset, preset, 0)


@pytest.mark.parametrize("dataset,phrases", [
    ("synthetic:size=abc", ["bad options for dataset 'synthetic' (size=abc)", "its options: size, classes"]),
    ("synthetic:bogus=1", ["dataset 'synthetic' has no option 'bogus'", "its options: size, classes"]),
    ("fmnist:bogus=1", ["dataset 'fmnist' has no option 'bogus'", "it takes no options"]),
])
def test_bad_dataset_options_name_the_valid_ones(dataset, phrases, capsys, tmp_path):
    one_error(capsys, ["run", "--methods", "proden", "--dataset", dataset, "--preset", "smoke", "--runs",
                       str(tmp_path / "runs")], *phrases)
    assert not (tmp_path / "runs").exists()


def test_a_repeated_hp_key_warns_once_or_fails_when_its_values_differ(capsys, tmp_path):
    status = ["status", "--methods", "proden", *SMOKE[:4], "--runs", str(tmp_path / "runs")]
    assert main([*status, "--hp", "lr=0.1", "--hp", "lr=0.10"]) == 0
    err = capsys.readouterr().err
    assert "warning: --hp lr given more than once with the same value; it counts once" in err
    one_error(capsys, [*status, "--hp", "lr=0.1", "--hp", "lr=0.2"], "--hp lr given twice, 0.1 and 0.2")
    assert main([*status, "--hp", "lr=0.1"]) == 0 and "warning" not in capsys.readouterr().err


def test_entangle_top_duplicates_warn_and_a_threshold_is_a_cosine(capsys):
    code = main(["entangle", *SMOKE, "--top", "10,10.0,1", "--threshold", "0.5,2"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and lines == ["warning: --top 10 listed more than once; each is scored once",
                                   "error: --threshold 2: a threshold is a cosine similarity, in [-1, 1]"]
    assert main(["entangle", *SMOKE, "--threshold", "-1.5"]) == 2
    assert "in [-1, 1]" in capsys.readouterr().err


def test_a_run_without_its_data_leaves_no_folder(capsys, tmp_path):
    runs, empty = tmp_path / "runs", tmp_path / "no-data"
    empty.mkdir()
    argv = ["run", "--methods", "proden", "--dataset", "cifar10", "--preset", "paper", "--device", "cpu",
            "--data-root", str(empty), "--runs", str(runs)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "dataset 'cifar10' not found" in err.strip().splitlines()[-1]
    assert not runs.exists()
    assert main(argv[:2] + ["proden,cc"] + argv[3:]) == 2  # a grid of two: the same
    assert not runs.exists()
    runs.mkdir()  # in an existing results root the failure stays on record for `pllbench status`
    assert main(argv) == 2
    assert sorted(p.name for p in runs.iterdir()) == ["_grids", "_jobs"]
