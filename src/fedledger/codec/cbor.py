"""Deterministic CBOR: the one byte encoding of everything fedledger signs or hashes.

Encoding uses cbor2's canonical mode (RFC 7049 §3.9 / RFC 8949 §4.2: shortest
integer and length forms, definite lengths, map keys sorted). Decoding is
strict: it accepts only the data model below and only bytes that are exactly the
canonical encoding of what they decode to, so every valid value has one
encoding and two parties hashing "the same" object always agree.

Allowed values: ``None``, ``bool``, ``int`` in [-2^64, 2^64 - 1], ``bytes``, ``str``, ``list`` (and
tuples on encode), and ``dict`` with ``str`` keys. Floats are excluded: their
rounding is platform-sensitive and a signed record should carry fixed-point
integers instead. Tags are excluded.
"""

from __future__ import annotations

from typing import Any

import cbor2

from fedledger.errors import DecodeError

MAX_DEPTH = 32


def encode(value: Any) -> bytes:
    """Canonical CBOR bytes of ``value``; raises ``TypeError`` for values outside the data model."""
    _check_value(value, 0, encoding=True)
    return cbor2.dumps(value, canonical=True)


def decode(data: bytes, *, max_size: int | None = None) -> Any:
    """Strictly decode canonical CBOR; raises :class:`DecodeError` with the reason."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise DecodeError(f"expected bytes, got {type(data).__name__}")
    data = bytes(data)
    if max_size is not None and len(data) > max_size:
        raise DecodeError(f"encoding is {len(data)} bytes, over the {max_size}-byte limit")
    if not data:
        raise DecodeError("empty input")
    try:
        value = cbor2.loads(data)
    except Exception as exc:  # cbor2 raises several types for malformed input
        raise DecodeError(f"malformed CBOR: {exc}") from None
    try:
        _check_value(value, 0, encoding=False)
    except TypeError as exc:
        raise DecodeError(str(exc)) from None
    canonical = cbor2.dumps(value, canonical=True)
    if canonical != data:
        if data.startswith(canonical):
            raise DecodeError(f"{len(data) - len(canonical)} trailing byte(s) after the value")
        raise DecodeError("not the canonical encoding (non-minimal, unsorted or duplicate keys)")
    return value


_SCALARS = frozenset({type(None), bool, bytes, str})
INT_MIN, INT_MAX = -(2**64), 2**64 - 1  # CBOR major types 0 and 1; bignum tags are excluded


def _check_value(value: Any, depth: int, *, encoding: bool) -> None:
    if type(value) in _SCALARS:  # exact-type fast path: this runs on every encode
        return
    if type(value) is int:
        if not INT_MIN <= value <= INT_MAX:
            raise TypeError("integers must fit in 64 bits (CBOR major types 0 and 1)")
        return
    if depth > MAX_DEPTH:
        raise TypeError(f"nesting deeper than {MAX_DEPTH}")
    if isinstance(value, dict):
        for key, item in value.items():
            if type(key) is not str:
                raise TypeError(f"map keys must be text strings, got {type(key).__name__}")
            _check_value(item, depth + 1, encoding=encoding)
        return
    if isinstance(value, list) or (encoding and isinstance(value, tuple)):
        for item in value:
            if type(item) not in _SCALARS:
                _check_value(item, depth + 1, encoding=encoding)
        return
    if isinstance(value, bool | bytes | str):
        return
    if isinstance(value, int):
        return _check_value(int(value), depth, encoding=encoding)
    if isinstance(value, float):
        raise TypeError("floats are not allowed in encoded objects; use fixed-point integers")
    raise TypeError(f"type {type(value).__name__} is not allowed in encoded objects")
