"""Dataset loaders on tiny files fabricated in each dataset's real on-disk format; the synthetic generator."""

from __future__ import annotations

import gzip
import pickle

import numpy as np
import pytest
import torch

from pllbench.data.registry import get_dataset, load_image_data, stratified_subset
from pllbench.errors import PllbenchError


def write_idx(path, array, gz=True):
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if gz else data)


def test_fmnist_idx_files_from_a_root(tmp_path):
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 20), ("t10k", 10)):
        write_idx(raw / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)), gz=prefix == "train")
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10, gz=prefix == "train")
    train, test = get_dataset("fmnist").load(tmp_path, False)
    assert train.images.shape == (20, 1, 28, 28) and train.images.dtype == torch.uint8
    assert test.labels.tolist() == list(range(10))
    assert get_dataset("fmnist").info().classes[9] == "Ankle boot"


def test_fmnist_truncated_file_is_refused(tmp_path):
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix in ("train", "t10k"):
        write_idx(raw / f"{prefix}-images-idx3-ubyte", np.zeros((4, 28, 28)))
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", np.zeros(4))
    blob = gzip.decompress((raw / "train-images-idx3-ubyte").read_bytes())[:-10]
    (raw / "train-images-idx3-ubyte").write_bytes(gzip.compress(blob))
    with pytest.raises(PllbenchError, match="truncated"):
        get_dataset("fmnist").load(tmp_path, False)


@pytest.mark.parametrize("name,folder,train_files,test_file,meta,names_key,labels_key,k", [
    ("cifar10", "cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], "test_batch", "batches.meta",
     "label_names", "labels", 10),
    ("cifar100", "cifar-100-python", ["train"], "test", "meta", "fine_label_names", "fine_labels", 100),
])
def test_cifar_pickle_batches(tmp_path, name, folder, train_files, test_file, meta, names_key, labels_key, k):
    base = tmp_path / folder
    base.mkdir()
    rng = np.random.default_rng(0)
    for fname in train_files + [test_file]:
        batch = {b"data": rng.integers(0, 256, (3, 3072), dtype=np.uint8), labels_key.encode(): [0, 1, k - 1]}
        (base / fname).write_bytes(pickle.dumps(batch))
    (base / meta).write_bytes(pickle.dumps({names_key: [f"c{i}" for i in range(k)]}))
    loader = get_dataset(name)
    train, test = loader.load(tmp_path, False)
    assert train.images.shape == (3 * len(train_files), 3, 32, 32) and test.labels.tolist() == [0, 1, k - 1]
    assert loader.info().classes[k - 1] == f"c{k - 1}"


def test_cifar_refuses_foreign_pickles(tmp_path):
    base = tmp_path / "cifar-10-batches-py"
    base.mkdir()
    for fname in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]:
        (base / fname).write_bytes(pickle.dumps({"x": __import__("os").getcwd}))
    with pytest.raises(pickle.UnpicklingError):
        get_dataset("cifar10").load(tmp_path, False)


def _jpeg(path, size, color):
    from PIL import Image

    Image.new("RGB", size, color).save(path)


def test_flowers_layout(tmp_path, monkeypatch):
    from scipy.io import savemat

    monkeypatch.setenv("PLLBENCH_CACHE", str(tmp_path / "cache"))
    base = tmp_path / "flowers-102"
    (base / "jpg").mkdir(parents=True)
    for i in range(1, 7):
        _jpeg(base / "jpg" / f"image_{i:05d}.jpg", (300 + 10 * i, 260), (40 * i, 0, 0))
    savemat(base / "imagelabels.mat", {"labels": np.array([[1, 2, 3, 1, 2, 102]])})
    savemat(base / "setid.mat", {"trnid": np.array([[1, 2]]), "valid": np.array([[3, 4]]),
                                 "tstid": np.array([[5, 6]])})
    loader = get_dataset("flowers")
    train, test = loader.load(tmp_path, False)
    assert train.images.shape == (2, 3, 256, 256) and train.labels.tolist() == [0, 1]
    assert test.labels.tolist() == [1, 101]
    assert loader.teacher_split(tmp_path, train).labels.tolist() == [0, 1, 2, 0]  # train + val
    assert loader.info().input_size == 224 and len(loader.info().classes) == 102


def test_pets_layout(tmp_path, monkeypatch):
    monkeypatch.setenv("PLLBENCH_CACHE", str(tmp_path / "cache"))
    base = tmp_path / "oxford-iiit-pet"
    (base / "images").mkdir(parents=True)
    (base / "annotations").mkdir()
    rows = {"trainval": ["Abyssinian_1 1 1 1", "american_bulldog_2 2 2 1"], "test": ["Abyssinian_3 1 1 1"]}
    for split, lines in rows.items():
        (base / "annotations" / f"{split}.txt").write_text("\n".join(lines) + "\n")
        for line in lines:
            _jpeg(base / "images" / f"{line.split()[0]}.jpg", (200, 320), (0, 90, 0))
    loader = get_dataset("pets")
    train, test = loader.load(tmp_path, False)
    assert train.images.shape == (2, 3, 256, 256) and train.labels.tolist() == [0, 1]
    assert loader.info().classes[:2] == ["Abyssinian", "American Bulldog"]


def test_missing_data_error_lists_paths(tmp_path):
    with pytest.raises(PllbenchError, match="--download"):
        get_dataset("cifar10").load(tmp_path, False)


def test_synthetic_is_seeded_and_class_structured():
    a = load_image_data("synthetic")
    b = load_image_data("synthetic")
    assert torch.equal(a.train.images, b.train.images) and a.train.images.shape == (64, 3, 16, 16)
    assert a.train.labels.tolist()[:5] == [0, 1, 2, 3, 0]
    other = load_image_data("synthetic:seed=1")
    assert not torch.equal(a.train.images, other.train.images)
    big = load_image_data("synthetic:size=48,classes=10,channels=1")
    assert big.train.images.shape == (64, 1, 48, 48) and big.info.num_classes == 10


def test_stratified_subset():
    labels = torch.arange(100) % 4
    idx = stratified_subset(labels, 5)
    assert len(idx) == 20 and (np.diff(idx) > 0).all()
    assert np.bincount(labels.numpy()[idx]).tolist() == [5, 5, 5, 5]
    assert (idx == stratified_subset(labels, 5)).all()


@pytest.mark.skipif(not __import__("pathlib").Path("/usr/share/datasets/fashion-mnist").is_dir(),
                    reason="Debian's dataset-fashion-mnist is not installed")
def test_real_fashion_mnist_quick_subset():
    data = load_image_data("fmnist", train_per_class=400, test_per_class=200)
    assert data.train.images.shape == (4000, 1, 28, 28) and len(data.test) == 2000
    assert np.bincount(data.train.labels.numpy()).tolist() == [400] * 10
