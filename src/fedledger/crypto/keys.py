"""Ed25519 identities and domain-separated signatures.

Keys come from ``cryptography`` (OpenSSL). Every signature covers
``b"fedledger/" + domain + b"\\x00" + message`` so that a signature made for one
kind of message (a transaction, a block, a model authenticator) can never be
replayed as another. An address is the first 20 bytes of SHA-256(public key).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

from cryptography.exceptions import InvalidSignature as _CryptoInvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from fedledger.crypto.hashing import sha256
from fedledger.errors import InvalidSignature

PUBLIC_KEY_SIZE = 32
SIGNATURE_SIZE = 64
ADDRESS_SIZE = 20


class Domain:
    """Signature domains: one per kind of signed message."""

    TX = "tx"
    BLOCK = "block"
    AUTHENTICATOR = "authenticator"
    DATA = "data"
    P2P = "p2p"
    VOTE = "vote"
    ARBITRATION = "arbitration"
    BFT_PROPOSAL = "bft-proposal"  # main-chain BFT: a proposer's PROPOSAL for (height, round)
    BFT_VOTE = "bft-vote"  # main-chain BFT: PREVOTE and PRECOMMIT
    INTERLOCK = "interlock"


def address_of(public_key: bytes) -> bytes:
    """Account address a = H(pk), truncated to 20 bytes (seed 004 §IV-A)."""
    return sha256(public_key)[:ADDRESS_SIZE]


def _signed_bytes(domain: str, message: bytes) -> bytes:
    return b"fedledger/" + domain.encode() + b"\x00" + message


@dataclass(frozen=True)
class SigningKey:
    """An Ed25519 private key with its public half."""

    _key: Ed25519PrivateKey

    @classmethod
    def generate(cls) -> SigningKey:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes) -> SigningKey:
        """Deterministic key from a 32-byte seed (tests and reproducible demos)."""
        if len(seed) != 32:
            raise ValueError("an Ed25519 seed is 32 bytes")
        return cls(Ed25519PrivateKey.from_private_bytes(seed))

    def seed(self) -> bytes:
        return self._key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )

    @property
    def public_key(self) -> bytes:
        return self._key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )

    @property
    def address(self) -> bytes:
        return address_of(self.public_key)

    def sign(self, domain: str, message: bytes) -> bytes:
        return self._key.sign(_signed_bytes(domain, message))


@lru_cache(maxsize=4096)
def _load_public(public_key: bytes) -> Ed25519PublicKey:
    return Ed25519PublicKey.from_public_bytes(public_key)


def verify(public_key: bytes, domain: str, message: bytes, signature: bytes) -> None:
    """Raise :class:`InvalidSignature` unless ``signature`` is valid for the domain and message."""
    if len(public_key) != PUBLIC_KEY_SIZE or len(signature) != SIGNATURE_SIZE:
        raise InvalidSignature("malformed public key or signature length")
    try:
        _load_public(public_key).verify(signature, _signed_bytes(domain, message))
    except (_CryptoInvalidSignature, ValueError):
        raise InvalidSignature(f"bad {domain} signature by {public_key.hex()[:16]}…") from None


def is_valid(public_key: bytes, domain: str, message: bytes, signature: bytes) -> bool:
    """Boolean form of :func:`verify`."""
    try:
        verify(public_key, domain, message, signature)
    except InvalidSignature:
        return False
    return True


def verify_batch(items: Iterable[tuple[bytes, str, bytes, bytes]]) -> list[int]:
    """Verify many ``(public_key, domain, message, signature)`` items; return the bad indices.

    Neither ``cryptography`` nor PyNaCl exposes Ed25519 batch verification, so
    this checks each signature in turn (strict, cofactorless verification as
    libsodium/OpenSSL do it) and reports every failure rather than the first.
    """
    return [i for i, item in enumerate(items) if not is_valid(*item)]
