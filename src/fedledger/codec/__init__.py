"""Canonical, deterministic encoding for everything signed or hashed."""

from fedledger.codec.cbor import decode, encode
from fedledger.codec.record import Record

__all__ = ["Record", "decode", "encode"]
