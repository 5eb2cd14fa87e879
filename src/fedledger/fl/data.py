"""Datasets for the demo: sklearn's bundled digits, IID partitioning, and data hashes.

NumPy and scikit-learn only (no torch), and nothing is downloaded: ``load_digits``
ships with scikit-learn.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from fedledger.crypto.hashing import sha256

DATASET_MAGIC = b"FLD1"


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


def dataset_hash(ds: Dataset) -> bytes:
    """SHA-256 of :func:`encode_dataset`: identifies a data batch on chain."""
    return sha256(encode_dataset(ds))
