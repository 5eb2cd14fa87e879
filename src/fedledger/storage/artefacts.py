"""Storing and reading FL artefacts (models, data batches), sealed or plain.

Chains record two hashes per artefact: the plaintext hash (what authenticators,
step digests and FedAvg checks are about) and the address of the stored object
(seed 004 stage 2 keeps models encrypted in content-addressed storage). For a
plain artefact they are equal. A sealed artefact (``crypto/sealed.py``,
AES-256-GCM) can only be opened by its recipients, and opening checks the
plaintext against the hash the chain recorded, so a blob sealed by someone
else for the same readers is still refused.
"""

from __future__ import annotations

from collections.abc import Sequence

from fedledger.crypto.hashing import sha256
from fedledger.crypto.keys import SigningKey
from fedledger.crypto.sealed import is_sealed, open_sealed, seal
from fedledger.errors import VerificationFailed
from fedledger.storage.blobs import BlobStore

MODEL = b"fedledger/model"
DATA = b"fedledger/data"


def seal_artefact(plaintext: bytes, recipients: Sequence[bytes] | None, context: bytes) -> tuple[bytes, bytes]:
    """``(plaintext hash, stored bytes)``: sealed for ``recipients``, or plain when there are none."""
    if not recipients:
        return sha256(plaintext), plaintext
    return sha256(plaintext), seal(plaintext, recipients, context=context)


def store_artefact(blobs: BlobStore, plaintext: bytes, recipients: Sequence[bytes] | None,
                   context: bytes) -> tuple[bytes, bytes]:
    """Store an artefact; ``(plaintext hash, blob address)``."""
    plain_hash, stored = seal_artefact(plaintext, recipients, context)
    return plain_hash, bytes.fromhex(blobs.put(stored))


def open_artefact(stored: bytes, plain_hash: bytes, key: SigningKey | None, context: bytes) -> bytes:
    """The plaintext of a stored artefact, checked against the recorded ``plain_hash``."""
    if is_sealed(stored):
        if key is None:
            raise VerificationFailed(f"artefact {plain_hash.hex()[:16]}… is sealed and no reader key was given")
        return open_sealed(stored, key, context=context, expect_hash=plain_hash)
    if sha256(stored) != plain_hash:
        raise VerificationFailed(f"artefact does not hash to the recorded {plain_hash.hex()[:16]}…")
    return stored
