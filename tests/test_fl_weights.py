"""Weights encoding, FedAvg and data helpers (the torch-free part of ``fedledger.fl``)."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fedledger.crypto.hashing import sha256
from fedledger.errors import DecodeError
from fedledger.fl.aggregate import fedavg
from fedledger.fl.data import (
    Dataset,
    dataset_hash,
    load_digits_split,
    partition_iid,
    subset,
)
from fedledger.fl.weights import (
    MAGIC,
    Weights,
    decode_weights,
    encode_weights,
    num_parameters,
    weights_hash,
)

SRC_DIR = Path(__file__).resolve().parent.parent / "src"


def sample_weights() -> Weights:
    return [
        ("fc.weight", np.arange(6, dtype=np.float32).reshape(2, 3) / 7),
        ("fc.bias", np.array([-0.0, 1.5], dtype=np.float32)),
        ("scalar", np.array(3.25, dtype=np.float32)),
        ("empty", np.zeros((0, 4), dtype=np.float32)),
    ]


def assert_weights_identical(a: Weights, b: Weights) -> None:
    assert [n for n, _ in a] == [n for n, _ in b]
    for (_, x), (_, y) in zip(a, b, strict=True):
        assert isinstance(x, np.ndarray) and isinstance(y, np.ndarray)
        assert x.dtype == np.float32 and y.dtype == np.float32
        assert x.shape == y.shape
        assert x.tobytes() == y.tobytes()


finite_f32 = st.floats(width=32, allow_nan=False, allow_infinity=False)
tensor = hnp.arrays(
    np.float32,
    hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4),
    elements=finite_f32,
)
names = st.text(min_size=1, max_size=12)
weights_strategy = st.dictionaries(names, tensor, max_size=5).map(lambda d: list(d.items()))


# --- encoding -------------------------------------------------------------------------------


def test_layout_of_a_single_tensor() -> None:
    w = [("ab", np.array([1.0, -2.0], dtype=np.float32))]
    expected = (
        MAGIC
        + struct.pack(">I", 1)
        + struct.pack(">H", 2)
        + b"ab"
        + struct.pack(">B", 1)
        + struct.pack(">I", 2)
        + struct.pack("<2f", 1.0, -2.0)
    )
    assert encode_weights(w) == expected


def test_round_trip_is_exact() -> None:
    w = sample_weights()
    out = decode_weights(encode_weights(w))
    assert_weights_identical(out, w)
    assert all(arr.flags.writeable for _, arr in out)


@settings(max_examples=60, deadline=None)
@given(weights_strategy)
def test_round_trip_and_canonical_reencode(w: Weights) -> None:
    data = encode_weights(w)
    decoded = decode_weights(data)
    assert_weights_identical(decoded, w)
    assert encode_weights(decoded) == data


def test_float64_input_is_converted_to_float32() -> None:
    w64 = [("a", np.array([0.1, 0.2], dtype=np.float64))]
    w32 = [("a", np.array([0.1, 0.2], dtype=np.float32))]
    assert encode_weights(w64) == encode_weights(w32)


def test_non_contiguous_input_is_encoded_in_c_order() -> None:
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    assert encode_weights([("t", a.T)]) == encode_weights([("t", np.ascontiguousarray(a.T))])


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values_rejected(bad: float) -> None:
    with pytest.raises(ValueError, match="NaN or infinite"):
        encode_weights([("t", np.array([1.0, bad], dtype=np.float32))])


def test_float64_overflow_rejected() -> None:
    with pytest.raises(ValueError, match="NaN or infinite"):
        encode_weights([("t", np.array([1e300]))])


def test_integer_tensor_rejected() -> None:
    with pytest.raises(ValueError, match="not a floating-point"):
        encode_weights([("t", np.array([1, 2], dtype=np.int64))])


def test_duplicate_and_empty_names_rejected_on_encode() -> None:
    a = np.zeros(1, dtype=np.float32)
    with pytest.raises(ValueError, match="duplicate"):
        encode_weights([("t", a), ("t", a)])
    with pytest.raises(ValueError, match="non-empty"):
        encode_weights([("", a)])


def test_hash_and_parameter_count() -> None:
    w = sample_weights()
    assert weights_hash(w) == sha256(encode_weights(w))
    assert num_parameters(w) == 6 + 2 + 1 + 0
    w2 = [(n, a.copy()) for n, a in w]
    w2[0][1][0, 0] = np.float32(1e-7)
    assert weights_hash(w2) != weights_hash(w)


# --- strict decoding ------------------------------------------------------------------------


def test_trailing_byte_rejected() -> None:
    with pytest.raises(DecodeError, match="trailing"):
        decode_weights(encode_weights(sample_weights()) + b"\x00")


def test_every_truncation_rejected() -> None:
    data = encode_weights(sample_weights())
    for cut in range(len(data)):
        with pytest.raises(DecodeError):
            decode_weights(data[:cut])


def test_bad_magic_rejected() -> None:
    data = encode_weights(sample_weights())
    with pytest.raises(DecodeError, match="magic"):
        decode_weights(b"FLW2" + data[4:])


def _single(name: bytes, values: bytes, dims: tuple[int, ...]) -> bytes:
    return (
        MAGIC
        + struct.pack(">I", 1)
        + struct.pack(">H", len(name))
        + name
        + struct.pack(">B", len(dims))
        + struct.pack(f">{len(dims)}I", *dims)
        + values
    )


def test_bad_utf8_name_rejected() -> None:
    with pytest.raises(DecodeError, match="UTF-8"):
        decode_weights(_single(b"\xff\xfe", struct.pack("<f", 1.0), (1,)))


def test_nan_in_encoded_data_rejected() -> None:
    with pytest.raises(DecodeError, match="NaN"):
        decode_weights(_single(b"t", struct.pack("<f", float("nan")), (1,)))


def test_duplicate_name_rejected_on_decode() -> None:
    one = encode_weights([("t", np.ones(1, dtype=np.float32))])
    body = one[len(MAGIC) + 4 :]
    with pytest.raises(DecodeError, match="duplicate"):
        decode_weights(MAGIC + struct.pack(">I", 2) + body + body)


def test_huge_declared_shape_is_truncation_not_allocation() -> None:
    with pytest.raises(DecodeError, match="truncated"):
        decode_weights(_single(b"t", b"", (0xFFFFFFFF, 0xFFFFFFFF)))


def test_non_bytes_rejected() -> None:
    with pytest.raises(DecodeError):
        decode_weights("FLW1")  # type: ignore[arg-type]


# --- fedavg ---------------------------------------------------------------------------------


def test_fedavg_known_weighted_mean() -> None:
    a = [("w", np.array([0.0, 4.0], dtype=np.float32)), ("b", np.array([1.0], dtype=np.float32))]
    b = [("w", np.array([4.0, 8.0], dtype=np.float32)), ("b", np.array([5.0], dtype=np.float32))]
    out = fedavg([(a, 1), (b, 3)])
    assert [n for n, _ in out] == ["w", "b"]
    np.testing.assert_array_equal(out[0][1], np.array([3.0, 7.0], dtype=np.float32))
    np.testing.assert_array_equal(out[1][1], np.array([4.0], dtype=np.float32))
    assert all(arr.dtype == np.float32 for _, arr in out)


def test_fedavg_single_input_is_identity() -> None:
    w = sample_weights()
    assert_weights_identical(fedavg([(w, 17)]), w)


def test_fedavg_zero_count_contributes_nothing() -> None:
    a = [("w", np.array([2.0], dtype=np.float32))]
    b = [("w", np.array([100.0], dtype=np.float32))]
    np.testing.assert_array_equal(fedavg([(a, 5), (b, 0)])[0][1], [2.0])


def test_fedavg_accumulates_in_float64() -> None:
    # In float32, 1e8 + 1 == 1e8, so a float32 accumulator would lose the small term.
    big = [("w", np.array([1e8], dtype=np.float32))]
    small = [("w", np.array([1.0], dtype=np.float32))]
    neg = [("w", np.array([-1e8], dtype=np.float32))]
    out = fedavg([(big, 1), (small, 1), (neg, 1)])
    np.testing.assert_array_equal(out[0][1], np.array([1.0 / 3.0], dtype=np.float32))


def test_fedavg_is_deterministic() -> None:
    rng = np.random.default_rng(7)
    results = [
        (
            [
                ("a", rng.standard_normal((5, 7)).astype(np.float32)),
                ("b", rng.standard_normal(3).astype(np.float32)),
            ],
            int(n),
        )
        for n in rng.integers(1, 100, size=6)
    ]
    first = encode_weights(fedavg(results))
    copies = [([(n, a.copy()) for n, a in w], c) for w, c in results]
    assert encode_weights(fedavg(copies)) == first
    assert encode_weights(fedavg(results)) == first


def test_fedavg_empty_and_zero_total_rejected() -> None:
    with pytest.raises(ValueError, match="no results"):
        fedavg([])
    w = [("w", np.ones(2, dtype=np.float32))]
    with pytest.raises(ValueError, match="zero"):
        fedavg([(w, 0), (w, 0)])


def test_fedavg_bad_counts_rejected() -> None:
    w = [("w", np.ones(2, dtype=np.float32))]
    with pytest.raises(ValueError, match="negative"):
        fedavg([(w, 2), (w, -1)])
    with pytest.raises(ValueError, match="int"):
        fedavg([(w, 1.5)])  # type: ignore[list-item]


def test_fedavg_mismatched_shapes_rejected() -> None:
    a = [("fc.weight", np.ones((2, 3), dtype=np.float32))]
    b = [("fc.weight", np.ones((3, 2), dtype=np.float32))]
    with pytest.raises(ValueError, match=r"'fc.weight'.*shape"):
        fedavg([(a, 1), (b, 1)])


def test_fedavg_mismatched_names_rejected() -> None:
    a = [("x", np.ones(2, dtype=np.float32)), ("y", np.ones(2, dtype=np.float32))]
    b = [("y", np.ones(2, dtype=np.float32)), ("x", np.ones(2, dtype=np.float32))]
    with pytest.raises(ValueError, match="'y'"):
        fedavg([(a, 1), (b, 1)])
    with pytest.raises(ValueError, match="tensors"):
        fedavg([(a, 1), (a[:1], 1)])


# --- data -----------------------------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(n=st.integers(0, 500), parts=st.integers(1, 40), seed=st.integers(0, 2**32 - 1))
def test_partition_iid_disjoint_covering_balanced(n: int, parts: int, seed: int) -> None:
    chunks = partition_iid(n, parts, seed)
    assert len(chunks) == parts
    joined = np.concatenate(chunks)
    assert joined.dtype == np.int64
    assert sorted(joined.tolist()) == list(range(n))  # disjoint and covering
    sizes = [len(c) for c in chunks]
    assert max(sizes) - min(sizes) <= 1
    assert partition_iid(n, parts, seed)[0].tolist() == chunks[0].tolist()


def test_partition_iid_depends_on_seed_and_validates() -> None:
    assert partition_iid(100, 2, 0)[0].tolist() != partition_iid(100, 2, 1)[0].tolist()
    with pytest.raises(ValueError):
        partition_iid(10, 0, 0)
    with pytest.raises(ValueError):
        partition_iid(-1, 2, 0)


def test_load_digits_split_shapes_and_determinism() -> None:
    train, test = load_digits_split(test_fraction=0.2, seed=0)
    assert train.x.shape[1:] == (1, 8, 8) and train.x.dtype == np.float32
    assert train.y.dtype == np.int64
    assert len(train) + len(test) == 1797
    assert abs(len(test) - 0.2 * 1797) < 10
    assert float(train.x.min()) >= 0.0 and float(train.x.max()) <= 1.0
    assert set(np.unique(test.y).tolist()) == set(range(10))  # stratified
    train2, test2 = load_digits_split(test_fraction=0.2, seed=0)
    assert dataset_hash(train) == dataset_hash(train2)
    assert dataset_hash(test) == dataset_hash(test2)
    _, test3 = load_digits_split(test_fraction=0.2, seed=1)
    assert dataset_hash(test3) != dataset_hash(test)


def test_train_and_test_are_disjoint() -> None:
    train, test = load_digits_split()
    train_rows = {
        row.tobytes() + bytes([label]) for row, label in zip(train.x, train.y, strict=True)
    }
    overlap = sum(
        row.tobytes() + bytes([label]) in train_rows
        for row, label in zip(test.x, test.y, strict=True)
    )
    # The digits set has a few exact duplicate images; a leaky split would overlap massively.
    assert overlap < 5


def test_subset_and_dataset_hash() -> None:
    ds = Dataset(
        np.arange(12, dtype=np.float32).reshape(4, 3), np.array([0, 1, 2, 3], dtype=np.int64)
    )
    sub = subset(ds, np.array([2, 0]))
    np.testing.assert_array_equal(sub.y, [2, 0])
    np.testing.assert_array_equal(sub.x[0], [6, 7, 8])
    assert len(sub) == 2
    assert dataset_hash(sub) != dataset_hash(subset(ds, np.array([0, 2])))
    relabelled = Dataset(ds.x, np.array([0, 1, 2, 4], dtype=np.int64))
    assert dataset_hash(relabelled) != dataset_hash(ds)
    reshaped = Dataset(ds.x.reshape(4, 3, 1), ds.y)
    assert dataset_hash(reshaped) != dataset_hash(ds)


def test_dataset_validates_dtypes_and_lengths() -> None:
    with pytest.raises(ValueError, match="float32"):
        Dataset(np.zeros((2, 2)), np.zeros(2, dtype=np.int64))
    with pytest.raises(ValueError, match="int64"):
        Dataset(np.zeros((2, 2), dtype=np.float32), np.zeros(2, dtype=np.int32))
    with pytest.raises(ValueError, match="labels"):
        Dataset(np.zeros((3, 2), dtype=np.float32), np.zeros(2, dtype=np.int64))


# --- layering -------------------------------------------------------------------------------


def test_torch_free_modules_do_not_import_torch() -> None:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SRC_DIR), env.get("PYTHONPATH")]))
    code = (
        "import sys; import fedledger.fl.weights, fedledger.fl.aggregate, fedledger.fl.data; "
        "assert 'torch' not in sys.modules, 'torch was imported'"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
