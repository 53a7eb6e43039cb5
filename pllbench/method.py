"""The method contract and registry.

A method is an `nn.Module` subclass registered by name. Its file owns everything about it: each hyperparameter
declared once (`HP`: default, one-line meaning, range), per-dataset and per-preset overrides, and the views it needs
as a function of its hyperparameters (`views_for`). It gets batches of views, candidate rows and dataset indices,
never true labels, and reaches cached artifacts through `ctx.artifacts`. The shared trainer owns epochs, the
optimiser, devices, AMP, checkpoints and evaluation.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import torch
import torch.nn as nn

from .artifacts import ArtifactStore
from .errors import PllbenchError
from .hparams import (  # noqa: F401 (the hyperparameter API is part of the method contract)
    HP,
    UNSCOPED,
    canonical_overrides,
    check_at_least_batch,
    check_unscoped_hp,
    check_views,
    parse_hp_overrides,
    parse_value,
    resolve_hparams,
)
from .losses import renormalize
from .nets import Classifier, SupConNet, build_backbone, ema_update
from .plugins import SAFE_NAME, load_entry_points
from .views.maker import ViewMaker


class ViewBatch(dict):
    """A batch's views by name; reading a view the method did not ask for (`views_for`) is one clear error."""

    def __init__(self, method: str, views: dict):
        super().__init__(views)
        self.method = method

    def __missing__(self, view: str):
        raise PllbenchError(f"method {self.method!r} read the view {view!r}, which its views_for(hp) does not list "
                            f"(it drew: {', '.join(self) or 'none'}); add it to views_for")


@dataclass
class Batch:
    views: dict[str, torch.Tensor]  # name → normalised float views (B×3×H×W)
    candidates: torch.Tensor  # B×K float {0,1}
    index: torch.Tensor  # B dataset rows (train split order)
    epoch: int
    step: int  # global step
    generator: torch.Generator | None = None  # the run's seeded view generator (for views a method draws itself)


@dataclass
class ArtifactRequest:
    """What `ensure_artifacts` may use to build a run's artifacts: the run's data and candidates, where the cache
    is, the device, and whether the network may be used (--download)."""

    dataset: str  # as typed, options included
    preset: str
    candidate_seed: int
    candidates_hash: str
    cache: Path
    device: torch.device
    data_root: str | None = None
    download: bool = False
    echo: Callable[[str], None] = print


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
    # The run's artifact store: artifacts by kind and key (CAD's edits for the run's candidates), never by path.
    artifacts: ArtifactStore | None = None

    @classmethod
    def for_run(cls, run, info, candidates: torch.Tensor, views: ViewMaker, train_images: torch.Tensor | None,
                device: torch.device, artifacts: ArtifactStore | None) -> MethodContext:
        """The context of a run (a `RunConfig`): what the trainer builds, and what reloading a finished run for its
        features builds again."""
        cfg, n = run.preset, len(candidates)
        steps = max(1, run.train_rows(n) // cfg["batch_size"])
        return cls(num_classes=info.num_classes, num_train=n, candidates=candidates, backbone=cfg["backbone"],
                   proj_dim=cfg["proj_dim"], epochs=cfg["epochs"], steps_per_epoch=steps,
                   batch_size=cfg["batch_size"], dataset=info.name, views=views, train_images=train_images,
                   device=device, artifacts=artifacts.for_run(run) if artifacts is not None else None)

    def classifier(self) -> Classifier:
        return Classifier(build_backbone(self.backbone), self.num_classes)

    def supcon_net(self) -> SupConNet:
        return SupConNet(build_backbone(self.backbone), self.num_classes, self.proj_dim)


class Method(nn.Module):
    """Base class: override `training_step`; `after_step` and `on_epoch_start` are optional hooks.

    `hparams` is the one declaration of the hyperparameters: {name: HP(default, meaning, range)}. A plain value
    instead of an HP keeps a base class's declaration with a new default (`{**DIRK.hparams, "ref_weight": 1.0}`),
    or declares an undocumented one. After the class is made, `hparams` holds the defaults, `hp_specs` the HP
    objects and `hparam_docs` (range, meaning) per name. `preset_hparams` are the method's overrides per preset name
    and `dataset_hparams` per dataset; `views_for(hp)` are the views its steps read."""

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""  # one line for `pllbench list`
    family: ClassVar[str] = ""  # groups variants for preset overrides (e.g. every CAD ablation is "cad")
    views: ClassVar[tuple[str, ...]] = ("cls",)  # the views of the default hyperparameters (see views_for)
    hparams: ClassVar[dict] = {}
    hp_specs: ClassVar[dict[str, HP]] = {}
    hparam_docs: ClassVar[dict[str, tuple[str, str]]] = {}
    dataset_hparams: ClassVar[dict[str, dict]] = {}
    preset_hparams: ClassVar[dict[str, dict]] = {}  # preset name → overrides (e.g. smaller decoders on CPU presets)
    # Where its candidate sets come from: "id" (the shared generator) or "oracle" (|S| = 1, the reference row).
    candidate_source: ClassVar[str] = "id"
    reference: ClassVar[bool] = False  # a reference row (printed outside the ranking), not a PLL method

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        own = cls.__dict__.get("hparams")
        parent = next((base.__dict__["hp_specs"] for base in cls.__mro__[1:] if "hp_specs" in base.__dict__), {})
        if own is None:
            specs = dict(parent)
        else:
            legacy_docs = cls.__dict__.get("hparam_docs", {})  # (range, meaning) of plugins written before HP
            specs = {}
            for key, value in own.items():
                if isinstance(value, HP):
                    specs[key] = value
                elif key in parent:
                    specs[key] = dataclasses.replace(parent[key], default=value)
                else:
                    rng, doc = legacy_docs.get(key, ("", ""))
                    specs[key] = HP(value, doc, note=rng or None)
        cls.hp_specs = specs
        cls.hparams = {key: spec.default for key, spec in specs.items()}
        cls.hparam_docs = {key: (spec.range_text, spec.doc) for key, spec in specs.items() if spec.doc}

    @classmethod
    def views_for(cls, hp: dict) -> tuple[str, ...]:
        """The views a step with these hyperparameters reads, in the order they are drawn (default: `views`)."""
        return tuple(cls.views)

    @classmethod
    def check_hparams(cls, hp: dict, run: dict) -> None:
        """Rules between hyperparameters, or between one and the run's settings (`run`: its resolved preset, so
        run["batch_size"], run["epochs"], ...), that the per-value ranges of the HP declarations cannot state:
        raise PllbenchError in one line naming the fix. Called when the run is resolved (RunConfig.resolve), before
        any folder or work; `pllbench describe` shows the rule in the HP's `note`. Most methods have none."""

    def __init__(self, ctx: MethodContext, hp: dict):
        super().__init__()
        self.ctx = ctx
        self.hp = hp
        self.views = type(self).views_for(hp)  # what make_batch draws for this instance

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

    def projections(self, x: torch.Tensor) -> torch.Tensor | None:
        """The L2-normalised output of a *trained* projection head (collapse diagnostics), or None."""
        return None

    @classmethod
    def ensure_artifacts(cls, hp: dict, request: ArtifactRequest) -> None:
        """Before training: build the artifacts this run needs that pllbench can make (as candidates are built on
        demand), or fail in one line naming the command that makes them. Most methods need none."""

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


class SupConBankMethod(Method):
    """One SupConNet (`self.net`: backbone, fc, projection head) that predicts, embeds and projects, and a confidence
    bank initialised to Y/|S| (ABLE, PaPi)."""

    def __init__(self, ctx: MethodContext, hp: dict):
        super().__init__(ctx, hp)
        self.net = ctx.supcon_net()
        cands = ctx.candidates.float()
        self.register_buffer("bank", renormalize(cands, cands).cpu())

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.logits(x)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.features(x)

    def projections(self, x: torch.Tensor) -> torch.Tensor | None:
        return self.net.project(x)

    def confidences(self) -> torch.Tensor | None:
        return self.bank


class EMATeacherMethod(Method):
    """The student/EMA-teacher shell (DIRK, CAD): two SupConNets, the teacher frozen and updated by EMA
    (`hp["ema"]`) after every step; the student predicts and embeds. The teacher starts from its own random
    initialisation (`teacher_init="separate"`, official) or as a copy of the student (`"student"`, as MoCo's and
    PiCO's key encoders do)."""

    hparams = {
        "ema": HP(0.99, "EMA momentum m of the teacher, updated after every step", low=0, high=1, high_open=True),
        "teacher_init": HP("separate", "the EMA teacher's start: its own random initialisation (official) or a copy "
                                       "of the student's", choices=("separate", "student")),
    }

    def __init__(self, ctx: MethodContext, hp: dict):
        super().__init__(ctx, hp)
        self.student = ctx.supcon_net()
        self.teacher = ctx.supcon_net()
        if hp["teacher_init"] == "student":
            self.teacher.load_state_dict(self.student.state_dict())
        for p in self.teacher.parameters():
            p.requires_grad_(False)

    def after_step(self, batch: Batch) -> None:
        ema_update(self.teacher, self.student, self.hp["ema"])

    uses_projection: bool = False  # set by a subclass whose loss trains the student's projection head

    def projections(self, x: torch.Tensor) -> torch.Tensor | None:
        return self.student.project(x) if self.uses_projection else None

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self.student.logits(x)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.student.features(x)


_METHODS: dict[str, type[Method]] = {}


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
    import pllbench.methods  # noqa: F401  (each module registers its methods)

    try:
        load_entry_points("pllbench.methods", "method")
    except PllbenchError:
        _plugins_loaded = False
        raise


def method_names() -> list[str]:
    load_plugins()
    return sorted(_METHODS)


def registered_methods() -> list[type[Method]]:
    """Every registered method class (built-in and plugins), by name."""
    load_plugins()
    return [_METHODS[name] for name in sorted(_METHODS)]


def get_method(name: str) -> type[Method]:
    load_plugins()
    if name not in _METHODS:
        raise PllbenchError(f"unknown method {name!r}; choose from: {', '.join(sorted(_METHODS))}")
    return _METHODS[name]
