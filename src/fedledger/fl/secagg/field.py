"""The prime field of secure aggregation and the one fixed-point encoding of floats into it.

Everything the seed 001 protocol computes on (masked updates, Shamir shares,
share sums, sketches, edge sums) is a vector over Z_Q with Q = 2^31 − 1, the
Mersenne prime M31. Elements are held as ``int64`` in [0, Q): a product of two
elements is below 2^62, so NumPy can multiply and reduce without overflow, and
on the wire an element is a little-endian ``uint32``.

Fixed-point encoding (the only place floats enter the field). With ``f``
fractional bits, ``encode(x) = round(x * 2^f) mod Q`` and ``decode`` maps an
element ``v`` to ``v / 2^f`` if ``v <= (Q − 1) / 2`` and to ``(v − Q) / 2^f``
otherwise (centred representatives). Error bound, tested in
``tests/test_secagg.py``:

* one value: ``|decode(encode(x)) − x| <= 2^-(f+1)``;
* a weighted sum with integer weights ``w_i``:
  ``|decode(Σ w_i encode(x_i)) − Σ w_i x_i| <= (Σ |w_i|) · 2^-(f+1)``,

provided no intermediate leaves the centred range, i.e. ``Σ |w_i| · |x_i| <
capacity(f)`` coordinate-wise, where ``capacity(f) = ((Q − 1) / 2) / 2^f``.
:func:`encode` refuses values whose magnitude exceeds ``limit`` (the caller
passes ``capacity / total weight`` so that sums cannot wrap).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fedledger.errors import UsageError

Q = (1 << 31) - 1
HALF = (Q - 1) // 2
ELEMENT_BYTES = 4
DEFAULT_FRAC_BITS = 16
BLOCK = 1 << 15
"""Elements per step of the blocked kernels: their scratch buffers stay in cache."""
_Q64 = np.uint64(Q)
_WRAP = np.uint32(Q + 2)  # 2^32 − Q


def capacity(frac_bits: int) -> float:
    """Largest magnitude a decoded field element can represent with ``frac_bits``."""
    return HALF / float(1 << frac_bits)


def check_frac_bits(frac_bits: int) -> int:
    if isinstance(frac_bits, bool) or not isinstance(frac_bits, int) or not 0 <= frac_bits <= 28:
        raise UsageError(f"fractional bits must be an int in [0, 28], got {frac_bits!r}")
    return frac_bits


def encode(x: np.ndarray, frac_bits: int, limit: float | None = None) -> np.ndarray:
    """Fixed-point encode a float vector into Z_Q (``int64`` in [0, Q)).

    Raises UsageError if a value is not finite or its magnitude exceeds ``limit``
    (default: the full capacity), so that a sum can never wrap silently.
    """
    arr = np.asarray(x, dtype=np.float64)
    return encode_into(arr, frac_bits, np.empty(arr.shape, dtype=np.int64), limit)


def encode_into(x: np.ndarray, frac_bits: int, out: np.ndarray, limit: float | None = None) -> np.ndarray:
    """:func:`encode` written into ``out`` (C-contiguous ``int64``, as many elements as ``x``)."""
    bound = capacity(check_frac_bits(frac_bits)) if limit is None else float(limit)
    arr = np.ascontiguousarray(x, dtype=np.float64).reshape(-1)
    if out.dtype != np.int64 or not out.flags.c_contiguous or out.size != arr.size:
        raise UsageError("encode_into needs a C-contiguous int64 output of the input's size")
    dst = out.reshape(-1)
    if not _encode_fast(arr, float(1 << frac_bits), bound, dst):
        dst[:] = _encode_checked(arr, frac_bits, bound)
    return out


def _encode_checked(arr: np.ndarray, frac_bits: int, bound: float) -> np.ndarray:
    """The reference encoding: every check on the whole vector, then ``rint(x · 2^f) mod Q``."""
    if not np.all(np.isfinite(arr)):
        raise UsageError("cannot encode a non-finite value into the field")
    peak = float(np.max(np.abs(arr))) if arr.size else 0.0
    if peak > bound:
        raise UsageError(
            f"value {peak:.6g} exceeds the fixed-point range ±{bound:.6g} "
            f"({frac_bits} fractional bits); clip the update or lower the weights"
        )
    v = np.rint(arr * float(1 << frac_bits)).astype(np.int64)
    v %= Q
    return v


def _encode_fast(arr: np.ndarray, scale: float, bound: float, dst: np.ndarray) -> bool:
    """The encoding block by block in 32-bit integers; False (``dst`` partly written) if it does not apply.

    Scaling by ``2^f`` is exact, so ``|x| <= bound`` is checked on the scaled
    block. When every scaled value lies in [−HALF, HALF] (always the case for
    ``bound <= capacity``), ``rint`` fits an ``int32`` ``t`` and ``t mod Q`` is
    ``min(u, u − (Q + 2))`` in wrapping ``uint32`` arithmetic on ``u = t mod 2^32``
    (for ``t < 0``, ``u − (2^32 − Q) = Q + t``). Anything else, including NaN and
    ±inf, which fail the range test, is left to :func:`_encode_checked`.
    """
    top = min(bound * scale, float(HALF))
    size = min(arr.size, BLOCK)
    scaled = np.empty(size)
    t = np.empty(size, dtype=np.int32)
    wrapped = np.empty(size, dtype=np.uint32)
    for start in range(0, arr.size, BLOCK):
        stop = min(start + BLOCK, arr.size)
        f, i, w = scaled[: stop - start], t[: stop - start], wrapped[: stop - start]
        np.multiply(arr[start:stop], scale, out=f)
        if not (f.min() >= -top and f.max() <= top):
            return False
        np.rint(f, out=f)
        np.copyto(i, f, casting="unsafe")
        u = i.view(np.uint32)
        np.subtract(u, _WRAP, out=w)
        np.minimum(u, w, out=dst[start:stop])
    return True


def decode(v: np.ndarray, frac_bits: int) -> np.ndarray:
    """Centred decoding of field elements back to floats (see the module docstring)."""
    arr = np.asarray(v, dtype=np.int64)
    centred = np.where(arr > HALF, arr - Q, arr)
    return centred.astype(np.float64) / float(1 << check_frac_bits(frac_bits))


def reduce(v: np.ndarray) -> np.ndarray:
    """``v mod Q`` in place for an ``int64`` array; returns it.

    Mersenne reduction (2^31 ≡ 1 mod Q) for non-negative values: two folds
    take ``v`` below Q + 4, one conditional subtraction finishes; integer
    division is several times slower. A block holding a negative value is left
    to ``np.remainder``.
    """
    if v.dtype != np.int64 or not v.flags.c_contiguous:
        np.remainder(v, Q, out=v)
        return v
    flat = v.reshape(-1)
    tmp = np.empty(min(flat.size, BLOCK), dtype=np.int64)
    for start in range(0, flat.size, BLOCK):
        block = flat[start:start + BLOCK]
        if block.min() < 0:
            np.remainder(block, Q, out=block)
            continue
        t = tmp[: block.size]
        fold(block, t)
        fold(block, t)
        below_q(block, t)
    return v


def fold(v: np.ndarray, tmp: np.ndarray) -> None:
    """``v ← (v mod 2^31) + ⌊v / 2^31⌋`` in place (``int64``, ``v >= 0``): same residue mod Q.

    A value below 2^(31+s) comes out below 2^31 + 2^s.
    """
    np.right_shift(v, 31, out=tmp)
    np.bitwise_and(v, Q, out=v)
    v += tmp


def below_q(v: np.ndarray, tmp: np.ndarray) -> None:
    """``v ← v − Q`` where ``v >= Q``, in place, for ``int64`` ``v`` in [0, 2Q).

    As unsigned 64-bit numbers ``v − Q`` wraps to a huge value exactly when
    ``v < Q``, so the result is ``min(v, v − Q)``.
    """
    u, w = v.view(np.uint64), tmp.view(np.uint64)
    np.subtract(u, _Q64, out=w)
    np.minimum(u, w, out=u)


def add_into(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``out ← a + b mod Q`` for 1-D field vectors (``int64`` in [0, Q)); returns ``out``."""
    tmp = np.empty(min(out.size, BLOCK), dtype=np.int64)
    for start in range(0, out.size, BLOCK):
        stop = min(start + BLOCK, out.size)
        o = out[start:stop]
        np.add(a[start:stop], b[start:stop], out=o)
        below_q(o, tmp[: stop - start])
    return out


def neg(v: np.ndarray) -> np.ndarray:
    """``−v mod Q``."""
    out = Q - np.asarray(v, dtype=np.int64)
    out[out == Q] = 0
    return out


def to_bytes(v: np.ndarray) -> bytes:
    """Wire form: little-endian ``uint32`` per element."""
    return np.asarray(v, dtype="<u4").tobytes()


def from_bytes(data: bytes, length: int | None = None) -> np.ndarray:
    """Parse :func:`to_bytes` output; DecodeError-free: UsageError on a malformed vector."""
    if len(data) % ELEMENT_BYTES:
        raise UsageError("a field vector is a whole number of 4-byte elements")
    arr = np.frombuffer(data, dtype="<u4").astype(np.int64)
    if length is not None and arr.size != length:
        raise UsageError(f"expected {length} field elements, got {arr.size}")
    if arr.size and int(arr.max()) >= Q:
        raise UsageError("field element out of range")
    return arr


def dot_mod(coeffs: np.ndarray | Sequence[int], rows: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
    """``Σ_i coeffs[i] · rows[i] mod Q`` for field ``coeffs`` (m,) and ``rows`` (m, L) (``int64``).

    ``rows`` may also be a sequence of m equal-length vectors (no stacking copy).
    """
    cs = [int(c) % Q for c in np.asarray(coeffs, dtype=np.int64).tolist()]
    if len(cs) != len(rows):
        raise UsageError(f"{len(cs)} coefficients for {len(rows)} rows")
    if not cs:
        raise UsageError("a dot product needs at least one row")
    if len(cs) <= _BLAS_ROWS:
        out = _dot_mod_blas(cs, rows)
        if out is not None:
            return out
    acc = np.zeros(len(rows[0]), dtype=np.int64)
    for c, row in zip(cs, rows, strict=True):
        acc += np.multiply(row, c, dtype=np.int64) % Q
        if acc.max(initial=0) >= 1 << 62:
            reduce(acc)
    return reduce(acc)


_BLAS_ROWS = 32
"""Most rows :func:`dot_mod` sums in float64: (2^16 − 1)(2^32 − 1) · 32 < 2^53."""


def _dot_mod_blas(cs: list[int], rows: np.ndarray | Sequence[np.ndarray]) -> np.ndarray | None:
    """:func:`dot_mod` in float64 BLAS, block by block; None if an element is outside [0, 2^32).

    Exact: each coefficient is split as ``c = 2^16 c_hi + c_lo`` with both
    halves below 2^16, so a product with an element below 2^32 is below 2^48
    and a sum of at most 32 of them below 2^53, where float64 holds every
    integer. ``uint32`` rows (the wire form) always qualify; other rows are
    checked a block at a time, while the block is in cache.
    """
    length = len(rows[0])
    split = any(c >> 16 for c in cs)
    weights = np.array([[c & 0xFFFF for c in cs], [c >> 16 for c in cs]], dtype=np.float64)[: 1 + split]
    halves = weights.shape[0]
    size = max(1, min(length, BLOCK // 2))  # a few rows of float64 scratch: stays in cache
    buf = np.empty(len(cs) * size)
    sums = np.empty(halves * size)
    ints = np.empty(halves * size, dtype=np.int64)
    tmp = np.empty(size, dtype=np.int64)
    out = np.empty(length, dtype=np.int64)
    for start in range(0, length, size):
        stop = min(start + size, length)
        w = stop - start
        b = scratch(buf, (len(cs), w))
        for i, row in enumerate(rows):
            if not to_float(row[start:stop], b[i]):
                return None
        s, n = scratch(sums, (halves, w)), scratch(ints, (halves, w))
        np.dot(weights, b, out=s)
        np.copyto(n, s, casting="unsafe")
        o, t = out[start:stop], tmp[:w]
        if split:  # hi folded below 2^32, times 2^16, plus lo: below 2^48 + 2^53 < 2^54
            fold(n[1], t)
            np.left_shift(n[1], 16, out=n[1])
            np.add(n[0], n[1], out=o)
        else:
            np.copyto(o, n[0])
        fold(o, t)
        fold(o, t)
        below_q(o, t)
    return out


def scratch(buf: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A C-contiguous ``shape`` view of the start of a flat scratch buffer (BLAS ``out=`` needs one)."""
    return buf[: shape[0] * shape[1]].reshape(shape)


def to_float(v: np.ndarray, out: np.ndarray) -> bool:
    """Copy integers in [0, 2^32) into a float64 buffer (exact); False, ``out`` undefined, if one is not.

    ``uint32`` input (the wire form) always fits; ``int64`` input is checked in
    one pass, as ``uint64`` (where a negative value is huge).
    """
    if v.dtype == np.uint32:
        np.copyto(out, v)
        return True
    if v.dtype != np.int64 or (v.size and int(v.view(np.uint64).max()) >> 32):
        return False
    np.copyto(out, v, casting="unsafe")
    return True
