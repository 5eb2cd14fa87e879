"""The interface every consensus engine implements (dev, microchain, BFT).

An engine is a deterministic state machine in the style of etcd/raft: input
arrives only through :meth:`Engine.tick` (time, as a number the runtime passes
in) and :meth:`Engine.step` (a message from a peer). Output is collected in a
:class:`Ready` batch. The node runtime must persist the ready blocks, then send
the messages, then apply, then call :meth:`Engine.advance`. Engines never do
I/O, read the clock or use global randomness.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from fedledger.ledger.block import Block
from fedledger.ledger.chain import ChainState
from fedledger.ledger.tx import Transaction


@dataclass
class Ready:
    """Work the runtime must carry out, in order: persist+apply blocks, then send messages."""

    blocks: list[Block] = field(default_factory=list)
    messages: list[tuple[str, bytes]] = field(default_factory=list)
    finalized_height: int | None = None

    def __bool__(self) -> bool:
        return bool(self.blocks or self.messages or self.finalized_height is not None)


class TxSource(Protocol):
    """Where a proposer takes candidate transactions from (the node's mempool)."""

    def select(self, limit: int) -> list[Transaction]: ...

    def __len__(self) -> int: ...


class Engine(Protocol):
    chain: ChainState

    def tick(self, now_ms: int) -> None:
        """Time has advanced to ``now_ms``."""

    def step(self, peer: str, message: bytes) -> None:
        """A message arrived from ``peer``."""

    def ready(self) -> Ready:
        """Collect pending work (may be empty)."""

    def advance(self, applied: Sequence[Block]) -> None:
        """The runtime has persisted and applied ``applied``."""
