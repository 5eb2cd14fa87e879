"""Single-proposer "dev" consensus: one validator orders and signs every block.

This is the stand-in every chain uses until the microchain (edge) and BFT
(main chain) engines land. It sits behind the same :class:`Engine` interface.
Blocks are proposed when transactions are waiting and at least
``block_interval_ms`` has passed since the previous block; an idle chain makes
no empty blocks. Finality is immediate: a block is final once applied.
"""

from __future__ import annotations

from collections.abc import Sequence

from fedledger.consensus.engine import Committed, Ready, TxSource
from fedledger.crypto.keys import SigningKey
from fedledger.ledger.block import MAX_BLOCK_TXS, Block
from fedledger.ledger.chain import ChainState, apply_block, propose_block
from fedledger.ledger.tx import Transaction


class DevEngine:
    def __init__(
        self,
        chain: ChainState,
        key: SigningKey,
        txs: TxSource,
        block_interval_ms: int = 50,
        max_block_txs: int = MAX_BLOCK_TXS,
    ) -> None:
        self.chain = chain
        self.key = key
        self.txs = txs
        self.block_interval_ms = block_interval_ms
        self.max_block_txs = max_block_txs
        self.is_proposer = key.public_key in chain.genesis.validators
        self._now = 0
        self._last_block_ms = -block_interval_ms
        self._ready = Ready()
        self.rejected: list[Transaction] = []  # skipped by a proposal; the runtime drops them

    def tick(self, now_ms: int) -> None:
        self._now = now_ms
        if not self.is_proposer or self._ready.committed or len(self.txs) == 0:
            return
        if now_ms - self._last_block_ms < self.block_interval_ms:
            return
        block, rejected = propose_block(
            self.chain, self.txs.select(self.max_block_txs), self.key, now_ms, consensus={"engine": "dev"}
        )
        self.rejected.extend(rejected)
        if block.txs:
            receipts = apply_block(self.chain, block)
            self._ready.committed.append(Committed(block, receipts, self.chain.state.take_changes()))
            self._last_block_ms = now_ms

    def step(self, peer: bytes, message: bytes) -> None:
        """The dev engine has no peer protocol; followers sync blocks through the store API."""

    def ready(self) -> Ready:
        out, self._ready = self._ready, Ready()
        return out

    def advance(self, applied: Sequence[Block]) -> None:
        """Nothing to track: the block was applied when it was made."""
