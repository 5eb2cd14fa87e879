"""A seeded, virtual-time network of real replicas (``ChainNode``) for consensus testing.

Every replica is the production runtime with its own SQLite file; only the
clock and the wire are simulated. Messages get a random delay, may be lost,
are dropped across a partition and to a crashed node. A crash throws the
replica away; a restart reopens its store, exactly as a process restart does.
Everything random comes from one ``random.Random(seed)``, so a run is
reproducible from its seed.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from fedledger.crypto.keys import SigningKey
from fedledger.ledger.genesis import Genesis
from fedledger.node.chain_node import ChainNode


@dataclass
class Conditions:
    """Network conditions for one period of virtual time."""

    max_delay_ms: int = 5
    loss: float = 0.0
    partition: list[set[int]] | None = None  # groups of node indices; traffic crosses no group boundary

    def connected(self, a: int, b: int) -> bool:
        if self.partition is None:
            return True
        return any(a in g and b in g for g in self.partition)


@dataclass(order=True)
class _Event:
    at: int
    seq: int
    kind: str = field(compare=False)
    dst: int = field(compare=False)
    src: int = field(compare=False, default=-1)
    payload: bytes = field(compare=False, default=b"")


NodeFactory = Callable[[int, Path], ChainNode]


class VirtualNetwork:
    def __init__(self, seed: int, genesis: Genesis, keys: list[SigningKey], workdir: Path,
                 factory: NodeFactory, tick_ms: int) -> None:
        self.rng = random.Random(seed)
        self.genesis = genesis
        self.keys = keys
        self.index = {k.public_key: i for i, k in enumerate(keys)}
        self.workdir = workdir
        self.factory = factory
        self.tick_ms = tick_ms
        self.now = genesis.timestamp
        self.conditions = Conditions()
        self.nodes: list[ChainNode | None] = [None] * len(keys)
        self._queue: list[_Event] = []
        self._seq = 0
        self.delivered = 0
        self.dropped = 0
        for i in range(len(keys)):
            self.start(i)

    def start(self, i: int) -> None:
        node = self.factory(i, self.workdir / f"v{i}.db")
        def send(peer: bytes | None, payload: bytes, kind: str, src: int = i) -> None:
            self._send(src, peer, payload)

        node.send = send
        self.nodes[i] = node
        self._push(self.now + self.rng.randrange(self.tick_ms), "tick", i)

    def crash(self, i: int) -> None:
        node = self.nodes[i]
        if node is not None:
            node.close()
            self.nodes[i] = None

    def _push(self, at: int, kind: str, dst: int, src: int = -1, payload: bytes = b"") -> None:
        self._seq += 1
        heapq.heappush(self._queue, _Event(at, self._seq, kind, dst, src, payload))

    def _send(self, src: int, peer: bytes | None, payload: bytes) -> None:
        targets = range(len(self.keys)) if peer is None else [self.index.get(peer, -1)]
        for dst in targets:
            if dst < 0 or dst == src:
                continue
            c = self.conditions
            if not c.connected(src, dst) or self.rng.random() < c.loss:
                self.dropped += 1
                continue
            self._push(self.now + self.rng.randint(0, c.max_delay_ms), "msg", dst, src, payload)

    def run_until(self, t_ms: int) -> None:
        while self._queue and self._queue[0].at <= t_ms:
            ev = heapq.heappop(self._queue)
            self.now = max(self.now, ev.at)
            node = self.nodes[ev.dst]
            if ev.kind == "tick":
                if node is not None:
                    node.step(self.now)
                    self._push(self.now + self.tick_ms, "tick", ev.dst)
            elif node is not None:
                self.delivered += 1
                node.on_message(self.keys[ev.src].public_key, ev.payload, self.now)
            else:
                self.dropped += 1
        self.now = t_ms

    def restart(self, i: int) -> None:
        if self.nodes[i] is None:
            self.start(i)

    def close(self) -> None:
        for i in range(len(self.nodes)):
            self.crash(i)
