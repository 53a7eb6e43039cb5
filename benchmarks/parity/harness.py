"""Runs a method's official training loop, imported from a local checkout, on the inputs of a pllbench run.

An adapter (benchmarks/parity/<method>.py) states as data which official modules to import, which official command
line stands for the pllbench run's settings, and each attribute of the official code it replaces for the run
(`Change`): the data loader (pllbench's train/test split and candidate matrix), the encoder (pllbench's backbone),
the test (which records every epoch's predictions) and the device calls. Everything else runs as checked out. The
checkout is imported at run time and never modified, and no official code is copied into this project.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch

from pllbench.errors import PllbenchError
from pllbench.nets import SupConNet, build_backbone
from pllbench.train.runconfig import RunConfig
from pllbench.util import atomic_write_text


@dataclass(frozen=True)
class Change:
    """One attribute of the official code replaced for the run. `target` is "module:attribute.path" (module "torch"
    for torch itself; "{dataset}" stands for the official dataset name), `build` names the adapter function that
    makes the replacement from (session, original), `why` is one line for the record."""

    target: str
    build: str
    why: str


@dataclass(frozen=True)
class Variant:
    """One way to run the official code: its changes beyond the adapter's own, and the hyperparameters of the
    pllbench run it is compared with (`--hp` form, without the method scope)."""

    doc: str
    changes: tuple[Change, ...] = ()
    pllbench_hp: dict = field(default_factory=dict)


@dataclass
class ParityInputs:
    """What the pllbench run of the same method, preset and seed trains and tests on (uint8 images, float candidate
    rows, CPU tensors in pllbench's row order), with its resolved settings (`run`)."""

    run: RunConfig
    classes: list[str]
    train_images: torch.Tensor  # N×C×H×W uint8
    train_labels: torch.Tensor  # N: only for official loops that print a training accuracy
    candidates: torch.Tensor  # N×K float {0,1}
    test_images: torch.Tensor
    test_labels: torch.Tensor
    device: torch.device

    def encoder(self, num_classes: int, proj_dim: int) -> SupConNet:
        """pllbench's network for the run: the preset's backbone + fc + projection head (logits, normalised z)."""
        return SupConNet(build_backbone(self.run.preset["backbone"]), num_classes, proj_dim)


def class_recall(pred: torch.Tensor, labels: torch.Tensor, num_classes: int) -> list[float | None]:
    """Per class c: the share of test items of class c predicted c (None for a class absent from the labels)."""
    out = []
    for c in range(num_classes):
        members = labels == c
        out.append(float((pred[members] == c).double().mean()) if members.any() else None)
    return out


class Recorder:
    """The official model's test accuracy and per-class recall of every epoch, rewritten to `path` (JSONL) as each
    epoch ends, so a long run shows its progress and an interrupted one keeps its finished epochs."""

    def __init__(self, labels: torch.Tensor, num_classes: int, path: Path, echo: Callable[[str], None], tag: str):
        self.labels, self.num_classes, self.path, self.echo, self.tag = labels, num_classes, path, echo, tag
        self.records: list[dict] = []
        self.started = time.time()

    def add(self, epoch: int, pred: torch.Tensor) -> float:
        """Record one epoch's test predictions; returns the test accuracy (a fraction)."""
        pred = pred.cpu()
        if pred.shape != self.labels.shape:
            raise PllbenchError(f"the official test predicted {tuple(pred.shape)} labels for "
                                f"{tuple(self.labels.shape)} test items")
        acc = float((pred == self.labels).double().mean())
        now = time.time()
        self.records.append({"epoch": int(epoch), "test_acc": acc,
                             "recall": class_recall(pred, self.labels, self.num_classes),
                             "seconds": round(now - self.started, 1)})
        self.started = now
        atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in self.records))
        self.echo(f"{self.tag} epoch {epoch}: test {100 * acc:.2f} %")
        return acc


@dataclass
class Session:
    """What an adapter's replacement builders see: the inputs, the imported official modules, the recorder, the
    official dataset name and the variant."""

    inputs: ParityInputs
    modules: dict
    recorder: Recorder
    dataset: str
    variant: str


def check_checkout(path: str | os.PathLike, repo: str, required: tuple[str, ...]) -> Path:
    """The checkout folder, or one line saying why it is not a checkout of `repo`."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise PllbenchError(f"--official {path}: no such folder; clone {repo} (github.com/{repo}) and pass its folder")
    missing = [name for name in required if not (folder / name).is_file()]
    if missing:
        raise PllbenchError(f"--official {path} is not a checkout of {repo}: it has no {', '.join(missing)}")
    return folder.resolve()


def checkout_commit(folder: Path) -> str | None:
    """The checked-out commit (None without git metadata)."""
    try:
        done = subprocess.run(["git", "-C", str(folder), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=30, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    commit = done.stdout.strip()
    return commit if done.returncode == 0 and commit else None


def _from_checkout(module, folder: Path) -> bool:
    """Whether a module was loaded from the checkout (a namespace package has its folder as search location)."""
    spec = getattr(module, "__spec__", None)
    places = [getattr(module, "__file__", None), *(getattr(spec, "submodule_search_locations", None) or [])]
    return any(isinstance(place, str) and Path(place).resolve().is_relative_to(folder) for place in places)


@contextlib.contextmanager
def official_modules(folder: Path, names: tuple[str, ...], argv: list[str]) -> Iterator[dict]:
    """Import the official modules `names` from `folder` with `argv` as their command line (official scripts parse
    it on import); on exit, sys.path, sys.argv, the environment and sys.modules are as they were."""
    saved_path, saved_argv, saved_env, before = list(sys.path), list(sys.argv), dict(os.environ), set(sys.modules)
    shadowed = {k: sys.modules.pop(k) for k in list(sys.modules)
                if k.split(".")[0] in {n.split(".")[0] for n in names}}
    sys.path.insert(0, str(folder))
    sys.argv = [str(folder / (names[0].replace(".", "/") + ".py")), *argv]
    try:
        modules = {}
        for name in names:
            try:
                modules[name] = __import__(name, fromlist=["_"])
            except (ImportError, SyntaxError) as exc:
                raise PllbenchError(f"importing {name} from the official checkout {folder} failed: "
                                    f"{type(exc).__name__}: {exc}") from None
            except SystemExit:
                raise PllbenchError(f"the official {name} refused its command line: {' '.join(argv)}") from None
        yield modules
    finally:
        for key in [k for k in set(sys.modules) - before if _from_checkout(sys.modules[k], folder)]:
            del sys.modules[key]
        sys.modules.update(shadowed)
        sys.path[:], sys.argv = saved_path, saved_argv
        for key in set(os.environ) - set(saved_env):  # main.py sets CUDA_VISIBLE_DEVICES on import
            del os.environ[key]
        os.environ.update({k: v for k, v in saved_env.items() if os.environ.get(k) != v})


def _owner(modules: dict, target: str, dataset: str):
    """(object, attribute name) of a Change target."""
    module_name, _, path = target.format(dataset=dataset).partition(":")
    owner = torch if module_name == "torch" else modules.get(module_name)
    if owner is None or not path:
        raise PllbenchError(f"adapter change {target!r}: module {module_name!r} is not among the imported ones")
    *parents, attr = path.split(".")
    for part in parents:
        owner = getattr(owner, part, None)
    if owner is None or not hasattr(owner, attr):
        raise PllbenchError(f"the official code has no {target.format(dataset=dataset)}; the adapter does not fit "
                            "this checkout")
    return owner, attr


def apply_changes(stack: contextlib.ExitStack, session: Session, changes: tuple[Change, ...], builders) -> None:
    """Replace each target by `builders.<build>(session, original)`, restored when `stack` closes."""
    for change in changes:
        owner, attr = _owner(session.modules, change.target, session.dataset)
        replacement = getattr(builders, change.build)(session, getattr(owner, attr))
        if isinstance(owner, type) and attr not in vars(owner):  # inherited (torch.Tensor.cuda): drop ours after
            stack.callback(delattr, owner, attr)
        else:
            stack.callback(setattr, owner, attr, vars(owner)[attr] if isinstance(owner, type) else getattr(owner, attr))
        setattr(owner, attr, replacement)


def deterministic_view(pipeline, keep: tuple[str, ...], images: torch.Tensor) -> torch.Tensor:
    """The images through the steps of a torchvision Compose whose class names are in `keep` (the deterministic
    ones of an official train pipeline, e.g. ToPILImage, Grayscale, ToTensor, Normalize), stacked."""
    from torchvision import transforms

    steps = [step for step in pipeline.transforms if type(step).__name__ in keep]
    if not any(type(step).__name__ == "ToTensor" for step in steps):
        raise PllbenchError(f"the official pipeline has no ToTensor among {', '.join(keep)}; the adapter does not "
                            "fit this checkout")
    view = transforms.Compose(steps)
    return torch.stack([view(image) for image in images])


class TorchOnDevice:
    """Torch as an official module sees it, with its CUDA requests answered by the run's device: `device(...)` is
    the run's device and `cuda.is_available()` says whether that is a GPU; everything else is torch."""

    def __init__(self, device: torch.device):
        self._device = device
        self.cuda = _CudaOnDevice(device)

    def device(self, *args, **kwargs) -> torch.device:
        return self._device

    def __getattr__(self, name):
        return getattr(torch, name)


class _CudaOnDevice:
    def __init__(self, device: torch.device):
        self._device = device

    def is_available(self) -> bool:
        return self._device.type == "cuda"

    def __getattr__(self, name):
        return getattr(torch.cuda, name)


def run_official(adapter, inputs: ParityInputs, variant: str, folder: Path, out: Path,
                 echo: Callable[[str], None]) -> list[dict]:
    """Train the official loop of `adapter` on `inputs`; returns the per-epoch records (also in out/official.jsonl,
    the official prints in out/official.log)."""
    official = adapter.official_dataset(inputs.run.dataset_name)
    changes = adapter.CHANGES + adapter.VARIANTS[variant].changes
    recorder = Recorder(inputs.test_labels, len(inputs.classes), out / "official.jsonl", echo,
                        f"official {adapter.PLLBENCH_METHOD} [{variant}] s{inputs.run.seed}")
    log = io.StringIO()
    try:
        with contextlib.ExitStack() as stack:
            modules = stack.enter_context(official_modules(folder, adapter.MODULES,
                                                           adapter.official_argv(inputs, official)))
            session = Session(inputs, modules, recorder, official, variant)
            apply_changes(stack, session, changes, adapter)
            with contextlib.redirect_stdout(log):
                adapter.train(session)
    finally:
        atomic_write_text(out / "official.log", log.getvalue())
    return recorder.records
