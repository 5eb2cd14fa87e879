"""Shamir secret sharing of whole vectors over Z_Q (seed 001, "Secret Sharing").

A dealer shares a vector ``s`` with threshold ``t`` by drawing ``t − 1`` uniform
coefficient vectors ``a_1 … a_{t−1}`` and giving the party at evaluation point
``x`` the vector ``f(x) = s + a_1 x + … + a_{t−1} x^{t−1} mod Q``. Any ``t``
shares give ``s = Σ λ_j f(x_j)`` with Lagrange coefficients at 0; any ``t − 1``
shares are uniformly distributed whatever ``s`` is. Sharing is linear, so the
sum of several dealers' shares at one point is a share of the sum of their
secrets (the share sums S_Dij of seed 001).

Evaluation is Horner's rule in ``int64``; a reduction mod Q is inserted only
when the next step could overflow, so with small evaluation points (the
parties' indices) a share costs about ``t`` multiply-adds per coordinate.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fedledger.errors import UsageError, VerificationFailed
from fedledger.fl.secagg.field import Q, dot_mod, reduce
from fedledger.fl.secagg.prg import uniform_field

_LIMIT = 1 << 62
_BLOCK = 1 << 14


def check_points(points: Sequence[int]) -> list[int]:
    pts = [int(p) for p in points]
    if any(not 0 < p < Q for p in pts):
        raise UsageError("evaluation points must be in [1, Q)")
    if len(set(pts)) != len(pts):
        raise UsageError("evaluation points must be distinct")
    return pts


def coefficients(key: bytes, t: int, length: int) -> np.ndarray:
    """The ``t − 1`` random coefficient vectors of a dealer, from its secret ``key``."""
    if t < 1:
        raise UsageError(f"threshold must be >= 1, got {t}")
    return uniform_field(key, "shamir-coefficients", (t - 1, length))


def evaluate(secret: np.ndarray, coeffs: np.ndarray, points: Sequence[int]) -> np.ndarray:
    """Shares ``f(x)`` for each ``x`` in ``points``: a ``(len(points), L)`` ``uint32`` array.

    Works through the vector in cache-sized blocks; shares come out reduced mod Q
    in their wire form (``uint32``), ready to hash and send.
    """
    pts = check_points(points)
    length = secret.shape[0]
    out = np.empty((len(pts), length), dtype="<u4")
    acc = np.empty(min(length, _BLOCK), dtype=np.int64)
    for start in range(0, length, _BLOCK):
        stop = min(start + _BLOCK, length)
        a = acc[: stop - start]
        block = coeffs[:, start:stop]
        for row, x in enumerate(pts):
            bound = Q
            if not block.shape[0]:
                a[:] = secret[start:stop]
            else:
                np.copyto(a, block[-1])
                for c in block[-2::-1]:
                    if bound * x + Q >= _LIMIT:
                        reduce(a)
                        bound = Q
                    a *= x
                    a += c
                    bound = bound * x + Q
                if bound * x + Q >= _LIMIT:
                    reduce(a)
                a *= x
                a += secret[start:stop]
            reduce(a)
            out[row, start:stop] = a
    return out


def share(secret: np.ndarray, points: Sequence[int], t: int, key: bytes) -> np.ndarray:
    """Split ``secret`` (field vector) into shares at ``points`` with threshold ``t``."""
    if not 1 <= t <= len(points):
        raise UsageError(f"threshold {t} must be between 1 and the number of shares ({len(points)})")
    return evaluate(secret, coefficients(key, t, secret.shape[0]), points)


def lagrange_at_zero(points: Sequence[int]) -> list[int]:
    """Coefficients λ_j with ``f(0) = Σ λ_j f(x_j)`` for any polynomial of degree < len(points)."""
    pts = check_points(points)
    lam = []
    for j, xj in enumerate(pts):
        num, den = 1, 1
        for m, xm in enumerate(pts):
            if m != j:
                num = num * xm % Q
                den = den * (xm - xj) % Q
        lam.append(num * pow(den, -1, Q) % Q)
    return lam


def reconstruct(points: Sequence[int], shares: np.ndarray, t: int) -> np.ndarray:
    """The secret from the first ``t`` of the given shares (rows of ``shares`` match ``points``)."""
    if len(points) < t:
        raise VerificationFailed(f"{len(points)} shares, but reconstruction needs t = {t}")
    return dot_mod(np.array(lagrange_at_zero(points[:t]), dtype=np.int64), shares[:t])
