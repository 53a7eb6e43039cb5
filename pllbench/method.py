"""The method contract and registry.

A method is an `nn.Module` subclass registered by name. It declares the views it needs and its hyperparameters
(defaults, then per-dataset defaults), and gets batches of views, candidate rows and dataset indices, never true
labels. The shared trainer owns epochs, the optimiser, devices, AMP, checkpoints and evaluation.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import torch
import torch.nn as nn

from .errors import PllbenchError
from .nets import Classifier, SupConNet, build_backbone, ema_update
from .views import ViewMaker


@dataclass
class Batch:
    views: dict[str, torch.Tensor]  # name → normalised float views (B×3×H×W)
    candidates: torch.Tensor  # B×K float {0,1}
    index: torch.Tensor  # B dataset rows (train split order)
    epoch: int
    step: int  # global step
    generator: torch.Generator | None = None  # the run's seeded view generator (for views a method draws itself)


@dataclass
class MethodContext:
    """What a method may know when it is built: shapes, the candidate matrix, the backbone, the view maker."""

    num_classes: int
    num_train: int
    candidates: torch.Tensor  # N×K float {0,1} (train rows; no labels)
    backbone: str
    proj_dim: int
    epochs: int
    steps_per_epoch: int
    batch_size: int
    dataset: str
    views: ViewMaker
    train_images: torch.Tensor | None = None  # uint8 N×C×H×W on the device (images only; never labels)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    # Where the run's candidate artifact came from: artifacts keyed by it (CAD's edits) are looked up there.
    cache_dir: Path | None = None
    candidates_hash: str = ""
    preset: str = ""
    candidate_seed: int = 0

    def classifier(self) -> Classifier:
        return Classifier(build_backbone(self.backbone), self.num_classes)

    def supcon_net(self) -> SupConNet:
        return SupConNet(build_backbone(self.backbone), self.num_classes, self.proj_dim)


class Method(nn.Module):
    """Base class: override `training_step`; `after_step` and `on_epoch_start` are optional hooks."""

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""  # one line for `pllbench list`
    family: ClassVar[str] = ""  # groups variants for preset overrides (e.g. every CAD ablation is "cad")
    views: ClassVar[tuple[str, ...]] = ("cls",)
    hparams: ClassVar[dict] = {}
    dataset_hparams: ClassVar[dict[str, dict]] = {}

    def __init__(self, ctx: MethodContext, hp: dict):
        super().__init__()
        self.ctx = ctx
        self.hp = hp

    def training_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Losses of one step; "loss" is the one back-propagated, the rest are logged."""
        raise NotImplementedError

    def after_step(self, batch: Batch) -> None:
        """Runs after the optimiser step: EMA teachers, bank updates from this step's detached outputs."""

    def on_epoch_start(self, epoch: int) -> bool:
        """Return True when the set of trained parameters changed (the trainer then builds a new optimiser)."""
        return False

    def trainable_parameters(self):
        return [p for p in self.parameters() if p.requires_grad]

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def confidences(self) -> torch.Tensor | None:
        return None

    @classmethod
    def run_label(cls, hp: dict) -> str:
        """The name leaderboards give a run with these hyperparameters (e.g. `cad[identity]`)."""
        return cls.name


class ClassifierMethod(Method):
    """The single-network family: `self.net` = backbone + fc on the cls view, which also predicts and embeds."""

    views = ("cls",)

    def __init__(self, ctx: MethodContext, hp: dict):
        super().__init__(ctx, hp)
        self.net = ctx.classifier()

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.features(x)


class EMATeacherMethod(Method):
    """The student/EMA-teacher shell (DIRK, CAD): two separately initialised SupConNets, the teacher frozen and
    updated by EMA (`hp["ema"]`) after every step; the student predicts and embeds."""

    def __init__(self, ctx: MethodContext, hp: dict):
        super().__init__(ctx, hp)
        self.student = ctx.supcon_net()
        self.teacher = ctx.supcon_net()  # initialised separately, not copied [official]
        for p in self.teacher.parameters():
            p.requires_grad_(False)

    def after_step(self, batch: Batch) -> None:
        ema_update(self.teacher, self.student, self.hp["ema"])

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self.student.logits(x)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.student.features(x)


_METHODS: dict[str, type[Method]] = {}
SAFE_NAME = re.compile(r"[a-z0-9][a-z0-9_.+-]{0,63}")


def register_method(name: str):
    """Class decorator: `@register_method("dirk")`."""

    if not SAFE_NAME.fullmatch(name):
        raise ValueError(f"method name {name!r} must match {SAFE_NAME.pattern} (it names run folders)")

    def wrap(cls):
        if name in _METHODS and _METHODS[name] is not cls:
            raise ValueError(f"method {name!r} registered twice")
        cls.name = name
        cls.family = cls.family or name
        _METHODS[name] = cls
        return cls

    return wrap


_plugins_loaded = False


def load_plugins() -> None:
    """Import the built-in methods and every entry point of the group `pllbench.methods`."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    from importlib.metadata import entry_points

    import pllbench.methods  # noqa: F401

    for ep in entry_points(group="pllbench.methods"):
        ep.load()


def method_names() -> list[str]:
    load_plugins()
    return sorted(_METHODS)


def get_method(name: str) -> type[Method]:
    load_plugins()
    if name not in _METHODS:
        raise PllbenchError(f"unknown method {name!r}; choose from: {', '.join(sorted(_METHODS))}")
    return _METHODS[name]


def parse_value(text: str):
    """`--hp` values: Python literals (1, 0.5, true/false, 'x', [1,2]); anything else stays a string."""
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    try:
        return ast.literal_eval(text.strip())
    except (ValueError, SyntaxError):
        return text.strip()


def parse_hp_overrides(items: list[str]) -> dict[str | None, dict]:
    """`key=value` or `method.key=value` → {method or None: {key: value}}."""
    out: dict[str | None, dict] = {}
    for item in items:
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq or not key or not value.strip():
            raise PllbenchError(f"malformed --hp {item!r}: expected key=value or method.key=value")
        scope, _, bare = key.rpartition(".")
        out.setdefault(scope or None, {})[bare] = parse_value(value)
    return out


def resolve_hparams(cls: type[Method], dataset: str, preset_overrides: dict, cli: dict[str | None, dict]) -> dict:
    """defaults → per-dataset defaults → preset overrides (known keys only) → --hp (must be known)."""
    hp = dict(cls.hparams)
    hp.update(cls.dataset_hparams.get(dataset, {}))
    hp.update({k: v for k, v in preset_overrides.items() if k in cls.hparams})
    for scope in (None, cls.name):
        for key, value in cli.get(scope, {}).items():
            if key not in cls.hparams:
                if scope is None:
                    continue  # an unscoped key applies to the methods that declare it
                raise PllbenchError(f"method {cls.name!r} has no hyperparameter {key!r}; it has: "
                                    f"{', '.join(sorted(cls.hparams)) or 'none'}")
            default = cls.hparams[key]
            if isinstance(default, bool) != isinstance(value, bool) or (
                    isinstance(default, (int, float)) and not isinstance(value, (int, float))):
                raise PllbenchError(f"--hp {key}={value!r} for {cls.name}: expected a value like {default!r}")
            hp[key] = float(value) if isinstance(default, float) and not isinstance(value, bool) else value
    return hp


def check_unscoped_hp(method_classes: list[type[Method]], cli: dict[str | None, dict]) -> None:
    """An unscoped --hp key must belong to at least one of the requested methods."""
    for key in cli.get(None, {}):
        if not any(key in cls.hparams for cls in method_classes):
            names = ", ".join(cls.name for cls in method_classes)
            raise PllbenchError(f"--hp {key}: no requested method ({names}) has a hyperparameter of that name")
    for scope in cli:
        if scope is not None and scope not in {cls.name for cls in method_classes}:
            raise PllbenchError(f"--hp {scope}.*: method {scope!r} is not among the requested methods")
