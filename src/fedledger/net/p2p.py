"""Authenticated peer-to-peer transport between validator processes (plain asyncio TCP).

Wire protocol
-------------
* Framing: a 4-byte big-endian length, then the body. A length over
  :data:`MAX_FRAME` (16 MiB; :data:`MAX_HANDSHAKE_FRAME` before authentication)
  closes the connection and counts a rejected frame.
* Handshake (both sides at once, all within :data:`HANDSHAKE_TIMEOUT`): each side
  sends ``Hello`` = CBOR ``{"network_id", "public_key", "nonce" (32 random bytes),
  "listen_port"}``. On the peer's Hello it checks the network id, that the key is
  in its peer set (and is the key it dialled, when dialling), then sends a CBOR
  byte string ``sig = Sign_p2p(b"hello" || network_id || peer_nonce || own_nonce ||
  peer_key || own_key)`` and verifies the peer's mirror signature.
  ``session_id = SHA-256(b"fedledger/p2p/session\\0" || network_id || nonce_lo ||
  nonce_hi || key_lo || key_hi)``, lo/hi ordering the two sides by public key.
  ``listen_port`` is informational: addresses come from the peer table. A refused
  Hello or handshake signature also counts as a rejected frame.
* One connection per peer: when two authenticated connections to one peer exist,
  the one dialled by the lower public key wins; a newer connection dialled by the
  same side replaces the older (a node only redials once it lost its connection).
* Data frame body: CBOR ``[seq, kind, payload, sig]`` with ``sig = Sign_p2p(session_id
  || seq (8 bytes BE) || len(kind) (1 byte) || kind || payload)``; ``seq`` counts
  0, 1, 2, ... per direction. A frame that does not decode, is out of sequence or
  fails verification is counted in ``stats["rejected_frames"]`` and closes the
  connection; dialling sides reconnect with backoff doubling from 50 ms to 1 s.

``Sign_p2p`` is :meth:`SigningKey.sign` with :attr:`Domain.P2P`. Messages are
authenticated, ordered and bound to one session; they are not encrypted.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from fedledger.codec.cbor import decode, encode
from fedledger.crypto.hashing import sha256
from fedledger.crypto.keys import Domain, SigningKey, is_valid
from fedledger.errors import DecodeError, FedledgerError
from fedledger.logs import log_event

log = logging.getLogger(__name__)

MAX_FRAME = 16 * 1024 * 1024
MAX_HANDSHAKE_FRAME = 4096
MAX_KIND = 255
MAX_PAYLOAD = MAX_FRAME - 1024  # room for seq, kind and signature inside one frame
HANDSHAKE_TIMEOUT = 2.0
BACKOFF_MIN, BACKOFF_MAX = 0.05, 1.0
QUEUE_LIMIT = 10_000  # frames waiting per peer
WRITE_BATCH = 512  # frames signed and written per drain()
NONCE_SIZE = 32
_HELLO_FIELDS = frozenset({"network_id", "public_key", "nonce", "listen_port"})

MessageHandler = Callable[[bytes, bytes], None]


class _ProtocolError(FedledgerError):
    """A peer broke the wire protocol; the connection is closed."""


@dataclass(eq=False)
class _Conn:
    peer: bytes
    dialer: bytes  # public key of the side that opened the TCP connection
    session: bytes
    writer: asyncio.StreamWriter
    queue: deque[tuple[str, bytes]] = field(default_factory=deque)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    writer_task: asyncio.Task[Any] | None = None
    send_seq: int = 0
    recv_seq: int = 0


def _frame(body: bytes) -> bytes:
    return len(body).to_bytes(4, "big") + body


async def _read_frame(reader: asyncio.StreamReader, limit: int) -> bytes:
    size = int.from_bytes(await reader.readexactly(4), "big")
    if size > limit:
        raise _ProtocolError(f"frame of {size} bytes over the {limit}-byte limit")
    return await reader.readexactly(size)


def _decode(body: bytes) -> Any:
    try:
        return decode(body)
    except DecodeError as exc:
        raise _ProtocolError(str(exc)) from None


def _hello_message(network_id: str, nonces: tuple[bytes, bytes], keys: tuple[bytes, bytes]) -> bytes:
    """What the owner of ``keys[1]`` signs; index 0 is the other side."""
    return b"hello" + network_id.encode() + nonces[0] + nonces[1] + keys[0] + keys[1]


def _data_message(session: bytes, seq: int, kind: bytes, payload: bytes) -> bytes:
    return b"".join((session, seq.to_bytes(8, "big"), bytes((len(kind),)), kind, payload))


class PeerNetwork:
    """Authenticated, ordered message transport to a fixed set of peers (see module doc)."""

    def __init__(self, key: SigningKey, network_id: str, host: str, port: int,
                 peers: dict[bytes, tuple[str, int]], on_message: MessageHandler) -> None:
        self._key, self._pk = key, key.public_key
        self.network_id, self.host, self.port = network_id, host, port
        self._peers = {pk: addr for pk, addr in peers.items() if pk != self._pk}
        self._on_message = on_message
        self._conns: dict[bytes, _Conn] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._server: asyncio.Server | None = None
        self._stopping = False
        counters = ("sent_bytes", "recv_bytes", "sent_msgs", "recv_msgs")
        self._wire: dict[str, dict[str, int]] = {name: {} for name in counters}
        self._dropped = self._rejected = 0

    async def start(self) -> None:
        """Listen on ``host:port`` and keep a connection to every peer."""
        self._stopping = False
        self._server = await asyncio.start_server(self._accept, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        for peer, addr in self._peers.items():
            self._spawn(self._dial_loop(peer, addr))

    async def stop(self) -> None:
        """Close the listener and every connection; cancel and await all tasks."""
        self._stopping = True
        if self._server is not None:
            self._server.close()
        for conn in list(self._conns.values()):
            self._retire(conn)
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None
        await asyncio.sleep(0)  # let the aborted transports release their sockets

    def send(self, peer: bytes, payload: bytes, kind: str = "msg") -> None:
        """Queue ``payload`` for ``peer``; drop it (counted) if not connected or the queue is full.

        Raises ``ValueError`` for a payload over ``MAX_PAYLOAD`` or a kind over 255 UTF-8 bytes.
        """
        if len(payload) > MAX_PAYLOAD or len(kind.encode()) > MAX_KIND:
            raise ValueError("payload or kind too large for one frame")
        conn = self._conns.get(peer)
        if conn is None or len(conn.queue) >= QUEUE_LIMIT:
            self._dropped += 1
            return
        conn.queue.append((kind, payload))
        conn.wake.set()

    def broadcast(self, payload: bytes, kind: str = "msg") -> None:
        """Queue ``payload`` for every connected peer."""
        for peer in list(self._conns):
            self.send(peer, payload, kind)

    def connected(self) -> set[bytes]:
        """Public keys of peers with a live authenticated connection."""
        return set(self._conns)

    @property
    def stats(self) -> dict[str, Any]:
        """Per-kind wire counters (length prefix and framing included), drops and rejections.

        ``dropped`` counts sends to an unconnected peer or a full queue, plus frames still
        queued when their connection closed.
        """
        counters: dict[str, Any] = {name: dict(per_kind) for name, per_kind in self._wire.items()}
        return counters | {"dropped": self._dropped, "rejected_frames": self._rejected}

    def _count(self, direction: str, kind: str, size: int) -> None:
        msgs, wire_bytes = self._wire[direction + "_msgs"], self._wire[direction + "_bytes"]
        msgs[kind] = msgs.get(kind, 0) + 1
        wire_bytes[kind] = wire_bytes.get(kind, 0) + size

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log_event(log, logging.ERROR, "p2p task failed", error=repr(task.exception()))

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._stopping:
            writer.transport.abort()
        else:
            self._spawn(self._serve(reader, writer, None))

    async def _dial_loop(self, peer: bytes, addr: tuple[str, int]) -> None:
        failures = 0
        while not self._stopping:
            current = self._conns.get(peer)
            if current is not None:
                await current.closed.wait()
                failures = 0
            elif await self._dial(peer, addr):
                failures = 0
            else:
                failures = min(failures + 1, 5)
            await asyncio.sleep(min(BACKOFF_MIN * 2**failures, BACKOFF_MAX))

    async def _dial(self, peer: bytes, addr: tuple[str, int]) -> bool:
        try:  # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancellation
            async with asyncio.timeout(HANDSHAKE_TIMEOUT):
                reader, writer = await asyncio.open_connection(*addr)
        except (OSError, TimeoutError) as exc:
            log_event(log, logging.DEBUG, "p2p dial failed", peer=peer.hex()[:16], error=repr(exc))
            return False
        return await self._serve(reader, writer, peer)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     expected: bytes | None) -> bool:
        """Handshake, then read until the connection ends; True if it carried a session."""
        conn: _Conn | None = None
        try:
            async with asyncio.timeout(HANDSHAKE_TIMEOUT):
                conn = await self._handshake(reader, writer, expected)
            if not self._register(conn):
                return False
            await self._read_loop(reader, conn)
        except _ProtocolError as exc:
            self._rejected += 1
            log_event(log, logging.DEBUG, "p2p frame rejected", error=str(exc))
        except (OSError, EOFError, TimeoutError) as exc:
            log_event(log, logging.DEBUG, "p2p connection ended", error=repr(exc))
        finally:
            writer.transport.abort()
            if conn is not None:
                self._retire(conn)
        return conn is not None

    async def _handshake(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                         expected: bytes | None) -> _Conn:
        nonce = os.urandom(NONCE_SIZE)
        hello = {"network_id": self.network_id, "public_key": self._pk, "nonce": nonce,
                 "listen_port": self.port}
        writer.write(_frame(encode(hello)))
        peer, peer_nonce = self._check_hello(await _read_frame(reader, MAX_HANDSHAKE_FRAME), expected)
        proof = _hello_message(self.network_id, (peer_nonce, nonce), (peer, self._pk))
        writer.write(_frame(encode(self._key.sign(Domain.P2P, proof))))
        peer_sig = _decode(await _read_frame(reader, MAX_HANDSHAKE_FRAME))
        expect = _hello_message(self.network_id, (nonce, peer_nonce), (self._pk, peer))
        if not isinstance(peer_sig, bytes) or not is_valid(peer, Domain.P2P, expect, peer_sig):
            raise _ProtocolError("bad handshake signature")
        (lo_key, lo_nonce), (hi_key, hi_nonce) = sorted(((self._pk, nonce), (peer, peer_nonce)))
        transcript = self.network_id.encode() + lo_nonce + hi_nonce + lo_key + hi_key
        session = sha256(b"fedledger/p2p/session\x00" + transcript)
        return _Conn(peer, self._pk if expected is not None else peer, session, writer)

    def _check_hello(self, body: bytes, expected: bytes | None) -> tuple[bytes, bytes]:
        hello = _decode(body)
        if not isinstance(hello, dict) or set(hello) != _HELLO_FIELDS:
            raise _ProtocolError("malformed hello")
        if hello["network_id"] != self.network_id:
            raise _ProtocolError(f"hello for network {hello['network_id']!r}")
        peer, nonce = hello["public_key"], hello["nonce"]
        if not isinstance(peer, bytes) or peer not in self._peers:
            raise _ProtocolError("hello from a key outside the peer set")
        if expected is not None and peer != expected:
            raise _ProtocolError("dialled peer answered with another key")
        if not isinstance(nonce, bytes) or len(nonce) != NONCE_SIZE or type(hello["listen_port"]) is not int:
            raise _ProtocolError("malformed hello")
        return peer, nonce

    def _register(self, conn: _Conn) -> bool:
        """Make ``conn`` the peer's connection unless an existing one wins the tie-break."""
        if self._stopping:
            return False
        old = self._conns.get(conn.peer)
        if old is not None:
            if old.dialer != conn.dialer and old.dialer < conn.dialer:
                log_event(log, logging.DEBUG, "p2p duplicate connection refused", peer=conn.peer.hex()[:16])
                return False
            self._retire(old)
        self._conns[conn.peer] = conn
        conn.writer_task = self._spawn(self._write_loop(conn))
        log_event(log, logging.INFO, "p2p peer connected", peer=conn.peer.hex()[:16])
        return True

    def _retire(self, conn: _Conn) -> None:
        """Forget ``conn`` (idempotent): drop its queue, stop its writer, close the socket."""
        if self._conns.get(conn.peer) is conn:
            del self._conns[conn.peer]
            log_event(log, logging.INFO, "p2p peer disconnected", peer=conn.peer.hex()[:16])
        self._dropped += len(conn.queue)
        conn.queue.clear()
        if conn.writer_task is not None:
            conn.writer_task.cancel()
        conn.writer.transport.abort()
        conn.closed.set()

    async def _write_loop(self, conn: _Conn) -> None:
        try:
            while True:
                while not conn.queue:
                    conn.wake.clear()
                    await conn.wake.wait()
                count = min(len(conn.queue), WRITE_BATCH)
                conn.writer.write(b"".join([self._seal(conn, *conn.queue.popleft()) for _ in range(count)]))
                await conn.writer.drain()
        except OSError as exc:  # the reader sees the closed socket and retires the connection
            log_event(log, logging.DEBUG, "p2p write failed", error=repr(exc))
            conn.writer.transport.abort()

    def _seal(self, conn: _Conn, kind: str, payload: bytes) -> bytes:
        seq = conn.send_seq
        conn.send_seq = seq + 1
        sig = self._key.sign(Domain.P2P, _data_message(conn.session, seq, kind.encode(), payload))
        frame = _frame(encode([seq, kind, payload, sig]))
        self._count("sent", kind, len(frame))
        return frame

    async def _read_loop(self, reader: asyncio.StreamReader, conn: _Conn) -> None:
        while True:
            body = await _read_frame(reader, MAX_FRAME)
            kind, payload = self._open(conn, body)
            self._count("recv", kind, 4 + len(body))
            try:
                self._on_message(conn.peer, payload)
            except Exception as exc:  # a handler bug must not kill the connection
                log_event(log, logging.WARNING, "p2p on_message failed", kind=kind, error=repr(exc))

    def _open(self, conn: _Conn, body: bytes) -> tuple[str, bytes]:
        """Check one data frame's shape, sequence number and signature."""
        frame = _decode(body)
        if not isinstance(frame, list) or len(frame) != 4:
            raise _ProtocolError("malformed data frame")
        seq, kind, payload, sig = frame
        if type(seq) is not int or seq != conn.recv_seq:
            raise _ProtocolError(f"frame seq {seq!r}, expected {conn.recv_seq}")
        if not (isinstance(kind, str) and isinstance(payload, bytes) and isinstance(sig, bytes)):
            raise _ProtocolError("malformed data frame")
        kind_bytes = kind.encode()
        if len(kind_bytes) > MAX_KIND:
            raise _ProtocolError("kind too long")
        if not is_valid(conn.peer, Domain.P2P, _data_message(conn.session, seq, kind_bytes, payload), sig):
            raise _ProtocolError(f"bad signature on frame {seq}")
        conn.recv_seq += 1
        return kind, payload
