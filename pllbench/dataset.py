"""The dataset contract (docs/adding-a-dataset.md): the base class a dataset file subclasses, its registration, and the
helpers a loader uses (missing and corrupt files, downloads, JPEG decoding).

A dataset file imports only this module (and pllbench.errors / util / view_families); pllbench.data.registry finds the
registered datasets (the built-ins under datasets/, then the entry-point group `pllbench.datasets`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from .errors import PllbenchError, exception_text
from .plugins import SAFE_NAME
from .views.families import TEACHER_AUGMENTS, view_family


@dataclass
class Split:
    """Images as uint8 N×C×H×W and their true labels (read only by the teacher and the evaluator)."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: np.ndarray) -> Split:
        index_t = torch.as_tensor(index, dtype=torch.long)
        return Split(self.images[index_t], self.labels[index_t])


@dataclass
class DatasetInfo:
    """Static facts of a dataset: what a view pipeline and a network need to know."""

    name: str
    num_classes: int
    channels: int  # stored channels (1 for Fashion-MNIST, replicated to 3 by the views)
    input_size: int  # model input side
    mean: tuple[float, ...]
    std: tuple[float, ...]
    view_family: str  # a registered ViewFamily: "28", "32" or "224" (docs/spec/protocols.md §3), or one a dataset adds
    classes: list[str] = field(default_factory=list)

    def __post_init__(self):
        view_family(self.view_family)  # an unknown family fails here, in one line
        if self.channels not in (1, 3) or len(self.mean) != 3 or len(self.std) != 3:
            raise PllbenchError(f"dataset {self.name!r}: channels must be 1 or 3 and mean / std have 3 values "
                                f"(got {self.channels}, {len(self.mean)}, {len(self.std)})")


# The fields of a candidate-teacher recipe (docs/spec/candidates.md §3); seed, SGD-Nesterov, warm-up and mode are
# common.
TEACHER_KEYS = ("arch", "epochs", "batch_size", "lr", "weight_decay", "augment", "label_smoothing")


class Dataset(ABC):
    """A dataset: loaders, facts, and what each preset needs of it. Subclass, set the class attributes, implement
    `info` and `load`, and decorate with `@register_dataset("name")`."""

    name: ClassVar[str] = ""  # set by @register_dataset
    # The presets made for this dataset: the one record of which preset runs which dataset.
    presets: ClassVar[tuple[str, ...]] = ()
    rate: ClassVar[float] = 1.0  # candidate rate r of the ID generator (docs/spec/candidates.md §2)
    # Candidate-teacher recipe per preset ("*": any preset not named); a preset it does not name uses the preset's
    # own teacher (pllbench.presets.TEACHERS: quick, smoke), and a preset with neither is refused.
    teachers: ClassVar[dict[str, dict]] = {}
    # Preset fields replaced for this dataset, per preset (the paper's per-dataset backbone and batch size).
    preset_settings: ClassVar[dict[str, dict]] = {}
    # Its column in the CAD paper's tables (0 first); None: not a paper dataset. Leaderboards order columns so.
    paper_column: ClassVar[int | None] = None

    @abstractmethod
    def info(self) -> DatasetInfo:
        """Name, classes, channels, input size, mean / std, view family (may read what `load` found)."""

    @abstractmethod
    def load(self, root: Path | None, download: bool) -> tuple[Split, Split]:
        """(train, test) as uint8 tensors. `root`: --data-root / $PLLBENCH_DATA or None; nothing is downloaded
        without `download`. A missing or damaged file raises PllbenchError (missing_dataset_error, ...)."""

    def teacher_split(self, root: Path | None, train: Split) -> Split:
        """What the candidate teacher trains on; `train` (the full train split) unless the protocol says more."""
        return train

    def options(self) -> dict:
        """The constructor's options (`name:key=value,...` on the command line), part of the dataset's key."""
        return {}

    def key(self) -> dict:
        """The label-free identity of the data, in every teacher, candidate and run key."""
        return {"name": self.name, "options": self.options()}


_DATASETS: dict[str, type[Dataset]] = {}


def register_dataset(name: str):
    """Class decorator: `@register_dataset("cifar10")`. The class is checked against the contract here, so a broken
    or duplicate dataset fails in one line when its module is imported."""

    def wrap(cls):
        where = f"{cls.__module__}.{cls.__qualname__}"
        problem = contract_problem(name, cls)
        if problem:
            raise PllbenchError(f"dataset {name!r} ({where}) {problem}")
        old = _DATASETS.get(name)
        if old is not None and (old.__module__, old.__qualname__) != (cls.__module__, cls.__qualname__):
            raise PllbenchError(f"dataset {name!r} registered twice: by {old.__module__}.{old.__qualname__} and by "
                                f"{where}; rename one")
        taken = {c.paper_column: n for n, c in _DATASETS.items() if n != name and c.paper_column is not None}
        if cls.paper_column is not None and cls.paper_column in taken:
            raise PllbenchError(f"dataset {name!r} ({where}) takes paper column {cls.paper_column}, which is "
                                f"{taken[cls.paper_column]!r}'s")
        cls.name = name
        _DATASETS[name] = cls
        return cls

    return wrap


def contract_problem(name: str, cls) -> str | None:
    """What `cls` gets wrong about the contract (a phrase), or None."""
    if not SAFE_NAME.fullmatch(name):
        return f"needs a name matching {SAFE_NAME.pattern} (it names run folders)"
    if not (isinstance(cls, type) and issubclass(cls, Dataset)):
        return "must subclass pllbench.dataset.Dataset"
    if cls.__abstractmethods__:
        return f"does not implement {', '.join(sorted(cls.__abstractmethods__))}"
    presets = cls.presets
    if not isinstance(presets, (tuple, list)) or not presets or not all(isinstance(p, str) for p in presets):
        return "must name the presets made for it: presets = ('paper', 'smoke', ...)"
    if not (isinstance(cls.rate, (int, float)) and 0 < cls.rate <= 1):
        return f"needs a candidate rate in (0, 1], not {cls.rate!r}"
    for preset, recipe in cls.teachers.items():
        if preset != "*" and preset not in presets:
            return f"has a teacher for preset {preset!r}, which is not in its presets"
        if not isinstance(recipe, dict) or set(recipe) != set(TEACHER_KEYS):
            return f"teacher recipe for {preset!r} must have exactly the keys {', '.join(TEACHER_KEYS)}"
        if recipe["augment"] not in TEACHER_AUGMENTS:
            return f"teacher augment {recipe['augment']!r} is not one of {', '.join(TEACHER_AUGMENTS)}"
    for preset, settings in cls.preset_settings.items():
        if preset not in presets or not isinstance(settings, dict):
            return f"has preset_settings for {preset!r}, which is not in its presets (or not a dict)"
    if cls.paper_column is not None and not (isinstance(cls.paper_column, int) and cls.paper_column >= 0):
        return f"needs paper_column None or an int >= 0, not {cls.paper_column!r}"
    return None


def registered_datasets() -> dict[str, type[Dataset]]:
    """The datasets registered so far (name → class). pllbench.data.registry.dataset_names() imports them all first."""
    return dict(_DATASETS)


# ------------------------------------------------------------------------------------------ helpers for loaders


def missing_dataset_error(name: str, tried: list[Path | str], hint: str = "") -> PllbenchError:
    where = ", ".join(str(p) for p in tried) or "no data root given"
    extra = f" {hint}" if hint else ""
    return PllbenchError(
        f"dataset {name!r} not found (tried: {where}); pass --data-root DIR (or set PLLBENCH_DATA) "
        f"to where it lives, or add --download to fetch it.{extra}"
    )


def torchvision_download(name: str, tv_class: str, root: Path, **kwargs) -> None:
    """torchvision's downloader for `--download`, its failures (no network, a mirror down) as one line."""
    import torchvision

    try:
        getattr(torchvision.datasets, tv_class)(str(root), download=True, **kwargs)
    except (OSError, RuntimeError, ValueError) as exc:
        reason = exception_text(exc)[:200]
        raise PllbenchError(f"downloading {name!r} into {root} failed ({reason}); check the network, or copy the "
                            "dataset there and rerun without --download (files already fetched are kept and "
                            "checked on the next run)") from exc


def corrupt_file_error(path: Path, why: str | BaseException) -> PllbenchError:
    """A data file that exists but cannot be parsed (`why`: a reason, or the parser's exception): most often the
    remains of an interrupted download."""
    why = exception_text(why) if isinstance(why, BaseException) else why
    return PllbenchError(f"{path} is truncated or corrupt ({why}), probably from an interrupted download; delete it "
                         f"and rerun with --download (or copy an intact file there)")


def decode_square(paths: list[Path], side: int = 256, cache_file: Path | None = None) -> torch.Tensor:
    """Decode image files once: shorter side to `side` (aspect kept), centre `side`×`side`, uint8 N×3×s×s.

    The result is cached (atomically) so later runs skip the JPEG decoding.
    """
    from PIL import Image

    from .util import atomic_write_bytes

    if cache_file is not None and cache_file.is_file():
        array = np.load(cache_file)
        if array.shape == (len(paths), 3, side, side):
            return torch.from_numpy(array)
    out = np.empty((len(paths), 3, side, side), dtype=np.uint8)
    for n, path in enumerate(paths):
        try:
            with Image.open(path) as img:
                img = img.convert("RGB")
        except (OSError, SyntaxError, ValueError) as exc:
            if getattr(exc, "errno", None) is not None:  # a real I/O error (permission, ...), not a damaged image
                raise
            raise corrupt_file_error(path, exc) from None
        scale = side / min(img.size)
        w, h = max(side, round(img.size[0] * scale)), max(side, round(img.size[1] * scale))
        img = img.resize((w, h), Image.BILINEAR)
        left, top = (w - side) // 2, (h - side) // 2
        img = img.crop((left, top, left + side, top + side))
        out[n] = np.asarray(img, dtype=np.uint8).transpose(2, 0, 1)
    if cache_file is not None:
        import io

        buffer = io.BytesIO()
        np.save(buffer, out)
        atomic_write_bytes(cache_file, buffer.getvalue())
    return torch.from_numpy(out)
