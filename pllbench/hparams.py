"""Hyperparameters: the one declaration (`HP`), `--hp` overrides in their one form, and resolution with checks.

A method file declares each hyperparameter once, `HP(default, meaning, low=…, high=…, choices=…)`; resolution
(class defaults → per-dataset → preset → --hp) checks every value's type and range, so a bad one is one clear error
before any work. Overrides have one form everywhere: {"*": {key: value}, method: {key: value}} ("*" reaches every
method that declares the key).
"""

from __future__ import annotations

import ast
import json
import math
from dataclasses import dataclass, replace
from typing import Any

from .errors import PllbenchError
from .tune_space import Space
from .util import is_number
from .views.maker import VIEW_NAMES


def _number_text(x) -> str:
    return str(int(x)) if float(x).is_integer() else repr(float(x))


BOOL_WORDS = {"true": True, "false": False, "yes": True, "no": False, "1": True, "0": False}


def as_bool(value) -> bool | None:
    """A boolean hyperparameter's value from any accepted spelling (true/false, 1/0, yes/no, any case), else None."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    return BOOL_WORDS.get(value.strip().lower()) if isinstance(value, str) else None


@dataclass(frozen=True)
class HP:
    """One hyperparameter, declared once in its method's file: the default (its type is the hyperparameter's), a
    one-line meaning, and the allowed values, checked when a run is resolved: `low`/`high` bounds (closed unless
    `low_open`/`high_open`) or `choices`. `note` is the range as `pllbench describe` prints it when words say more
    than the bounds (">= batch"). `tune` is its search space for `pllbench tune` (pllbench.tune_space; None: kept at
    its resolved value)."""

    default: Any
    doc: str
    low: float | None = None
    high: float | None = None
    choices: tuple | None = None
    low_open: bool = False
    high_open: bool = False
    note: str | None = None
    tune: Space | None = None
    # The value every run recorded before this key existed trained with: while a run holds it, the key is left out of
    # its id, so adding a hyperparameter does not move the ids of the runs made before (None: always in the id).
    implicit: Any = None

    def with_tune(self, space: Space | None, **changes) -> HP:
        """This declaration with another search space (and other `changes`), for a variant that tunes a base
        class's hyperparameter differently (DIRK-REF's REF weight) or pins it (CAD's ablations)."""
        return replace(self, tune=space, **changes)

    @property
    def range_text(self) -> str:
        if self.note is not None:
            return self.note
        if isinstance(self.default, bool):
            return "true/false"
        if self.choices is not None:
            return ", ".join(str(c) for c in self.choices)
        if self.low is not None and self.high is not None:
            return (f"{'(' if self.low_open else '['}{_number_text(self.low)}, {_number_text(self.high)}"
                    f"{')' if self.high_open else ']'}")
        if self.low is not None:
            return f"{'>' if self.low_open else '>='} {_number_text(self.low)}"
        if self.high is not None:
            return f"{'<' if self.high_open else '<='} {_number_text(self.high)}"
        return ""

    def problem(self, value) -> str | None:
        """Why `value` is not allowed (None when it is)."""
        default, like = self.default, f"expected a value like {self.default!r}"
        if isinstance(default, bool):
            return None if as_bool(value) is not None else "expected true or false (or 1/0, yes/no)"
        if isinstance(value, bool):
            return like
        if isinstance(default, int) and not isinstance(value, int):
            return like.replace("a value", "an integer")
        if isinstance(default, float) and not is_number(value):
            return like
        if isinstance(default, str) and not isinstance(value, (str, int)):
            return like
        if self.choices is not None and value not in self.choices:
            return f"expected one of {self.range_text}"
        if is_number(value):
            if not math.isfinite(value):
                return "expected a finite number"
            low_bad = self.low is not None and (value <= self.low if self.low_open else value < self.low)
            high_bad = self.high is not None and (value >= self.high if self.high_open else value > self.high)
            if low_bad or high_bad:
                bounds = self.range_text if self.note is None else HP(0.0, "", self.low, self.high, None,
                                                                      self.low_open, self.high_open).range_text
                return f"expected a value {'in ' if bounds[0] in '[(' else ''}{bounds}"
        return None

    def coerce(self, value):
        """The value in the declared type (an integer given for a float hyperparameter becomes a float; digits
        given for a text one, e.g. a hash prefix, become text)."""
        if isinstance(self.default, bool):
            return as_bool(value)
        if isinstance(self.default, float) and is_number(value):
            return float(value)
        if isinstance(self.default, str) and isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        return value


def parse_value(text: str):
    """`--hp` values: Python literals (1, 0.5, true/false, 'x', [1,2]); anything else stays a string (a boolean
    hyperparameter also takes 1/0 and yes/no: HP.coerce)."""
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    try:
        return ast.literal_eval(text.strip())
    except (ValueError, SyntaxError):
        return text.strip()


UNSCOPED = "*"  # the scope of an override that reaches every method declaring its key


def canonical_overrides(overrides) -> dict[str, dict]:
    """The one form of `--hp` overrides: {"*": {key: value}, method: {key: value}}, no empty scope. Accepts that
    form, its JSON text, or the None-scoped form older callers built ({None: ...} is "*")."""
    if isinstance(overrides, str):
        overrides = json.loads(overrides)
    out: dict[str, dict] = {}
    for scope, values in (overrides or {}).items():
        scope = UNSCOPED if scope is None else str(scope)
        if values:
            out.setdefault(scope, {}).update(values)
    return out


def parse_hp_overrides(items: list[str]) -> dict[str, dict]:
    """`key=value` or `method.key=value` → {"*" or method: {key: value}}. A key given twice with two values is
    refused (which one was meant?); given twice with one value it counts once (the CLI warns: repeated_hp_keys)."""
    out: dict[str, dict] = {}
    for item in items:
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq or not key or not value.strip():
            raise PllbenchError(f"malformed --hp {item!r}: expected key=value or method.key=value")
        scope, _, bare = key.rpartition(".")
        values, new = out.setdefault(scope or UNSCOPED, {}), parse_value(value)
        if bare in values and values[bare] != new:
            raise PllbenchError(f"--hp {key} given twice, {values[bare]!r} and {new!r}; pass it once")
        values[bare] = new
    return out


def repeated_hp_keys(items: list[str]) -> list[str]:
    """The keys of `--hp` items given more than once (each once, in order)."""
    keys = [item.partition("=")[0].strip() for item in items]
    return [key for key in dict.fromkeys(keys) if keys.count(key) > 1]


def _checked(cls: type, key: str, value, where: str):
    spec = cls.hp_specs[key]
    problem = spec.problem(value)
    if problem:
        meaning = f" ({key}: {spec.doc})" if spec.doc else ""
        raise PllbenchError(f"{where} for {cls.name}: {problem}{meaning}")
    return spec.coerce(value)


def resolve_hparams(cls: type, dataset: str, preset_overrides: dict, cli) -> dict:
    """defaults → per-dataset defaults → preset overrides (known keys only) → --hp (must be known); every value
    checked against its declaration (type and range), so a bad one is one clear error before any work."""
    hp = dict(cls.hparams)
    for key, value in cls.dataset_hparams.get(dataset, {}).items():
        hp[key] = _checked(cls, key, value, f"the {dataset} default {key}={value!r}")
    for key, value in preset_overrides.items():
        if key in cls.hparams:
            hp[key] = _checked(cls, key, value, f"the preset's {key}={value!r}")
    cli = canonical_overrides(cli)
    for scope in (UNSCOPED, cls.name):
        for key, value in cli.get(scope, {}).items():
            if key not in cls.hparams:
                if scope == UNSCOPED:
                    continue  # an unscoped key applies to the methods that declare it
                raise PllbenchError(f"method {cls.name!r} has no hyperparameter {key!r}; it has: "
                                    f"{', '.join(sorted(cls.hparams)) or 'none'}")
            shown = key if scope == UNSCOPED else f"{scope}.{key}"
            hp[key] = _checked(cls, key, value, f"--hp {shown}={value!r}")
    return hp


def check_views(cls: type, hp: dict) -> tuple[str, ...]:
    """The views of a run, checked when it is resolved: known names, each once."""
    views = tuple(cls.views_for(hp))
    unknown = [v for v in views if v not in VIEW_NAMES]
    if unknown or len(set(views)) != len(views) or not views:
        raise PllbenchError(f"method {cls.name!r} asks for views {', '.join(views) or '(none)'}; each must be one "
                            f"of {', '.join(VIEW_NAMES)}, once")
    return views


def check_at_least_batch(method: str, key: str, hp: dict, run: dict, why: str) -> None:
    """The rule an HP's `note=">= batch"` states, for a Method.check_hparams: hp[key] >= the run's batch size."""
    if hp[key] < run["batch_size"]:
        raise PllbenchError(f"{method}: {key} {hp[key]} is below the batch size {run['batch_size']} ({why}); pass "
                            f"--hp {key}={run['batch_size']} or more, or a smaller --hp batch_size")


def check_unscoped_hp(method_classes: list[type], cli) -> None:
    """An unscoped --hp key must belong to at least one of the requested methods."""
    cli = canonical_overrides(cli)
    for key in cli.get(UNSCOPED, {}):
        if not any(key in cls.hparams for cls in method_classes):
            names = ", ".join(cls.name for cls in method_classes)
            raise PllbenchError(f"--hp {key}: no requested method ({names}) has a hyperparameter of that name")
    for scope in cli:
        if scope != UNSCOPED and scope not in {cls.name for cls in method_classes}:
            raise PllbenchError(f"--hp {scope}.*: method {scope!r} is not among the requested methods")
