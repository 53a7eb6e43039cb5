"""Presets (docs/spec/protocols.md §4, §6, §7): optimisation, backbone, batch, data subsets, method overrides, the
preset's own candidate teacher; the per-dataset parts (rate, teachers, paper backbone and batch, support) are the
datasets'."""

from __future__ import annotations

import copy

from .data.registry import dataset_class, dataset_names, paper_datasets
from .errors import PllbenchError

# A preset's own candidate teacher (docs/spec/candidates.md §3), for every dataset that names none for the preset
# (a dataset's recipes, e.g. the paper's per-dataset teachers, are in its file: Dataset.teachers). Common to all:
# SGD-Nesterov, per-step cosine to 0 after a 1-epoch linear warm-up, seed 0 (resolve_preset adds them).
TEACHERS = {
    "quick": {"arch": "cnn-s", "epochs": 3, "batch_size": 128, "lr": 0.05, "weight_decay": 5e-4,
              "augment": "flip-crop", "label_smoothing": 0.0},
    "demo": {"arch": "cnn-s", "epochs": 3, "batch_size": 128, "lr": 0.05, "weight_decay": 5e-4,
             "augment": "flip-crop", "label_smoothing": 0.0},  # quick's: the same cached teacher
    "smoke": {"arch": "cnn-xs", "epochs": 3, "batch_size": 16, "lr": 0.05, "weight_decay": 5e-4,
              "augment": "none", "label_smoothing": 0.0},
}

# Which datasets a preset runs is declared by each dataset (Dataset.presets, pllbench/dataset.py), as are its
# candidate rate, its teacher recipes and the fields a preset changes for it (the paper's per-dataset backbone and
# batch size): adding a dataset is one file.
PRESETS = {
    "paper": {
        "description": "the CAD paper's protocol: 500 epochs, SGD 0.01, cosine, per-dataset backbone and batch",
        "epochs": 500, "lr": 0.01, "momentum": 0.9, "weight_decay": 1e-3, "eta_min": 1e-5, "proj_dim": 128,
        "backbone": "resnet34c", "batch_size": 64, "train_per_class": None, "test_per_class": None,
        "method_hparams": {},
    },
    # Calibrated by measurement on two CPU cores (docs/calibration.md, benchmarks/calibrate.py): data, network and
    # schedule large enough for the methods to disambiguate ID candidates.
    "quick": {
        "description": "2 CPU cores: Fashion-MNIST 20k train / full 10k test, cnn-m2, no cutout, per-step cosine, "
                       "15 epochs, batch 128",
        "epochs": 15, "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4, "eta_min": 0.05e-3, "proj_dim": 64,
        "backbone": "cnn-m2", "batch_size": 128, "train_per_class": 2000, "test_per_class": None,
        "cls_cutout": 0, "schedule": "step",
        # shared by every method that declares the key; a method's own overrides are in its file (preset_hparams)
        "method_hparams": {"*": {"queue_size": 2048}},
        "method_preset": "quick",  # presets copied from this dict (benchmarks/calibrate.py) keep quick's overrides
    },
    # `make demo`: quick with 10 epochs (docs/calibration.md, d20k-e10), so that the oracle and PRODEN finish in
    # minutes on two cores
    "demo": {
        "description": "make demo: the quick preset with 10 epochs (Fashion-MNIST 20k train / full 10k test, cnn-m2)",
        "epochs": 10, "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4, "eta_min": 0.05e-3, "proj_dim": 64,
        "backbone": "cnn-m2", "batch_size": 128, "train_per_class": 2000, "test_per_class": None,
        "cls_cutout": 0, "schedule": "step",
        "method_hparams": {"*": {"queue_size": 2048}},
        "method_preset": "quick",
    },
    "smoke": {
        "description": "tests: synthetic 4-class 16-px data, cnn-xs, 2 epochs, batch 16",
        "epochs": 2, "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4, "eta_min": 0.05e-3, "proj_dim": 32,
        "backbone": "cnn-xs", "batch_size": 16, "train_per_class": None, "test_per_class": None,
        "method_hparams": {"*": {"queue_size": 128}},
    },
}


def preset_names() -> list[str]:
    return list(PRESETS)


def resolve_preset(preset: str, dataset: str) -> dict:
    """The preset's settings for one dataset, every field explicit."""
    if preset not in PRESETS:
        raise PllbenchError(f"unknown preset {preset!r}; choose one of: {', '.join(PRESETS)}")
    spec = dataset_class(dataset)
    if preset not in spec.presets:
        made_for = [name for name in PRESETS if name in spec.presets]
        fix = f"pass --preset {made_for[0]}" if made_for else f"add {preset!r} to {spec.__name__}.presets"
        raise PllbenchError(f"preset {preset!r} is not made for dataset {dataset!r} (it is for: "
                            f"{', '.join(preset_datasets(preset)) or 'no dataset'}); {fix}")
    cfg = copy.deepcopy(PRESETS[preset])
    cfg.pop("description")
    cfg["method_hparams"] = method_table(cfg["method_hparams"], cfg.pop("method_preset", preset))
    cfg["name"] = preset
    settings = spec.preset_settings.get(preset, {})
    unknown = sorted(set(settings) - set(cfg))
    if unknown:
        raise PllbenchError(f"dataset {dataset!r} sets {', '.join(unknown)} for preset {preset!r}, which has no such "
                            f"field; fix {spec.__name__}.preset_settings")
    cfg.update(copy.deepcopy(settings))
    cfg["rate"] = float(spec.rate)
    teacher = spec.teachers.get(preset) or spec.teachers.get("*") or TEACHERS.get(preset)
    if teacher is None:
        raise PllbenchError(f"preset {preset!r} has no candidate teacher for dataset {dataset!r}; give "
                            f"{spec.__name__}.teachers a {preset!r} recipe")
    cfg["teacher"] = dict(teacher, seed=0, momentum=0.9, nesterov=True, warmup_epochs=1, mode="eval")
    return cfg


def preset_datasets(preset: str) -> list[str]:
    """The datasets made for `preset` (each dataset declares its presets): the paper's first, in its order."""
    paper = paper_datasets()
    names = [name for name in dataset_names() if preset in dataset_class(name).presets]
    return sorted(names, key=lambda n: (paper.index(n) if n in paper else len(paper), n))


def builtin_method(cls) -> bool:
    return cls.__module__.startswith("pllbench.methods.")


def method_table(shared: dict, preset: str) -> dict:
    """A run's record of its preset's method overrides: the preset's shared entries ("*") plus, per method family,
    what the built-in method files declare for `preset` (`preset_hparams`). Recorded in config["preset"] as the
    preset tables held them before the method files did, so run ids stay the same; plugins' own overrides are
    applied (method_overrides) but not recorded here, so installing one changes no other run's id."""
    from .method import registered_methods

    table = {scope: dict(values) for scope, values in shared.items()}
    for cls in registered_methods():
        overrides = cls.preset_hparams.get(preset)
        if not overrides or not builtin_method(cls):
            continue
        entry = table.setdefault(cls.family, {})
        clash = {k for k, v in overrides.items() if k in entry and entry[k] != v}
        if clash:
            raise PllbenchError(f"methods of family {cls.family!r} declare different {preset!r} overrides for "
                                f"{', '.join(sorted(clash))}")
        entry.update(overrides)
    return table


def own_method_table(table: dict, method: str, family: str) -> dict:
    """The entries of a preset's method table that apply to one method ('*', its family's, its own): what a run
    records in config["preset"], so that changing another method's preset override changes no id of this one."""
    return {scope: dict(table[scope]) for scope in ("*", family, method) if scope in table}


def method_overrides(preset_cfg: dict, method: str, family: str) -> dict:
    """Preset overrides for one method: '*' entries, then the method family's, then the method's own (the built-in
    methods' entries are in the table, see method_table); a plugin's own `preset_hparams` for the preset last."""
    from .method import get_method

    out: dict = {}
    for values in own_method_table(preset_cfg["method_hparams"], method, family).values():
        out.update(values)
    cls = get_method(method)
    if not builtin_method(cls):
        out.update(cls.preset_hparams.get(preset_cfg["name"], {}))
    return out
