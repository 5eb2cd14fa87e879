"""Offline datasets (digits, digits28, MNIST-1D, MNIST files) and device partitioning."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedledger.errors import ConfigError, DecodeError, UsageError
from fedledger.fl.data import (
    PARTITION_SCHEMES,
    Dataset,
    dataset_hash,
    label_entropy,
    label_histogram,
    load_digits_split,
    partition,
)
from fedledger.fl.datasets import (
    DATASETS,
    DEFAULT_DATASET,
    MNIST_IDX_FILES,
    DatasetInfo,
    gaussian_filter1d,
    load_dataset,
    make_mnist1d,
    read_idx,
    resize_bilinear,
)
from fedledger.fl.datasets import (
    test_set_hash as hash_of_test_set,
)

# --- registry --------------------------------------------------------------------------------


def test_registry_names_and_default() -> None:
    assert set(DATASETS) == {"digits", "digits28", "mnist1d", "mnist"}
    assert DEFAULT_DATASET == "digits"
    with pytest.raises(TypeError):
        DATASETS["x"] = DATASETS["digits"]  # type: ignore[index]


def test_unknown_dataset_lists_known_names() -> None:
    with pytest.raises(UsageError, match="unknown dataset 'cifar'.*digits.*digits28.*mnist1d.*mnist"):
        load_dataset("cifar")
    with pytest.raises(UsageError, match="seed"):
        load_dataset("digits", seed=-1)


def _check_basic(train: Dataset, test: Dataset, info: DatasetInfo, shape: tuple[int, ...]) -> None:
    assert info.input_shape == shape
    assert info.num_classes == 10
    assert train.x.shape[1:] == shape and test.x.shape[1:] == shape
    assert train.x.dtype == np.float32 and test.x.dtype == np.float32
    assert train.y.dtype == np.int64 and test.y.dtype == np.int64
    assert (info.train_size, info.test_size) == (len(train), len(test))
    assert info.test_hash == hash_of_test_set(test) == dataset_hash(test)
    assert set(np.unique(test.y).tolist()) == set(range(10))
    assert info.to_dict()["test_hash"] == info.test_hash.hex()


# --- digits and digits28 ---------------------------------------------------------------------


def test_digits_is_the_existing_split() -> None:
    train, test, info = load_dataset("digits", seed=3)
    _check_basic(train, test, info, (1, 8, 8))
    ref_train, ref_test = load_digits_split(seed=3)
    assert dataset_hash(train) == dataset_hash(ref_train)
    assert dataset_hash(test) == dataset_hash(ref_test)
    assert "seed 3" in info.source


def test_digits28_keeps_labels_and_split_of_digits() -> None:
    train8, test8, _ = load_dataset("digits", seed=1)
    train, test, info = load_dataset("digits28", seed=1)
    _check_basic(train, test, info, (1, 28, 28))
    assert np.array_equal(train.y, train8.y) and np.array_equal(test.y, test8.y)
    assert float(train.x.min()) >= 0.0 and float(train.x.max()) <= 1.0
    # Corners sample the corner pixels exactly (half-pixel centres, clamped edges).
    assert np.array_equal(train.x[:, :, 0, 0], train8.x[:, :, 0, 0])
    assert np.array_equal(test.x[:, :, -1, -1], test8.x[:, :, -1, -1])
    # Mean intensity is essentially preserved by interpolation.
    assert np.allclose(train.x.mean(axis=(1, 2, 3)), train8.x.mean(axis=(1, 2, 3)), atol=0.05)
    again, _, info2 = load_dataset("digits28", seed=1)
    assert dataset_hash(again) == dataset_hash(train) and info2.test_hash == info.test_hash
    assert load_dataset("digits28", seed=2)[2].test_hash != info.test_hash


def test_resize_bilinear_basics() -> None:
    const = np.full((2, 3, 5), 0.25, dtype=np.float32)
    assert np.array_equal(resize_bilinear(const, 7, 4), np.full((2, 7, 4), 0.25, np.float32))
    ramp = np.tile(np.arange(4, dtype=np.float64), (4, 1))  # value = column index
    up = resize_bilinear(ramp, 4, 8)
    # Half-pixel centres: output column j samples input x = (j + 0.5) / 2 - 0.5, clamped.
    expected = np.clip((np.arange(8) + 0.5) / 2 - 0.5, 0, 3)
    assert np.allclose(up, np.tile(expected, (4, 1)))
    assert np.array_equal(resize_bilinear(ramp, 4, 4), ramp.astype(np.float32))
    with pytest.raises(UsageError):
        resize_bilinear(np.zeros(3), 2, 2)


# --- MNIST-1D --------------------------------------------------------------------------------


def test_mnist1d_shapes_balance_and_scaling() -> None:
    train, test, info = load_dataset("mnist1d")
    _check_basic(train, test, info, (1, 40))
    assert (len(train), len(test)) == (4000, 1000)
    counts = np.bincount(np.concatenate([train.y, test.y]), minlength=10)
    assert counts.tolist() == [500] * 10
    assert np.bincount(train.y, minlength=10).min() > 350  # shuffled, roughly balanced
    both = np.concatenate([train.x, test.x])
    assert np.isfinite(both).all()
    assert abs(float(both.mean())) < 1e-3 and abs(float(both.std()) - 1.0) < 1e-3


def test_mnist1d_is_deterministic_and_seeded() -> None:
    a_train, a_test = make_mnist1d()
    b_train, b_test = make_mnist1d()
    assert dataset_hash(a_train) == dataset_hash(b_train)
    assert dataset_hash(a_test) == dataset_hash(b_test)
    a_train.x[0, 0, 0] = 99.0  # callers get copies: the cache is not affected
    assert dataset_hash(make_mnist1d()[0]) == dataset_hash(b_train)
    # The registry entry is the canonical dataset, whatever the split seed.
    assert load_dataset("mnist1d", seed=7)[2].test_hash == hash_of_test_set(b_test)
    other_train, _ = make_mnist1d(num_samples=200, seed=1)
    small_train, _ = make_mnist1d(num_samples=200, seed=2)
    assert len(other_train) == 160
    assert dataset_hash(other_train) != dataset_hash(small_train)
    with pytest.raises(UsageError):
        make_mnist1d(train_split=1.0)
    with pytest.raises(UsageError):
        make_mnist1d(padding=(10, 5))


def test_mnist1d_is_learnable() -> None:
    from sklearn.linear_model import LogisticRegression

    train, test, _ = load_dataset("mnist1d")
    clf = LogisticRegression(max_iter=500)
    clf.fit(train.x.reshape(len(train), -1), train.y)
    accuracy = clf.score(test.x.reshape(len(test), -1), test.y)
    # Chance is 10%; the paper reports about 32% for logistic regression.
    assert accuracy > 0.25


def test_gaussian_filter_matches_scipy() -> None:
    ndimage = pytest.importorskip("scipy.ndimage")
    noise = np.random.default_rng(0).standard_normal((3, 72))
    for row in noise:
        assert np.allclose(gaussian_filter1d(row, 2.0), ndimage.gaussian_filter(row, 2), atol=1e-12)
    assert np.allclose(gaussian_filter1d(noise, 2.0), [ndimage.gaussian_filter(r, 2) for r in noise])


# --- MNIST from local files ------------------------------------------------------------------


def _idx_bytes(array: np.ndarray) -> bytes:
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def _fake_mnist(n_train: int = 30, n_test: int = 10) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(5)
    return {
        "x_train": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "y_train": np.arange(n_train, dtype=np.uint8) % 10,
        "x_test": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "y_test": np.arange(n_test, dtype=np.uint8) % 10,
    }


def _write_idx(directory: Path, arrays: dict[str, np.ndarray], gz: bool) -> None:
    keys = ("x_train", "y_train", "x_test", "y_test")
    for name, key in zip(MNIST_IDX_FILES, keys, strict=True):
        data = _idx_bytes(arrays[key])
        if gz:
            (directory / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (directory / name).write_bytes(data)


def _check_mnist(train: Dataset, test: Dataset, info: DatasetInfo, arrays: dict[str, np.ndarray]) -> None:
    _check_basic(train, test, info, (1, 28, 28))
    assert np.array_equal(train.x[:, 0], arrays["x_train"].astype(np.float32) / 255)
    assert np.array_equal(test.y, arrays["y_test"].astype(np.int64))
    assert float(train.x.min()) >= 0.0 and float(train.x.max()) <= 1.0


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_from_idx_files(tmp_path: Path, gz: bool) -> None:
    arrays = _fake_mnist()
    _write_idx(tmp_path, arrays, gz)
    train, test, info = load_dataset("mnist", data_dir=tmp_path)
    _check_mnist(train, test, info, arrays)
    assert (info.train_size, info.test_size) == (30, 10)


def test_mnist_from_npz(tmp_path: Path) -> None:
    arrays = _fake_mnist()
    np.savez(tmp_path / "mnist.npz", x_train=arrays["x_train"], y_train=arrays["y_train"],
             x_test=arrays["x_test"], y_test=arrays["y_test"])
    train, test, info = load_dataset("mnist", data_dir=tmp_path)
    _check_mnist(train, test, info, arrays)
    np.savez(tmp_path / "mnist.npz", x_train=arrays["x_train"], y_train=arrays["y_train"])
    with pytest.raises(DecodeError, match="mnist.npz.*x_test, y_test"):
        load_dataset("mnist", data_dir=tmp_path)
    (tmp_path / "mnist.npz").write_bytes(b"not an archive")
    with pytest.raises(DecodeError, match="mnist.npz"):
        load_dataset("mnist", data_dir=tmp_path)


def test_mnist_missing_files_is_a_config_error(tmp_path: Path) -> None:
    for data_dir in (None, tmp_path, tmp_path / "nope"):
        with pytest.raises(ConfigError) as err:
            load_dataset("mnist", data_dir=data_dir)
        message = str(err.value)
        assert all(name in message for name in MNIST_IDX_FILES)
        assert "mnist.npz" in message and "--data-dir" in message
    arrays = _fake_mnist()
    _write_idx(tmp_path, arrays, gz=False)
    (tmp_path / MNIST_IDX_FILES[3]).unlink()
    with pytest.raises(ConfigError, match=f"missing {MNIST_IDX_FILES[3]} and"):
        load_dataset("mnist", data_dir=tmp_path)


def test_malformed_idx_is_a_decode_error(tmp_path: Path) -> None:
    good = _idx_bytes(np.zeros((2, 28, 28), dtype=np.uint8))
    cases = {
        "short": good[:3],
        "magic": b"\x00\x00\x09\x03" + good[4:],
        "ndim": b"\x00\x00\x08\x02" + good[4:],
        "nonzero": b"\x01\x00\x08\x03" + good[4:],
        "header": good[:10],
        "truncated": good[:-1],
        "trailing": good + b"\x00",
    }
    for label, data in cases.items():
        path = tmp_path / f"{label}-idx3-ubyte"
        path.write_bytes(data)
        with pytest.raises(DecodeError, match=label):
            read_idx(path, ndim=3)
    ok = tmp_path / "ok-idx3-ubyte"
    ok.write_bytes(good)
    assert read_idx(ok, ndim=3).shape == (2, 28, 28)
    bad_gz = tmp_path / "bad.gz"
    bad_gz.write_bytes(b"\x1f\x8bnot gzip")
    with pytest.raises(DecodeError, match="bad.gz"):
        read_idx(bad_gz, ndim=3)


def test_mnist_inconsistent_files(tmp_path: Path) -> None:
    arrays = _fake_mnist()
    arrays["y_test"] = arrays["y_test"][:-1]  # 9 labels for 10 images
    _write_idx(tmp_path, arrays, gz=False)
    with pytest.raises(DecodeError, match=MNIST_IDX_FILES[3]):
        load_dataset("mnist", data_dir=tmp_path)
    arrays = _fake_mnist()
    arrays["y_train"][0] = 10
    _write_idx(tmp_path, arrays, gz=False)
    with pytest.raises(DecodeError, match="0..9"):
        load_dataset("mnist", data_dir=tmp_path)
    (tmp_path / MNIST_IDX_FILES[0]).write_bytes(_idx_bytes(np.zeros((3, 20, 20), np.uint8)))
    with pytest.raises(DecodeError, match=r"\(n, 28, 28\)"):
        load_dataset("mnist", data_dir=tmp_path)


# --- partitioning ----------------------------------------------------------------------------


def _labels(per_class: int = 100, classes: int = 10, seed: int = 0) -> np.ndarray:
    labels = np.repeat(np.arange(classes, dtype=np.int64), per_class)
    return np.random.default_rng(seed).permutation(labels)


def _check_partition(chunks: list[np.ndarray], n: int, parts: int) -> None:
    assert len(chunks) == parts
    for c in chunks:
        assert c.dtype == np.int64 and c.ndim == 1
        assert np.array_equal(c, np.sort(c))
    joined = np.concatenate(chunks)
    assert np.array_equal(np.sort(joined), np.arange(n))  # disjoint and complete


@pytest.mark.parametrize("scheme", PARTITION_SCHEMES)
@pytest.mark.parametrize("parts", [1, 3, 10])
def test_partition_disjoint_complete_sorted_deterministic(scheme: str, parts: int) -> None:
    labels = _labels()
    chunks = partition(labels, parts, scheme, seed=4)
    _check_partition(chunks, len(labels), parts)
    assert min(len(c) for c in chunks) >= 1
    again = partition(labels, parts, scheme, seed=4)
    assert all(np.array_equal(a, b) for a, b in zip(chunks, again, strict=True))
    if parts > 1:
        other = partition(labels, parts, scheme, seed=5)
        assert not all(np.array_equal(a, b) for a, b in zip(chunks, other, strict=True))


def test_partition_iid_is_partition_iid_balanced() -> None:
    labels = _labels()
    chunks = partition(labels, 7, seed=1)
    sizes = [len(c) for c in chunks]
    assert max(sizes) - min(sizes) <= 1


def test_dirichlet_small_alpha_is_more_skewed() -> None:
    labels = _labels(per_class=200)
    entropy = {}
    for alpha in (0.05, 1.0, 100.0):
        chunks = partition(labels, 10, "dirichlet", seed=0, alpha=alpha)
        _check_partition(chunks, len(labels), 10)
        entropy[alpha] = float(label_entropy(label_histogram(labels, chunks, 10)).mean())
    assert entropy[0.05] < entropy[1.0] < entropy[100.0]
    assert entropy[0.05] < 1.5 and entropy[100.0] > 3.2  # log2(10) = 3.32 is perfectly mixed
    iid = partition(labels, 10, "iid", seed=0)
    assert float(label_entropy(label_histogram(labels, iid, 10)).mean()) > entropy[1.0]


def test_dirichlet_min_size_and_impossible() -> None:
    labels = _labels(per_class=20)
    chunks = partition(labels, 10, "dirichlet", seed=2, alpha=0.1, min_size=5)
    assert min(len(c) for c in chunks) >= 5
    with pytest.raises(UsageError, match="at least 30 samples"):
        partition(labels, 10, "dirichlet", seed=2, min_size=30)  # 200 < 10 * 30
    with pytest.raises(UsageError, match="attempts"):
        partition(labels, 10, "dirichlet", seed=2, alpha=0.001, min_size=19)


def test_shards_give_each_part_at_most_shards_per_part_classes() -> None:
    labels = _labels(per_class=60)
    for parts, spp in ((5, 2), (10, 1), (2, 5)):
        chunks = partition(labels, parts, "shards", seed=3, shards_per_part=spp)
        _check_partition(chunks, len(labels), parts)
        hist = label_histogram(labels, chunks, 10)
        assert ((hist > 0).sum(axis=1) <= spp).all()
        assert (hist.sum(axis=1) == 60 * spp).all()
    with pytest.raises(UsageError, match="parts \\* shards_per_part"):
        partition(labels[:5], 3, "shards", seed=0, min_size=0)


def test_partition_bad_arguments() -> None:
    labels = _labels()
    bad: list[tuple[tuple[Any, ...], dict[str, Any], str]] = [
        ((labels, 0), {}, "parts"),
        ((labels, 2.5), {}, "parts"),
        ((labels, 2, "pathological"), {}, "known schemes: iid, dirichlet, shards"),
        ((labels, 2, "dirichlet"), {"alpha": 0.0}, "alpha"),
        ((labels, 2, "dirichlet"), {"alpha": float("nan")}, "alpha"),
        ((labels, 2, "shards"), {"shards_per_part": 0}, "shards_per_part"),
        ((labels, 2), {"min_size": -1}, "min_size"),
        ((labels, 2), {"seed": -3}, "seed"),
        ((labels.astype(np.float64), 2), {}, "integer"),
        ((labels.reshape(10, -1), 2), {}, "1-D"),
        ((labels[:3], 4), {}, "at least 1"),
    ]
    for args, kwargs, message in bad:
        with pytest.raises(UsageError, match=message):
            partition(*args, **{"seed": 0, **kwargs})
    assert [len(c) for c in partition(labels[:3], 4, seed=0, min_size=0)] == [1, 1, 1, 0]


def test_label_histogram_and_entropy() -> None:
    labels = np.array([0, 0, 1, 2, 2, 2], dtype=np.int64)
    parts = [np.array([0, 1], dtype=np.int64), np.array([2, 3, 4, 5]), np.array([], np.int64)]
    hist = label_histogram(labels, parts, 3)
    assert hist.tolist() == [[2, 0, 0], [0, 1, 3], [0, 0, 0]]
    ent = label_entropy(hist)
    assert ent[0] == 0.0 and ent[2] == 0.0
    assert np.isclose(ent[1], -(0.25 * np.log2(0.25) + 0.75 * np.log2(0.75)))
    assert np.isclose(label_entropy(np.ones((1, 8)))[0], 3.0)
    with pytest.raises(UsageError):
        label_histogram(labels, parts, 2)
