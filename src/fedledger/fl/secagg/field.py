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
``tests/test_secagg_field.py``:

* one value: ``|decode(encode(x)) − x| <= 2^-(f+1)``;
* a weighted sum with integer weights ``w_i``:
  ``|decode(Σ w_i encode(x_i)) − Σ w_i x_i| <= (Σ |w_i|) · 2^-(f+1)``,

provided no intermediate leaves the centred range, i.e. ``Σ |w_i| · |x_i| <
capacity(f)`` coordinate-wise, where ``capacity(f) = ((Q − 1) / 2) / 2^f``.
:func:`encode` refuses values whose magnitude exceeds ``limit`` (the caller
passes ``capacity / total weight`` so that sums cannot wrap).
"""

from __future__ import annotations

import numpy as np

from fedledger.errors import UsageError

Q = (1 << 31) - 1
HALF = (Q - 1) // 2
ELEMENT_BYTES = 4
DEFAULT_FRAC_BITS = 16


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
    bound = capacity(check_frac_bits(frac_bits)) if limit is None else float(limit)
    arr = np.asarray(x, dtype=np.float64)
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


def decode(v: np.ndarray, frac_bits: int) -> np.ndarray:
    """Centred decoding of field elements back to floats (see the module docstring)."""
    arr = np.asarray(v, dtype=np.int64)
    centred = np.where(arr > HALF, arr - Q, arr)
    return centred.astype(np.float64) / float(1 << check_frac_bits(frac_bits))


def reduce(v: np.ndarray) -> np.ndarray:
    """``v mod Q`` in place for a non-negative ``int64`` array below 2^63; returns it."""
    np.remainder(v, Q, out=v)
    return v


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


def dot_mod(coeffs: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``Σ_i coeffs[i] · rows[i] mod Q`` for field ``coeffs`` (m,) and ``rows`` (m, L)."""
    acc = np.zeros(rows.shape[1], dtype=np.int64)
    for c, row in zip(np.asarray(coeffs, dtype=np.int64), rows, strict=True):
        acc += np.multiply(row, int(c), dtype=np.int64) % Q
        if acc.max(initial=0) >= 1 << 62:
            reduce(acc)
    return reduce(acc)
