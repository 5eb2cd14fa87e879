"""Shamir secret sharing of whole vectors over Z_Q (seed 001, "Secret Sharing").

A dealer shares a vector ``s`` with threshold ``t`` by drawing ``t − 1`` uniform
coefficient vectors ``a_1 … a_{t−1}`` and giving the party at evaluation point
``x`` the vector ``f(x) = s + a_1 x + … + a_{t−1} x^{t−1} mod Q``. Any ``t``
shares give ``s = Σ λ_j f(x_j)`` with Lagrange coefficients at 0; any ``t − 1``
shares are uniformly distributed whatever ``s`` is. Sharing is linear, so the
sum of several dealers' shares at one point is a share of the sum of their
secrets (the share sums S_Dij of seed 001).

Evaluation at small points (the parties' indices) is one float64 matrix
product with the Vandermonde matrix, exact because every partial sum stays
below 2^53 (:func:`exact_in_float`); other points fall back to Horner's rule in
``int64`` with a reduction mod Q only when the next step could overflow.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fedledger.errors import UsageError, VerificationFailed
from fedledger.fl.secagg.field import BLOCK, Q, dot_mod, reduce, scratch, to_float
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
    if exact_in_float(pts, coeffs.shape[0] + 1):
        shares = _evaluate_blas(secret, coeffs, pts)
        if shares is not None:
            return shares
    return _evaluate_horner(secret, coeffs, pts)


def exact_in_float(points: Sequence[int], t: int) -> bool:
    """True if ``Σ_k x^k c_k`` (``k < t``, ``0 <= c_k < 2^32``) stays below 2^53 for every ``x`` in ``points``.

    Then float64, which represents every integer below 2^53, computes the
    Vandermonde product exactly whatever the order of the additions.
    """
    return all(((1 << 32) - 1) * sum(x**k for k in range(t)) < 1 << 53 for x in points)


def _evaluate_blas(secret: np.ndarray, coeffs: np.ndarray, pts: list[int]) -> np.ndarray | None:
    """Shares as ``V · (s ‖ a_1 … a_{t−1})`` in float64, block by block, then reduced mod Q.

    Each value ``v < 2^53`` is reduced as ``r = v − Q ⌊v / 2^31⌋ = (v mod 2^31)
    + ⌊v / 2^31⌋ < 2^31 + 2^22`` (all exact in float64), converted to ``uint32``
    and finished by ``min(r, r − Q)`` in wrapping ``uint32`` arithmetic. None if
    an input element is outside [0, 2^32), where the bound does not hold.
    """
    t, n, length = coeffs.shape[0] + 1, len(pts), secret.shape[0]
    vander = np.array([[float(x) ** k for k in range(t)] for x in pts])
    out = np.empty((n, length), dtype="<u4")
    size = max(1, min(length, BLOCK // 2))
    stack, vals, high = np.empty(t * size), np.empty(n * size), np.empty(n * size)
    r32, wrapped = np.empty(n * size, dtype=np.uint32), np.empty(n * size, dtype=np.uint32)
    q32 = np.uint32(Q)
    for start in range(0, length, size):
        stop = min(start + size, length)
        shape = (n, stop - start)
        s = scratch(stack, (t, stop - start))
        if not (to_float(secret[start:stop], s[0]) and (t == 1 or to_float(coeffs[:, start:stop], s[1:]))):
            return None
        v, h, r, w = scratch(vals, shape), scratch(high, shape), scratch(r32, shape), scratch(wrapped, shape)
        np.dot(vander, s, out=v)
        np.multiply(v, 2.0**-31, out=h)
        np.floor(h, out=h)
        h *= Q
        v -= h
        np.copyto(r, v, casting="unsafe")
        np.subtract(r, q32, out=w)
        np.minimum(r, w, out=out[:, start:stop])
    return out


def _evaluate_horner(secret: np.ndarray, coeffs: np.ndarray, pts: list[int]) -> np.ndarray:
    """Horner's rule in ``int64`` for any points, reducing only when the next step could overflow."""
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


def reconstruct(points: Sequence[int], shares: np.ndarray | Sequence[np.ndarray], t: int) -> np.ndarray:
    """The secret from the first ``t`` of the given shares (rows of ``shares`` match ``points``).

    ``shares`` is a 2-D array or a sequence of share vectors.
    """
    if len(points) < t:
        raise VerificationFailed(f"{len(points)} shares, but reconstruction needs t = {t}")
    return dot_mod(np.array(lagrange_at_zero(points[:t]), dtype=np.int64), shares[:t])
