"""A chain replica inside a node process: store, state, mempool and consensus engine.

The runtime loop follows the engine contract (``consensus/engine.py``): tick
the engine, take its ``Ready`` batch, then for each block validate and execute
it, persist it with its receipts and state changes in one SQLite transaction,
and only then make it visible (wake waiters, drop its transactions from the
mempool). A crash at any point leaves the store at the last durable block.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path

from fedledger.consensus.dev import DevEngine
from fedledger.crypto.keys import SigningKey
from fedledger.errors import NotFound
from fedledger.ledger.block import Block
from fedledger.ledger.chain import account_nonce, apply_block
from fedledger.ledger.genesis import Genesis
from fedledger.ledger.mempool import Mempool
from fedledger.ledger.proofs import TxProof, make_tx_proof
from fedledger.ledger.tx import Transaction
from fedledger.logs import log_event
from fedledger.storage.chainstore import ChainStore

log = logging.getLogger("fedledger.node")


class ChainNode:
    def __init__(self, db_path: Path, genesis: Genesis, key: SigningKey, block_interval_ms: int = 50) -> None:
        self.store = ChainStore(db_path)
        self.chain = self.store.initialize(genesis)
        self.mempool = Mempool(genesis.chain_id)
        self.engine = DevEngine(self.chain, key, self.mempool, block_interval_ms=block_interval_ms)
        self._committed = asyncio.Condition()
        self._t0 = time.monotonic()

    @property
    def chain_id(self) -> str:
        return self.chain.chain_id

    def submit(self, tx: Transaction) -> bytes:
        """Admit a transaction to the mempool (raises ``InvalidTransaction``)."""
        self.mempool.add(tx, self.chain.state)
        return tx.tx_hash

    def next_nonce(self, address: bytes) -> int:
        """The nonce the account's next transaction must carry, counting queued ones."""
        return account_nonce(self.chain.state, address) + self.mempool.pending_count(address)

    async def run(self, tick_ms: int = 10) -> None:
        while True:
            await self.step(int(time.time() * 1000))
            await asyncio.sleep(tick_ms / 1000)

    async def step(self, now_ms: int) -> None:
        self.engine.tick(now_ms)
        if self.engine.rejected:
            self.mempool.remove(self.engine.rejected)
            self.engine.rejected.clear()
        ready = self.engine.ready()
        for block in ready.blocks:
            self._commit(block)
        if ready.blocks:
            self.engine.advance(ready.blocks)
            async with self._committed:
                self._committed.notify_all()

    def _commit(self, block: Block) -> None:
        receipts = apply_block(self.chain, block)
        self.store.commit_block(block, receipts, self.chain.state.take_changes())
        self.mempool.remove(block.txs)
        log_event(log, logging.DEBUG, "block committed", chain=self.chain_id, height=block.height,
                  txs=len(block.txs))

    async def wait_for_tx(self, tx_hash: bytes, timeout_s: float) -> tuple[int, int] | None:
        """Wait until ``tx_hash`` is in a committed block; ``None`` on timeout."""
        deadline = time.monotonic() + timeout_s
        while True:
            with contextlib.suppress(NotFound):
                return self.store.tx_location(tx_hash)
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            async with self._committed:
                try:
                    await asyncio.wait_for(self._committed.wait(), timeout=left)
                except TimeoutError:
                    return None

    def tx_proof(self, tx_hash: bytes) -> TxProof:
        height, index = self.store.tx_location(tx_hash)
        return make_tx_proof(self.store.block(height), self.store.receipts(height), index)

    def close(self) -> None:
        self.store.close()
