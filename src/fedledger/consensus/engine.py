"""The interface every consensus engine implements (dev, microchain, BFT).

An engine is a deterministic state machine in the style of etcd/raft: input
arrives only through :meth:`Engine.tick` (time, as a number the runtime passes
in) and :meth:`Engine.step` (a message from a peer). Output is collected in a
:class:`Ready` batch, which the runtime must handle in order: persist the
records and the committed blocks, then send the messages, then submit the
calls, then call :meth:`Engine.advance`. Engines never do I/O, read the clock
or use global randomness, so the simulator can run them under any schedule.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from fedledger.codec import cbor
from fedledger.errors import DecodeError
from fedledger.ledger.block import Block, Receipt
from fedledger.ledger.chain import ChainState
from fedledger.ledger.tx import Transaction


@dataclass
class Committed:
    """A block that is final: persist it with its receipts and state changes."""

    block: Block
    receipts: list[Receipt]
    changes: dict[bytes, bytes | None]


@dataclass
class Ready:
    committed: list[Committed] = field(default_factory=list)
    records: list[tuple[str, bytes]] = field(default_factory=list)  # node-local records to persist first
    messages: list[tuple[bytes | None, bytes]] = field(default_factory=list)  # (peer key or None = all, payload)
    calls: list[tuple[str, str, Any]] = field(default_factory=list)  # (contract, method, args) to sign and submit

    def __bool__(self) -> bool:
        return bool(self.committed or self.records or self.messages or self.calls)

    @property
    def blocks(self) -> list[Block]:
        return [c.block for c in self.committed]


class TxSource(Protocol):
    """Where a proposer takes candidate transactions from (the node's mempool)."""

    def select(self, limit: int, exclude: frozenset[bytes] | set[bytes] = frozenset()) -> list[Transaction]: ...

    def __len__(self) -> int: ...


class Engine(Protocol):
    chain: ChainState  # the finalized chain: what the store holds

    def tick(self, now_ms: int) -> None:
        """Time has advanced to ``now_ms``."""

    def step(self, peer: bytes, message: bytes) -> None:
        """A message arrived from ``peer`` (its public key)."""

    def ready(self) -> Ready:
        """Collect pending work (may be empty)."""

    def advance(self, applied: Sequence[Block]) -> None:
        """The runtime has persisted ``applied``."""


# -- the wire envelope every engine and the node runtime share: CBOR ``[kind, body]`` --
def encode_message(kind: str, body: Any) -> bytes:
    return cbor.encode([kind, body])


def message_kind(payload: bytes) -> str:
    """The kind of an encoded message without decoding its body (for traffic accounting)."""
    if len(payload) > 2 and payload[0] == 0x82 and 0x60 <= payload[1] < 0x78:
        return payload[2 : 2 + payload[1] - 0x60].decode(errors="replace")
    return "unknown"


def decode_message(raw: bytes) -> tuple[str, Any]:
    msg = cbor.decode(raw)
    if not (isinstance(msg, list) and len(msg) == 2 and isinstance(msg[0], str)):
        raise DecodeError("a consensus message is [kind, body]")
    return msg[0], msg[1]
