"""The options that say which jobs a grid holds (`run` and `status`), defined once, and their parsing into a
GridSpec: a --grid TOML file supplies every option left unset."""

from __future__ import annotations

import functools
from dataclasses import dataclass, fields

import click

from ..errors import PllbenchError
from .common import DEFAULT_PRESET, echo_err


def split_items(text: str, option: str, example: str) -> list[str]:
    """The comma-separated items of an option; an empty item (`0,,1`, a trailing comma, '') is refused."""
    items = [s.strip() for s in text.split(",")]
    if any(not s for s in items):
        raise PllbenchError(f"malformed {option} {text!r}: an empty item; expected {example}")
    return items


def merge_duplicates(items: list, what: str) -> list:
    """The items in order, each once; a repeated one is merged with a one-line warning (never run twice)."""
    unique = list(dict.fromkeys(items))
    if len(unique) < len(items):
        repeated = [str(x) for x in unique if items.count(x) > 1]
        echo_err(f"warning: {what} {', '.join(repeated)} listed more than once; each runs (and counts) once")
    return unique


def parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in split_items(text, "--seeds", "integers like 0,1,2")]
    except ValueError:
        raise PllbenchError(f"malformed --seeds {text!r}: expected integers like 0,1,2") from None
    if not seeds or any(s < 0 for s in seeds):
        raise PllbenchError(f"malformed --seeds {text!r}: expected non-negative integers like 0,1,2")
    return seeds


def parse_list(text: str, known: list[str], what: str) -> list[str]:
    items = split_items(text, f"--{what}s", f"names like {','.join(known[:2])} (or 'all')")
    if items == ["all"]:
        return list(known)
    unknown = [s for s in items if s not in known]
    if unknown or not items:
        raise PllbenchError(f"unknown {what} {', '.join(unknown) or repr(text)}; choose from: {', '.join(known)}")
    return items


# In the order `--help` shows them; each one's parameter name is a field of GridOptions.
GRID_OPTIONS = (
    click.option("--grid", "grid_file", default=None, help="A grid TOML (docs/grids.md); options override it."),
    click.option("--methods", default=None, help="Comma-separated method names, or 'all'."),
    click.option("--datasets", "--dataset", "datasets", default=None,
                 help="Comma-separated datasets (options allowed: synthetic:train=384,test=64)."),
    click.option("--preset", default=None,
                 help=f"Preset (default {DEFAULT_PRESET}); each is made for some datasets (`pllbench list`): quick is "
                      f"the CPU preset, Fashion-MNIST only."),
    click.option("--seeds", default=None, help="Comma-separated seeds (default 0)."),
    click.option("--epochs", default=None, type=click.IntRange(min=1), help="Override the preset's epochs."),
    click.option("--hp", "hp_items", multiple=True,
                 help="key=value or method.key=value (repeatable): a method's hyperparameters (`pllbench describe "
                      "METHOD`) or the run's lr, momentum, weight_decay, eta_min, batch_size, epochs."),
    click.option("--val-fraction", default=None, type=click.FloatRange(0.0, 0.5),
                 help="Hold out this share of the train rows for label-free selection (default 0)."),
    click.option("--candidate-seed", default=None, type=click.IntRange(min=0),
                 help="Fix the candidates across training seeds."),
    click.option("--candidates", "candidates", default=None,
                 help="Candidate source of the PLL methods: id (default, the instance-dependent generator) or "
                      "uniform:q=P (each other label enters with probability P); reference rows keep their own."),
)


@dataclass(frozen=True)
class GridOptions:
    """The grid options as given on the command line (None: unset, the --grid file or the default decides)."""

    grid_file: str | None = None
    methods: str | None = None
    datasets: str | None = None
    preset: str | None = None
    seeds: str | None = None
    epochs: int | None = None
    hp_items: tuple[str, ...] = ()
    val_fraction: float | None = None
    candidate_seed: int | None = None
    candidates: str | None = None

    def spec(self, required: bool = True):
        """(GridSpec, or None when nothing names a grid and `required` is false; the grid file's launch fields)."""
        return grid_spec(self, required)


def grid_spec_options(fn):
    """Add the grid options to a command; the command receives them as one `grid: GridOptions` argument."""
    names = [f.name for f in fields(GridOptions)]

    @functools.wraps(fn)
    def command(*args, **kwargs):
        grid = GridOptions(**{name: kwargs.pop(name) for name in names})
        return fn(*args, grid=grid, **kwargs)

    for option in reversed(GRID_OPTIONS):
        command = option(command)
    return command


def merged_hp(file_hp: dict, hp_items, epochs: int | None) -> tuple[dict, int | None]:
    """The grid file's hp tables updated by --hp items, checked; `--hp epochs=N` is `--epochs N`."""
    from ..grid.jobs import check_optim
    from ..hparams import repeated_hp_keys
    from ..method import parse_hp_overrides

    hp = {scope: dict(values) for scope, values in file_hp.items()}
    for scope, values in parse_hp_overrides(list(hp_items)).items():
        hp.setdefault(scope, {}).update(values)
    if repeated := repeated_hp_keys(list(hp_items)):
        echo_err(f"warning: --hp {', '.join(repeated)} given more than once with the same value; it counts once")
    hp = check_optim(hp)
    hp_epochs = hp.get("*", {}).pop("epochs", None)
    if hp_epochs is not None and epochs is not None and hp_epochs != epochs:
        raise PllbenchError(f"--epochs {epochs} and --hp epochs={hp_epochs} disagree; pass one of them")
    epochs = epochs if epochs is not None else hp_epochs
    return {scope: values for scope, values in hp.items() if values}, epochs


def grid_spec(given: GridOptions, required: bool = True):
    """(GridSpec or None when nothing names a grid and `required` is false, launch fields of the grid file)."""
    from ..grid.file import load_grid_file
    from ..grid.jobs import GridSpec, split_datasets
    from ..method import method_names

    if given.preset is not None and not given.preset.strip():
        raise PllbenchError(f"--preset is empty; pass one of the presets `pllbench list` shows (or leave it out: "
                            f"{DEFAULT_PRESET})")
    file_spec, launch = load_grid_file(given.grid_file) if given.grid_file else ({}, {})

    def pick(value, key, default=None):
        return value if value is not None else file_spec.get(key, default)

    methods = given.methods or file_spec.get("methods")
    dataset_list = split_datasets(given.datasets) if given.datasets is not None else file_spec.get("datasets")
    if not required and not (methods or dataset_list):
        return None, launch
    if not dataset_list:
        raise PllbenchError("no dataset given: pass --dataset NAME (or --datasets A,B, or --grid FILE)")
    if not methods:
        raise PllbenchError("no methods given: pass --methods NAMES (or 'all', or --grid FILE)")
    hp, epochs = merged_hp(file_spec.get("hp", {}), given.hp_items, given.epochs)
    seeds = parse_seeds(given.seeds) if given.seeds is not None else file_spec.get("seeds", [0])
    spec = GridSpec(methods=merge_duplicates(parse_list(methods, method_names(), "method"), "method"),
                    datasets=merge_duplicates(dataset_list, "dataset"), seeds=merge_duplicates(seeds, "seed"),
                    preset=given.preset or file_spec.get("preset", DEFAULT_PRESET), epochs=pick(epochs, "epochs"),
                    hp=hp, val_fraction=pick(given.val_fraction, "val_fraction", 0.0),
                    candidate_seed=pick(given.candidate_seed, "candidate_seed"),
                    candidates=pick(given.candidates, "candidates", "id"))
    spec.validate()
    return spec, launch
