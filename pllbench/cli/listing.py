"""`pllbench list`: the methods, datasets and presets."""

from __future__ import annotations

import sys

import click

from .common import DEFAULT_PRESET


def first_doc_line(obj) -> str:
    """The first line of a class's docstring, else of its module's; '' when neither has one."""
    doc = (obj.__doc__ or sys.modules[obj.__module__].__doc__ or "").strip()
    return doc.splitlines()[0] if doc else ""


@click.command("list")
def list_cmd():
    """List methods, datasets and presets."""
    from ..data.registry import dataset_names, get_dataset
    from ..method import get_method, method_names
    from ..presets import PRESETS, preset_datasets

    click.echo("methods:")
    for name in method_names():
        cls = get_method(name)
        doc = cls.summary or (sys.modules[cls.__module__].__doc__ or "").strip().splitlines()[0]
        click.echo(f"  {name:<14} {doc}")
    click.echo("datasets:")
    for name in dataset_names():
        click.echo(f"  {name:<14} {first_doc_line(type(get_dataset(name)))}")
    click.echo("presets:")
    for name, preset in PRESETS.items():
        click.echo(f"  {name:<14} {preset['description']} (datasets: {', '.join(preset_datasets(name))})")
    click.echo(f"without --preset: {DEFAULT_PRESET}; a method's hyperparameters: pllbench describe METHOD")
