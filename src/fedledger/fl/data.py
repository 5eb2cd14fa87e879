"""Datasets for federated learning: sklearn's bundled digits, partitioning and data hashes.

NumPy and scikit-learn only (no torch), and nothing is downloaded: ``load_digits``
ships with scikit-learn. More datasets (MNIST-1D, MNIST from local files, digits at
28x28) are registered in :mod:`fedledger.fl.datasets`.

Partitioning across devices (:func:`partition`) supports three schemes:

* ``iid``: a uniformly random split into near-equal parts (:func:`partition_iid`);
* ``dirichlet``: label skew, for each class the share of every part is drawn from
  ``Dir(alpha)`` (Hsu et al., 2019, "Measuring the effects of non-identical data
  distribution for federated visual classification"); small ``alpha`` gives each part
  few dominant classes, large ``alpha`` approaches IID;
* ``shards``: pathological label skew of McMahan et al., 2017 ("Communication-efficient
  learning of deep networks from decentralized data"): sort by label, cut into
  ``parts * shards_per_part`` shards and deal ``shards_per_part`` random shards to each part.

:func:`label_histogram` and :func:`label_entropy` describe how heterogeneous a
partition is.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from fedledger.crypto.hashing import sha256
from fedledger.errors import DecodeError, UsageError

DATASET_MAGIC = b"FLD1"

PARTITION_SCHEMES = ("iid", "dirichlet", "shards")
DIRICHLET_MAX_ATTEMPTS = 1000


@dataclass(frozen=True)
class Dataset:
    """Features ``x`` (float32, first axis = sample) and integer labels ``y`` (int64)."""

    x: np.ndarray
    y: np.ndarray

    def __post_init__(self) -> None:
        if self.x.dtype != np.float32:
            raise ValueError(f"Dataset.x must be float32, got {self.x.dtype}")
        if self.y.dtype != np.int64:
            raise ValueError(f"Dataset.y must be int64, got {self.y.dtype}")
        if self.y.ndim != 1:
            raise ValueError(f"Dataset.y must be 1-D, got shape {self.y.shape}")
        if self.x.ndim < 1 or self.x.shape[0] != self.y.shape[0]:
            raise ValueError(f"Dataset: x shape {self.x.shape} does not match {len(self.y)} labels")

    def __len__(self) -> int:
        return int(self.y.shape[0])


def _stratified_test_indices(
    y: np.ndarray, test_fraction: float, rng: np.random.Generator
) -> np.ndarray:
    """Pick ``round(test_fraction * count)`` random samples of each class, in class order."""
    picked = []
    for label in np.unique(y):
        members = np.flatnonzero(y == label)
        k = int(round(test_fraction * len(members)))
        picked.append(rng.permutation(members)[:k])
    return np.sort(np.concatenate(picked))


def load_digits_split(test_fraction: float = 0.2, seed: int = 0) -> tuple[Dataset, Dataset]:
    """Load the 8x8 digits as ``(n, 1, 8, 8)`` float32 in [0, 1]; return ``(train, test)``.

    The split is stratified by class and seeded, so the same arguments always
    give the same two datasets (each kept in the original sample order).
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    from sklearn.datasets import load_digits  # deferred: sklearn import is slow

    bunch = load_digits()
    x = (np.asarray(bunch.data, dtype=np.float64) / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)
    y = np.asarray(bunch.target, dtype=np.int64)
    test_idx = _stratified_test_indices(y, test_fraction, np.random.default_rng(seed))
    is_test = np.zeros(len(y), dtype=bool)
    is_test[test_idx] = True
    train = Dataset(np.ascontiguousarray(x[~is_test]), np.ascontiguousarray(y[~is_test]))
    test = Dataset(np.ascontiguousarray(x[is_test]), np.ascontiguousarray(y[is_test]))
    return train, test


def partition_iid(n: int, parts: int, seed: int) -> list[np.ndarray]:
    """Split ``range(n)`` into ``parts`` random, disjoint, sorted int64 index arrays.

    Together they cover every index exactly once and their sizes differ by at
    most one (some are empty when ``parts > n``).
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if parts < 1:
        raise ValueError(f"parts must be >= 1, got {parts}")
    perm = np.random.default_rng(seed).permutation(n).astype(np.int64)
    return [np.sort(chunk) for chunk in np.array_split(perm, parts)]


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise UsageError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise UsageError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def partition(
    labels: np.ndarray,
    parts: int,
    scheme: str = "iid",
    *,
    seed: int,
    alpha: float = 0.5,
    shards_per_part: int = 2,
    min_size: int = 1,
) -> list[np.ndarray]:
    """Split the sample indices ``range(len(labels))`` across ``parts`` devices.

    ``scheme`` is one of :data:`PARTITION_SCHEMES` (see the module docstring);
    ``alpha`` is used by ``dirichlet`` only and ``shards_per_part`` by ``shards``
    only, but both are always validated. Every part receives at least ``min_size``
    samples (``min_size=0`` allows empty parts).

    Returns ``parts`` disjoint, sorted int64 index arrays that together cover every
    index exactly once. The result depends only on the arguments (and the NumPy
    version's random streams): the same ``seed`` gives the same split. Malformed
    arguments, or a split that cannot satisfy ``min_size``, raise :class:`UsageError`.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1 or not (labels.size == 0 or np.issubdtype(labels.dtype, np.integer)):
        raise UsageError(
            f"labels must be a 1-D integer array, got {labels.dtype} with shape {labels.shape}"
        )
    parts = _check_int("parts", parts, 1)
    seed = _check_int("seed", seed, 0)
    min_size = _check_int("min_size", min_size, 0)
    shards_per_part = _check_int("shards_per_part", shards_per_part, 1)
    if isinstance(alpha, bool) or not isinstance(alpha, int | float | np.floating | np.integer):
        raise UsageError(f"alpha must be a number, got {alpha!r}")
    if not (np.isfinite(alpha) and alpha > 0):
        raise UsageError(f"alpha must be a finite number > 0, got {alpha}")
    if scheme not in PARTITION_SCHEMES:
        raise UsageError(
            f"unknown partition scheme {scheme!r}; known schemes: {', '.join(PARTITION_SCHEMES)}"
        )
    n = int(labels.shape[0])
    if n < parts * min_size:
        raise UsageError(
            f"cannot give each of {parts} parts at least {min_size} samples: only {n} samples"
        )
    if scheme == "iid":
        return partition_iid(n, parts, seed)
    if scheme == "dirichlet":
        return _partition_dirichlet(labels, parts, float(alpha), min_size, seed)
    return _partition_shards(labels, parts, shards_per_part, min_size, seed)


def _partition_dirichlet(
    labels: np.ndarray, parts: int, alpha: float, min_size: int, seed: int
) -> list[np.ndarray]:
    """Per class, shares ``~ Dir(alpha)``; redraw until every part has ``min_size`` samples."""
    rng = np.random.default_rng(seed)
    classes = [np.flatnonzero(labels == c) for c in np.unique(labels)]
    for _ in range(DIRICHLET_MAX_ATTEMPTS):
        chunks: list[list[np.ndarray]] = [[] for _ in range(parts)]
        for members in classes:
            shares = rng.dirichlet(np.full(parts, alpha))
            cuts = (np.cumsum(shares)[:-1] * len(members)).astype(np.int64)
            for j, piece in enumerate(np.split(rng.permutation(members), cuts)):
                chunks[j].append(piece)
        result = [np.sort(np.concatenate(c)).astype(np.int64) for c in chunks]
        if min(len(r) for r in result) >= min_size:
            return result
    raise UsageError(
        f"dirichlet partition with alpha={alpha} left some of the {parts} parts with fewer "
        f"than {min_size} samples in {DIRICHLET_MAX_ATTEMPTS} attempts; raise alpha, lower "
        "min_size or use fewer parts"
    )


def _partition_shards(
    labels: np.ndarray, parts: int, shards_per_part: int, min_size: int, seed: int
) -> list[np.ndarray]:
    """Sort by label, cut into ``parts * shards_per_part`` shards, deal them out at random."""
    n_shards = parts * shards_per_part
    if len(labels) < n_shards:
        raise UsageError(
            f"shards partition needs at least parts * shards_per_part = {n_shards} samples, "
            f"got {len(labels)}"
        )
    rng = np.random.default_rng(seed)
    # Shuffle first so samples of one class are dealt to shards at random, then sort stably.
    shuffled = rng.permutation(len(labels))
    by_label = shuffled[np.argsort(labels[shuffled], kind="stable")].astype(np.int64)
    shards = np.array_split(by_label, n_shards)
    order = rng.permutation(n_shards)
    result = [
        np.sort(np.concatenate([shards[s] for s in order[j::parts]])) for j in range(parts)
    ]
    if min(len(r) for r in result) < min_size:
        raise UsageError(
            f"shards partition gives some part fewer than {min_size} samples; "
            "lower min_size or use fewer parts"
        )
    return result


def label_histogram(labels: np.ndarray, parts: list[np.ndarray], num_classes: int) -> np.ndarray:
    """Counts of each label in each part: an int64 array of shape ``(len(parts), num_classes)``."""
    labels = np.asarray(labels)
    num_classes = _check_int("num_classes", num_classes, 1)
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise UsageError(f"labels must lie in [0, {num_classes}), got [{labels.min()}, {labels.max()}]")
    hist = np.zeros((len(parts), num_classes), dtype=np.int64)
    for j, idx in enumerate(parts):
        hist[j] = np.bincount(labels[np.asarray(idx, dtype=np.int64)], minlength=num_classes)
    return hist


def label_entropy(histogram: np.ndarray) -> np.ndarray:
    """Shannon entropy (bits) of each row's label distribution; 0.0 for an empty row.

    With ``C`` classes, ``log2(C)`` means a perfectly balanced part and 0 a part
    holding one class only: the mean over parts is a simple heterogeneity measure.
    """
    hist = np.asarray(histogram, dtype=np.float64)
    if hist.ndim != 2:
        raise UsageError(f"histogram must be 2-D (parts x classes), got shape {hist.shape}")
    totals = hist.sum(axis=1, keepdims=True)
    p = np.divide(hist, totals, out=np.zeros_like(hist), where=totals > 0)
    logs = np.log2(p, out=np.zeros_like(p), where=p > 0)
    return np.asarray(-(p * logs).sum(axis=1) + 0.0)


def subset(ds: Dataset, idx: np.ndarray) -> Dataset:
    """The samples of ``ds`` at integer positions ``idx`` (copied, in that order)."""
    idx = np.asarray(idx)
    if idx.ndim != 1 or not (idx.size == 0 or np.issubdtype(idx.dtype, np.integer)):
        raise ValueError(f"subset: idx must be a 1-D integer array, got {idx.dtype} {idx.shape}")
    idx = idx.astype(np.int64, copy=False)
    return Dataset(np.ascontiguousarray(ds.x[idx]), np.ascontiguousarray(ds.y[idx]))


def encode_dataset(ds: Dataset) -> bytes:
    """Canonical bytes of a dataset.

    Format (integers big-endian): ``b"FLD1" | u8 ndim | ndim x u64 dim | x as float32 LE
    (C order) | u64 n | y as int64 LE``.
    """
    x = np.ascontiguousarray(ds.x, dtype="<f4")
    y = np.ascontiguousarray(ds.y, dtype="<i8")
    return b"".join(
        [
            DATASET_MAGIC,
            struct.pack(">B", x.ndim),
            struct.pack(f">{x.ndim}Q", *x.shape),
            x.tobytes(order="C"),
            struct.pack(">Q", y.shape[0]),
            y.tobytes(order="C"),
        ]
    )


def decode_dataset(data: bytes) -> Dataset:
    """Inverse of :func:`encode_dataset`; anything else is a :class:`DecodeError`."""
    try:
        if data[:4] != DATASET_MAGIC:
            raise ValueError("bad magic")
        ndim = data[4]
        shape = struct.unpack_from(f">{ndim}Q", data, 5)
        pos = 5 + 8 * ndim
        size = int(np.prod(shape, dtype=np.int64)) * 4
        x = np.frombuffer(data, dtype="<f4", count=size // 4, offset=pos).astype(np.float32).reshape(shape)
        pos += size
        (n,) = struct.unpack_from(">Q", data, pos)
        pos += 8
        y = np.frombuffer(data, dtype="<i8", count=n, offset=pos).astype(np.int64)
        if pos + 8 * n != len(data):
            raise ValueError("trailing or missing bytes")
        ds = Dataset(x, y)
    except (ValueError, IndexError, struct.error) as exc:
        raise DecodeError(f"not an encoded dataset: {exc}") from None
    if encode_dataset(ds) != bytes(data):
        raise DecodeError("not the canonical encoding of a dataset")
    return ds


def dataset_hash(ds: Dataset) -> bytes:
    """SHA-256 of :func:`encode_dataset`: identifies a data batch on chain."""
    return sha256(encode_dataset(ds))
