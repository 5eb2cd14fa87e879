"""ECVRF-EDWARDS25519-SHA512-TAI verifiable random function (RFC 9381 §5, suite 0x03).

Why a VRF: seed 004 §IV-B.1 selects committees by cryptographic sortition on
VRF outputs, and the Proof-of-Credit lottery uses the proposer's VRF output as
its hash code. A VRF output ``beta`` is unique for a (public key, alpha) pair
(RFC 9381 §3.1) and anyone can check it from the 80-byte proof ``pi``, so a
proposer cannot grind for a winning value by re-ordering its block. That only
holds if ``alpha`` is something the prover cannot choose, and the key was
registered before ``alpha`` was known (ECVRF keys may be generated maliciously).
Only ``beta`` is unique, not ``pi`` (Gamma may carry a small-order component), so
derive lottery values from ``beta`` and never from the proof bytes.

Keys: the secret key is the account's 32-byte Ed25519 seed. RFC 9381 §5.5 takes
the secret scalar ``x`` and ``Y = x*B`` from RFC 8032 §5.1.5, so the VRF public
key *is* the Ed25519 public key. The RFC's nonce (§5.4.2.2) is also RFC 8032's
signing nonce, ``SHA-512(prefix || h_string)``. An Ed25519 signature made with the
same seed over a message equal to some ``h_string`` would reuse a VRF nonce and
reveal ``x``. This is safe here only because fedledger never signs raw bytes.
``keys.SigningKey.sign`` always signs ``b"fedledger/" + domain + b"\\x00" + message``,
which could equal a 32-byte ``h_string`` only if that point encoding began with
those 11+ fixed bytes (about 2^88 work to find even when alpha is chosen freely).
Never let a VRF seed sign unframed messages.

libsodium (PyNaCl bindings) does the group arithmetic, but its point functions
are stricter than the RFC in some places and laxer in others. ``scalarmult`` and
``is_valid_point`` accept only points of the prime-order subgroup, and ``scalarmult``
also refuses a zero scalar or an identity result. ``core_ed25519_add`` accepts any
curve point but also decodes a non-canonical y (y >= p) without complaint. Hence the two
helpers :func:`_decode` (RFC 8032 decoding = a lossless add round trip) and
:func:`_mul` (scalar multiplication of any curve point, small-order component
included). Only 1 in 8 points that ``encode_to_curve`` decodes lies in the
prime-order subgroup, so ``is_valid_point`` must not be used there.
"""

from __future__ import annotations

import hashlib

from nacl.bindings import (
    crypto_core_ed25519_add,
    crypto_core_ed25519_is_valid_point,
    crypto_core_ed25519_scalar_add,
    crypto_core_ed25519_scalar_mul,
    crypto_core_ed25519_scalar_reduce,
    crypto_core_ed25519_sub,
    crypto_scalarmult_ed25519_base_noclamp,
    crypto_scalarmult_ed25519_noclamp,
)
from nacl.exceptions import CryptoError

from fedledger.crypto.keys import SigningKey
from fedledger.errors import InvalidSignature

PROOF_SIZE = 80  # ptLen + cLen + qLen = 32 + 16 + 32
OUTPUT_SIZE = 64  # hLen of SHA-512

_SUITE = b"\x03"  # suite_string of ECVRF-EDWARDS25519-SHA512-TAI
_C_LEN = 16
_L = 2**252 + 27742317777372353535851937790883648493  # q, order of the base point B
_INV8 = pow(8, -1, _L)
_IDENTITY = (1).to_bytes(32, "little")  # encoding of the neutral point (0, 1)


def _hash(*parts: bytes) -> bytes:
    return hashlib.sha512(b"".join(parts)).digest()


def _decode(s: bytes) -> bytes | None:
    """RFC 8032 §5.1.3 string_to_point: ``s`` if it encodes a curve point, else None.

    libsodium's add decodes and re-encodes canonically. An encoding is valid
    exactly when the round trip returns it unchanged: y >= p and (x = 0, sign 1) do not.
    """
    try:
        return s if crypto_core_ed25519_add(s, _IDENTITY) == s else None
    except CryptoError:  # y gives no square root: not on the curve
        return None


def _times8(point: bytes) -> bytes:
    """Multiply by the cofactor 8 (three doublings, valid for any curve point)."""
    for _ in range(3):
        point = crypto_core_ed25519_add(point, point)
    return point


def _mul(k: int, point: bytes) -> bytes:
    """``k * point`` for any curve point, including the identity and mixed-order points.

    Write point = P + T with P = 8^-1 * (8 * point) in the prime-order subgroup and
    T of order dividing 8. Then k * point = (k mod q) * P + (k mod 8) * T.
    """
    if crypto_core_ed25519_is_valid_point(point):  # T = 0: the usual, honest case
        return _mul_prime(k, point)
    eight = _times8(point)
    prime = _IDENTITY if eight == _IDENTITY else _mul_prime(_INV8, eight)
    torsion = crypto_core_ed25519_sub(point, prime)
    result = _mul_prime(k, prime)
    if torsion != _IDENTITY:
        for _ in range(k % 8):
            result = crypto_core_ed25519_add(result, torsion)
    return result


def _mul_prime(k: int, point: bytes) -> bytes:
    """``k * point`` for a point of the prime-order subgroup (or the identity)."""
    k %= _L
    if k == 0 or point == _IDENTITY:
        return _IDENTITY
    return crypto_scalarmult_ed25519_noclamp(k.to_bytes(32, "little"), point)


def _mul_base(k: int) -> bytes:
    k %= _L
    return _IDENTITY if k == 0 else crypto_scalarmult_ed25519_base_noclamp(k.to_bytes(32, "little"))


def _encode_to_curve(pk: bytes, alpha: bytes) -> bytes:
    """§5.4.1.1 try-and-increment with encode_to_curve_salt = PK_string (§5.5)."""
    for ctr in range(256):
        digest = _hash(_SUITE, b"\x01", pk, alpha, bytes([ctr]), b"\x00")
        candidate = _decode(digest[:32])
        if candidate is not None:
            h = _times8(candidate)
            if h != _IDENTITY:
                return h
    raise InvalidSignature("alpha does not hash to the curve in 256 tries")  # probability ~2^-256


def _challenge(*points: bytes) -> bytes:
    """§5.4.3 challenge generation: the first cLen bytes of the hash, little-endian."""
    return _hash(_SUITE, b"\x02", *points, b"\x00")[:_C_LEN]


def _decode_proof(proof: bytes) -> tuple[bytes, int, int]:
    """§5.4.4: split pi into (Gamma, c, s); raise InvalidSignature if malformed."""
    if len(proof) != PROOF_SIZE:
        raise InvalidSignature(f"VRF proof must be {PROOF_SIZE} bytes, got {len(proof)}")
    gamma = _decode(proof[:32])
    if gamma is None:
        raise InvalidSignature("VRF proof: Gamma is not a valid edwards25519 point")
    c = int.from_bytes(proof[32 : 32 + _C_LEN], "little")
    s = int.from_bytes(proof[32 + _C_LEN :], "little")
    if s >= _L:
        raise InvalidSignature("VRF proof: scalar s is not below the group order")
    return gamma, c, s


def _beta(gamma: bytes) -> bytes:
    """§5.2 proof_to_hash from a decoded Gamma."""
    return _hash(_SUITE, b"\x03", _times8(gamma), b"\x00")


def prove(key: SigningKey, alpha: bytes) -> bytes:
    """The 80-byte proof pi for ``alpha`` under ``key`` (RFC 9381 §5.1), deterministic."""
    digest = _hash(key.seed())  # RFC 8032 §5.1.5: x = clamp(lower half), prefix = upper half
    clamped = bytearray(digest[:32])
    clamped[0] &= 248
    clamped[31] = (clamped[31] & 127) | 64
    x = crypto_core_ed25519_scalar_reduce(bytes(clamped) + bytes(32))
    pk = key.public_key  # = x*B
    h = _encode_to_curve(pk, alpha)
    gamma = crypto_scalarmult_ed25519_noclamp(x, h)
    k = crypto_core_ed25519_scalar_reduce(_hash(digest[32:], h))  # §5.4.2.2 nonce
    c = _challenge(
        pk,
        h,
        gamma,
        crypto_scalarmult_ed25519_base_noclamp(k),
        crypto_scalarmult_ed25519_noclamp(k, h),
    )
    s = crypto_core_ed25519_scalar_add(k, crypto_core_ed25519_scalar_mul(c + bytes(16), x))
    return gamma + c + s


def verify(public_key: bytes, alpha: bytes, proof: bytes) -> bytes:
    """Return beta if ``proof`` is valid for ``alpha`` under ``public_key`` (RFC 9381 §5.3).

    The key is fully validated (``validate_key`` = TRUE, §5.4.5): it must decode
    and must not have small order. Raise :class:`InvalidSignature` otherwise.
    """
    if len(public_key) != 32:
        raise InvalidSignature(f"VRF public key must be 32 bytes, got {len(public_key)}")
    y = _decode(public_key)
    if y is None:
        raise InvalidSignature("VRF public key is not a valid edwards25519 point")
    if _times8(y) == _IDENTITY:
        raise InvalidSignature("VRF public key has small order")
    gamma, c, s = _decode_proof(proof)
    h = _encode_to_curve(y, alpha)
    u = crypto_core_ed25519_sub(_mul_base(s), _mul(c, y))
    v = crypto_core_ed25519_sub(_mul_prime(s, h), _mul(c, gamma))
    if _challenge(y, h, gamma, u, v) != proof[32 : 32 + _C_LEN]:
        raise InvalidSignature(f"VRF proof does not verify for key {public_key.hex()[:16]}…")
    return _beta(gamma)


def proof_to_hash(proof: bytes) -> bytes:
    """beta from pi without verifying it (RFC 9381 §5.2); only meaningful once verified."""
    gamma, _, _ = _decode_proof(proof)
    return _beta(gamma)
