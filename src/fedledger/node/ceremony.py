"""The modulus ceremony (seed 000 §IV-C) as ``k`` OS processes talking TCP on one host.

:mod:`fedledger.crypto.ceremony` is the protocol; this module runs it.

Processes
---------
``fedledger ceremony modulus`` (the *coordinator*, :func:`run_ceremony`) starts ``k``
``fedledger ceremony party`` processes (:func:`party_main`) and talks to each over its
stdin/stdout, one JSON object per line:

1. Each party generates a fresh Ed25519 identity key, binds its listening port and
   prints ``{"event": "hello", "index", "public_key", "port"}``.
2. The coordinator sends every party the peer table ``{"peers": [{"index",
   "public_key", "port"}, ...]}`` on stdin. It is only a rendezvous: it never sees a
   share. (It could swap keys and sit in the middle; a deployment where that matters
   takes the table from the validators' genesis identities instead.)
3. The parties run the protocol among themselves and each prints ``{"event":
   "result", ...}``; party 1 also prints ``{"event": "progress", ...}`` after each batch.
   The coordinator checks that all results agree.

Wire
----
The parties form a full mesh with :class:`~fedledger.net.p2p.PeerNetwork`: the handshake
binds each connection to a key of the peer table, and every frame is signed over the
session and a sequence number, so broadcast values are authenticated. A round message is
CBOR ``{"type": "round", "round", "sender", "public", "box"}``: ``public`` holds the
broadcast vectors, ``box`` the private vectors for this recipient, encrypted with a NaCl
``Box`` (X25519 keys converted from the two Ed25519 identities, XSalsa20-Poly1305) over
CBOR ``{"round", "sender", "recipient", "private"}``. A vector is packed as a 2-byte
value width and the values as fixed-width big-endian integers. When a party has its
result it sends ``{"type": "done", "round", "sender", "modulus": SHA-256(N)}``, and
checks the others' digests against its own.

Failures
--------
Rounds are lock-step: a party resends its messages of the current and previous round to
every peer it is still waiting for every :data:`RESEND_INTERVAL` (a message can be lost
when two simultaneous dials race at start-up), fails with :class:`PartyFailed` if a peer
stays disconnected for :data:`PEER_GRACE` seconds or a round takes longer than the round
timeout. So when a party dies, the others exit with an error within seconds, and the
coordinator reports the first failure (a party's own exit code 2, e.g. a port in use,
becomes :class:`~fedledger.errors.ConfigError`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import secrets
import select
import socket
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nacl.bindings import crypto_sign_ed25519_pk_to_curve25519, crypto_sign_ed25519_sk_to_curve25519
from nacl.exceptions import CryptoError
from nacl.public import Box, PrivateKey, PublicKey

import fedledger
from fedledger.codec.cbor import decode, encode
from fedledger.crypto.ceremony import (
    DEFAULT_BITS,
    DEFAULT_ROUNDS,
    CeremonyParams,
    CeremonyParty,
    CeremonyProtocolError,
    CeremonyResult,
    CeremonyStats,
    Incoming,
    Outgoing,
)
from fedledger.crypto.hashing import sha256, tagged_hash
from fedledger.crypto.keys import SigningKey
from fedledger.errors import (
    ConfigError,
    DecodeError,
    NodeUnavailable,
    UsageError,
    VerificationFailed,
)
from fedledger.logs import log_event
from fedledger.net.p2p import PeerNetwork

__all__ = [
    "CeremonyDisagreement",
    "CeremonyOptions",
    "CeremonyOutcome",
    "PartyFailed",
    "PartyOptions",
    "party_main",
    "party_rng",
    "run_ceremony",
    "session_id",
]

log = logging.getLogger(__name__)

RESEND_INTERVAL = 2.0
PEER_GRACE = 3.0
POLL_INTERVAL = 0.1
CONNECT_TIMEOUT = 30.0
TABLE_TIMEOUT = 60.0
DEFAULT_ROUND_TIMEOUT = 300.0
CRASH_EXIT_CODE = 70
_EXIT_GRACE = 2 * PEER_GRACE + 4.0  # how long the others get to notice a dead party


class PartyFailed(NodeUnavailable):
    """A ceremony party died, timed out or lost its peers."""


class CeremonyDisagreement(VerificationFailed):
    """The parties finished with different moduli."""


# --------------------------------------------------------------------------- randomness


def session_id(seed: bytes | None) -> bytes:
    """16 random bytes naming a run; derived from ``seed`` for reproducible runs."""
    if seed is None:
        return secrets.token_bytes(16)
    return tagged_hash("fedledger/ceremony/session", seed)[:16]


def party_rng(seed: bytes | None, index: int) -> random.Random:
    """Party ``index``'s randomness: the OS CSPRNG, or a seeded PRNG (tests only, insecure)."""
    if seed is None:
        return secrets.SystemRandom()
    digest = tagged_hash("fedledger/ceremony/rng", seed + index.to_bytes(2, "big"))
    return random.Random(int.from_bytes(digest, "big"))


# --------------------------------------------------------------------------- wire codec


def _pack(values: Sequence[int]) -> bytes:
    width = max(((v.bit_length() + 7) // 8 for v in values), default=0) or (1 if values else 0)
    return width.to_bytes(2, "big") + b"".join(v.to_bytes(width, "big") for v in values)


def _unpack(data: object) -> list[int]:
    if not isinstance(data, bytes) or len(data) < 2:
        raise ValueError("vector is not bytes")
    width, body = int.from_bytes(data[:2], "big"), data[2:]
    if width == 0:
        if body:
            raise ValueError("vector of width 0 with a body")
        return []
    if len(body) % width:
        raise ValueError("vector length is not a multiple of its width")
    return [int.from_bytes(body[i : i + width], "big") for i in range(0, len(body), width)]


def _pack_map(vectors: Mapping[str, Sequence[int]]) -> dict[str, bytes]:
    return {name: _pack(values) for name, values in vectors.items()}


def _unpack_map(obj: object) -> dict[str, list[int]]:
    if not isinstance(obj, dict) or not all(isinstance(k, str) for k in obj):
        raise ValueError("vectors are not a map")
    return {name: _unpack(data) for name, data in obj.items()}


class _Codec:
    """Round messages of one party: pack, encrypt to each recipient, and back."""

    def __init__(self, index: int, key: SigningKey, peers: Mapping[int, bytes]) -> None:
        self.index = index
        curve_sk = PrivateKey(crypto_sign_ed25519_sk_to_curve25519(key.seed() + key.public_key))
        self._boxes = {
            j: Box(curve_sk, PublicKey(crypto_sign_ed25519_pk_to_curve25519(pk)))
            for j, pk in peers.items()
            if j != index
        }

    def encode_round(self, round_: int, out: Outgoing) -> dict[int, bytes]:
        public = _pack_map(out.public)
        payloads = {}
        for j, box in self._boxes.items():
            inner = {"round": round_, "sender": self.index, "recipient": j,
                     "private": _pack_map(out.private.get(j, {}))}
            sealed = bytes(box.encrypt(encode(inner)))
            payloads[j] = encode({"type": "round", "round": round_, "sender": self.index,
                                  "public": public, "box": sealed})
        return payloads

    def decode_round(self, round_: int, raw: Mapping[int, Mapping[str, Any]]) -> dict[int, Incoming]:
        inbox = {}
        for j, msg in raw.items():
            try:
                inner = decode(self._boxes[j].decrypt(msg["box"]))
                if not isinstance(inner, dict) or (inner.get("round"), inner.get("sender"),
                                                   inner.get("recipient")) != (round_, j, self.index):
                    raise ValueError("sealed header does not match the round")
                inbox[j] = Incoming(_unpack_map(msg["public"]), _unpack_map(inner.get("private")))
            except (CryptoError, DecodeError, KeyError, TypeError, ValueError) as exc:
                raise CeremonyProtocolError(
                    f"party {self.index}: bad round-{round_} message from party {j}: {exc}"
                ) from None
        return inbox


def _decode_and_step(codec: _Codec, party: CeremonyParty, round_: int,
                     raw: Mapping[int, Mapping[str, Any]]) -> Outgoing | None:
    return party.step(codec.decode_round(round_, raw))


# --------------------------------------------------------------------------- round channel


class _Channel:
    """Lock-step rounds over a :class:`PeerNetwork`: resends, timeouts and liveness."""

    def __init__(self, index: int, peers: Mapping[int, bytes], round_timeout: float) -> None:
        self.index = index
        self._keys = {j: pk for j, pk in peers.items() if j != index}
        self._index_of = {pk: j for j, pk in self._keys.items()}
        self._timeout = round_timeout
        self._round = 0
        self._inbox: dict[int, dict[int, dict[str, Any]]] = {}
        self._done: dict[int, bytes] = {}
        self._sent: dict[int, dict[int, bytes]] = {}
        self._down_since: dict[int, float] = {}
        self._event = asyncio.Event()
        self._error: CeremonyProtocolError | None = None
        self.net: PeerNetwork | None = None

    def on_message(self, peer: bytes, payload: bytes) -> None:
        sender = self._index_of.get(peer)
        if sender is None:
            return
        try:
            msg = decode(payload)
            if not isinstance(msg, dict) or msg.get("sender") != sender:
                raise ValueError("sender does not match the connection")
            kind, round_ = msg.get("type"), msg.get("round")
            if type(round_) is not int:
                raise ValueError("round is not an int")
            if kind == "round":
                if round_ >= self._round:
                    self._inbox.setdefault(round_, {}).setdefault(sender, msg)
            elif kind == "done" and isinstance(msg.get("modulus"), bytes):
                self._done.setdefault(sender, msg["modulus"])
            else:
                raise ValueError(f"unknown message type {kind!r}")
        except (DecodeError, ValueError) as exc:
            self._error = self._error or CeremonyProtocolError(
                f"party {self.index}: malformed message from party {sender}: {exc}"
            )
        self._event.set()

    @property
    def _net(self) -> PeerNetwork:
        assert self.net is not None
        return self.net

    async def wait_connected(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + CONNECT_TIMEOUT
        while missing := [j for j, pk in self._keys.items() if pk not in self._net.connected()]:
            if loop.time() > deadline:
                raise PartyFailed(f"party {self.index}: could not connect to party {missing[0]} "
                                  f"within {CONNECT_TIMEOUT:g} s")
            await asyncio.sleep(POLL_INTERVAL)

    async def exchange(self, round_: int, payloads: dict[int, bytes]) -> dict[int, dict[str, Any]]:
        """Send this round's messages; return every peer's message of the same round."""
        self._round = round_
        self._sent = {r: p for r, p in self._sent.items() if r == round_ - 1}
        self._sent[round_] = payloads
        for stale in [r for r in self._inbox if r < round_]:
            del self._inbox[stale]
        for j, data in payloads.items():
            self._net.send(self._keys[j], data)
        await self._wait(lambda: [j for j in self._keys if j not in self._inbox.get(round_, {})],
                         f"round-{round_}", strict=True)
        return self._inbox.pop(round_)

    async def finish(self, round_: int, digest: bytes) -> None:
        """Tell the peers we are done and wait for theirs (or their departure)."""
        self._round = round_
        message = encode({"type": "done", "round": round_, "sender": self.index, "modulus": digest})
        for pk in self._keys.values():
            self._net.send(pk, message)
        with contextlib.suppress(PartyFailed):
            await self._wait(lambda: [j for j, pk in self._keys.items() if j not in self._done
                                      and pk in self._net.connected()], "done", strict=False)
        for j, theirs in self._done.items():
            if theirs != digest:
                raise CeremonyDisagreement(f"party {j} finished with a different modulus")

    async def _wait(self, missing_of: Callable[[], list[int]], what: str, strict: bool) -> None:
        loop = asyncio.get_running_loop()
        start = last_send = loop.time()
        while True:
            self._event.clear()
            if self._error is not None:
                raise self._error
            missing = missing_of()
            if not missing:
                return
            now = loop.time()
            if now - start > self._timeout:
                raise PartyFailed(f"party {self.index}: no {what} message from party "
                                  f"{missing[0]} within {self._timeout:g} s")
            if strict:
                self._check_alive(now)
            if now - last_send >= RESEND_INTERVAL:
                for j in missing:
                    for r in sorted(self._sent):
                        if j in self._sent[r]:
                            self._net.send(self._keys[j], self._sent[r][j])
                last_send = now
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(POLL_INTERVAL):
                    await self._event.wait()

    def _check_alive(self, now: float) -> None:
        connected = self._net.connected()
        for j, pk in self._keys.items():
            if pk in connected:
                self._down_since.pop(j, None)
            elif now - self._down_since.setdefault(j, now) > PEER_GRACE:
                raise PartyFailed(f"party {self.index}: lost the connection to party {j}")


# --------------------------------------------------------------------------- party process


@dataclass(frozen=True)
class PartyOptions:
    """One party process. ``crash_at_round`` is fault injection for tests."""

    index: int
    params: CeremonyParams
    host: str = "127.0.0.1"
    port: int = 0
    seed: bytes | None = None
    round_timeout: float = DEFAULT_ROUND_TIMEOUT
    crash_at_round: int | None = None


def _emit_stdout(event: Mapping[str, Any]) -> None:
    try:
        print(json.dumps(event, sort_keys=True), flush=True)
    except BrokenPipeError:
        raise PartyFailed("the coordinator went away") from None


def _reserve_port(host: str, port: int, index: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen()
    except OSError as exc:
        sock.close()
        raise ConfigError(
            f"party {index}: cannot listen on {host}:{port}: {exc.strerror or exc}"
        ) from None
    return sock


def _read_table(opts: PartyOptions, public_key: bytes, port: int) -> dict[int, tuple[bytes, int]]:
    ready, _, _ = select.select([sys.stdin], [], [], TABLE_TIMEOUT)
    line = sys.stdin.readline() if ready else None
    if line is None:
        raise PartyFailed(f"party {opts.index}: no peer table within {TABLE_TIMEOUT:g} s")
    if not line:
        raise PartyFailed(f"party {opts.index}: the coordinator closed the control channel")
    try:
        rows = json.loads(line)["peers"]
        table = {int(r["index"]): (bytes.fromhex(r["public_key"]), int(r["port"])) for r in rows}
    except (ValueError, KeyError, TypeError) as exc:
        raise UsageError(f"party {opts.index}: malformed peer table: {exc}") from None
    indices = list(range(1, opts.params.parties + 1))
    if sorted(table) != indices or table[opts.index] != (public_key, port):
        raise UsageError(
            f"party {opts.index}: the peer table does not list parties 1..k with this party's key"
        )
    return table


def party_main(opts: PartyOptions, emit: Callable[[Mapping[str, Any]], None] = _emit_stdout) -> None:
    """Entry point of ``fedledger ceremony party``: hello, peer table, protocol, result."""
    key = SigningKey.generate()
    reserved = _reserve_port(opts.host, opts.port, opts.index)
    port = reserved.getsockname()[1]
    emit({"event": "hello", "index": opts.index, "public_key": key.public_key.hex(), "port": port})
    try:
        table = _read_table(opts, key.public_key, port)
    finally:
        reserved.close()
    result, sent = asyncio.run(_run_party(opts, key, table, emit))
    emit({"event": "result", "index": opts.index, "sent_bytes": sent, **result.as_dict()})


async def _run_party(opts: PartyOptions, key: SigningKey, table: Mapping[int, tuple[bytes, int]],
                     emit: Callable[[Mapping[str, Any]], None]) -> tuple[CeremonyResult, int]:
    params = opts.params
    keys = {j: pk for j, (pk, _) in table.items()}
    party = CeremonyParty(params, opts.index, party_rng(opts.seed, opts.index))
    codec = _Codec(opts.index, key, keys)
    channel = _Channel(opts.index, keys, opts.round_timeout)
    net = PeerNetwork(key, "fedledger-ceremony/" + params.session.hex(), opts.host, table[opts.index][1],
                      {pk: (opts.host, p) for pk, p in table.values()}, channel.on_message)
    channel.net = net
    try:
        await net.start()
    except OSError as exc:
        raise ConfigError(f"party {opts.index}: cannot listen on {opts.host}:{net.port}: "
                          f"{exc.strerror or exc}") from None
    try:
        await channel.wait_connected()
        out: Outgoing | None = party.start()
        round_, batches = 0, 0
        while out is not None:
            if opts.crash_at_round == round_:
                os._exit(CRASH_EXIT_CODE)  # fault injection: die without a word
            payloads = await asyncio.to_thread(codec.encode_round, round_, out)
            raw = await channel.exchange(round_, payloads)
            out = await asyncio.to_thread(_decode_and_step, codec, party, round_, raw)
            round_ += 1
            if opts.index == 1 and party.stats.batches != batches:
                batches = party.stats.batches
                emit({"event": "progress", "batches": batches, "candidates": party.stats.candidates,
                      "biprimality_tests": party.stats.biprimality_tests, "rounds": round_})
        assert party.result is not None
        n = party.result.modulus
        await channel.finish(round_, sha256(n.to_bytes((n.bit_length() + 7) // 8, "big")))
        sent = sum(net.stats["sent_bytes"].values())
        log_event(log, logging.INFO, "ceremony party finished", index=opts.index, rounds=round_)
        return party.result, sent
    finally:
        await net.stop()


# --------------------------------------------------------------------------- coordinator


@dataclass(frozen=True)
class CeremonyOptions:
    """A whole ceremony. ``crash = (party, round)`` kills that party there (tests)."""

    parties: int = 3
    bits: int = DEFAULT_BITS
    batch_size: int = 0
    rounds: int = DEFAULT_ROUNDS
    sieve: bool = True
    seed: bytes | None = None
    host: str = "127.0.0.1"
    base_port: int = 0
    timeout: float = 3600.0
    round_timeout: float = DEFAULT_ROUND_TIMEOUT
    crash: tuple[int, int] | None = None


@dataclass(frozen=True)
class CeremonyOutcome:
    """The agreed result, wall-clock time and traffic of a ceremony."""

    result: CeremonyResult
    params: CeremonyParams
    seconds: float
    sent_bytes: int

    def as_dict(self) -> dict[str, Any]:
        return {
            **self.result.as_dict(),
            "threshold": self.params.threshold,
            "batch_size": self.params.batch,
            "biprimality_rounds": self.params.rounds,
            "sieve": self.params.sieve,
            "session": self.params.session.hex(),
            "seconds": round(self.seconds, 3),
            "sent_bytes": self.sent_bytes,
        }


def run_ceremony(opts: CeremonyOptions,
                 on_event: Callable[[Mapping[str, Any]], None] | None = None) -> CeremonyOutcome:
    """Run the ceremony with ``opts.parties`` party processes; raise on any failure."""
    params = CeremonyParams(opts.parties, opts.bits, session_id(opts.seed), opts.batch_size,
                            opts.rounds, opts.sieve)
    if opts.base_port and not 1024 <= opts.base_port <= 65535 - opts.parties:
        raise UsageError(f"base port must be 0 (any free port) or in [1024, {65535 - opts.parties}]")
    if opts.timeout <= 0 or opts.round_timeout <= 0:
        raise UsageError("timeouts must be positive")
    return asyncio.run(_coordinate(opts, params, on_event or (lambda _: None)))


@dataclass
class _Proc:
    index: int
    proc: asyncio.subprocess.Process
    stderr: bytes = b""
    reader: asyncio.Task[None] | None = None

    def error_line(self) -> str:
        lines = [ln for ln in self.stderr.decode(errors="replace").splitlines() if ln.strip()]
        errors = [ln for ln in lines if ln.startswith("error:")]
        last = (errors or lines or ["no error output"])[-1]
        return last.removeprefix("error: ").removeprefix(f"party {self.index}: ")


def _party_command(opts: CeremonyOptions, params: CeremonyParams, index: int) -> list[str]:
    cmd = [sys.executable, "-m", "fedledger.cli.main", "ceremony", "party",
           "--index", str(index), "--parties", str(params.parties), "--bits", str(params.bits),
           "--session", params.session.hex(), "--batch-size", str(params.batch),
           "--rounds", str(params.rounds), "--host", opts.host,
           "--port", str(opts.base_port + index - 1 if opts.base_port else 0),
           "--round-timeout", str(opts.round_timeout)]
    if not params.sieve:
        cmd.append("--no-sieve")
    if opts.seed is not None:
        cmd += ["--seed", opts.seed.hex()]
    if opts.crash is not None and opts.crash[0] == index:
        cmd += ["--crash-at-round", str(opts.crash[1])]
    return cmd


async def _coordinate(opts: CeremonyOptions, params: CeremonyParams,
                      on_event: Callable[[Mapping[str, Any]], None]) -> CeremonyOutcome:
    env = dict(os.environ)
    src = str(Path(fedledger.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [src, env.get("PYTHONPATH")]))
    events: asyncio.Queue[tuple[int, dict[str, Any] | None]] = asyncio.Queue()
    procs: list[_Proc] = []
    started = time.perf_counter()
    try:
        for i in range(1, params.parties + 1):
            proc = await asyncio.create_subprocess_exec(
                *_party_command(opts, params, i), stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env)
            p = _Proc(i, proc)
            p.reader = asyncio.create_task(_read_party(p, events))
            procs.append(p)
        async with asyncio.timeout(opts.timeout):
            ended: set[int] = set()
            hellos = await _collect(procs, events, "hello", on_event, ended)
            table = json.dumps({"peers": [{"index": i, "public_key": h["public_key"], "port": h["port"]}
                                          for i, h in sorted(hellos.items())]}) + "\n"
            for p in procs:
                assert p.proc.stdin is not None
                p.proc.stdin.write(table.encode())
                await p.proc.stdin.drain()
                p.proc.stdin.close()
            results = await _collect(procs, events, "result", on_event, ended)
            for p in procs:
                if await p.proc.wait() != 0:
                    raise await _failure(procs, p, _EXIT_GRACE)
    except TimeoutError:
        raise PartyFailed(f"the ceremony did not finish within {opts.timeout:g} s") from None
    finally:
        for p in procs:
            if p.proc.returncode is None:
                p.proc.kill()
                await p.proc.wait()
            if p.reader is not None:
                p.reader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await p.reader
    seconds = time.perf_counter() - started
    moduli = {r["modulus"] for r in results.values()}
    if len(moduli) != 1:
        raise CeremonyDisagreement(f"the parties finished with {len(moduli)} different moduli")
    first = results[1]
    result = CeremonyResult(int(first["modulus"], 16), params.bits, params.parties, _stats_of(first))
    return CeremonyOutcome(result, params, seconds, sum(int(r["sent_bytes"]) for r in results.values()))


def _stats_of(event: Mapping[str, Any]) -> CeremonyStats:
    return CeremonyStats(**{name: int(event[name]) for name in CeremonyStats.__dataclass_fields__})


async def _read_party(p: _Proc, events: asyncio.Queue[tuple[int, dict[str, Any] | None]]) -> None:
    """Forward a party's stdout events; keep the tail of its stderr."""
    assert p.proc.stdout is not None and p.proc.stderr is not None

    async def drain_stderr() -> None:
        assert p.proc.stderr is not None
        while chunk := await p.proc.stderr.read(4096):
            p.stderr = (p.stderr + chunk)[-8192:]

    stderr_task = asyncio.create_task(drain_stderr())
    try:
        while line := await p.proc.stdout.readline():
            with contextlib.suppress(ValueError):
                event = json.loads(line)
                if isinstance(event, dict):
                    await events.put((p.index, event))
        await stderr_task
    finally:
        stderr_task.cancel()
        await events.put((p.index, None))


async def _collect(procs: list[_Proc], events: asyncio.Queue[tuple[int, dict[str, Any] | None]],
                   kind: str, on_event: Callable[[Mapping[str, Any]], None],
                   ended: set[int]) -> dict[int, dict[str, Any]]:
    """Wait for one ``kind`` event from every party; a party that ends first is a failure."""
    grace = 0.5 if kind == "hello" else _EXIT_GRACE  # before the table, nobody notices a death
    if ended:
        raise await _failure(procs, procs[min(ended) - 1], grace)
    got: dict[int, dict[str, Any]] = {}
    while len(got) < len(procs):
        index, event = await events.get()
        if event is None:
            ended.add(index)
            if index not in got:
                raise await _failure(procs, procs[index - 1], grace)
        elif event.get("event") == kind:
            got[index] = event
        elif event.get("event") == "progress":
            on_event(event)
    return got


async def _failure(procs: list[_Proc], first: _Proc, grace: float) -> Exception:
    """The error to raise when ``first`` ended early; gives the others ``grace`` s to notice."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(grace):
            await asyncio.gather(*(p.proc.wait() for p in procs))
            await asyncio.gather(*(p.reader for p in procs if p.reader is not None),
                                 return_exceptions=True)
    code = first.proc.returncode
    others = [f"party {p.index}: {p.error_line()}" for p in procs
              if p is not first and p.proc.returncode not in (None, 0)]
    detail = f"party {first.index} failed (exit code {code}): {first.error_line()}"
    if others:
        detail += "; then " + "; ".join(others)
    if code == ConfigError.exit_code:
        return ConfigError(detail)
    return PartyFailed(detail)
