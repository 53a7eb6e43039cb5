"""Presets (protocols.md §4, §6, §7): optimisation, backbone, batch, rate, teacher, data subsets, overrides."""

from __future__ import annotations

import copy

from .errors import PllbenchError

# Candidate rates per dataset (candidates.md §2).
RATES = {"fmnist": 1.0, "cifar10": 1.0, "cifar100": 0.1, "flowers": 0.05, "pets": 0.1, "synthetic": 0.5}

# Teacher recipes (candidates.md §3): common SGD-Nesterov, per-step cosine to 0, 1-epoch linear warm-up, seed 0.
TEACHERS = {
    ("paper", "fmnist"): {"arch": "mlp", "epochs": 40, "batch_size": 256, "lr": 0.1, "weight_decay": 5e-4,
                          "augment": "none", "label_smoothing": 0.0},
    ("paper", "cifar10"): {"arch": "wrn28-10", "epochs": 200, "batch_size": 128, "lr": 0.1, "weight_decay": 5e-4,
                           "augment": "flip-crop", "label_smoothing": 0.0},
    ("paper", "cifar100"): {"arch": "wrn50-2", "epochs": 200, "batch_size": 128, "lr": 0.1, "weight_decay": 5e-4,
                            "augment": "flip-crop", "label_smoothing": 0.0},
    ("paper", "flowers"): {"arch": "wrn50-2", "epochs": 300, "batch_size": 64, "lr": 0.05, "weight_decay": 5e-4,
                           "augment": "rrc-flip-jitter", "label_smoothing": 0.1},
    ("paper", "pets"): {"arch": "wrn50-2", "epochs": 200, "batch_size": 64, "lr": 0.05, "weight_decay": 5e-4,
                        "augment": "rrc-flip-jitter", "label_smoothing": 0.1},
    ("quick", "*"): {"arch": "cnn-s", "epochs": 3, "batch_size": 128, "lr": 0.05, "weight_decay": 5e-4,
                     "augment": "flip-crop", "label_smoothing": 0.0},
    ("smoke", "*"): {"arch": "cnn-xs", "epochs": 3, "batch_size": 16, "lr": 0.05, "weight_decay": 5e-4,
                     "augment": "none", "label_smoothing": 0.0},
}

PAPER_DATA = {
    "fmnist": {"backbone": "resnet18c", "batch_size": 64},
    "cifar10": {"backbone": "resnet34c", "batch_size": 64},
    "cifar100": {"backbone": "resnet34c", "batch_size": 64},
    "flowers": {"backbone": "resnet34c", "batch_size": 16},
    "pets": {"backbone": "resnet34c", "batch_size": 16},
}

PRESETS = {
    "paper": {
        "description": "the CAD paper's protocol: 500 epochs, SGD 0.01, cosine, per-dataset backbone and batch",
        "epochs": 500, "lr": 0.01, "momentum": 0.9, "weight_decay": 1e-3, "eta_min": 1e-5, "proj_dim": 128,
        "backbone": "resnet34c", "batch_size": 64, "train_per_class": None, "test_per_class": None,
        "method_hparams": {},
    },
    "quick": {
        "description": "2 CPU cores: Fashion-MNIST 4k/2k subset, cnn-s, 15 epochs, batch 128",
        "epochs": 15, "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4, "eta_min": 0.05e-3, "proj_dim": 64,
        "backbone": "cnn-s", "batch_size": 128, "train_per_class": 400, "test_per_class": 200,
        "method_hparams": {"*": {"queue_size": 2048},
                           "cel": {"dim": 64, "heads": 4, "ffn": 128, "warmup_epochs": 7},
                           "valen": {"warmup_epochs": 2, "decoder_dim": 784},
                           "cad": {"editor": "identity"}},
    },
    "smoke": {
        "description": "tests: synthetic 4-class 16-px data, cnn-xs, 2 epochs, batch 16",
        "epochs": 2, "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4, "eta_min": 0.05e-3, "proj_dim": 32,
        "backbone": "cnn-xs", "batch_size": 16, "train_per_class": None, "test_per_class": None,
        "method_hparams": {"*": {"queue_size": 128},
                           "cel": {"dim": 16, "heads": 2, "ffn": 32, "warmup_epochs": 1},
                           "valen": {"warmup_epochs": 1, "decoder_dim": 768},
                           "cad": {"editor": "identity"}},
    },
}


def preset_names() -> list[str]:
    return list(PRESETS)


def resolve_preset(preset: str, dataset: str) -> dict:
    """The preset's settings for one dataset, every field explicit."""
    if preset not in PRESETS:
        raise PllbenchError(f"unknown preset {preset!r}; choose one of: {', '.join(PRESETS)}")
    cfg = copy.deepcopy(PRESETS[preset])
    cfg.pop("description")
    cfg["name"] = preset
    if preset == "paper" and dataset in PAPER_DATA:
        cfg.update(PAPER_DATA[dataset])
    cfg["rate"] = RATES.get(dataset, 1.0)
    teacher = TEACHERS.get((preset, dataset)) or TEACHERS.get((preset, "*"))
    if teacher is None:
        raise PllbenchError(f"preset {preset!r} has no candidate teacher for dataset {dataset!r}")
    cfg["teacher"] = dict(teacher, seed=0, momentum=0.9, nesterov=True, warmup_epochs=1, mode="eval")
    return cfg


def method_overrides(preset_cfg: dict, method: str, family: str) -> dict:
    """Preset overrides for one method: '*' entries, then the method family's, then the method's own."""
    table = preset_cfg["method_hparams"]
    out = dict(table.get("*", {}))
    out.update(table.get(family, {}))
    out.update(table.get(method, {}))
    return out


def lr_at_epoch(cfg: dict, epoch: int) -> float:
    """Per-epoch cosine: lr_e = η + (lr − η)(1 + cos(π e / E))/2."""
    import math

    eta, lr0, total = cfg["eta_min"], cfg["lr"], cfg["epochs"]
    return eta + (lr0 - eta) * (1 + math.cos(math.pi * epoch / total)) / 2
