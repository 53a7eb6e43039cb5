"""Conventions every command keeps: --version, -h next to --help, help text on every option, counts with their noun
in the right number, accuracies as percentages, the usual spellings of a boolean, and a package whose data files
ship in a wheel."""

from __future__ import annotations

import re
from importlib.metadata import version
from pathlib import Path

import click
import pytest

import pllbench
from pllbench.cli import cli, main
from pllbench.errors import PllbenchError
from pllbench.hparams import parse_value
from pllbench.train.runconfig import RunConfig
from pllbench.wording import percent, plural

REPO = Path(__file__).resolve().parents[1]


def commands(group: click.Group = cli, path: tuple[str, ...] = ()):
    """(argv prefix, command) for the group and every command under it."""
    yield path, group
    for name, command in getattr(group, "commands", {}).items():
        yield from commands(command, (*path, name))


def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"pllbench {version('pllbench')}\n" == f"pllbench {pllbench.__version__}\n"


@pytest.mark.parametrize("path", [path for path, _ in commands()], ids=lambda path: " ".join(path) or "pllbench")
def test_minus_h_is_help_on_every_command(path, capsys):
    assert main([*path, "-h"]) == 0
    short = capsys.readouterr().out
    assert main([*path, "--help"]) == 0
    assert short == capsys.readouterr().out and short.startswith(f"Usage: {' '.join(('pllbench', *path))} ")
    assert "-h, --help" in short


def test_every_command_and_option_says_what_it_does():
    missing = []
    for path, command in commands():
        where = " ".join(("pllbench", *path))
        if not (command.help or "").strip():
            missing.append(where)
        missing += [f"{where} {param.opts[0]}" for param in command.params
                    if isinstance(param, click.Option) and not (param.help or "").strip()]
    assert not missing, f"no help text: {', '.join(missing)}"


def test_counts_take_the_noun_in_the_right_number():
    assert [plural(n, "job") for n in (0, 1, 2)] == ["0 jobs", "1 job", "2 jobs"]
    assert plural(1, "class", "classes") == "1 class" and plural(3, "class", "classes") == "3 classes"


def test_a_one_epoch_one_job_run_says_so(capsys, tmp_path):
    argv = ["run", "--methods", "cc", "--dataset", "synthetic", "--preset", "smoke", "--epochs", "1", "--no-progress",
            "--runs", str(tmp_path / "runs"), "--cache-dir", str(tmp_path / "cache")]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert ": 1 job (" in err and "1 epoch of 4 steps" in err and not re.search(r"\b1 (job|epoch|step)s\b", err), err


def test_accuracies_are_percentages(capsys, tmp_path):
    assert percent(0.8537) == "85.37 %" and percent(1.0) == "100.00 %"
    assert main(["candidates", "--dataset", "synthetic", "--preset", "smoke", "--cache-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"teacher test accuracy: \d{1,3}\.\d\d %; on the generation input: \d{1,3}\.\d\d %", out), out


@pytest.mark.parametrize(("text", "want"), [("true", True), ("True", True), ("1", True), ("yes", True),
                                            ("YES", True), ("false", False), ("0", False), ("no", False)])
def test_a_boolean_hyperparameter_takes_the_usual_spellings(text, want):
    spelled, canonical = (dirk_with_ref_forwards(value) for value in (parse_value(text), want))
    assert spelled.hparams["ref_forwards"] is want and spelled.run_id == canonical.run_id


@pytest.mark.parametrize("text", ["2", "maybe", "0.5"])
def test_anything_else_is_not_a_boolean(text):
    with pytest.raises(PllbenchError, match=r"expected true or false \(or 1/0, yes/no\)"):
        dirk_with_ref_forwards(parse_value(text))


def dirk_with_ref_forwards(value) -> RunConfig:
    return RunConfig.resolve("dirk", "synthetic", "smoke", 0, overrides={"dirk": {"ref_forwards": value}})


def test_every_data_file_of_the_package_ships_in_a_wheel():
    """setuptools installs from [tool.setuptools] package-data only: a data file no glob names is missing from a
    wheel though an editable install finds it. The licence is an SPDX expression (a table is deprecated)."""
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    package_data = project["tool"]["setuptools"]["package-data"]
    assert isinstance(project["project"]["license"], str)
    globs = [REPO / package.replace(".", "/") / glob for package, names in package_data.items() for glob in names]
    data = [path for path in (REPO / "pllbench").rglob("*") if path.is_file() and path.suffix not in (".py", ".pyc")]
    unshipped = [str(path.relative_to(REPO)) for path in data if not any(path.match(str(glob)) for glob in globs)]
    assert data and not unshipped, unshipped
