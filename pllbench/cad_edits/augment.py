"""InstructPix2Pix class-specific edits for CAD (docs/spec/methods.md §1 "Augment artifact"); the `pllbench augment`
command is in pllbench/cli/augment.py.

One edit E_{i,s} per train instance i and candidate s ∈ S_i, written through `pllbench.cad_edits.edits.build_edits` in
chunks of `--batch-size` (one batched pipeline call each), so a killed build resumes at its last finished chunk.

The pipeline is the official one [official]: diffusers `StableDiffusionInstructPix2PixPipeline`, the
`DPMSolverMultistepScheduler` (built from the model's own scheduler config), 10 steps, guidance_scale 5,
image_guidance_scale 1.5, no negative prompt, fp16 on CUDA (fp32 on CPU, where fp16 is not usable).

Our choices [ours], each a deviation from or a gap in the official code:
- Editor input = the base image as un-normalised RGB in [0,1] (the official code fed ImageNet-normalised Pets/Flowers
  tensors to its PIL conversion): gray replicated to 3 channels, 224-px sets centre-cropped from the stored 256 px to
  224 (= Resize 256 → CenterCrop 224), then resized to the working resolution (256), edited, and resized back to the
  model input size; both resizes are bilinear with antialiasing; the result is rounded to uint8.
- Seeds: edit (i, s) starts from the latent noise of its own CPU generator seeded H("edit", dataset, seed, i, s)
  (a per-sample generator list in one batched call), so an edit does not depend on the batch it was made in; the
  official code seeded one global generator, and its cache held seed 0's edits only.
- Instruction text: `names` = the bare class name (the official prompt), `detailed` = a one-sentence visual
  description per class (pllbench/resources/prompts/<dataset>.json, written for pllbench; the paper's detailed Pets
  prompts are unpublished), or a user JSON file {class name → text}. The text is the instruction verbatim, with no
  template.
- The safety checker is not loaded (it would black out "NSFW" edits and add a 1.2 GB model).
- Key (`edits_key`): candidate hash, editor (`ip2p`, or `tiny-ip2p`), a weights fingerprint (`weights_fingerprint`),
  the sha256 of the instruction list, every pipeline parameter, the working resolution, the dtype, and the seed.
  `--batch-size` is not in the key: it changes throughput, not the recipe. Resuming with the same batch size gives
  byte-identical files; another batch size or device may move a few pixels by one grey level (float rounding).
- Editor `tiny-ip2p` (pllbench/cad_edits/tiny_editor.py): the same diffusers pipeline with a randomly initialised
  miniature UNet (8 input channels, as InstructPix2Pix), VAE and CLIP text encoder, seeded, and a byte-level CLIP
  tokenizer built in code: no download. It exercises every code path in tests and benchmarks; its edits carry no
  class content.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import PllbenchError
from ..util import canonical_json, derive_seed, sha256_bytes
from ..views.maker import center_crop
from ..wording import plural
from .edits import build_edits, edit_offsets, edits_key
from .tiny_editor import TINY, tiny_pipeline

DEFAULT_MODEL = "timbrooks/instruct-pix2pix"
RESOLUTION = 256
PIPELINE_PARAMS = {"scheduler": "DPMSolverMultistepScheduler", "steps": 10, "guidance_scale": 5.0,
                   "image_guidance_scale": 1.5, "negative_prompt": None}
CODE_VERSION = "augment-v1"  # bump when the pre- or post-processing changes a pixel
COMPONENTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")  # what the editor loads, so what is hashed
FULL_HASH_BYTES = 4 << 20  # files up to this size are hashed whole
EDGE_BYTES = 1 << 20  # larger weight files: their size plus the sha256 of their first and last MiB
PROMPT_SETS = ("names", "detailed")
HUB_OFFLINE_VALUES = {"1", "ON", "YES", "TRUE"}


# ---------------------------------------------------------------------------------------------------- prompts
def shipped_prompts(dataset: str) -> dict[str, str] | None:
    """The `detailed` prompts shipped for `dataset` ({class name → instruction}), or None."""
    path = resources.files("pllbench") / "resources" / "prompts" / f"{dataset}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def prompt_table(spec: str, dataset: str) -> tuple[dict | None, str]:
    """({class name → instruction} or None for `names`, where it came from); checked before any data is loaded."""
    if spec == "names":
        return None, "class names"
    if spec == "detailed":
        table = shipped_prompts(dataset)
        if table is None:
            raise PllbenchError(f"no detailed prompts are shipped for dataset {dataset!r}; use --prompts names or "
                                f"--prompts FILE.json with {{class name: instruction}}")
        return table, f"the shipped {dataset} prompts"
    path = Path(spec)
    if path.suffix != ".json" or not path.is_file():
        raise PllbenchError(f"--prompts {spec!r} is neither {' nor '.join(PROMPT_SETS)} nor an existing .json file")
    try:
        table = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise PllbenchError(f"prompt file {path} is not readable JSON ({exc})") from None
    source = f"prompt file {path}"
    if not isinstance(table, dict) or not all(isinstance(v, str) and v.strip() for v in table.values()):
        raise PllbenchError(f"{source} must be a JSON object {{class name: non-empty instruction}}")
    return table, source


def load_prompts(spec: str, dataset: str, classes: list[str]) -> list[str]:
    """The instruction of every class, in class order: `names`, `detailed` or a JSON file {class → text}."""
    table, source = prompt_table(spec, dataset)
    if table is None:
        return list(classes)
    missing = [c for c in classes if c not in table]
    unknown = sorted(set(table) - set(classes))
    if missing or unknown:
        what = (f"no entry for {plural(len(missing), 'class', 'classes')}, e.g. {missing[0]!r}" if missing
                else f"{'an unknown class' if len(unknown) == 1 else 'unknown classes'} "
                     f"{', '.join(map(repr, unknown[:3]))}")
        raise PllbenchError(f"{source} has {what}; its keys must be exactly the class names of {dataset}")
    return [table[c] for c in classes]


def prompts_sha256(prompts: list[str]) -> str:
    return sha256_bytes(canonical_json(prompts).encode())


# ---------------------------------------------------------------------------------------------------- models
def _file_digest(path: Path, size: int) -> bytes:
    with open(path, "rb") as fh:
        if size <= FULL_HASH_BYTES:
            return hashlib.sha256(fh.read()).digest()
        head = fh.read(EDGE_BYTES)
        fh.seek(size - EDGE_BYTES)
        return hashlib.sha256(head + fh.read(EDGE_BYTES)).digest()


def weights_fingerprint(folder: Path) -> str:
    """sha256 over (relative path, size, content digest) of every file of the loaded components, sorted.

    Files up to 4 MiB (configs, tokenizer) are hashed whole; a larger weight file contributes its size and the sha256
    of its first and last MiB (the safetensors header, which names every tensor and offset, and real weight bytes).
    That reads a few MiB instead of several GB, and still tells apart any two checkpoints met in practice.
    """
    folder = Path(folder)
    digest = hashlib.sha256()
    for component in COMPONENTS:
        for path in sorted((folder / component).rglob("*")):
            rel = path.relative_to(folder)
            if not path.is_file() or any(part.startswith(".") for part in rel.parts):
                continue
            size = path.stat().st_size
            digest.update(f"{rel.as_posix()}\0{size}\0".encode())
            digest.update(_file_digest(path, size))
    return digest.hexdigest()


VERSION_KEYS = ("transformers_version", "_diffusers_version", "_name_or_path", "_class_name")
# diffusers lists the defaulted keys from a set, in an order that changes with each process's string hashing: with it
# the tiny editor's weights hash, so its artifact key, differed per process and a killed build never resumed.
UNORDERED_KEYS = ("_use_default_values",)


def _config_text(config) -> str:
    """A component's config as sorted JSON, without library-version fields (infinities written as such)."""
    items = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    return json.dumps({k: v for k, v in items.items() if k not in VERSION_KEYS + UNORDERED_KEYS}, sort_keys=True,
                      default=str)


def modules_fingerprint(pipe) -> str:
    """sha256 of the configs and parameters of an in-memory pipeline (the tiny editor's weights hash)."""
    digest = hashlib.sha256()
    for name in COMPONENTS:
        component = getattr(pipe, name)
        if name == "tokenizer":
            digest.update(canonical_json(component.get_vocab()).encode())
            continue
        digest.update(_config_text(component.config).encode())
        if isinstance(component, torch.nn.Module):
            for key, tensor in sorted(component.state_dict().items()):
                digest.update(f"{name}.{key}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
                digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in HUB_OFFLINE_VALUES


def _model_hint(model: str) -> str:
    return (f"pass --model DIR with a local diffusers folder of the pipeline (model_index.json, unet/, vae/, "
            f"text_encoder/, tokenizer/, scheduler/), or add --download to fetch {model!r} from the hub")


def resolve_model_dir(model: str, download: bool) -> Path:
    """The local folder of `model` (a folder, or a hub id already cached or fetched with --download).

    Without --download, or with HF_HUB_OFFLINE=1, the hub is never contacted (`local_files_only=True`).
    """
    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / "model_index.json").is_file():
            raise PllbenchError(f"--model {model} is not a diffusers pipeline folder (no model_index.json); "
                                f"{_model_hint(DEFAULT_MODEL)}")
        return path
    if model.startswith((".", "/", "~")) or model.count("/") > 1:
        raise PllbenchError(f"--model {model}: no such folder; {_model_hint(DEFAULT_MODEL)}")
    from diffusers import StableDiffusionInstructPix2PixPipeline

    offline = _hub_offline() or not download
    try:
        folder = StableDiffusionInstructPix2PixPipeline.download(
            model, local_files_only=offline, safety_checker=None, feature_extractor=None)
    except (OSError, ValueError) as exc:
        if offline:
            why = "HF_HUB_OFFLINE=1" if _hub_offline() else "no --download"
            raise PllbenchError(f"no InstructPix2Pix weights for {model!r} in the Hugging Face cache (hub not "
                                f"contacted: {why}); {_model_hint(model)}") from None
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PllbenchError(f"could not fetch {model!r} from the hub ({first}); {_model_hint(model)}") from None
    return Path(folder)


def load_pipeline(folder: Path, dtype: torch.dtype):
    """The InstructPix2Pix pipeline of a local folder, files only, without the safety checker."""
    from diffusers import StableDiffusionInstructPix2PixPipeline

    try:
        with warnings.catch_warnings():  # newer diffusers renamed torch_dtype to dtype; older ones know only this
            warnings.filterwarnings("ignore", message=".*torch_dtype.*", category=FutureWarning)
            return StableDiffusionInstructPix2PixPipeline.from_pretrained(
                folder, torch_dtype=dtype, local_files_only=True, safety_checker=None, feature_extractor=None,
                requires_safety_checker=False)
    except (OSError, ValueError, TypeError, KeyError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PllbenchError(f"cannot load an InstructPix2Pix pipeline from {folder} ({first}); "
                            f"{_model_hint(DEFAULT_MODEL)}") from None


@dataclass
class EditModel:
    """An editor before loading: its id and weights hash make the key; `load(dtype)` is called only if needed."""

    editor: str
    weights_sha256: str
    load: Callable[[torch.dtype], object]


def ready_pipeline(pipe, device: torch.device):
    """On the device, with the DPM-Solver multistep scheduler built from the model's own scheduler config."""
    from diffusers import DPMSolverMultistepScheduler

    pipe.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def resolve_model(model: str, download: bool) -> EditModel:
    if model == TINY:
        pipe = tiny_pipeline()
        return EditModel(TINY, modules_fingerprint(pipe),
                         lambda dtype: pipe if dtype == torch.float32 else pipe.to(dtype=dtype))
    folder = resolve_model_dir(model, download)
    return EditModel("ip2p", weights_fingerprint(folder), lambda dtype: load_pipeline(folder, dtype))


# ---------------------------------------------------------------------------------------------------- editing
def resize_square(x: torch.Tensor, side: int) -> torch.Tensor:
    if x.shape[-1] == side and x.shape[-2] == side:
        return x
    return F.interpolate(x, size=(side, side), mode="bilinear", align_corners=False, antialias=True)


def editor_input(images: torch.Tensor, size: int, resolution: int) -> torch.Tensor:
    """uint8 N×C×H×W base images → float RGB in [0,1] at the working resolution (gray → 3 channels; 224 crop)."""
    x = images.float() / 255
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    if x.shape[-1] > size:
        x = center_crop(x, size)
    return resize_square(x, resolution)


class Ip2pEditor:
    """`editor(instances, labels) -> uint8 n×3×size×size`: one batched pipeline call per chunk."""

    def __init__(self, pipe, images: torch.Tensor, prompts: list[str], dataset: str, seed: int, size: int,
                 resolution: int, device: torch.device):
        self.pipe, self.images, self.prompts = pipe, images, prompts
        self.dataset, self.seed, self.size, self.resolution, self.device = dataset, seed, size, resolution, device

    def generators(self, instances: np.ndarray, labels: np.ndarray) -> list[torch.Generator]:
        return [torch.Generator().manual_seed(derive_seed("edit", self.dataset, self.seed, int(i), int(s)))
                for i, s in zip(instances, labels)]

    def __call__(self, instances: np.ndarray, labels: np.ndarray) -> np.ndarray:
        base = editor_input(self.images[torch.from_numpy(instances)], self.size, self.resolution)
        out = self.pipe(prompt=[self.prompts[s] for s in labels], image=base.to(self.device),
                        num_inference_steps=PIPELINE_PARAMS["steps"], guidance_scale=PIPELINE_PARAMS["guidance_scale"],
                        image_guidance_scale=PIPELINE_PARAMS["image_guidance_scale"], negative_prompt=None,
                        generator=self.generators(instances, labels), output_type="pt").images
        edits = resize_square(out.float(), self.size)
        return (edits * 255).round().clamp(0, 255).to(torch.uint8).cpu().numpy()


def first_row(candidates: np.ndarray, instance: int, label: int) -> int:
    """Store row of edit (instance, label): the instance's CSR start plus the candidates below the label."""
    return int(edit_offsets(candidates)[instance] + candidates[instance, :label].astype(bool).sum())


def augment(dataset: str, preset: str, seed: int, *, model: str | EditModel = DEFAULT_MODEL, prompts: str = "names",
            batch_size: int = 32, resolution: int = RESOLUTION, cache: Path, device: torch.device | None = None,
            root=None, download: bool = False, progress: bool = True, echo: Callable[[str], None] = print):
    """Build (or reuse) the edit artifact of one run's candidates; returns (EditStore, summary dict)."""
    from tqdm import tqdm

    from ..data.prepare import default_device, prepare
    from ..data.registry import get_dataset, parse_dataset_name
    from ..presets import resolve_preset

    if resolution % 8:
        raise PllbenchError(f"--resolution {resolution} must be a multiple of 8 (the VAE's latent stride)")
    device = device or default_device()
    resolve_preset(preset, get_dataset(dataset).info().name)  # unknown names fail before the data and the model
    prompt_table(prompts, parse_dataset_name(dataset)[0])
    edit_model = model if isinstance(model, EditModel) else resolve_model(model, download)
    prep = prepare(dataset, preset, seed, root=root, download=download, cache=cache, device=device, echo=echo)
    info, cands = prep.data.info, prep.candidates.matrix
    instructions = load_prompts(prompts, info.name, info.classes)
    if len(instructions) != info.num_classes:
        raise PllbenchError(f"dataset {info.name} names {len(instructions)} classes but has {info.num_classes}")
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    candidate_seed = int(prep.candidates.report["seed"])
    params = {**PIPELINE_PARAMS, "code": CODE_VERSION, "dtype": str(dtype).removeprefix("torch."),
              "resolution": int(resolution), "size": int(info.input_size), "resize": "bilinear-antialias",
              "input": "rgb01", "safety_checker": False}
    key = edits_key(prep.candidates.hash, edit_model.editor, seed=candidate_seed, params=params,
                    weights_sha256=edit_model.weights_sha256, prompts_sha256=prompts_sha256(instructions))
    state = {"editor": None, "bar": None, "made": 0, "start": None}

    def edit_chunk(instances: np.ndarray, labels: np.ndarray) -> np.ndarray:
        if state["editor"] is None:
            pipe = ready_pipeline(edit_model.load(dtype), device)
            state["editor"] = Ip2pEditor(pipe, prep.data.train.images, instructions, info.name, candidate_seed,
                                         info.input_size, resolution, device)
            total = int(cands.astype(bool).sum())
            state["bar"] = tqdm(total=total, initial=first_row(cands, instances[0], labels[0]), unit="edit",
                                desc=f"augment {info.name}", disable=not progress, dynamic_ncols=True)
            state["start"] = time.perf_counter()
        edits = state["editor"](instances, labels)
        state["made"] += len(instances)
        state["bar"].update(len(instances))
        return edits

    try:
        store = build_edits(cache, key, cands, info.input_size, edit_chunk, chunk=batch_size)
    finally:
        if state["bar"] is not None:
            state["bar"].close()
    seconds = time.perf_counter() - state["start"] if state["start"] else 0.0
    summary = {"edits": state["made"], "seconds": seconds, "rate": state["made"] / seconds if seconds else 0.0,
               "total": int(store.edits.shape[0]), "bytes": (store.folder / "edits.npy").stat().st_size,
               "path": str(store.folder), "hash": store.folder.name}
    return store, summary
