"""Feature extractors for entangled subsets and center distance (docs/spec/entanglement.md §1): the candidate `teacher`,
`timm:NAME[@FILE]` (a pretrained backbone, offline) and `ckpt:RUN_DIR` (a finished pllbench run's `features()`)."""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import PllbenchError
from ..util import key_hash, sha256_bytes, sha256_file


@dataclass
class Extractor:
    """`features(images)`: uint8 N×C×H×W → float32 N×d on the CPU; `identity` enters the subset cache key."""

    name: str  # short id, e.g. "teacher", "timm:efficientnet_lite0", "ckpt:<run id>"
    identity: dict
    features: Callable[[torch.Tensor], torch.Tensor]


@torch.no_grad()
def batched_features(fn, images: torch.Tensor, prepare, device: torch.device, batch_size: int = 500) -> torch.Tensor:
    """fn(prepare(uint8 batch on device)) over the images, float32 on the CPU."""
    return torch.cat([fn(prepare(images[s:s + batch_size].to(device))).float().cpu()
                      for s in range(0, len(images), batch_size)])


def teacher_extractor(cache: Path, dataset_key: dict, teacher_train, info, preset_cfg: dict, device: torch.device,
                      echo=print) -> Extractor:
    """The candidate teacher of (dataset, preset), as prepare() builds it; eval mode, penultimate layer."""
    from ..data.teacher import get_teacher
    from ..views.maker import ViewMaker

    recipe = preset_cfg["teacher"]
    spec = {"split": "teacher-train", "n": len(teacher_train)}  # the same spec prepare() passes
    model, t_key, t_sha = get_teacher(cache, dataset_key, teacher_train, spec, info, recipe, device, echo)
    model.eval()
    maker = ViewMaker(info)
    identity = {"name": "teacher", "arch": recipe["arch"], "teacher_key": key_hash(t_key), "weights_sha256": t_sha}
    return Extractor("teacher", identity,
                     lambda images: batched_features(model.features, images, lambda x: maker(x, "base", None),
                                                     device))


def run_candidates(config: dict, cache) -> np.ndarray:
    """The run's candidate matrix (uint8 N×K), from its content-addressed artifact, checksums verified."""
    from ..artifacts import ArtifactStore

    store = ArtifactStore.of(cache)
    digest = (config.get("candidates") or {}).get("hash", "")
    artifact = store.by_hash("candidates", digest)
    if artifact is None:
        raise PllbenchError(f"candidate artifact {digest} of run {config['method']}-s{config['seed']} is not in the "
                            f"cache {store.root}; pass the --cache-dir the run used")
    return np.load(artifact.file("candidates.npy"), allow_pickle=False)


def load_run_method(run_dir: Path, cache, device: torch.device, data_root=None):
    """Rebuild a finished run's method from config.json (its RunConfig, the context the trainer built, with the
    run's artifact store) and load model.pt; returns (method, config, data)."""
    from ..artifacts import ArtifactStore
    from ..data.prepare import load_data
    from ..method import MethodContext, get_method
    from ..train.runconfig import RunConfig
    from ..views.maker import run_view_maker

    run_dir = Path(run_dir)
    try:
        config = json.loads((run_dir / "config.json").read_text())
        run = RunConfig.from_json(config)
    except (OSError, ValueError, PllbenchError):
        raise PllbenchError(f"{run_dir} is not a pllbench run folder (no readable config.json)") from None
    if not (run_dir / "model.pt").is_file():
        raise PllbenchError(f"run {run_dir} has no model.pt (unfinished, or trained before models were saved)")
    store = ArtifactStore.of(cache)
    cands = torch.from_numpy(run_candidates(config, store)).float().to(device)
    info, data, _, dataset_key = load_data(run.dataset_text, run.preset_name, data_root)
    if dataset_key != run.dataset or len(data.train) != len(cands):
        raise PllbenchError(f"run {run_dir} was trained on other data than {run.dataset_text} with preset "
                            f"{run.preset_name} gives now")
    ctx = MethodContext.for_run(run, info, cands, run_view_maker(info, run.preset), data.train.images.to(device),
                                device, store)
    method = get_method(run.method)(ctx, run.hparams).to(device)
    try:
        state = torch.load(run_dir / "model.pt", map_location=device, weights_only=True)
        method.load_state_dict(state)
    except Exception as exc:  # noqa: BLE001 — unreadable or mismatched weights mean the same to the user
        raise PllbenchError(f"model.pt of {run_dir} cannot be loaded into {run.method} ({exc})") from None
    method.eval()
    return method, config, data


def method_features(method, images: torch.Tensor, info, device: torch.device) -> torch.Tensor:
    """A trained method's `features()` on the base view of its own run's view maker (eval mode)."""
    maker = method.ctx.views
    method.eval()
    return batched_features(method.features, images, lambda x: maker(x, "base", None), device)


def ckpt_extractor(path: str, cache: Path, device: torch.device, data_root=None) -> Extractor:
    """A pllbench run folder: its method's `features()`; named after the folder (<dataset>-<preset>/<run>)."""
    run_dir = Path(path).expanduser().resolve()
    method, config, data = load_run_method(run_dir, cache, device, data_root)
    name = f"ckpt:{run_dir.parent.name}/{run_dir.name}"
    identity = {"name": name, "method": config["method"], "dataset": config["dataset"],
                "weights_sha256": sha256_file(run_dir / "model.pt")}
    info = data.info
    return Extractor(name, identity, lambda images: method_features(method, images, info, device))


def _weights_file_state(path: Path) -> dict:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    for wrapper in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict):
        raise PllbenchError(f"weights file {path} holds no state dict")
    return state


def assign_by_position(model: torch.nn.Module, state: dict, source: str) -> None:
    """Load tensors whose names differ from the model's by order and shape (integer scalars such as BN's
    num_batches_tracked are skipped on both sides)."""

    def counter(value) -> bool:
        return value.ndim == 0 and not value.is_floating_point()

    target = model.state_dict()
    names = [k for k, v in target.items() if not counter(v)]
    tensors = [(k, v) for k, v in state.items() if torch.is_tensor(v) and not counter(v)]
    if len(tensors) != len(names):
        raise PllbenchError(f"{source} holds {len(tensors)} tensors, the model has {len(names)}; they cannot be "
                            f"matched by position")
    for (src, value), name in zip(tensors, names):
        if value.shape != target[name].shape:
            raise PllbenchError(f"{source}: tensor {src} {tuple(value.shape)} does not fit {name} "
                                f"{tuple(target[name].shape)} at the same position")
    model.load_state_dict({name: value for (_, value), name in zip(tensors, names)}, strict=False)


def _state_sha(model: torch.nn.Module) -> str:
    """sha256 of the model's serialised state dict (hub weights have no file of ours to hash)."""
    buffer = io.BytesIO()
    torch.save({k: v.cpu() for k, v in model.state_dict().items()}, buffer)
    return sha256_bytes(buffer.getvalue())


def timm_extractor(spec: str, device: torch.device) -> Extractor:
    """`NAME[@FILE]`: a timm model with local weights only; pre-logits features; its default eval transform."""
    name, _, weights = spec.partition("@")
    os.environ["HF_HUB_OFFLINE"] = "1"  # before huggingface_hub is imported: it reads the flag at import
    try:
        import timm
        import timm.data
    except ImportError:
        raise PllbenchError(f"extractor timm:{spec} needs the timm package, which is not installed "
                            f"(pip install timm)") from None
    with contextlib.suppress(ImportError, AttributeError):  # in case it was imported earlier in this process
        import huggingface_hub.constants

        huggingface_hub.constants.HF_HUB_OFFLINE = True
    if weights:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise PllbenchError(f"extractor timm:{spec}: weights file {path} not found")
        try:
            model = timm.create_model(name, pretrained=False)
        except Exception as exc:  # noqa: BLE001 — timm raises RuntimeError/ValueError/KeyError for unknown names
            raise PllbenchError(f"extractor timm:{spec}: timm cannot build {name!r} ({exc})") from None
        assign_by_position(model, _weights_file_state(path), f"weights file {path}")
        weights_sha = sha256_file(path)
    else:
        try:
            model = timm.create_model(name, pretrained=True)
        except Exception as exc:  # noqa: BLE001 — any hub/cache failure means the weights are not local
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise PllbenchError(f"extractor timm:{name}: pretrained weights do not resolve from local files "
                                f"(HF_HUB_OFFLINE=1: {first}); pass timm:{name}@/path/to/weights") from None
        weights_sha = _state_sha(model)
    model.eval().to(device)
    cfg = timm.data.resolve_data_config({}, model=model)
    transform = timm_eval_transform(cfg)
    identity = {"name": f"timm:{name}", "weights_sha256": weights_sha,
                "transform": {k: (list(v) if isinstance(v, tuple) else v) for k, v in sorted(cfg.items())}}

    def pre_logits(x):
        return model.forward_head(model.forward_features(x), pre_logits=True)

    return Extractor(f"timm:{name}", identity, lambda images: batched_features(pre_logits, images, transform, device))


def timm_eval_transform(cfg: dict):
    """timm's default eval transform on uint8 tensor batches: resize the shorter side to size/crop_pct,
    centre crop, normalise (gray replicated to 3 channels)."""
    _, height, width = cfg["input_size"]
    crop_pct = cfg.get("crop_pct") or 1.0
    mode = "bicubic" if cfg.get("interpolation") == "bicubic" else "bilinear"
    mean = torch.tensor(cfg["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(cfg["std"]).view(1, 3, 1, 1)

    def transform(images: torch.Tensor) -> torch.Tensor:
        x = images.float() / 255
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        short = math.floor(min(height, width) / crop_pct)
        h, w = x.shape[-2:]
        scale = short / min(h, w)
        x = F.interpolate(x, size=(max(short, round(h * scale)), max(short, round(w * scale))), mode=mode,
                          align_corners=False, antialias=True).clamp(0, 1)
        top, left = (x.shape[-2] - height) // 2, (x.shape[-1] - width) // 2
        x = x[..., top:top + height, left:left + width]
        return (x - mean.to(x.device)) / std.to(x.device)

    return transform


def make_extractor(spec: str, *, cache: Path, device: torch.device, teacher: Callable[[], Extractor],
                   data_root=None) -> Extractor:
    """Parse --extractor: teacher (default), timm:NAME[@FILE], ckpt:RUN_DIR."""
    kind, sep, rest = spec.partition(":")
    if spec == "teacher":
        return teacher()
    if kind == "timm" and sep and rest.partition("@")[0]:
        return timm_extractor(rest, device)
    if kind == "ckpt" and sep and rest:
        return ckpt_extractor(rest, cache, device, data_root)
    raise PllbenchError(f"unknown --extractor {spec!r}; use teacher, timm:NAME[@WEIGHTS_FILE] or ckpt:RUN_DIR")
