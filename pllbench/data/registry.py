"""Finding datasets (the built-ins under datasets/ and the entry-point group `pllbench.datasets`) and the in-memory
image set every run works on (uint8 tensors, labels kept apart). The contract itself is pllbench/dataset.py."""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..dataset import Dataset, DatasetInfo, Split, registered_datasets
from ..errors import PllbenchError
from ..plugins import load_entry_points
from ..util import sha256_array

__all__ = ["Dataset", "DatasetInfo", "ImageData", "Split", "data_root", "dataset_class", "dataset_names",
           "get_dataset", "load_datasets", "load_image_data", "paper_datasets", "parse_dataset_name",
           "stratified_subset"]


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


_datasets_loaded = False


def load_datasets() -> None:
    """Import the built-in datasets, then every entry point of the group `pllbench.datasets` (once)."""
    global _datasets_loaded
    if _datasets_loaded:
        return
    _datasets_loaded = True
    import pllbench.datasets  # noqa: F401  (each module registers its datasets)

    try:
        load_entry_points("pllbench.datasets", "dataset")
    except PllbenchError:
        _datasets_loaded = False
        raise


def dataset_names() -> list[str]:
    load_datasets()
    return sorted(registered_datasets())


def dataset_class(name: str) -> type[Dataset]:
    """The registered class of the bare name `name`."""
    load_datasets()
    known = registered_datasets()
    if name not in known:
        raise PllbenchError(f"unknown dataset {name!r}; choose one of: {', '.join(sorted(known))}")
    return known[name]


def paper_datasets() -> list[str]:
    """The datasets of the CAD paper, in its tables' column order (`Dataset.paper_column`)."""
    load_datasets()
    columns = [(cls.paper_column, name) for name, cls in registered_datasets().items() if cls.paper_column is not None]
    return [name for _, name in sorted(columns)]


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


def dataset_options(cls: type[Dataset]) -> list[str] | None:
    """The options a dataset class takes (its constructor's named parameters), or None when it takes any (**kw)."""
    if cls.__init__ is object.__init__:
        return []
    params = list(inspect.signature(cls.__init__).parameters.values())[1:]
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    return [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


def get_dataset(text: str) -> Dataset:
    """The loader instance for `text` (a registered name, optionally with options); an unknown option or a bad
    value is one line that names the options the dataset takes."""
    name, options = parse_dataset_name(text)
    cls = dataset_class(name)
    known = dataset_options(cls)
    takes = f"its options: {', '.join(known)}" if known else "it takes no options"
    unknown = [key for key in options if known is not None and key not in known]
    if unknown:
        raise PllbenchError(f"dataset {name!r} has no option {', '.join(map(repr, unknown))} ({text!r}); {takes}")
    try:
        return cls(**options)
    except (TypeError, ValueError) as exc:
        given = ",".join(f"{k}={v}" for k, v in options.items())
        raise PllbenchError(f"bad options for dataset {name!r} ({given}): {exc}; {takes}") from None


def data_root(explicit: str | os.PathLike | None) -> Path | None:
    if explicit:
        return Path(explicit)
    env = os.environ.get("PLLBENCH_DATA")
    return Path(env) if env else None


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
