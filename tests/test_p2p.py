"""PeerNetwork over real 127.0.0.1 sockets: authentication, framing, replay, reconnect, shutdown."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from fedledger.codec.cbor import encode
from fedledger.crypto.keys import SigningKey
from fedledger.net.p2p import MAX_FRAME, PeerNetwork

HOST = "127.0.0.1"
NET = "fedledger-test"
Inbox = list[tuple[bytes, bytes]]


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def key(n: int) -> SigningKey:
    return SigningKey.from_seed(bytes([n]) * 32)


def make_net(k: SigningKey, port: int, table: dict[bytes, tuple[str, int]], inbox: Inbox,
             network_id: str = NET) -> PeerNetwork:
    return PeerNetwork(k, network_id, HOST, port, table, lambda pk, data: inbox.append((pk, data)))


async def wait_until(cond: Callable[[], bool], timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


async def timed_stop(*nets: PeerNetwork) -> None:
    for net in nets:
        started = time.monotonic()
        await net.stop()
        assert time.monotonic() - started < 1.0


def run(coro: Coroutine[Any, Any, None], caplog: pytest.LogCaptureFixture) -> None:
    """Run a scenario; fail on any asyncio complaint (pending tasks, unretrieved exceptions)."""
    with caplog.at_level(logging.WARNING):
        asyncio.run(coro)
    bad = [r.getMessage() for r in caplog.records if r.name == "asyncio" or "task failed" in r.getMessage()]
    assert not bad, bad


class FrameProxy:
    """A man in the middle between a dialler and ``target``: forwards whole frames and can tamper."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.mode: str | None = None  # applied once to the next data frame dialler -> target
        self.connections = 0
        self.recorded: list[bytes] = []  # data frames dialler -> target, as seen on the wire
        self._to_target: asyncio.StreamWriter | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._accept, HOST, 0)
        return int(self._server.sockets[0].getsockname()[1])

    def inject(self, raw: bytes) -> None:
        assert self._to_target is not None
        self._to_target.write(raw)

    async def stop(self) -> None:
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.create_task(self._relay(reader, writer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(HOST, self.target)
        except OSError:  # the target is down
            writer.transport.abort()
            return
        self.connections += 1
        self._to_target = up_writer
        pumps = [asyncio.create_task(self._pump(reader, up_writer, True)),
                 asyncio.create_task(self._pump(up_reader, writer, False))]
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            writer.transport.abort()
            up_writer.transport.abort()
            for pump in pumps:
                pump.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, up: bool) -> None:
        frames = 0
        while True:
            try:
                header = await reader.readexactly(4)
                body = await reader.readexactly(int.from_bytes(header, "big"))
            except (EOFError, OSError):
                return
            frames += 1
            if up and frames > 2:  # after Hello and the handshake signature
                self.recorded.append(header + body)
                mode, self.mode = self.mode, None
                if mode == "flip":  # last byte of the body is inside the signature
                    body = body[:-1] + bytes([body[-1] ^ 1])
                elif mode == "replay":
                    writer.write(header + body)
            writer.write(header + body)
            await writer.drain()


async def raw_handshake(port: int, claimed: bytes, signature: bytes) -> bytes:
    """Speak the handshake with ``claimed`` as our key but an arbitrary signature; return what follows."""
    reader, writer = await asyncio.open_connection(HOST, port)
    hello = encode({"network_id": NET, "public_key": claimed, "nonce": os.urandom(32), "listen_port": 1})
    sig = encode(signature)
    writer.write(len(hello).to_bytes(4, "big") + hello + len(sig).to_bytes(4, "big") + sig)
    rest = await read_until_closed(reader)
    writer.close()
    return rest


async def read_until_closed(reader: asyncio.StreamReader) -> bytes:
    try:
        return await asyncio.wait_for(reader.read(), 3)
    except ConnectionResetError:
        return b""


def test_three_nodes_broadcast_exactly_once(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        keys = [key(i) for i in (1, 2, 3)]
        table = {k.public_key: (HOST, free_port()) for k in keys}
        inboxes: list[Inbox] = [[], [], []]
        nets = [make_net(k, table[k.public_key][1], table, inbox) for k, inbox in zip(keys, inboxes, strict=True)]
        for net in nets:
            await net.start()
        pks = [k.public_key for k in keys]
        await wait_until(lambda: all(n.connected() == set(pks) - {pks[i]} for i, n in enumerate(nets)))
        for i, net in enumerate(nets):
            net.broadcast(b"vote from %d" % i, kind="vote")
            net.send(pks[(i + 1) % 3], b"block from %d" % i, kind="block")
        await wait_until(lambda: all(len(inbox) == 3 for inbox in inboxes))
        await asyncio.sleep(0.1)  # room for duplicates to show up
        for i, inbox in enumerate(inboxes):
            others = [j for j in range(3) if j != i]
            expected = {(pks[j], b"vote from %d" % j) for j in others} | {(pks[(i - 1) % 3], b"block from %d" % ((i - 1) % 3))}
            assert len(inbox) == 3 and set(inbox) == expected
        stats = [n.stats for n in nets]
        for s in stats:
            assert s["sent_msgs"] == {"vote": 2, "block": 1} == s["recv_msgs"]
            assert s["dropped"] == 0 and s["rejected_frames"] == 0
            assert s["sent_bytes"]["vote"] > 2 * (4 + len(b"vote from 0") + 64)  # wire bytes, not payload
        for kind in ("vote", "block"):
            assert sum(s["sent_bytes"][kind] for s in stats) == sum(s["recv_bytes"][kind] for s in stats)
        assert all(n.connected() == set(pks) - {pks[i]} for i, n in enumerate(nets))  # one stable link each
        await timed_stop(*nets)
        assert asyncio.all_tasks() == {asyncio.current_task()}

    run(scenario(), caplog)


def test_key_outside_peer_set_is_refused(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        a, b, outsider = key(1), key(2), key(9)
        table = {k.public_key: (HOST, free_port()) for k in (a, b)}
        inbox_a: Inbox = []
        net_a = make_net(a, table[a.public_key][1], table, inbox_a)
        net_b = make_net(b, table[b.public_key][1], table, [])
        intruder = make_net(outsider, free_port(), table, [])  # knows the members, they do not know it
        for net in (net_a, net_b, intruder):
            await net.start()
        await wait_until(lambda: net_a.connected() == {b.public_key})
        await asyncio.sleep(0.4)  # several dial attempts by the outsider
        assert intruder.connected() == set()
        assert outsider.public_key not in net_a.connected() | net_b.connected()
        assert net_a.stats["rejected_frames"] >= 1
        intruder.broadcast(b"let me in")
        intruder.send(a.public_key, b"let me in")
        assert intruder.stats["dropped"] == 1 and intruder.stats["sent_msgs"] == {}
        await timed_stop(intruder)
        # Claiming a member's key without its private key fails at the handshake signature.
        rejected = net_a.stats["rejected_frames"]
        await raw_handshake(table[a.public_key][1], b.public_key, bytes(64))
        assert net_a.stats["rejected_frames"] == rejected + 1
        assert net_a.connected() == {b.public_key}  # the impostor did not displace the real peer
        assert all(pk == b.public_key for pk, _ in inbox_a)
        await timed_stop(net_a, net_b)

    run(scenario(), caplog)


def test_different_network_id_is_refused(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        a, b = key(1), key(2)
        table = {k.public_key: (HOST, free_port()) for k in (a, b)}
        net_a = make_net(a, table[a.public_key][1], table, [], network_id="net-a")
        net_b = make_net(b, table[b.public_key][1], table, [], network_id="net-b")
        await net_a.start()
        await net_b.start()
        await asyncio.sleep(0.4)
        assert net_a.connected() == set() == net_b.connected()
        assert net_a.stats["rejected_frames"] >= 1 and net_b.stats["rejected_frames"] >= 1
        await timed_stop(net_a, net_b)

    run(scenario(), caplog)


async def proxied_pair() -> tuple[PeerNetwork, PeerNetwork, FrameProxy, Inbox]:
    """A dials B through a FrameProxy; B cannot dial A (its address for A is dead)."""
    a, b = key(1), key(2)
    port_b = free_port()
    net_b_inbox: Inbox = []
    net_b = make_net(b, port_b, {a.public_key: (HOST, free_port())}, net_b_inbox)
    await net_b.start()
    proxy = FrameProxy(port_b)
    net_a = make_net(a, free_port(), {b.public_key: (HOST, await proxy.start())}, [])
    await net_a.start()
    await wait_until(lambda: net_b.connected() == {a.public_key} and net_a.connected() == {b.public_key})
    return net_a, net_b, proxy, net_b_inbox


async def reconnected(net_a: PeerNetwork, net_b: PeerNetwork, proxy: FrameProxy, sessions: int) -> None:
    await wait_until(lambda: proxy.connections == sessions)
    await wait_until(lambda: bool(net_a.connected()) and bool(net_b.connected()))


@pytest.mark.parametrize("attack", ["flip", "replay"])
def test_tampered_or_replayed_frame_is_rejected_then_link_recovers(
        attack: str, caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        net_a, net_b, proxy, inbox = await proxied_pair()
        b_key = key(2).public_key
        net_a.send(b_key, b"first")
        await wait_until(lambda: len(inbox) == 1)
        proxy.mode = attack
        net_a.send(b_key, b"second")
        await wait_until(lambda: net_b.stats["rejected_frames"] == 1)
        await reconnected(net_a, net_b, proxy, 2)
        net_a.send(b_key, b"third")
        await wait_until(lambda: any(p == b"third" for _, p in inbox))
        expected = [b"first", b"third"] if attack == "flip" else [b"first", b"second", b"third"]
        assert [p for _, p in inbox] == expected  # a replayed frame is never delivered twice
        assert net_b.stats["rejected_frames"] == 1
        await timed_stop(net_a, net_b)
        await proxy.stop()

    run(scenario(), caplog)


def test_frame_from_an_earlier_session_is_rejected(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        net_a, net_b, proxy, inbox = await proxied_pair()
        net_a.send(key(2).public_key, b"pay 10")
        await wait_until(lambda: len(inbox) == 1)
        proxy.mode = "flip"  # force a new session
        net_a.send(key(2).public_key, b"x")
        await reconnected(net_a, net_b, proxy, 2)
        proxy.inject(proxy.recorded[0])  # seq 0 of session 1, valid signature, wrong session
        await wait_until(lambda: net_b.stats["rejected_frames"] == 2)
        assert [p for _, p in inbox] == [b"pay 10"]
        await timed_stop(net_a, net_b)
        await proxy.stop()

    run(scenario(), caplog)


def test_oversized_length_prefix_is_rejected(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        net_a, net_b, proxy, inbox = await proxied_pair()
        proxy.inject((MAX_FRAME + 1).to_bytes(4, "big"))  # after an authenticated handshake
        await wait_until(lambda: net_b.stats["rejected_frames"] == 1)
        await reconnected(net_a, net_b, proxy, 2)
        reader, writer = await asyncio.open_connection(HOST, net_b.port)  # before any handshake
        writer.write(b"\xff\xff\xff\xff")
        await read_until_closed(reader)  # the node closes the connection
        writer.close()
        assert net_b.stats["rejected_frames"] == 2 and inbox == []
        await timed_stop(net_a, net_b)
        await proxy.stop()

    run(scenario(), caplog)


def test_reconnect_after_peer_restart(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        a, b = key(1), key(2)
        table = {k.public_key: (HOST, free_port()) for k in (a, b)}
        inbox_a: Inbox = []
        inbox_b: Inbox = []
        net_a = make_net(a, table[a.public_key][1], table, inbox_a)
        net_b = make_net(b, table[b.public_key][1], table, inbox_b)
        await net_a.start()
        await net_b.start()
        await wait_until(lambda: net_a.connected() == {b.public_key})
        await timed_stop(net_b)
        await wait_until(lambda: net_a.connected() == set())
        net_a.send(b.public_key, b"lost")
        assert net_a.stats["dropped"] == 1
        await asyncio.sleep(0.3)  # A keeps dialling a dead port meanwhile
        inbox_b.clear()
        net_b = make_net(b, table[b.public_key][1], table, inbox_b)
        await net_b.start()
        await wait_until(lambda: net_a.connected() == {b.public_key} and net_b.connected() == {a.public_key})
        net_a.send(b.public_key, b"hello again", kind="block")
        net_b.send(a.public_key, b"welcome back", kind="block")
        await wait_until(lambda: len(inbox_a) == 1 and len(inbox_b) == 1)
        assert inbox_b == [(a.public_key, b"hello again")]
        assert inbox_a == [(b.public_key, b"welcome back")]
        await timed_stop(net_a, net_b)

    run(scenario(), caplog)


def test_failing_handler_does_not_kill_the_connection(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        a, b = key(1), key(2)
        table = {k.public_key: (HOST, free_port()) for k in (a, b)}
        got: list[bytes] = []

        def handler(peer: bytes, payload: bytes) -> None:
            got.append(payload)
            if payload == b"boom":
                raise RuntimeError("handler bug")

        net_a = make_net(a, table[a.public_key][1], table, [])
        net_b = PeerNetwork(b, NET, HOST, table[b.public_key][1], table, handler)
        await net_a.start()
        await net_b.start()
        await wait_until(lambda: net_a.connected() == {b.public_key} and net_b.connected() == {a.public_key})
        net_a.send(b.public_key, b"boom")
        net_a.send(b.public_key, b"after")
        await wait_until(lambda: got == [b"boom", b"after"])
        assert net_b.connected() == {a.public_key} and net_b.stats["rejected_frames"] == 0
        await timed_stop(net_a, net_b)

    run(scenario(), caplog)
    assert any("on_message failed" in r.getMessage() for r in caplog.records)
