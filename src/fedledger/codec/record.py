"""Typed records: frozen dataclasses with a schema and a canonical CBOR encoding.

A record encodes as a CBOR map from field name to value. The schema is taken
from the dataclass annotations, and decoding enforces it: unknown fields,
missing fields and values of the wrong type are rejected with a message naming
the record and field. Supported field types: ``int``, ``bool``, ``bytes``,
``str``, ``Any`` (any value of the CBOR data model), ``X | None``,
``tuple[X, ...]``, ``dict[str, X]`` and nested records.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, ClassVar, Self, Union, get_args, get_origin

from fedledger.codec import cbor
from fedledger.errors import DecodeError


class Record:
    """Mixin for frozen dataclasses that have one canonical encoding."""

    __dataclass_fields__: ClassVar[dict[str, Any]]

    def to_obj(self, *, exclude: frozenset[str] = frozenset()) -> dict[str, Any]:
        """The plain CBOR-model value of this record (nested records become maps)."""
        return {
            name: _to_obj(getattr(self, name))
            for name in _field_types(type(self))
            if name not in exclude
        }

    def encode(self, *, exclude: frozenset[str] = frozenset()) -> bytes:
        """Canonical bytes; ``exclude`` drops fields, e.g. the signature when signing.

        Records are immutable, so the full encoding is computed once and kept
        (a decoded record keeps the bytes it came from, which are canonical).
        """
        if exclude:
            return cbor.encode(self.to_obj(exclude=exclude))
        cached: bytes | None = self.__dict__.get("_encoding")
        if cached is None:
            cached = cbor.encode(self.to_obj())
            object.__setattr__(self, "_encoding", cached)
        return cached

    @classmethod
    def from_obj(cls, obj: Any) -> Self:
        """Build and type-check a record from a decoded CBOR value."""
        return _from_obj(cls, obj, cls.__name__)

    @classmethod
    def decode(cls, data: bytes, *, max_size: int | None = None) -> Self:
        """Strictly decode canonical bytes into this record type."""
        record = cls.from_obj(cbor.decode(data, max_size=max_size))
        object.__setattr__(record, "_encoding", bytes(data))
        return record

    def to_json(self) -> dict[str, Any]:
        """JSON-friendly view for the HTTP API: bytes become lowercase hex."""
        return _jsonable(self.to_obj())


_FIELD_TYPES: dict[type, dict[str, Any]] = {}


def _field_types(cls: type) -> dict[str, Any]:
    """Field name -> annotation, resolved once per record class."""
    fields = _FIELD_TYPES.get(cls)
    if fields is None:
        hints = typing.get_type_hints(cls)
        fields = _FIELD_TYPES[cls] = {f.name: hints[f.name] for f in dataclasses.fields(cls)}
    return fields


def _to_obj(value: Any) -> Any:
    if isinstance(value, Record):
        return value.to_obj()
    if isinstance(value, tuple | list):
        return [_to_obj(v) for v in value]
    if isinstance(value, dict):
        return {k: _to_obj(v) for k, v in value.items()}
    return value


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


def _from_obj(tp: Any, obj: Any, where: str) -> Any:
    if isinstance(tp, type) and issubclass(tp, Record):
        if not isinstance(obj, dict):
            raise DecodeError(f"{where}: expected a map, got {type(obj).__name__}")
        fields = _field_types(tp)
        unknown = sorted(set(obj) - set(fields))
        if unknown:
            raise DecodeError(f"{where}: unknown field(s) {', '.join(unknown)}")
        missing = [name for name in fields if name not in obj]
        if missing:
            raise DecodeError(f"{where}: missing field(s) {', '.join(missing)}")
        kwargs = {
            name: _from_obj(ftype, obj[name], f"{tp.__name__}.{name}")
            for name, ftype in fields.items()
        }
        try:
            return tp(**kwargs)
        except (TypeError, ValueError) as exc:
            raise DecodeError(f"{where}: {exc}") from None
    if tp is Any:
        return obj
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        options = get_args(tp)
        if obj is None and type(None) in options:
            return None
        inner = [o for o in options if o is not type(None)]
        return _from_obj(inner[0], obj, where)
    if origin is tuple:
        if not isinstance(obj, list):
            raise DecodeError(f"{where}: expected an array, got {type(obj).__name__}")
        (item_tp, _ellipsis) = get_args(tp)
        return tuple(_from_obj(item_tp, v, f"{where}[{i}]") for i, v in enumerate(obj))
    if origin is dict:
        if not isinstance(obj, dict) or not all(isinstance(k, str) for k in obj):
            raise DecodeError(f"{where}: expected a map with text keys")
        _key_tp, val_tp = get_args(tp)
        return {k: _from_obj(val_tp, v, f"{where}.{k}") for k, v in obj.items()}
    if tp is bytes:
        if not isinstance(obj, bytes):
            raise DecodeError(f"{where}: expected bytes, got {type(obj).__name__}")
        return obj
    if tp is bool:
        if not isinstance(obj, bool):
            raise DecodeError(f"{where}: expected a bool, got {type(obj).__name__}")
        return obj
    if tp is int:
        if isinstance(obj, bool) or not isinstance(obj, int):
            raise DecodeError(f"{where}: expected an integer, got {type(obj).__name__}")
        return obj
    if tp is str:
        if not isinstance(obj, str):
            raise DecodeError(f"{where}: expected a text string, got {type(obj).__name__}")
        return obj
    raise TypeError(f"{where}: unsupported schema type {tp!r}")  # a programming error

