"""SHA-256 with explicit domain separation."""

from __future__ import annotations

import hashlib

DIGEST_SIZE = 32


def sha256(data: bytes) -> bytes:
    """Plain SHA-256 digest."""
    return hashlib.sha256(data).digest()


def tagged_hash(tag: str, data: bytes) -> bytes:
    """SHA-256 of ``len(tag) || tag || data`` so that digests of different kinds never collide."""
    t = tag.encode()
    return hashlib.sha256(len(t).to_bytes(1, "big") + t + data).digest()
