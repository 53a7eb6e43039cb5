"""`pllbench describe METHOD`: every hyperparameter of a method and the run's optimisation settings."""

from __future__ import annotations

import sys

import click

from ..errors import PllbenchError
from .common import DEFAULT_PRESET


def _value_text(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if value == "" or value is None:
        return "''" if value == "" else "none"
    return str(value)


def _spread(values: dict) -> str:
    """One value per dataset → 'v' when they agree, else the commonest plus the others: '64 (flowers, pets: 16)'."""
    texts = {d: _value_text(v) for d, v in values.items()}
    counts: dict[str, list[str]] = {}
    for d, text in texts.items():
        counts.setdefault(text, []).append(d)
    common, *others = sorted(counts, key=lambda t: -len(counts[t]))
    return common + ("".join(f" ({', '.join(counts[t])}: {t})" for t in others) if others else "")


def _table(rows: list[tuple]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    return ["  " + "  ".join(cell.ljust(w) for cell, w in zip(r, widths)) + "  " + r[-1] for r in rows]


def describe_method(name: str, preset: str, dataset: str | None = None) -> str:
    """Every hyperparameter of a method (type, default, range, search space of `pllbench tune`, the preset's value,
    meaning), then the run's optimisation settings under the preset (lr and weight decay: one space for every
    method)."""
    from ..data.registry import get_dataset
    from ..grid.jobs import OPTIM_KEYS
    from ..method import get_method, resolve_hparams
    from ..presets import PRESETS, method_overrides, preset_datasets, resolve_preset
    from ..tune_space import OPTIM_SPACE

    cls = get_method(name)
    if preset not in PRESETS:
        raise PllbenchError(f"unknown preset {preset!r}; choose one of: {', '.join(PRESETS)}")
    datasets = [get_dataset(dataset).info().name] if dataset else preset_datasets(preset)
    cfgs = {d: resolve_preset(preset, d) for d in datasets}
    hps = {d: resolve_hparams(cls, d, method_overrides(cfgs[d], cls.name, cls.family), {}) for d in datasets}
    docs = getattr(cls, "hparam_docs", {})
    column = f"--preset {preset}" + (f" on {dataset}" if dataset else "")
    summary = cls.summary or (sys.modules[cls.__module__].__doc__ or "").strip().splitlines()[0]
    lines = [f"{cls.name}: {summary}", ""]
    if cls.hparams:
        lines.append(f"hyperparameters (--hp {cls.name}.KEY=VALUE for {cls.name} alone, --hp KEY=VALUE for every "
                     f"requested method that declares KEY):")
        rows = [("name", "type", "default", "range", "tune", column, "meaning")]
        for key, default in cls.hparams.items():
            rng, meaning = docs.get(key, ("", "(undocumented)"))
            space = cls.hp_specs[key].tune
            rows.append((key, type(default).__name__, _value_text(default), rng or "-", space.text if space else "-",
                         _spread({d: hp[key] for d, hp in hps.items()}), meaning))
        lines += _table(rows)
    else:
        lines.append("hyperparameters: none of its own")
    lines += ["", "optimisation, the same for every method of a run (--hp KEY=VALUE; part of the run id; tune: the one "
              "space `pllbench tune` searches for every method):"]
    rows = [("name", "type", "range", "tune", column, "meaning")]
    for key, (kind, _, rng, meaning) in OPTIM_KEYS.items():
        space = OPTIM_SPACE.get(key)
        rows.append((key, kind.__name__, rng, space.text if space else "-",
                     _spread({d: cfg[key] for d, cfg in cfgs.items()}), meaning))
    lines += _table(rows)
    return "\n".join(lines)


@click.command()
@click.argument("method")
@click.option("--preset", default=DEFAULT_PRESET, show_default=True, help="Show the values a run under this preset "
              "gets.")
@click.option("--dataset", default=None, help="Resolve for this dataset only (default: every dataset of the preset).")
def describe(method, preset, dataset):
    """Every hyperparameter of METHOD: type, default, range, the preset's value and a one-line meaning."""
    click.echo(describe_method(method, preset, dataset))
