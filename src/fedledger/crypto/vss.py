"""Feldman verifiable secret sharing over the prime-order Ed25519 group.

Used by the epoch-randomness beacon of microchain committees (seed 004 §IV-B
(1) and (4)): a dealer shares a secret r = a_0 with the polynomial
f(x) = a_0 + a_1 x + … + a_{t-1} x^{t-1} over Z_L, publishes the commitments
C_k = a_k·G and gives member j the share s_j = f(j). Anyone can check a share
against the commitments (s_j·G = Σ_k j^k C_k) and a revealed secret against C_0;
any t valid shares recover r by Lagrange interpolation at 0, fewer reveal
nothing about it.

All group operations are libsodium's (``nacl.bindings``); only the scalar
arithmetic mod L is done with Python integers. Points are 32-byte Ed25519
encodings, scalars 32-byte little-endian integers below L. libsodium refuses
to produce or accept the identity point in scalar multiplication, so honest
coefficients are never zero (:func:`random_scalar_from` never returns zero,
:func:`deal` rejects it) and commitments must pass
``crypto_core_ed25519_is_valid_point`` (canonical, in the prime-order subgroup,
not the identity).

Shares travel to their recipient inside a libsodium sealed box addressed to
the X25519 key converted from the recipient's Ed25519 identity key.
"""

from __future__ import annotations

import hashlib

from nacl.bindings import (
    crypto_box_SEALBYTES,
    crypto_core_ed25519_add,
    crypto_core_ed25519_is_valid_point,
    crypto_core_ed25519_scalar_reduce,
    crypto_scalarmult_ed25519_base_noclamp,
    crypto_scalarmult_ed25519_noclamp,
    crypto_sign_ed25519_pk_to_curve25519,
    crypto_sign_ed25519_sk_to_curve25519,
)
from nacl.exceptions import CryptoError
from nacl.public import PrivateKey, PublicKey, SealedBox

from fedledger.crypto.keys import SigningKey

L = 2**252 + 27742317777372353535851937790883648493  # order of the Ed25519 base point
SCALAR_SIZE = 32
POINT_SIZE = 32
BOX_SIZE = SCALAR_SIZE + crypto_box_SEALBYTES  # a sealed share: ephemeral key, MAC, 32-byte scalar
IDENTITY = b"\x01" + bytes(31)  # encoding of the neutral element (x = 0, y = 1)


def _int(scalar: bytes) -> int:
    """The integer a canonical scalar encodes; ``ValueError`` if it is not one."""
    if not isinstance(scalar, bytes) or len(scalar) != SCALAR_SIZE:
        raise ValueError("a scalar is 32 bytes")
    value = int.from_bytes(scalar, "little")
    if value >= L:
        raise ValueError("scalar is not reduced mod L")
    return value


def _bytes(value: int) -> bytes:
    return (value % L).to_bytes(SCALAR_SIZE, "little")


def _mul_base(value: int) -> bytes:
    """value·G, with 0·G = identity (libsodium refuses to return it)."""
    value %= L
    return IDENTITY if value == 0 else crypto_scalarmult_ed25519_base_noclamp(_bytes(value))


def is_point(point: bytes) -> bool:
    """True for a valid commitment: a canonical, non-identity point of the prime-order subgroup."""
    return (isinstance(point, bytes) and len(point) == POINT_SIZE
            and bool(crypto_core_ed25519_is_valid_point(point)))


def random_scalar_from(seed: bytes) -> bytes:
    """A nonzero scalar derived from ``seed``: SHA-512 reduced mod L (rehashed in the ~2^-252 zero case)."""
    digest = hashlib.sha512(b"fedledger/vss-scalar\x00" + seed).digest()
    while True:
        scalar = crypto_core_ed25519_scalar_reduce(digest)
        if any(scalar):
            return scalar
        digest = hashlib.sha512(digest).digest()


def _eval(coefficients: list[int], x: int) -> int:
    acc = 0
    for a in reversed(coefficients):  # Horner
        acc = (acc * x + a) % L
    return acc


def deal(coefficients: list[bytes], n: int) -> tuple[list[bytes], list[bytes]]:
    """Commitments C_k = a_k·G and shares s_j = f(j) for j = 1..n (threshold t = len(coefficients))."""
    ints = [_int(a) for a in coefficients]
    if not 1 <= len(ints) <= n:
        raise ValueError("need 1 <= t <= n coefficients")
    if 0 in ints:
        raise ValueError("coefficients must be nonzero")
    commitments = [_mul_base(a) for a in ints]
    shares = [_bytes(_eval(ints, j)) for j in range(1, n + 1)]
    return commitments, shares


def verify_share(commitments: list[bytes], index: int, share: bytes) -> bool:
    """True iff share·G = Σ_k index^k · C_k, i.e. ``share`` is f(index) for the committed f."""
    if not commitments or not all(is_point(c) for c in commitments) or not 0 < index < L:
        return False
    try:
        s = _int(share)
    except ValueError:
        return False
    expected = IDENTITY
    power = 1
    for c in commitments:
        expected = crypto_core_ed25519_add(expected, crypto_scalarmult_ed25519_noclamp(_bytes(power), c))
        power = power * index % L
    return _mul_base(s) == expected


def secret_matches(commitments: list[bytes], secret: bytes) -> bool:
    """True iff secret·G = C_0: ``secret`` is the dealer's committed secret f(0)."""
    try:
        s = _int(secret)
    except ValueError:
        return False
    return bool(commitments) and is_point(commitments[0]) and s != 0 and _mul_base(s) == commitments[0]


def recover(shares: dict[int, bytes], t: int) -> bytes:
    """f(0) from t shares {index: f(index)} by Lagrange interpolation; ``ValueError`` if fewer than t.

    The shares are not checked here: verify each with :func:`verify_share` first.
    Uses the t smallest indices, so the result does not depend on extra shares.
    """
    if t < 1 or len(shares) < t:
        raise ValueError(f"need {t} shares to recover, have {len(shares)}")
    xs = sorted(shares)[:t]
    if not all(0 < x < L for x in xs):
        raise ValueError("share indices must be in 1..L-1")
    secret = 0
    for x in xs:
        num, den = 1, 1
        for m in xs:
            if m != x:
                num = num * m % L
                den = den * (m - x) % L
        secret = (secret + _int(shares[x]) * num * pow(den, -1, L)) % L
    return _bytes(secret)


def encrypt_share(recipient_ed25519_pk: bytes, share: bytes) -> bytes:
    """Seal ``share`` to the holder of an Ed25519 identity key (X25519 key converted from it)."""
    try:
        curve_pk = crypto_sign_ed25519_pk_to_curve25519(recipient_ed25519_pk)
    except CryptoError:
        raise ValueError("recipient key is not a valid Ed25519 public key") from None
    return SealedBox(PublicKey(curve_pk)).encrypt(share)


def decrypt_share(key: SigningKey, box: bytes) -> bytes:
    """Open a share sealed to ``key``; ``ValueError`` if it does not open or is not a scalar."""
    curve_sk = crypto_sign_ed25519_sk_to_curve25519(key.seed() + key.public_key)
    try:
        share = SealedBox(PrivateKey(curve_sk)).decrypt(box)
    except CryptoError:
        raise ValueError("share box does not open with this key") from None
    _int(share)
    return share
