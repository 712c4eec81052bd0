"""Data loaders (IDX, CIFAR-10 pickle batches, ImageFolder, digits) and label corruption."""

from __future__ import annotations

import gzip
import hashlib
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from singledir.data import (
    DATASET_NAMES,
    LabeledData,
    corrupt_labels,
    load_dataset,
    read_cifar_batch,
    read_idx,
)
from singledir.errors import ConfigError, DataError

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
CIFAR_MEAN = np.array([0.4914, 0.4822, 0.4465], dtype=np.float32)
CIFAR_STD = np.array([0.2470, 0.2435, 0.2616], dtype=np.float32)


def _shared_mnist() -> Path | None:
    roots = [os.environ.get("SINGLEDIR_DATA", ""), str(Path(__file__).parents[2] / "shared/data")]
    for root in roots:
        if root and (Path(root) / "mnist" / "train-images-idx3-ubyte.gz").is_file():
            return Path(root) / "mnist"
    return None


# ------------------------------------------------------------------------------ IDX files


def write_idx(path: Path, arr: np.ndarray, gz: bool) -> Path:
    """Write ``arr`` in IDX format the way the MNIST files are laid out (big-endian)."""
    codes = {np.uint8: 0x08, np.int8: 0x09, np.int16: 0x0B, np.int32: 0x0C, np.float32: 0x0D}
    code = codes[arr.dtype.type]
    header = struct.pack(">BBBB", 0, 0, code, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    body = arr.astype(arr.dtype.newbyteorder(">")).tobytes()
    raw = header + body
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(raw))
    else:
        path.write_bytes(raw)
    return path


def write_mnist(folder: Path, gz: bool, n_train: int = 30, n_test: int = 12, seed: int = 0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    sets = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n, dtype=np.uint8)
        write_idx(folder / f"{prefix}-images-idx3-ubyte", images, gz)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", labels, gz)
        sets["train" if prefix == "train" else "test"] = (images, labels)
    return sets


@settings(max_examples=30, deadline=None)
@given(
    shape=st.lists(st.integers(1, 5), min_size=1, max_size=3),
    dtype=st.sampled_from([np.uint8, np.int8, np.int16, np.int32, np.float32]),
    gz=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_idx_round_trip_any_dtype(tmp_path_factory, shape, dtype, gz, seed):
    rng = np.random.default_rng(seed)
    arr = (rng.normal(size=shape) * 100).astype(dtype)
    path = write_idx(tmp_path_factory.mktemp("idx") / "a-idx", arr, gz)
    out = read_idx(path)
    assert out.dtype == np.dtype(dtype).newbyteorder("=")
    np.testing.assert_array_equal(out, arr)


@pytest.mark.parametrize("gz", [True, False])
@pytest.mark.parametrize("layout", ["", "mnist", "MNIST/raw"])
@pytest.mark.parametrize("via_env", [False, True])
def test_mnist_layouts(tmp_path, monkeypatch, gz, layout, via_env):
    root = tmp_path / "data"
    sets = write_mnist(root / layout if layout else root, gz)
    if via_env:
        monkeypatch.setenv("SINGLEDIR_DATA", str(root))
        kwargs = {}
    else:
        monkeypatch.delenv("SINGLEDIR_DATA", raising=False)
        kwargs = {"data_dir": root}
    for split in ("train", "test"):
        d = load_dataset("mnist", split, **kwargs)
        images, labels = sets[split]
        expected = (images.astype(np.float32) / 255.0 - MNIST_MEAN) / MNIST_STD
        assert isinstance(d, LabeledData)
        assert d.x.dtype == torch.float32 and d.y.dtype == torch.int64
        assert d.x.shape == (len(labels), 1, 28, 28) and d.in_shape == (1, 28, 28)
        np.testing.assert_allclose(d.x[:, 0].numpy(), expected, rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(d.y.numpy(), labels)
        np.testing.assert_array_equal(d.true_y.numpy(), labels)


def test_fashion_mnist_torchvision_layout(tmp_path, monkeypatch):
    monkeypatch.setenv("SINGLEDIR_DATA", str(tmp_path))
    sets = write_mnist(tmp_path / "FashionMNIST" / "raw", gz=False, seed=3)
    d = load_dataset("fashion-mnist", "test")
    images, labels = sets["test"]
    expected = (images.astype(np.float32) / 255.0 - 0.2860) / 0.3530
    np.testing.assert_allclose(d.x[:, 0].numpy(), expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(d.y.numpy(), labels)


def test_missing_files_name_what_and_where(tmp_path, monkeypatch):
    monkeypatch.setenv("SINGLEDIR_DATA", str(tmp_path / "env"))
    (tmp_path / "given").mkdir()  # a folder that exists but lacks the files
    with pytest.raises(DataError) as exc:
        load_dataset("mnist", "train", data_dir=tmp_path / "given")
    msg = str(exc.value)
    assert "train-images-idx3-ubyte" in msg and "train-labels-idx1-ubyte" in msg
    assert str(tmp_path / "given") in msg and str(tmp_path / "env" / "MNIST" / "raw") in msg
    assert "\n" not in msg


def test_truncated_and_foreign_idx_files(tmp_path):
    arr = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28)
    path = write_idx(tmp_path / "x-idx3-ubyte", arr, gz=False)
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(DataError, match="truncated"):
        read_idx(path)
    bad = tmp_path / "bad"
    bad.write_bytes(b"PK\x03\x04 not an idx file")
    with pytest.raises(DataError, match="not an IDX file"):
        read_idx(bad)
    gz = tmp_path / "broken.gz"
    gz.write_bytes(gzip.compress(b"\x00\x00\x08\x01" + b"\x00" * 40)[:-12])
    with pytest.raises(DataError):
        read_idx(gz)


def test_mismatched_image_and_label_counts(tmp_path):
    write_mnist(tmp_path, gz=False, n_train=5)
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(4, dtype=np.uint8), gz=False)
    with pytest.raises(DataError, match="do not match"):
        load_dataset("mnist", "train", data_dir=tmp_path)


def test_real_mnist_when_present():
    folder = _shared_mnist()
    if folder is None:
        pytest.skip("real MNIST not found in $SINGLEDIR_DATA or ../shared/data")
    # The canonical MD5s of the uncompressed files (from the data README) vouch for the files;
    # a separate parse (fixed 16/8-byte headers) vouches for the reader.
    raw_images = gzip.decompress((folder / "t10k-images-idx3-ubyte.gz").read_bytes())
    raw_labels = gzip.decompress((folder / "t10k-labels-idx1-ubyte.gz").read_bytes())
    assert hashlib.md5(raw_images).hexdigest() == "2646ac647ad5339dbf082846283269ea"
    assert hashlib.md5(raw_labels).hexdigest() == "27ae3e4e09519cfbb04c329615203637"
    test = load_dataset("mnist", "test", data_dir=folder)
    ref_x = np.frombuffer(raw_images, dtype=np.uint8, offset=16).reshape(10000, 28, 28)
    ref_y = np.frombuffer(raw_labels, dtype=np.uint8, offset=8)
    np.testing.assert_array_equal(test.true_y.numpy(), ref_y)
    np.testing.assert_allclose(
        test.x[:, 0].numpy(), (ref_x / 255.0 - MNIST_MEAN) / MNIST_STD, rtol=1e-5, atol=1e-5
    )
    train = load_dataset("mnist", "train", data_dir=folder)
    assert train.x.shape == (60000, 1, 28, 28)
    # Published class counts of the MNIST training set.
    counts = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert np.bincount(train.y.numpy()).tolist() == counts
    assert abs(float(train.x.mean())) < 1e-3 and abs(float(train.x.std()) - 1.0) < 1e-3


# ------------------------------------------------------------------------------ CIFAR-10


def write_cifar(root: Path, n: int = 3, protocol: int = 2, seed: int = 0, bytes_keys=True):
    """A tiny cifar-10-batches-py archive in the original format (dicts of bytes keys)."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    written = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n).tolist()
        k = (lambda s: s.encode()) if bytes_keys else (lambda s: s)
        batch = {
            k("batch_label"): f"{name} of 6".encode(),
            k("labels"): labels,
            k("data"): data,
            k("filenames"): [f"img_{i}.png".encode() for i in range(n)],
        }
        with open(folder / name, "wb") as fh:
            pickle.dump(batch, fh, protocol=protocol)
        written[name] = (data, labels)
    meta = {b"label_names": [b"airplane", b"automobile"], b"num_cases_per_batch": n}
    with open(folder / "batches.meta", "wb") as fh:
        pickle.dump(meta, fh, protocol=protocol)
    return written


@pytest.mark.parametrize("protocol,bytes_keys", [(2, True), (5, False), (4, True)])
def test_cifar_pickle_batches(tmp_path, protocol, bytes_keys):
    written = write_cifar(tmp_path, protocol=protocol, bytes_keys=bytes_keys)
    train = load_dataset("cifar10", "train", data_dir=tmp_path)
    test = load_dataset("cifar10", "test", data_dir=tmp_path / "cifar-10-batches-py")
    ref = np.concatenate([written[f"data_batch_{i}"][0] for i in range(1, 6)])
    ref_y = sum((written[f"data_batch_{i}"][1] for i in range(1, 6)), [])
    assert train.x.shape == (15, 3, 32, 32) and train.in_shape == (3, 32, 32)
    # Reference: channel-major rows of 1024 pixels (R, then G, then B), normalized per channel.
    for i in range(15):
        for c in range(3):
            plane = ref[i, c * 1024 : (c + 1) * 1024].reshape(32, 32) / 255.0
            expected = (plane - CIFAR_MEAN[c]) / CIFAR_STD[c]
            np.testing.assert_allclose(train.x[i, c].numpy(), expected, rtol=1e-5, atol=1e-5)
    assert train.y.tolist() == ref_y
    assert test.y.tolist() == written["test_batch"][1]


class _Payload:
    """Unpickling this would create a file: the restricted unpickler must refuse it."""

    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self):
        return (os.mkdir, (self.target,))


def test_cifar_refuses_pickled_code(tmp_path):
    write_cifar(tmp_path)
    target = tmp_path / "pwned"
    evil = {
        b"data": np.zeros((1, 3072), dtype=np.uint8),
        b"labels": [0],
        b"x": _Payload(str(target)),
    }
    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(pickle.dumps(evil, protocol=2))
    with pytest.raises(DataError, match="refusing to unpickle"):
        load_dataset("cifar10", "test", data_dir=tmp_path)
    assert not target.exists()


def test_cifar_damaged_batches(tmp_path):
    write_cifar(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "test_batch"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(DataError):
        read_cifar_batch(path)
    path.write_bytes(pickle.dumps({b"data": np.zeros((2, 10), np.uint8), b"labels": [0, 1]}))
    with pytest.raises(DataError, match="3072"):
        read_cifar_batch(path)
    path.write_bytes(pickle.dumps([1, 2, 3]))
    with pytest.raises(DataError):
        read_cifar_batch(path)


def test_cifar_missing_names_the_batches(tmp_path):
    (tmp_path / "cifar-10-batches-py").mkdir()
    with pytest.raises(DataError, match="data_batch_1"):
        load_dataset("cifar10", "train", data_dir=tmp_path)


# ------------------------------------------------------------------------------ ImageFolder


def _write_png(path: Path, color: tuple[int, int, int], size=(20, 24)) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)


def test_imagefolder_tree(tmp_path):
    colors = {"cat": (200, 10, 30), "dog": (0, 128, 255), "fox": (90, 90, 90)}
    for split, n in (("train", 4), ("val", 2)):
        for cls, color in colors.items():
            for i in range(n):
                _write_png(tmp_path / "imagenet" / split / cls / f"{i}.png", color)
    val = load_dataset("imagenet", "test", data_dir=tmp_path, image_size=16)
    train = load_dataset("imagenet", "train", data_dir=tmp_path, image_size=16, corrupt=1.0)
    assert val.num_classes == 3 and val.in_shape == (3, 16, 16) and val.x is None
    assert len(val) == 6 and len(train) == 12
    assert val.classes == ["cat", "dog", "fox"]
    val.num_workers = 0
    xs, ys = zip(*val.loader(batch_size=4), strict=True)
    x, y = torch.cat(xs), torch.cat(ys)
    assert x.shape == (6, 3, 16, 16)
    assert y.tolist() == [0, 0, 1, 1, 2, 2]
    mean = np.array([0.485, 0.456, 0.406])
    std = np.array([0.229, 0.224, 0.225])
    for i, cls in enumerate(["cat", "cat", "dog", "dog", "fox", "fox"]):
        # A uniform image stays uniform under resize and crop: check the normalization.
        expected = (np.array(colors[cls]) / 255.0 - mean) / std
        np.testing.assert_allclose(x[i].mean(dim=(1, 2)).numpy(), expected, atol=1e-4)
    # Corruption reaches the labels the loader yields.
    assert train.replaced is not None and bool(train.replaced.all())
    train.num_workers = 0
    loaded = torch.cat([yb for _, yb in train.loader(batch_size=12)])
    assert loaded.tolist() == train.y.tolist()
    assert train.true_y.tolist() == [0] * 4 + [1] * 4 + [2] * 4


def test_imagefolder_missing(tmp_path):
    with pytest.raises(DataError, match="imagenet"):
        load_dataset("imagenet", "train", data_dir=tmp_path)


# ------------------------------------------------------------------------------ digits


def test_digits_fixed_stratified_split():
    from sklearn.datasets import load_digits

    bunch = load_digits()
    train = load_dataset("digits", "train")
    test = load_dataset("digits", "test")
    assert len(train) + len(test) == 1797 and train.in_shape == (1, 8, 8)
    # Undo the normalization and compare the union with scikit-learn's own copy.
    mean, std = 0.3057, 0.3762
    pixels = torch.cat([train.x, test.x]).reshape(-1, 64).numpy() * std + mean
    ours = np.rint(pixels * 16).astype(int)
    theirs = bunch.data.astype(int)
    ours_rows = sorted(map(tuple, np.column_stack([ours, np.concatenate([train.y, test.y])])))
    theirs_rows = sorted(map(tuple, np.column_stack([theirs, bunch.target])))
    assert ours_rows == theirs_rows
    counts = np.bincount(bunch.target)
    assert np.bincount(test.y.numpy()).tolist() == [int(round(0.25 * c)) for c in counts]
    again = load_dataset("digits", "test")
    assert torch.equal(again.x, test.x) and torch.equal(again.y, test.y)


def test_train_size_is_a_seeded_subset():
    full = load_dataset("digits", "train")
    a = load_dataset("digits", "train", train_size=100, seed=1)
    b = load_dataset("digits", "train", train_size=100, seed=1)
    c = load_dataset("digits", "train", train_size=100, seed=2)
    assert len(a) == 100 and torch.equal(a.indices, b.indices)
    assert not torch.equal(a.indices, c.indices)
    assert torch.equal(a.x, full.x[a.indices]) and torch.equal(a.y, full.y[a.indices])
    test = load_dataset("digits", "test", train_size=100)
    assert len(test) == 450  # train_size leaves the test split whole
    with pytest.raises(ConfigError, match="train_size"):
        load_dataset("digits", "train", train_size=5000)


def test_loader_yields_everything_in_order():
    d = load_dataset("digits", "test")
    xs, ys = zip(*d.loader(batch_size=128), strict=True)
    assert torch.equal(torch.cat(xs), d.x) and torch.equal(torch.cat(ys), d.y)
    shuffled = torch.cat([y for _, y in d.loader(batch_size=64, shuffle=True, seed=3)])
    assert sorted(shuffled.tolist()) == sorted(d.y.tolist())


# ------------------------------------------------------------------------------ corruption


@pytest.mark.parametrize("p", [0.1, 0.5, 1.0])
def test_corruption_statistics(p):
    n, classes = 20000, 10
    labels = np.random.default_rng(7).integers(0, classes, size=n)
    new, replaced = corrupt_labels(labels, p, classes, seed=11)
    assert int(replaced.sum()) == round(p * n)
    changed = new != labels
    assert not changed[~replaced].any()
    # A redrawn label differs from the true one with probability 1 - 1/C.
    expected = p * (1 - 1 / classes)
    sd = np.sqrt(round(p * n) * (1 / classes) * (1 - 1 / classes)) / n
    assert abs(changed.mean() - expected) < 5 * sd + 1e-12
    # Redrawn labels are uniform over the classes.
    freq = np.bincount(new[replaced], minlength=classes) / replaced.sum()
    assert np.all(np.abs(freq - 1 / classes) < 0.02)
    again, _ = corrupt_labels(labels, p, classes, seed=11)
    other, _ = corrupt_labels(labels, p, classes, seed=12)
    assert np.array_equal(again, new) and not np.array_equal(other, new)


@settings(max_examples=50, deadline=None)
@given(
    n=st.integers(0, 300),
    p=st.floats(0, 1),
    classes=st.integers(2, 20),
    seed=st.integers(0, 2**31),
)
def test_corruption_properties(n, p, classes, seed):
    labels = np.random.default_rng(seed).integers(0, classes, size=n)
    new, replaced = corrupt_labels(labels, p, classes, seed)
    assert new.dtype == np.int64 and new.shape == labels.shape
    assert int(replaced.sum()) == round(p * n)
    assert np.array_equal(new[~replaced], labels[~replaced])
    assert n == 0 or (new.min() >= 0 and new.max() < classes)


def test_dataset_corruption_recorded_and_test_untouched():
    d = load_dataset("digits", "train", corrupt=0.6, corrupt_seed=4)
    assert d.corrupt == 0.6 and d.corrupt_seed == 4
    assert d.replaced is not None and int(d.replaced.sum()) == round(0.6 * len(d))
    assert torch.equal(d.y[~d.replaced], d.true_y[~d.replaced])
    clean = load_dataset("digits", "train")
    assert torch.equal(clean.y, d.true_y)
    assert abs(d.changed_fraction - 0.6 * 0.9) < 0.05
    t = load_dataset("digits", "test", corrupt=1.0, corrupt_seed=4)
    assert t.corrupt == 0.0 and torch.equal(t.y, t.true_y)


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"name": "svhn"}, ConfigError, "unknown dataset"),
        ({"split": "validation"}, ConfigError, "unknown split"),
        ({"corrupt": 1.5}, ConfigError, r"outside \[0, 1\]"),
        ({"corrupt": -0.1}, ConfigError, r"outside \[0, 1\]"),
        ({"corrupt": "lots"}, ConfigError, "not a number"),
        ({"train_size": 0}, ConfigError, "train_size"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    args = {"name": "digits", "split": "train", **kwargs}
    name, split = args.pop("name"), args.pop("split")
    with pytest.raises(error, match=match) as exc:
        load_dataset(name, split, **args)
    assert "\n" not in str(exc.value)


def test_dataset_names():
    assert DATASET_NAMES == ("digits", "mnist", "fashion-mnist", "cifar10", "imagenet")
