"""Transactions (seed 004 §IV-A): ``{tx_hash, sender, nonce, timestamp, kind, payload, signature}``.

``tx_hash`` is derived, not stored: it is H(every field but the signature), as
the seed's ``tx_hash = H(a_i, T_stamp, data)``, so it can never disagree with
the body. ``chain_id`` and a per-sender ``nonce`` are signed too: a transaction
for one chain cannot be replayed on another, nor twice on the same one.
``sender`` is the Ed25519 public key; the account address is H(sender)[:20].
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from fedledger.codec import Record
from fedledger.crypto.hashing import tagged_hash
from fedledger.crypto.keys import (
    PUBLIC_KEY_SIZE,
    SIGNATURE_SIZE,
    Domain,
    SigningKey,
    address_of,
    verify,
)
from fedledger.errors import DecodeError, FedledgerError, InvalidTransaction

MAX_TX_BYTES = 64 * 1024
MAX_NAME_LEN = 64
KIND_CALL = "call"
TX_KINDS = frozenset({KIND_CALL})


@dataclass(frozen=True)
class Call(Record):
    """Payload of a ``call`` transaction: a contract method and its arguments."""

    contract: str
    method: str
    args: Any


@dataclass(frozen=True)
class Transaction(Record):
    chain_id: str
    sender: bytes
    nonce: int
    timestamp: int
    kind: str
    payload: Any
    signature: bytes

    @cached_property
    def _signing_bytes(self) -> bytes:
        return self.encode(exclude=frozenset({"signature"}))

    def signing_bytes(self) -> bytes:
        return self._signing_bytes

    @cached_property
    def tx_hash(self) -> bytes:
        return tagged_hash("fedledger/tx", self.signing_bytes())

    @cached_property
    def address(self) -> bytes:
        return address_of(self.sender)

    def call(self) -> Call:
        """The decoded payload (raises ``DecodeError`` if it is not a valid call)."""
        cached: Call | None = self.__dict__.get("_call")
        if cached is None:
            cached = Call.from_obj(self.payload)
            object.__setattr__(self, "_call", cached)
        return cached

    def to_json(self) -> dict[str, Any]:
        out = super().to_json()
        out["tx_hash"] = self.tx_hash.hex()
        return out


def make_tx(
    key: SigningKey,
    chain_id: str,
    nonce: int,
    contract: str,
    method: str,
    args: Any,
    timestamp: int,
) -> Transaction:
    """Build and sign a contract-call transaction."""
    unsigned = Transaction(
        chain_id=chain_id,
        sender=key.public_key,
        nonce=nonce,
        timestamp=timestamp,
        kind=KIND_CALL,
        payload=Call(contract, method, args).to_obj(),
        signature=b"",
    )
    sig = key.sign(Domain.TX, unsigned.signing_bytes())
    return dataclasses.replace(unsigned, signature=sig)


def decode_tx(data: bytes) -> Transaction:
    """Decode untrusted bytes into a transaction, enforcing the size limit first."""
    if len(data) > MAX_TX_BYTES:
        raise InvalidTransaction(f"transaction is {len(data)} bytes, over the {MAX_TX_BYTES}-byte limit")
    try:
        return Transaction.decode(data)
    except DecodeError as exc:
        raise InvalidTransaction(f"malformed transaction: {exc}") from None


def check_tx_static(tx: Transaction, chain_id: str) -> Call:
    """Checks that need no state: shape, size, chain, kind, payload schema, signature."""
    if tx.chain_id != chain_id:
        raise InvalidTransaction(f"transaction is for chain {tx.chain_id!r}, not {chain_id!r}")
    if len(tx.sender) != PUBLIC_KEY_SIZE:
        raise InvalidTransaction("sender must be a 32-byte Ed25519 public key")
    if len(tx.signature) != SIGNATURE_SIZE:
        raise InvalidTransaction("signature must be 64 bytes")
    if tx.nonce < 0 or tx.timestamp < 0:
        raise InvalidTransaction("nonce and timestamp must be non-negative")
    if tx.kind not in TX_KINDS:
        raise InvalidTransaction(f"unknown transaction kind {tx.kind!r}")
    size = len(tx.encode())
    if size > MAX_TX_BYTES:
        raise InvalidTransaction(f"transaction is {size} bytes, over the {MAX_TX_BYTES}-byte limit")
    try:
        call = tx.call()
    except DecodeError as exc:
        raise InvalidTransaction(f"bad call payload: {exc}") from None
    if not (0 < len(call.contract) <= MAX_NAME_LEN and 0 < len(call.method) <= MAX_NAME_LEN):
        raise InvalidTransaction("contract and method names must be 1-64 characters")
    try:
        verify(tx.sender, Domain.TX, tx.signing_bytes(), tx.signature)
    except FedledgerError:
        raise InvalidTransaction(f"bad signature on transaction {tx.tx_hash.hex()}") from None
    return call
