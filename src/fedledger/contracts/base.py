"""Contracts: deterministic on-chain programs registered by name.

A contract is a set of methods ``(ctx, args) -> result``. Methods read and
write only through :class:`Context`, which namespaces keys per contract and
stores canonical CBOR values. A method signals failure by raising
:class:`ContractError` (``ctx.require``); the caller rolls back its writes and
keeps a failed receipt with the reason.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from fedledger.codec import cbor
from fedledger.crypto.keys import address_of
from fedledger.errors import ContractError
from fedledger.ledger.state import State

Method = Callable[["Context", Any], Any]


def state_key(contract: str, key: str) -> bytes:
    """Where contract ``contract`` keeps ``key`` in the chain state."""
    return f"c/{contract}/{key}".encode()


def read_state(state: State, contract: str, key: str) -> Any:
    """Decoded value of a contract's ``key``, or ``None``."""
    raw = state.get(state_key(contract, key))
    return None if raw is None else cbor.decode(raw)


def write_state(state: State, contract: str, key: str, value: Any) -> None:
    state.set(state_key(contract, key), cbor.encode(value))


@dataclass
class Context:
    """What a contract method may see and touch during one call."""

    state: State
    contract: str
    chain_id: str
    sender: bytes
    height: int
    timestamp: int
    tx_hash: bytes

    @property
    def address(self) -> bytes:
        return address_of(self.sender)

    def _key(self, key: str) -> bytes:
        return state_key(self.contract, key)

    def get(self, key: str, contract: str | None = None) -> Any:
        """Decoded value at ``key`` (of this or another contract), or ``None``."""
        return read_state(self.state, contract or self.contract, key)

    def put(self, key: str, value: Any) -> None:
        write_state(self.state, self.contract, key, value)

    def keys(self, prefix: str) -> Iterator[str]:
        base = self._key("")
        for k in self.state.keys_with_prefix(self._key(prefix)):
            yield k[len(base) :].decode()

    @staticmethod
    def require(condition: bool, reason: str) -> None:
        if not condition:
            raise ContractError(reason)


@dataclass
class Contract:
    name: str
    methods: dict[str, Method] = field(default_factory=dict)

    def method(self, fn: Method) -> Method:
        self.methods[fn.__name__] = fn
        return fn


REGISTRY: dict[str, Contract] = {}


def register(contract: Contract) -> Contract:
    REGISTRY[contract.name] = contract
    return contract


def lookup(contract: str, method: str) -> Method | None:
    c = REGISTRY.get(contract)
    return None if c is None else c.methods.get(method)


def arg(args: Any, name: str, typ: type | tuple[type, ...], *, size: int | None = None) -> Any:
    """Fetch and type-check one argument of a call, with a clear error."""
    if not isinstance(args, dict) or name not in args:
        raise ContractError(f"missing argument {name!r}")
    value: Any = args[name]
    if isinstance(value, bool) and typ is int or not isinstance(value, typ):
        raise ContractError(f"argument {name!r} has the wrong type")
    if size is not None and len(args[name]) != size:
        raise ContractError(f"argument {name!r} must be {size} bytes")
    return value
