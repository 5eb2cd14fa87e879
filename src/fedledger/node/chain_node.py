"""A chain replica inside a node process: store, mempool, consensus engine and peers.

The runtime follows the engine contract (``consensus/engine.py``): feed the
engine time and peer messages, take its ``Ready`` batch, then

1. persist the node-local records (a validator's own votes) and every
   finalized block with its receipts and state changes, each in one SQLite
   transaction;
2. send the messages;
3. sign and submit the engine's system calls (beacon steps, tickets,
   slashing evidence) from this node's account;
4. make the blocks visible: wake waiters, drop their transactions from the
   mempool.

A crash at any point leaves the store at the last durable finalized block;
on restart the engine reloads it and catches up from its peers.

Besides consensus messages, replicas exchange:
``txs``     a batch of transactions (push gossip of what this node admitted);
``status``  finalized and head heights, every second;
``sync``    a request for blocks from a height, answered with ``blocks``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fedledger.consensus.dev import DevEngine
from fedledger.consensus.engine import Engine, Ready
from fedledger.consensus.microchain.engine import (
    MicrochainEngine,
    decode_message,
    encode_message,
    message_kind,
)
from fedledger.consensus.microchain.votes import Vote
from fedledger.crypto.keys import SigningKey
from fedledger.errors import DecodeError, FedledgerError, InvalidTransaction, NotFound
from fedledger.ledger.block import Block
from fedledger.ledger.chain import account_nonce
from fedledger.ledger.genesis import Genesis
from fedledger.ledger.mempool import Mempool
from fedledger.ledger.proofs import TxProof, make_tx_proof
from fedledger.ledger.tx import Transaction, decode_tx, make_tx
from fedledger.logs import log_event
from fedledger.storage.chainstore import ChainStore

log = logging.getLogger("fedledger.node")

Send = Callable[[bytes | None, bytes, str], None]  # (peer or None = all, payload, kind)
SYNC_BATCH_BYTES = 4 * 1024 * 1024
STATUS_EVERY_MS = 1000
SYNC_RETRY_MS = 500


class ChainNode:
    def __init__(self, db_path: Path, genesis: Genesis, key: SigningKey, block_interval_ms: int = 50,
                 arbitrator: SigningKey | None = None, durable: bool = True) -> None:
        self.store = ChainStore(db_path, durable=durable)
        self.chain = self.store.initialize(genesis)
        self.key = key
        self.mempool = Mempool(genesis.chain_id)
        self.engine: Engine
        if self.chain.engine == "microchain":
            votes = [Vote.decode(v) for v in self.store.meta_with_prefix("vote/").values()]
            self.engine = MicrochainEngine(self.chain, key, self.mempool, arbitrator=arbitrator, my_votes=votes)
        else:
            self.engine = DevEngine(self.chain, key, self.mempool, block_interval_ms=block_interval_ms)
        self.send: Send = lambda peer, payload, kind: None
        self._outbox: list[bytes] = []  # admitted transactions to gossip
        self._committed = asyncio.Condition()
        self._last_status = 0
        self._last_sync: dict[bytes, int] = {}
        self._notify = False

    @property
    def chain_id(self) -> str:
        return self.chain.chain_id

    @property
    def microchain(self) -> MicrochainEngine | None:
        return self.engine if isinstance(self.engine, MicrochainEngine) else None

    # -- transactions ------------------------------------------------------------
    def submit(self, tx: Transaction, gossip: bool = True) -> bytes:
        """Admit a transaction to the mempool (raises ``InvalidTransaction``) and gossip it."""
        self.mempool.add(tx, self.chain.state)
        if gossip:
            self._outbox.append(tx.encode())
        return tx.tx_hash

    def next_nonce(self, address: bytes) -> int:
        """The nonce the account's next transaction must carry, counting queued ones."""
        return account_nonce(self.chain.state, address) + self.mempool.pending_count(address)

    def _submit_call(self, contract: str, method: str, args: Any, now_ms: int) -> None:
        tx = make_tx(self.key, self.chain_id, self.next_nonce(self.key.address), contract, method, args, now_ms)
        try:
            self.submit(tx)
        except InvalidTransaction as exc:
            log_event(log, logging.INFO, "system call not admitted", call=f"{contract}.{method}", reason=str(exc))

    # -- the loop ------------------------------------------------------------------
    async def run(self, tick_ms: int = 10) -> None:
        while True:
            self.step(int(time.time() * 1000))
            await self._wake()
            await asyncio.sleep(tick_ms / 1000)

    def step(self, now_ms: int) -> None:
        self.engine.tick(now_ms)
        if isinstance(self.engine, DevEngine) and self.engine.rejected:
            self.mempool.remove(self.engine.rejected)
            self.engine.rejected.clear()
        self._handle(self.engine.ready(), now_ms)
        if self._outbox:
            batch, self._outbox = self._outbox, []
            self.send(None, encode_message("txs", batch), "tx")
        if self.microchain is not None and now_ms - self._last_status >= STATUS_EVERY_MS:
            self._last_status = now_ms
            self.send(None, encode_message("status", self.microchain.status()), "status")

    def _handle(self, ready: Ready, now_ms: int) -> None:
        for key, value in ready.records:
            self.store.put_meta(key, value)
        for c in ready.committed:
            self.store.commit_block(c.block, c.receipts, c.changes)
            self.mempool.remove(c.block.txs)
            log_event(log, logging.DEBUG, "block finalized", chain=self.chain_id, height=c.block.height,
                      txs=len(c.block.txs))
        if ready.committed:
            self.mempool.prune(self.chain.state)
            self.engine.advance(ready.blocks)
            self._notify = True
        for peer, payload in ready.messages:
            self.send(peer, payload, message_kind(payload))
        for contract, method, args in ready.calls:
            self._submit_call(contract, method, args, now_ms)

    async def _wake(self) -> None:
        if self._notify:
            self._notify = False
            async with self._committed:
                self._committed.notify_all()

    def on_message(self, peer: bytes, payload: bytes, now_ms: int | None = None) -> None:
        """A peer's message (called by the transport in the event loop)."""
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        try:
            kind, body = decode_message(payload)
            if kind == "txs":
                self._receive_txs(body)
            elif kind == "status":
                self._receive_status(peer, body, now_ms)
            elif kind == "sync":
                self._answer_sync(peer, int(body))
            elif kind == "blocks":
                engine = self.microchain
                if engine is not None:
                    for raw in body:
                        engine.receive_block(Block.decode(raw), peer)
            else:
                self.engine.step(peer, payload)
        except (DecodeError, TypeError, ValueError, KeyError) as exc:
            log_event(log, logging.DEBUG, "malformed peer message", peer=peer.hex()[:16], error=str(exc))
        self._handle(self.engine.ready(), now_ms)
        engine = self.microchain
        if engine is not None and engine.missing_parents:
            self._request_sync(peer, now_ms)

    def _receive_txs(self, body: Any) -> None:
        for raw in body:
            with contextlib.suppress(FedledgerError):
                self.submit(decode_tx(raw), gossip=False)

    def _receive_status(self, peer: bytes, body: Any, now_ms: int) -> None:
        engine = self.microchain
        if engine is None:
            return
        mine = engine.status()
        behind = body["finalized_height"] > mine["finalized_height"] or \
            body["head_height"] > mine["head_height"] + 2 * engine.params.epoch_blocks
        if behind:
            self._request_sync(peer, now_ms)

    def _request_sync(self, peer: bytes, now_ms: int) -> None:
        if now_ms - self._last_sync.get(peer, 0) < SYNC_RETRY_MS:
            return
        self._last_sync[peer] = now_ms
        self.send(peer, encode_message("sync", self.chain.height + 1), "sync")

    def _answer_sync(self, peer: bytes, start: int) -> None:
        """Finalized blocks from the store from ``start``, then the unfinalized tree, within a byte budget."""
        engine = self.microchain
        if engine is None:
            return
        out: list[bytes] = []
        size = 0
        for height in range(max(1, start), self.chain.height + 1):
            raw = self.store.block(height).encode()
            out.append(raw)
            size += len(raw)
            if size > SYNC_BATCH_BYTES:
                break
        else:
            for block in engine.tree_blocks():
                out.append(block.encode())
        self.send(peer, encode_message("blocks", out), "sync")

    # -- queries ---------------------------------------------------------------
    async def wait_for_tx(self, tx_hash: bytes, timeout_s: float) -> tuple[int, int] | None:
        """Wait until ``tx_hash`` is in a finalized block; ``None`` on timeout."""
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

