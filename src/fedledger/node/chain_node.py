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

:class:`ChainMetrics` (``node.metrics``, served at ``GET /v1/metrics``) counts
admitted, confirmed and finalized transactions and the consensus traffic, and
keeps wall-clock timestamps for a deterministic sample of transactions (those
whose hash :func:`sampled` picks, the same ones on every replica): when this
replica admitted it to its mempool, when a block holding it was *confirmed*
(joined the engine's block tree) and when that block was *finalized*.
Recording never changes what the node does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import resource
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from fedledger.consensus.bft.engine import RECORD_PREFIX as BFT_RECORDS
from fedledger.consensus.bft.engine import BftEngine
from fedledger.consensus.dev import DevEngine
from fedledger.consensus.engine import Engine, Ready, decode_message, encode_message, message_kind
from fedledger.consensus.microchain.engine import MicrochainEngine
from fedledger.consensus.microchain.votes import Vote
from fedledger.crypto.keys import SigningKey
from fedledger.errors import DecodeError, FedledgerError, InvalidTransaction, NotFound
from fedledger.ledger.block import Block, BlockHeader
from fedledger.ledger.chain import account_nonce
from fedledger.ledger.genesis import Genesis
from fedledger.ledger.mempool import Mempool
from fedledger.ledger.proofs import TxProof, make_tx_proof
from fedledger.ledger.tx import Transaction, decode_tx, make_tx
from fedledger.logs import log_event
from fedledger.node.interlock import AnchorCollector, checkpoint_height
from fedledger.storage.chainstore import ChainStore

log = logging.getLogger("fedledger.node")

Send = Callable[[bytes | None, bytes, str], None]  # (peer or None = all, payload, kind)
SYNC_BATCH_BYTES = 4 * 1024 * 1024
STATUS_EVERY_MS = 1000
SYNC_RETRY_MS = 500
SAMPLE_EVERY = 8  # time one transaction in 8, picked by hash (see ``sampled``)
SAMPLE_KEEP = 10_000  # timed transactions kept (oldest dropped first)
WIRE_KINDS = {"txs": "tx", "blocks": "sync"}  # message kind -> transport kind, where they differ


def sampled(tx_hash: bytes) -> bool:
    """Whether replicas time this transaction: a pure function of its hash, so all agree."""
    return int.from_bytes(tx_hash[:4], "big") % SAMPLE_EVERY == 0


def percentiles(values: Iterable[float]) -> dict[str, float | int]:
    """``n``, ``p50``, ``p90``, ``p99`` and ``max`` (nearest rank) of ``values``; only ``n`` if empty."""
    xs = sorted(values)
    if not xs:
        return {"n": 0}

    def rank(q: float) -> float:
        return xs[min(len(xs) - 1, max(0, int(q * len(xs) + 0.5) - 1))]

    return {"n": len(xs), "p50": rank(0.50), "p90": rank(0.90), "p99": rank(0.99), "max": xs[-1]}


class ChainMetrics:
    """Counters and per-transaction stage timestamps of one replica (bounded memory).

    A sample is ``[admitted, confirmed, finalized]`` in Unix seconds (``None``
    until seen). A replica that first sees a transaction inside a block has no
    admission time; a block that is finalized before it was seen confirmed
    (catch-up) gets its finalization time as confirmation time.
    """

    def __init__(self, fanout: int) -> None:
        self.fanout = fanout  # peers a broadcast goes to
        self.started = time.time()
        self.admitted = 0
        self.rejected = 0
        self.confirmed_blocks = 0
        self.confirmed_txs = 0
        self.finalized_blocks = 0
        self.finalized_txs = 0
        self.samples: OrderedDict[bytes, list[float | None]] = OrderedDict()
        self.sent: dict[str, list[int]] = {}  # transport kind -> [messages, payload bytes]
        self.received: dict[str, list[int]] = {}

    def _sample(self, tx_hash: bytes) -> list[float | None]:
        entry = self.samples.get(tx_hash)
        if entry is None:
            entry = self.samples[tx_hash] = [None, None, None]
            if len(self.samples) > SAMPLE_KEEP:
                self.samples.popitem(last=False)
        return entry

    def admitted_tx(self, tx_hash: bytes, now: float) -> None:
        self.admitted += 1
        if sampled(tx_hash):
            entry = self._sample(tx_hash)
            if entry[0] is None:
                entry[0] = now

    def block_confirmed(self, block: Block, now: float) -> None:
        self.confirmed_blocks += 1
        self.confirmed_txs += len(block.txs)
        self._stamp(block, now, final=False)

    def block_finalized(self, block: Block, now: float) -> None:
        self.finalized_blocks += 1
        self.finalized_txs += len(block.txs)
        self._stamp(block, now, final=True)

    def _stamp(self, block: Block, now: float, final: bool) -> None:
        """Record when sampled transactions were first confirmed (and, if ``final``, finalized)."""
        for tx in block.txs:
            if sampled(tx.tx_hash):
                entry = self._sample(tx.tx_hash)
                if entry[1] is None:
                    entry[1] = now
                if final:
                    entry[2] = now

    def count(self, table: dict[str, list[int]], kind: str, size: int, copies: int = 1) -> None:
        row = table.get(kind)
        if row is None:
            row = table[kind] = [0, 0]
        row[0] += copies
        row[1] += size * copies

    def stage_latencies(self) -> dict[str, dict[str, float | int]]:
        """Local stage latencies (seconds) over the kept samples."""
        a_c, c_f, a_f = [], [], []
        for admitted, confirmed, finalized in self.samples.values():
            if admitted is not None and confirmed is not None:
                a_c.append(max(0.0, confirmed - admitted))
            if confirmed is not None and finalized is not None:
                c_f.append(finalized - confirmed)
            if admitted is not None and finalized is not None:
                a_f.append(max(0.0, finalized - admitted))
        return {"admitted_to_confirmed_s": percentiles(a_c), "confirmed_to_finalized_s": percentiles(c_f),
                "admitted_to_finalized_s": percentiles(a_f)}

    def traffic(self) -> dict[str, Any]:
        """Consensus payload bytes by transport kind (broadcasts counted once per peer; no framing)."""
        return {"sent_bytes": {k: v[1] for k, v in self.sent.items()},
                "recv_bytes": {k: v[1] for k, v in self.received.items()},
                "sent_msgs": {k: v[0] for k, v in self.sent.items()},
                "recv_msgs": {k: v[0] for k, v in self.received.items()}}


def process_usage() -> dict[str, float]:
    """CPU seconds used by this process, its current and peak resident set (MB)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    peak_mb = usage.ru_maxrss / 1024  # KiB on Linux
    rss_mb = peak_mb
    with contextlib.suppress(OSError, ValueError, IndexError), open("/proc/self/statm") as f:
        rss_mb = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    return {"cpu_s": usage.ru_utime + usage.ru_stime, "rss_mb": rss_mb, "max_rss_mb": peak_mb}


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
        elif self.chain.engine == "bft":
            records = self.store.meta_with_prefix(BFT_RECORDS)  # own votes and lock: no conflicting re-signing
            self.engine = BftEngine(self.chain, key, self.mempool, records=records)
        else:
            self.engine = DevEngine(self.chain, key, self.mempool, block_interval_ms=block_interval_ms)
        self.interlock = AnchorCollector(self.chain, key)
        others = [v for v in genesis.validators if v != key.public_key]
        self.metrics = ChainMetrics(fanout=len(others))
        self.transport_stats: Callable[[], dict[str, Any]] | None = None  # the transport's own counters
        self._transport: Send = lambda peer, payload, kind: None
        self._tree: set[bytes] = set()  # confirmed blocks already counted in the metrics
        self._accepted = -1
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

    @property
    def bft(self) -> BftEngine | None:
        return self.engine if isinstance(self.engine, BftEngine) else None

    @property
    def send(self) -> Send:
        """Send to one peer or (``None``) all; the process sets the transport, the node counts traffic."""
        return self._send_counted

    @send.setter
    def send(self, transport: Send) -> None:
        self._transport = transport

    def _send_counted(self, peer: bytes | None, payload: bytes, kind: str) -> None:
        self.metrics.count(self.metrics.sent, kind, len(payload), self.metrics.fanout if peer is None else 1)
        self._transport(peer, payload, kind)

    # -- transactions ------------------------------------------------------------
    def submit(self, tx: Transaction, gossip: bool = True) -> bytes:
        """Admit a transaction to the mempool (raises ``InvalidTransaction``) and gossip it."""
        try:
            self.mempool.add(tx, self.chain.state)
        except InvalidTransaction:
            self.metrics.rejected += 1
            raise
        self.metrics.admitted_tx(tx.tx_hash, time.time())
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
        self._note_confirmed()
        if isinstance(self.engine, DevEngine | BftEngine) and self.engine.rejected:
            self.mempool.remove(self.engine.rejected)
            self.engine.rejected.clear()
        self._handle(self.engine.ready(), now_ms)
        if self._outbox:
            batch, self._outbox = self._outbox, []
            self.send(None, encode_message("txs", batch), "tx")
        if now_ms - self._last_status >= STATUS_EVERY_MS:
            self._last_status = now_ms
            if self.microchain is not None:
                self.send(None, encode_message("status", self.microchain.status()), "status")
            if self.bft is not None:
                self.send(None, encode_message("status", self.bft.status()), "status")
            if self.interlock.mine is not None:  # repeated: messages can be lost
                self.send(None, encode_message("attest", self.interlock.mine), "interlock")

    def _handle(self, ready: Ready, now_ms: int) -> None:
        for key, value in ready.records:
            self.store.put_meta(key, value)
        for c in ready.committed:
            self.store.commit_block(c.block, c.receipts, c.changes)
            self.mempool.remove(c.block.txs)
            self._note_finalized(c.block)
            self._attest(c.block.header)
            log_event(log, logging.DEBUG, "block finalized", chain=self.chain_id, height=c.block.height,
                      txs=len(c.block.txs))
        if ready.committed:
            self.mempool.prune(self.chain.state)
            self.engine.advance(ready.blocks)
            self._notify = True
            engine = self.microchain
            if engine is not None:
                self._tree.intersection_update(engine.nodes)
        for peer, payload in ready.messages:
            self.send(peer, payload, message_kind(payload))
        for contract, method, args in ready.calls:
            self._submit_call(contract, method, args, now_ms)

    def _attest(self, header: BlockHeader) -> None:
        """Sign the anchor of a finalized block when one is due (inter-locking, seed 000 §III)."""
        if not self.interlock.config.due(header.height):
            return
        at = checkpoint_height(self.chain, header.height)
        checkpoint = header if at == header.height else self.store.header(at)
        body = self.interlock.finalized(header, checkpoint)
        if body is not None:
            self.send(None, encode_message("attest", body), "interlock")

    async def _wake(self) -> None:
        if self._notify:
            self._notify = False
            async with self._committed:
                self._committed.notify_all()

    def on_message(self, peer: bytes, payload: bytes, now_ms: int | None = None) -> None:
        """A peer's message (called by the transport in the event loop)."""
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        kind = message_kind(payload)
        self.metrics.count(self.metrics.received, WIRE_KINDS.get(kind, kind), len(payload))
        try:
            kind, body = decode_message(payload)
            if kind == "txs":
                self._receive_txs(body)
            elif kind == "status":
                self._receive_status(peer, body, now_ms)
            elif kind == "attest":
                self.interlock.receive(peer, body)
            elif kind == "sync":
                self._answer_sync(peer, int(body))
            elif kind == "blocks":
                engine = self.microchain
                if engine is not None:
                    for raw in body:
                        engine.receive_block(Block.decode(raw), peer)
                if self.bft is not None:
                    self.bft.receive_blocks([Block.decode(raw) for raw in body])
            else:
                self.engine.step(peer, payload)
        except (DecodeError, TypeError, ValueError, KeyError) as exc:
            log_event(log, logging.DEBUG, "malformed peer message", peer=peer.hex()[:16], error=str(exc))
        self._note_confirmed()
        self._handle(self.engine.ready(), now_ms)
        engine = self.microchain
        if engine is not None and engine.missing_parents:
            self._request_sync(peer, now_ms)
        if self.bft is not None and self.bft.wants_sync(peer):
            self._request_sync(peer, now_ms)

    # -- metrics -------------------------------------------------------------------
    def _note_confirmed(self) -> None:
        """Time the blocks that joined the engine's tree since the last look (cheap when none did)."""
        engine = self.microchain
        if engine is None or engine.stats.accepted == self._accepted:
            return
        self._accepted = engine.stats.accepted
        now = time.time()
        for block_hash, node in engine.nodes.items():
            if block_hash not in self._tree:
                self._tree.add(block_hash)
                self.metrics.block_confirmed(node.block, now)

    def _note_finalized(self, block: Block) -> None:
        now = time.time()
        if (self.microchain is not None or self.bft is not None) and block.block_hash not in self._tree:
            self.metrics.block_confirmed(block, now)  # finalized before we saw it in the tree
        self._tree.discard(block.block_hash)
        self.metrics.block_finalized(block, now)

    def metrics_snapshot(self, samples: bool = False) -> dict[str, Any]:
        """What ``GET /v1/metrics`` serves; ``samples`` adds the per-transaction timestamps."""
        m = self.metrics
        out: dict[str, Any] = {
            "time": time.time(), "uptime_s": time.time() - m.started, "height": self.chain.height,
            "mempool": len(self.mempool), "admitted_txs": m.admitted, "rejected_txs": m.rejected,
            "confirmed_blocks": m.confirmed_blocks, "confirmed_txs": m.confirmed_txs,
            "finalized_blocks": m.finalized_blocks, "finalized_txs": m.finalized_txs,
            "stages": m.stage_latencies(), "traffic": m.traffic(),
            "p2p": self.transport_stats() if self.transport_stats is not None else None,
            "process": process_usage(), "sample_every": SAMPLE_EVERY,
        }
        engine = self.microchain
        if engine is not None:
            out["engine"] = {**engine.status(), "proposed": engine.stats.proposed,
                             "spin_proposed": engine.stats.spin_proposed, "accepted": engine.stats.accepted,
                             "rejected_blocks": engine.stats.rejected_blocks, "forks": engine.stats.forks,
                             "slashings": engine.stats.slashings, "decisions": engine.stats.decisions,
                             "rejected_votes": dict(engine.stats.rejected_votes),
                             "missing_parents": len(engine.missing_parents),
                             "orphans": sum(len(v) for v in engine.orphans.values())}
        if self.bft is not None:
            st = self.bft.stats
            out["engine"] = {**self.bft.status(), "proposed": st.proposed, "decided": st.decided,
                             "decided_by_certificate": st.decided_by_certificate, "rounds": st.rounds,
                             "timeouts": dict(st.timeouts), "invalid_blocks": st.invalid_blocks,
                             "rejected_messages": dict(st.rejected), "double_signs": st.double_signs,
                             "refused_to_sign": st.refused_to_sign, "commits_sent": st.commits_sent}
        if samples:
            out["samples"] = [[h.hex(), *t] for h, t in m.samples.items()]
        return out

    def _receive_txs(self, body: Any) -> None:
        for raw in body:
            with contextlib.suppress(FedledgerError):
                self.submit(decode_tx(raw), gossip=False)

    def _receive_status(self, peer: bytes, body: Any, now_ms: int) -> None:
        if self.bft is not None:  # the peer works on the height after its finalized one
            self.bft.note_peer_height(peer, int(body["finalized_height"]) + 1)
            if self.bft.wants_sync(peer):
                self._request_sync(peer, now_ms)
            return
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
        """Finalized blocks from the store from ``start``, then the unfinalized tree, within a byte budget.

        A BFT replica follows the blocks with a ``commit`` message: the newest
        block's certificate is in no block yet."""
        engine = self.microchain
        if engine is None and self.bft is None:
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
            for block in engine.tree_blocks() if engine is not None else []:
                out.append(block.encode())
        self.send(peer, encode_message("blocks", out), "sync")
        bft = self.bft
        if bft is not None and bft.last_cert is not None and start <= self.chain.height and size <= SYNC_BATCH_BYTES:
            self.send(peer, bft.commit_message(self.store.block(bft.last_cert.height)), "sync")

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

