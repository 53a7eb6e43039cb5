"""Dataset registry and the in-memory image set every run works on (uint8 tensors, labels kept apart)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .errors import PllbenchError, exception_text
from .util import sha256_array


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
    view_family: str  # "28", "32" or "224" (protocols.md §3)
    classes: list[str] = field(default_factory=list)


@dataclass
class ImageData:
    info: DatasetInfo
    train: Split
    test: Split
    train_index: np.ndarray  # rows of the full train split kept by the preset (ascending)
    test_index: np.ndarray

    @property
    def train_spec(self) -> dict:
        """Label-free identity of the train rows, used in artifact keys."""
        return {"split": "train", "n": int(len(self.train_index)), "index_sha256": sha256_array(self.train_index)}


_DATASETS: dict[str, type] = {}


def register_dataset(name: str):
    def wrap(cls):
        cls.name = name
        _DATASETS[name] = cls
        return cls

    return wrap


def dataset_names() -> list[str]:
    _load_builtin()
    return sorted(_DATASETS)


def _load_builtin() -> None:
    import pllbench.datasets  # noqa: F401  (registers the built-in loaders)


def parse_dataset_name(text: str) -> tuple[str, dict]:
    """`name` or `name:key=value,key=value` (options for the synthetic generator)."""
    name, _, rest = text.partition(":")
    options: dict = {}
    if rest:
        for item in rest.split(","):
            key, eq, value = item.partition("=")
            if not eq or not key:
                raise PllbenchError(f"malformed dataset option {item!r} in {text!r}: expected key=value")
            options[key.strip()] = value.strip()
    return name.strip(), options


def get_dataset(text: str):
    """The loader instance for `text` (a registered name, optionally with options)."""
    _load_builtin()
    name, options = parse_dataset_name(text)
    if name not in _DATASETS:
        raise PllbenchError(f"unknown dataset {name!r}; choose one of: {', '.join(sorted(_DATASETS))}")
    try:
        return _DATASETS[name](**options)
    except (TypeError, ValueError) as exc:
        raise PllbenchError(f"bad options for dataset {name!r}: {exc}") from None


def data_root(explicit: str | os.PathLike | None) -> Path | None:
    if explicit:
        return Path(explicit)
    env = os.environ.get("PLLBENCH_DATA")
    return Path(env) if env else None


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


def stratified_subset(labels: torch.Tensor, per_class: int, seed: int = 0) -> np.ndarray:
    """Per class, the first `per_class` of a default_rng(seed) permutation of its indices; sorted."""
    labels_np = labels.numpy()
    rng = np.random.default_rng(seed)
    keep = []
    for c in range(int(labels_np.max()) + 1):
        members = np.flatnonzero(labels_np == c)
        keep.append(members[rng.permutation(len(members))[:per_class]])
    return np.sort(np.concatenate(keep))


def load_image_data(dataset: str, root=None, download: bool = False, train_per_class: int | None = None,
                    test_per_class: int | None = None) -> ImageData:
    """Load a dataset and apply the preset's stratified subsets (labels used only to pick rows)."""
    loader = get_dataset(dataset)
    train, test = loader.load(data_root(root), download)
    info = loader.info()
    train_index = np.arange(len(train))
    test_index = np.arange(len(test))
    if train_per_class:
        train_index = stratified_subset(train.labels, train_per_class)
        train = train.subset(train_index)
    if test_per_class:
        test_index = stratified_subset(test.labels, test_per_class)
        test = test.subset(test_index)
    return ImageData(info, train, test, train_index, test_index)


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
