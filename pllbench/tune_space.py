"""Search spaces for `pllbench tune`: how a hyperparameter is drawn, declared where the hyperparameter is.

A method file says a hyperparameter is tuned with `HP(..., tune=log_uniform(0.03, 0.3))` (or `uniform`, `int_range`,
`choice`); the shared optimisation settings every method is tuned over alike are `OPTIM_SPACE`. A space that cannot
be drawn from (low > high, a log scale with low <= 0, an empty choice) is refused in one line when it is made, that
is when its method's class is defined; whether it fits the hyperparameter's declared range is checked when a study
starts (`pllbench.tune.study.study_space`).
"""

from __future__ import annotations

import math
import traceback
from dataclasses import dataclass

from .errors import PllbenchError
from .util import is_number

KINDS = ("log-uniform", "uniform", "int", "int-log", "choice")
CHOICE_TYPES = (bool, int, float, str)  # what an Optuna categorical stores as it is


def _declared_at() -> str:
    """`file:line` of the code that made the space (a method file's class body), for the one-line error."""
    for frame in reversed(traceback.extract_stack()[:-1]):
        if frame.filename != __file__ and not frame.filename.startswith("<"):  # not the dataclass's own __init__
            return f"{frame.filename}:{frame.lineno}"
    return "?"


def _is_finite_number(value) -> bool:
    return is_number(value) and math.isfinite(value)


@dataclass(frozen=True)
class Space:
    """One hyperparameter's search space: a kind of KINDS with closed bounds [low, high], or `choices`."""

    kind: str
    low: float | None = None
    high: float | None = None
    choices: tuple = ()

    def __post_init__(self):
        problem = self.problem()
        if problem:
            raise PllbenchError(f"bad search space {self.text} (declared at {_declared_at()}): {problem}")

    def problem(self) -> str | None:
        """Why nothing can be drawn from this space (None when something can)."""
        if self.kind not in KINDS:
            return f"unknown kind {self.kind!r}; expected one of {', '.join(KINDS)}"
        if self.kind == "choice":
            if not self.choices:
                return "a choice needs at least one value"
            if not all(isinstance(c, CHOICE_TYPES) for c in self.choices):
                return "choices must be numbers, text or true/false"
            return "a value is listed twice" if len(set(map(repr, self.choices))) < len(self.choices) else None
        if not (_is_finite_number(self.low) and _is_finite_number(self.high)):
            return "low and high must be finite numbers"
        if self.kind.startswith("int") and not (isinstance(self.low, int) and isinstance(self.high, int)):
            return "an integer range needs integer bounds"
        if self.low > self.high:
            return f"low {self.low!r} > high {self.high!r}"
        if self.kind in ("log-uniform", "int-log") and self.low <= 0:
            return f"a log scale needs low > 0 (got {self.low!r})"
        return None

    @property
    def text(self) -> str:
        """How `pllbench describe` and the tuned board print it: `log-uniform [0.001, 0.1]`, `choice {1, 2}`."""
        if self.kind == "choice":
            return "choice {" + ", ".join(str(c) for c in self.choices) + "}"
        return f"{self.kind} [{self.low!r}, {self.high!r}]"

    def edge_values(self) -> tuple:
        """The values whose acceptance by the hyperparameter's declared range means every draw is accepted."""
        return tuple(self.choices) if self.kind == "choice" else (self.low, self.high)

    def suggest(self, trial, name: str):
        """Draw this hyperparameter for an Optuna trial."""
        if self.kind == "choice":
            return trial.suggest_categorical(name, list(self.choices))
        if self.kind.startswith("int"):
            return trial.suggest_int(name, self.low, self.high, log=self.kind == "int-log")
        return trial.suggest_float(name, self.low, self.high, log=self.kind == "log-uniform")


def log_uniform(low: float, high: float) -> Space:
    """A float drawn uniformly on a log scale over [low, high] (scales, weights, temperatures)."""
    return Space("log-uniform", low, high)


def uniform(low: float, high: float) -> Space:
    """A float drawn uniformly over [low, high]."""
    return Space("uniform", low, high)


def int_range(low: int, high: int, log: bool = False) -> Space:
    """An integer in [low, high], uniformly or on a log scale."""
    return Space("int-log" if log else "int", low, high)


def choice(*values) -> Space:
    """One of the listed values."""
    return Space("choice", choices=tuple(values))


# The optimisation settings every method is tuned over alike (batch size and epochs stay the preset's): SGD with
# momentum 0.9 and a cosine schedule, so two decades of learning rate around the presets' 0.01 (paper) and 0.05
# (quick), and weight decay from almost none to 5e-3 (ten times quick's 5e-4, five times paper's 1e-3).
OPTIM_SPACE = {"lr": log_uniform(1e-3, 0.1), "weight_decay": log_uniform(1e-5, 5e-3)}
