"""Model weights as ordered, named float32 arrays, and their canonical binary encoding.

The encoding is what gets hashed and recorded on chain, so it must be a function
of the weights alone: one byte string per model state, and ``decode`` accepts
only byte strings that ``encode`` could have produced (``encode(decode(b)) == b``).

Format (all integers big-endian)::

    b"FLW1" | u32 count | count x (u16 name_len | name (UTF-8) | u8 ndim |
                                   ndim x u32 dim | float32 little-endian data, C order)

This module is NumPy-only on purpose: auditors and the ledger can check weight
artefacts without importing torch.
"""

from __future__ import annotations

import struct

import numpy as np

from fedledger.crypto.hashing import sha256
from fedledger.errors import DecodeError, UsageError

Weights = list[tuple[str, np.ndarray]]
"""An ordered list of ``(name, float32 array)`` pairs: one model's state."""

MAGIC = b"FLW1"

_MAX_NAME_BYTES = 0xFFFF
_MAX_NDIM = 0xFF
_MAX_DIM = 0xFFFFFFFF
_MAX_COUNT = 0xFFFFFFFF
_F32_LE = np.dtype("<f4")


def as_float32(name: str, value: np.ndarray) -> np.ndarray:
    """Return ``value`` as a C-contiguous float32 array; reject non-float and non-finite data.

    Float arrays of any precision are converted (a float64 value that overflows
    float32 becomes inf and is then rejected). Integer and bool arrays are
    rejected because a model state made of them is almost certainly a mistake.
    """
    arr = np.asarray(value)
    if not np.issubdtype(arr.dtype, np.floating):
        raise ValueError(f"tensor {name!r}: dtype {arr.dtype} is not a floating-point type")
    with np.errstate(over="ignore"):  # overflow shows up as inf and is rejected below
        arr = np.asarray(arr, dtype=np.float32, order="C")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"tensor {name!r}: contains NaN or infinite values")
    return arr


def encode_weights(w: Weights) -> bytes:
    """Encode weights to their one canonical byte string (see module docstring).

    Raises ValueError for an empty or duplicate name, a name longer than 65535
    UTF-8 bytes, more than 255 dimensions, non-float or non-finite data.
    """
    if len(w) > _MAX_COUNT:
        raise ValueError(f"too many tensors: {len(w)}")
    parts: list[bytes] = [MAGIC, struct.pack(">I", len(w))]
    seen: set[str] = set()
    for name, value in w:
        if not isinstance(name, str) or not name:
            raise ValueError(f"tensor name must be a non-empty str, got {name!r}")
        if name in seen:
            raise ValueError(f"duplicate tensor name {name!r}")
        seen.add(name)
        raw_name = name.encode("utf-8")
        if len(raw_name) > _MAX_NAME_BYTES:
            raise ValueError(f"tensor name too long ({len(raw_name)} bytes): {name[:40]!r}...")
        arr = as_float32(name, value)
        if arr.ndim > _MAX_NDIM:
            raise ValueError(f"tensor {name!r}: {arr.ndim} dimensions (max {_MAX_NDIM})")
        if any(d > _MAX_DIM for d in arr.shape):
            raise ValueError(f"tensor {name!r}: dimension too large in shape {arr.shape}")
        parts.append(struct.pack(">H", len(raw_name)))
        parts.append(raw_name)
        parts.append(struct.pack(">B", arr.ndim))
        parts.append(struct.pack(f">{arr.ndim}I", *arr.shape))
        parts.append(arr.astype(_F32_LE, copy=False).tobytes(order="C"))
    return b"".join(parts)


class _Reader:
    """Bounds-checked cursor over a byte string; every short read is a DecodeError."""

    def __init__(self, data: bytes) -> None:
        self._data = memoryview(data)
        self.pos = 0

    def remaining(self) -> int:
        return len(self._data) - self.pos

    def take(self, n: int, what: str) -> bytes:
        if n > self.remaining():
            raise DecodeError(
                f"weights truncated: need {n} bytes for {what} at offset {self.pos}, "
                f"have {self.remaining()}"
            )
        out = bytes(self._data[self.pos : self.pos + n])
        self.pos += n
        return out

    def unpack(self, fmt: str, what: str) -> tuple[int, ...]:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt), what))


def decode_weights(data: bytes) -> Weights:
    """Decode the canonical encoding strictly; raise DecodeError on anything else.

    Rejects a bad magic, truncation, trailing bytes, empty or duplicate names,
    invalid UTF-8 and non-finite values, so that ``encode_weights(decode_weights(b)) == b``.
    The returned arrays are fresh, writable, native float32 arrays.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise DecodeError(f"weights must be bytes, got {type(data).__name__}")
    r = _Reader(bytes(data))
    magic = r.take(len(MAGIC), "magic")
    if magic != MAGIC:
        raise DecodeError(f"bad weights magic {magic!r}, expected {MAGIC!r}")
    (count,) = r.unpack(">I", "tensor count")
    out: Weights = []
    seen: set[str] = set()
    for i in range(count):
        (name_len,) = r.unpack(">H", f"name length of tensor {i}")
        raw_name = r.take(name_len, f"name of tensor {i}")
        try:
            name = raw_name.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DecodeError(f"tensor {i}: name is not valid UTF-8") from exc
        if not name:
            raise DecodeError(f"tensor {i}: empty name")
        if name in seen:
            raise DecodeError(f"duplicate tensor name {name!r}")
        seen.add(name)
        (ndim,) = r.unpack(">B", f"ndim of tensor {name!r}")
        shape = r.unpack(f">{ndim}I", f"shape of tensor {name!r}")
        size = 1
        for d in shape:
            size *= d
        raw = r.take(4 * size, f"data of tensor {name!r}")
        arr = np.frombuffer(raw, dtype=_F32_LE).astype(np.float32).reshape(shape)
        if not np.all(np.isfinite(arr)):
            raise DecodeError(f"tensor {name!r}: contains NaN or infinite values")
        out.append((name, arr))
    if r.remaining():
        raise DecodeError(f"{r.remaining()} trailing bytes after {count} tensors")
    return out


def weights_hash(w: Weights) -> bytes:
    """SHA-256 of the canonical encoding: the identity of a model state."""
    return sha256(encode_weights(w))


def num_parameters(w: Weights) -> int:
    """Total number of scalar parameters across all tensors."""
    return sum(int(np.asarray(a).size) for _, a in w)


def flatten(w: Weights) -> np.ndarray:
    """All tensors of ``w`` in order, C order, as one float64 vector (widening float32 is exact)."""
    if not w:
        return np.zeros(0, dtype=np.float64)
    return np.concatenate([as_float32(name, a).astype(np.float64).ravel() for name, a in w])


def unflatten(vec: np.ndarray, like: Weights) -> Weights:
    """Cut ``vec`` into tensors with the names and shapes of ``like``, rounded to float32.

    Raises UsageError if ``vec`` is not a 1-D vector of exactly the right length.
    """
    vec = np.asarray(vec)
    total = sum(int(np.asarray(a).size) for _, a in like)
    if vec.ndim != 1 or vec.shape[0] != total:
        raise UsageError(f"unflatten: expected a vector of {total} values, got shape {vec.shape}")
    out: Weights = []
    start = 0
    for name, a in like:
        shape = np.shape(a)
        size = int(np.asarray(a).size)
        out.append((name, vec[start : start + size].astype(np.float32).reshape(shape)))
        start += size
    return out


def layout_problem(w: Weights, like: Weights) -> str | None:
    """Why ``w`` does not have ``like``'s tensor names and shapes, or None if it does."""
    if [n for n, _ in w] != [n for n, _ in like]:
        return "its tensors are not the model's"
    for (name, a), (_, ref) in zip(w, like, strict=True):
        if np.shape(a) != np.shape(ref):
            return f"tensor {name!r} has shape {np.shape(a)}, expected {np.shape(ref)}"
    return None
