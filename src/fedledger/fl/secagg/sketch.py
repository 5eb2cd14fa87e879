"""Linear sketches: the homomorphic commitments of secure aggregation.

``COM(x) = R·x mod Q`` for a ``k × L`` matrix ``R`` with entries uniform in
[0, 2^16), drawn from a challenge seed. The map is linear, so every identity
seed 001 checks homomorphically holds for sketches:
COM(g + η) = COM(g) + COM(η), COM(f(x)) = Σ_k x^k COM(a_k) for a share of a
committed polynomial, and COM(c) = Σ_i COM(c_i) for a sum.

Security (documented in docs/ARCHITECTURE.md, "Secure aggregation"). A sketch is
binding only for vectors fixed *before* ``R`` is known: the protocol first binds
every vector by its SHA-256 digest (or sends it), then derives the challenge
seed from those digests (Fiat–Shamir), and only then computes sketches. For a
fixed nonzero difference ``e`` the probability over ``R`` that ``R·e = 0`` is at
most ``2^(-16 k)`` (Schwartz–Zippel, one row at a time); ``k = 8`` rows give
2^-128 per check. Grinding the challenge (re-drawing shares until a bad one
passes) costs 2^128 hash evaluations. Hiding comes from a pad: the shared
secret is ``(g ‖ p)`` with ``p`` uniform in Z_Q^k and ``R`` restricted to the pad
columns invertible with overwhelming probability, so ``COM(g ‖ p)`` is uniform
whatever ``g`` is.

Exact arithmetic with BLAS: an element ``v < 2^32`` (a field element, or any
``uint32`` on the wire) is split into ``v = 2^16 h + l`` with ``h, l < 2^16``,
read in place as the two low 16-bit words of its integer representation; each
product with an entry of ``R`` is below 2^32, so float64 sums of up to 2^21
such products are exact (< 2^53). Other integers take shifts and masks. ``R``
is stored as ``uint16`` (a quarter of float64) and converted one cache-sized
block of columns at a time: a round sketches about a hundred vectors, and
reading a float64 ``R`` from memory for each one costs more than the arithmetic.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fedledger.errors import UsageError
from fedledger.fl.secagg.field import Q, scratch
from fedledger.fl.secagg.prg import uniform_u16

ROWS = 8
_BLOCK = 1 << 14  # columns per block: small enough for the scratch buffers to stay in cache
_FLUSH = 1 << 21  # columns whose float64 sums stay exact: (2^16 − 1)^2 · 2^21 < 2^53
_GEMV_ROWS = 4  # up to this many half-vectors, one matrix-vector product each beats one GEMM


def challenge_seed(tag: str, *parts: bytes) -> bytes:
    """Fiat–Shamir challenge: SHA-256 over a tag and length-prefixed transcript parts."""
    h = hashlib.sha256(b"fedledger/secagg-challenge\x00" + tag.encode() + b"\x00")
    for p in parts:
        h.update(len(p).to_bytes(8, "big"))
        h.update(p)
    return h.digest()


@dataclass(frozen=True, eq=False)
class SketchMatrix:
    """``R`` (``rows × length``, ``uint16`` entries in [0, 2^16)) drawn from ``seed``."""

    seed: bytes
    matrix: np.ndarray

    @classmethod
    def from_seed(cls, seed: bytes, length: int, rows: int = ROWS) -> SketchMatrix:
        if length < 1 or rows < 1:
            raise UsageError("a sketch needs at least one row and one column")
        return cls(seed, uniform_u16(seed, "sketch-matrix", (rows, length)))

    @property
    def length(self) -> int:
        return int(self.matrix.shape[1])

    @property
    def rows(self) -> int:
        return int(self.matrix.shape[0])

    def apply(self, vectors: np.ndarray) -> np.ndarray:
        """Sketches of field vectors: ``(L,) -> (k,)`` or ``(m, L) -> (m, k)`` int64 mod Q."""
        v = np.asarray(vectors)
        single = v.ndim == 1
        out = self.apply_groups([v[None, :] if single else v])
        return out[0] if single else out

    def apply_groups(self, groups: Sequence[np.ndarray]) -> np.ndarray:
        """Sketches of the rows of several ``(m_i, L)`` integer arrays, in order, without stacking them.

        Every group has the same number of columns ``L <= length`` (missing
        columns count as zeros). Returns ``(Σ m_i, k)`` int64 mod Q.
        """
        cols = {g.shape[1] for g in groups}
        if len(cols) != 1:
            raise UsageError("every group of vectors to sketch needs the same length")
        ncols = cols.pop()
        if ncols > self.length:
            raise UsageError(f"vector of length {ncols} is longer than the sketch ({self.length})")
        out = self._apply_words(groups, ncols)
        return out if out is not None else self._apply_shifted(np.vstack(groups))

    def _apply_words(self, groups: Sequence[np.ndarray], ncols: int) -> np.ndarray | None:
        """The sketches from the 16-bit halves read in place; None unless every element is in [0, 2^32).

        ``uint32`` elements (the wire form) always are; ``int64`` ones are
        checked a block at a time, while the block is in cache.
        """
        if any(_words(g) is None for g in groups):
            return None
        m = sum(g.shape[0] for g in groups)
        size = max(1, min(ncols, _BLOCK))
        split, rblock = np.empty(2 * m * size), np.empty(self.rows * size)
        part = np.empty((2 * m, self.rows))
        acc = np.zeros((2 * m, self.rows))
        total = np.zeros((2 * m, self.rows), dtype=np.int64)
        pending = 0
        for start in range(0, ncols, size):
            stop = min(start + size, ncols)
            x, r = scratch(split, (2 * m, stop - start)), scratch(rblock, (self.rows, stop - start))
            row = 0
            for g in groups:
                block = g[:, start:stop]
                if block.dtype == np.int64 and block.size and int(block.view(np.uint64).max()) >> 32:
                    return None
                words, k = _words(block), block.shape[0]
                if words is None:
                    return None
                np.copyto(x[row:row + k], words[0])
                np.copyto(x[m + row:m + row + k], words[1])
                row += k
            np.copyto(r, self.matrix[:, start:stop])
            if 2 * m <= _GEMV_ROWS:
                for i in range(2 * m):
                    np.dot(r, x[i], out=part[i])
            else:
                np.dot(x, r.T, out=part)
            acc += part
            pending += stop - start
            if pending + size > _FLUSH:
                total += acc.astype(np.int64) % Q
                acc[:] = 0
                pending = 0
        total += acc.astype(np.int64) % Q
        return (total[m:] % Q * 65536 + total[:m]) % Q

    def _apply_shifted(self, rows: np.ndarray) -> np.ndarray:
        """The sketches of any integer rows, split with shifts and masks (exact for magnitudes below 2^37)."""
        out = np.zeros((rows.shape[0], self.rows), dtype=np.int64)
        for start in range(0, rows.shape[1], _BLOCK):
            block = rows[:, start:start + _BLOCK]
            r = self.matrix[:, start:start + block.shape[1]].astype(np.float64)
            hi = (block >> 16).astype(np.float64)
            lo = (block & 0xFFFF).astype(np.float64)
            out += (hi @ r.T).astype(np.int64) % Q * 65536
            out += (lo @ r.T).astype(np.int64)
            out %= Q
        return out


def _words(v: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """The low and high 16-bit words of ``uint32``/``int64`` elements, as strided views (no copy).

    For an element below 2^32 they are its halves ``l, h`` with ``v = 2^16 h + l``.
    None for other dtypes or a byte order other than little-endian.
    """
    if v.dtype not in (np.dtype(np.uint32), np.dtype(np.int64)) or sys.byteorder != "little":
        return None
    if v.strides[-1] != v.dtype.itemsize:
        return None
    words = v.view(np.uint16)
    step = v.dtype.itemsize // 2
    return words[:, 0::step], words[:, 1::step]


def poly_at(coeff_sketches: np.ndarray, x: int) -> np.ndarray:
    """``Σ_k x^k P_k mod Q`` for sketches ``P`` of shape ``(t, rows)``: the expected sketch of a share."""
    acc = np.zeros(coeff_sketches.shape[1], dtype=np.int64)
    for p in coeff_sketches[::-1]:
        acc = (acc * x + p) % Q
    return acc
