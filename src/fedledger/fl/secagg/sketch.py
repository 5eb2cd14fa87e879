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

Exact arithmetic with BLAS: a field element ``v < 2^31`` is split into ``v =
2^16 h + l`` with ``h, l < 2^16``; each product with an entry of ``R`` is below
2^32, so a float64 dot product of up to 2^21 terms is exact (< 2^53). Longer
vectors are processed in blocks.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from fedledger.errors import UsageError
from fedledger.fl.secagg.field import Q
from fedledger.fl.secagg.prg import uniform_u16

ROWS = 8
_BLOCK = 1 << 14  # columns per block: exact (< 2^21) and small enough to stay in cache


def challenge_seed(tag: str, *parts: bytes) -> bytes:
    """Fiat–Shamir challenge: SHA-256 over a tag and length-prefixed transcript parts."""
    h = hashlib.sha256(b"fedledger/secagg-challenge\x00" + tag.encode() + b"\x00")
    for p in parts:
        h.update(len(p).to_bytes(8, "big"))
        h.update(p)
    return h.digest()


@dataclass(frozen=True, eq=False)
class SketchMatrix:
    """``R`` (``rows × length``, float64 entries in [0, 2^16)) drawn from ``seed``."""

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
        rows = v[None, :] if single else v
        if rows.shape[1] > self.length:
            raise UsageError(f"vector of length {rows.shape[1]} is longer than the sketch ({self.length})")
        out = np.zeros((rows.shape[0], self.rows), dtype=np.int64)
        for start in range(0, rows.shape[1], _BLOCK):
            block = rows[:, start:start + _BLOCK]
            r = self.matrix[:, start:start + block.shape[1]]
            hi = (block >> 16).astype(np.float64)
            lo = (block & 0xFFFF).astype(np.float64)
            out += (hi @ r.T).astype(np.int64) % Q * 65536
            out += (lo @ r.T).astype(np.int64)
            out %= Q
        return out[0] if single else out


def poly_at(coeff_sketches: np.ndarray, x: int) -> np.ndarray:
    """``Σ_k x^k P_k mod Q`` for sketches ``P`` of shape ``(t, rows)``: the expected sketch of a share."""
    acc = np.zeros(coeff_sketches.shape[1], dtype=np.int64)
    for p in coeff_sketches[::-1]:
        acc = (acc * x + p) % Q
    return acc
