"""Credit-weighted cryptographic sortition of a committee (seed 004 §IV-B.1).

Each candidate's VRF output ``β`` on the dynasty's ticket input is a uniform
number ``u ∈ (0, 1]``. Drawing K members without replacement with probability
proportional to credit is the Efraimidis–Spirakis scheme: keep the K largest
``u^(1/c)``. Comparisons are done exactly in integers, so every validator
picks the same committee: ``u_a^(1/c_a) > u_b^(1/c_b)`` iff
``y_a^(c_b) · 2^(256·c_a) > y_b^(c_a) · 2^(256·c_b)`` with ``u = y / 2^256``.
"""

from __future__ import annotations

from functools import cmp_to_key

import gmpy2

_BITS = 256


def _y(beta: bytes) -> gmpy2.mpz:
    return gmpy2.mpz(int.from_bytes(beta[:32], "big") + 1)  # in [1, 2^256]


def _compare(a: tuple[bytes, int, bytes], b: tuple[bytes, int, bytes]) -> int:
    (pk_a, c_a, beta_a), (pk_b, c_b, beta_b) = a, b
    left = _y(beta_a) ** c_b * (gmpy2.mpz(1) << (_BITS * c_a))
    right = _y(beta_b) ** c_a * (gmpy2.mpz(1) << (_BITS * c_b))
    if left != right:
        return -1 if left > right else 1  # larger key first
    return -1 if pk_a < pk_b else (1 if pk_a > pk_b else 0)


def select_committee(tickets: list[tuple[bytes, int, bytes]], k: int) -> list[bytes]:
    """The ``k`` winners among ``(public key, credit, vrf output)``; zero credit never wins."""
    eligible = [t for t in tickets if t[1] > 0]
    ranked = sorted(eligible, key=cmp_to_key(_compare))
    return [pk for pk, _, _ in ranked[:k]]
