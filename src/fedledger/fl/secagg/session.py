"""One round of seed 001's protocol for a set of parties, in memory, with what goes on chain.

:func:`run_edge` plays one edge (fog) and its devices through steps 1–5 of
:mod:`fedledger.fl.secagg.protocol`; :func:`run_cloud` plays step 6 across
edges. Both are deterministic given their keys. Misbehaviour is injected
through :class:`Behaviour` so the attack tests and the benchmark exercise the
same code path as honest rounds. What seed 001 stores on the blockchain goes
to a :class:`Ledger` sink as ``(kind, fields)`` records: the edge's signed
acceptance, every ``H(S_Dij)``, penalties with their evidence digest,
``H(c_i)``, ``H(c)``, ``COM(c_i)`` and each edge's verdict on the cloud's sum.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from threadpoolctl import ThreadpoolController

from fedledger.crypto import vrf
from fedledger.crypto.keys import SigningKey
from fedledger.errors import UsageError, VerificationFailed
from fedledger.fl.secagg import protocol as P
from fedledger.fl.secagg.field import ELEMENT_BYTES, Q
from fedledger.fl.secagg.sketch import SketchMatrix


class Ledger(Protocol):
    """Where the on-chain records of a round go."""

    def record(self, kind: str, fields: Mapping[str, Any]) -> None: ...


@dataclass
class MemoryLedger:
    """A list of records, for tests, the benchmark and the in-memory strategies."""

    records: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def record(self, kind: str, fields: Mapping[str, Any]) -> None:
        self.records.append((kind, dict(fields)))

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [f for k, f in self.records if k == kind]


def vrf_noise_key(device_key: SigningKey, beacon: bytes, context: bytes) -> tuple[bytes, bytes]:
    """``(noise_key, proof)``: the device's VRF output on the round's on-chain randomness.

    The output is unique for the device's registered key and the public input,
    so the device cannot choose its noise; only holders of the proof (the
    device, and an auditor it is shown to) can recompute η.
    """
    alpha = b"fedledger/secagg-noise\x00" + beacon + context
    proof = vrf.prove(device_key, alpha)
    return vrf.proof_to_hash(proof)[:32], proof


def audit_noise(public_key: bytes, beacon: bytes, context: bytes, proof: bytes, packet: P.Packet,
                params: P.Params) -> bool:
    """Auditor's check that a device's noise is the one its VRF dictates (seed 001's NOTE)."""
    alpha = b"fedledger/secagg-noise\x00" + beacon + context
    try:
        key = vrf.verify(public_key, alpha, proof)[:32]
    except Exception:  # noqa: BLE001 - any malformed proof fails the audit
        return False
    from fedledger.fl.secagg.field import encode, neg

    eta, pad = P.noise_vectors(key, params, packet.masked.shape[0])
    return P.digest(np.concatenate([encode(eta, params.frac_bits), neg(pad)])) == packet.noise_digest


@dataclass
class Behaviour:
    """Deviations from the protocol, keyed by party name (empty: everyone honest).

    ``bad_shares``: dealer → participants who get a share off the dealer's
    polynomial (bound by the dealer's digest, so provably bad).
    ``inconsistent``: devices whose masked update does not match their
    commitments (a poisoned ``g' + η`` sent with ``COM(g)``).
    ``wrong_sums``: participants who record and send a wrong share sum.
    ``dropouts``: participants who never send their share sum.
    ``forge``: the cloud adds this vector (float, before encoding) to ``c``.
    """

    bad_shares: Mapping[str, Sequence[str]] = field(default_factory=dict)
    inconsistent: Sequence[str] = ()
    wrong_sums: Sequence[str] = ()
    dropouts: Sequence[str] = ()
    forge: np.ndarray | None = None


@dataclass
class EdgeOutcome:
    """What an edge ends a round with: ``c_i`` in the field and the public facts about it."""

    edge: str
    total: np.ndarray
    weight: int
    used: tuple[str, ...]
    rejected: dict[str, str]
    penalised: dict[str, str]
    timings: dict[str, float]
    bytes_per_device: int


def _pair_key(dealer: str, receiver: str, keys: Mapping[str, bytes]) -> AESGCM:
    """The key of the channel dealer → receiver (X25519 in a deployment; derived here)."""
    return AESGCM(hashlib.sha256(keys[dealer] + keys[receiver] + f"{dealer}>{receiver}".encode()).digest())


_NONCE = bytes(12)  # every channel key seals exactly one message
_TAG = 16
_IN_PLACE = hasattr(AESGCM, "encrypt_into")  # cryptography >= 46: seal into and open into NumPy buffers


def _seal(shares: np.ndarray, dealer: str, names: Sequence[str], keys: Mapping[str, bytes]) -> np.ndarray:
    """``dealer``'s shares (``uint32`` rows in the order of ``names``) sealed: row i goes to ``names[i]``.

    The boxes of one dealer share one array, so a round allocates a few large
    buffers rather than a hundred multi-megabyte ``bytes`` objects.
    """
    boxes = np.empty((shares.shape[0], shares.shape[1] * ELEMENT_BYTES + _TAG), dtype=np.uint8)
    for i, receiver in enumerate(names):
        aead, plain = _pair_key(dealer, receiver, keys), np.ascontiguousarray(shares[i]).view(np.uint8).data
        if _IN_PLACE:
            aead.encrypt_into(_NONCE, plain, None, boxes[i].data)
        else:
            boxes[i] = np.frombuffer(aead.encrypt(_NONCE, plain, None), dtype=np.uint8)
    return boxes


def _deliver(boxes: Mapping[str, np.ndarray], dealers: Sequence[str], index: int, receiver: str,
             keys: Mapping[str, bytes]) -> dict[str, np.ndarray]:
    """``receiver``'s shares: row ``index`` of each dealer's boxes, opened (a box that fails
    authentication reads as an empty share)."""
    opened: dict[str, np.ndarray] = {}
    width = max(((boxes[d].shape[1] - _TAG) // ELEMENT_BYTES for d in dealers), default=0)
    plain = np.empty((len(dealers), width), dtype="<u4")
    for i, d in enumerate(dealers):
        aead, box = _pair_key(d, receiver, keys), boxes[d][index]
        try:
            if _IN_PLACE and box.size == plain.shape[1] * ELEMENT_BYTES + _TAG:
                aead.decrypt_into(_NONCE, box.data, None, plain[i].view(np.uint8).data)
                opened[d] = plain[i]
            else:
                opened[d] = np.frombuffer(aead.decrypt(_NONCE, box.data, None), dtype="<u4")
        except InvalidTag:
            opened[d] = np.zeros(0, dtype="<u4")
    return opened


class _SingleThreadedBlas(contextlib.ContextDecorator):
    """BLAS on one thread per call while any round runs (re-entrant, thread-safe).

    A round already keeps every core busy with one device (or one check) per
    thread; BLAS threads on top of that only contend for the same cores, and
    their spin-waiting makes the round's small products several times slower,
    worst when other processes load the machine. The first round to start sets
    the limit and the last to finish restores the previous setting.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._active = 0
        self._limiter: Any = None

    def __enter__(self) -> None:
        with self._lock:
            if not self._active:
                self._limiter = _blas_controller().limit(limits=1, user_api="blas")
            self._active += 1

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self._active -= 1
            if not self._active and self._limiter is not None:
                self._limiter.restore_original_limits()
                self._limiter = None


@functools.cache
def _blas_controller() -> ThreadpoolController:
    """threadpoolctl's handle on the loaded BLAS libraries (inspected once)."""
    return ThreadpoolController()


_single_threaded_blas = _SingleThreadedBlas()


def misdeal(packet: P.Packet, dealing: P.Dealing, rows: Sequence[int]) -> tuple[P.Packet, P.Dealing]:
    """Fault injection: the dealer binds shares off its polynomial at ``rows`` (participants' indices)."""
    shares = dealing.shares.copy()
    for i in rows:
        shares[i, 0] = (shares[i, 0] + 1) % Q
    packet = P.Packet(packet.device, packet.point, packet.weight, packet.masked, packet.noise_digest,
                      tuple(P.digest(s) for s in shares))
    return packet, P.Dealing(dealing.secret, dealing.noise, dealing.coeffs, shares)


def _timer(timings: dict[str, float], name: str, start: float) -> float:
    now = time.perf_counter()
    timings[name] = timings.get(name, 0.0) + now - start
    return now


@_single_threaded_blas
def run_edge(edge: str, edge_key: SigningKey, context: bytes, updates: Mapping[str, np.ndarray],
             weights: Mapping[str, int], params: P.Params, *, noise_keys: Mapping[str, bytes],
             share_key: Callable[[str], bytes], ledger: Ledger | None = None,
             behaviour: Behaviour | None = None, select: P.Selector | None = None,
             workers: int | None = None) -> EdgeOutcome:
    """Steps 1–5 for the devices in ``updates`` (float vectors of equal length).

    Each device's own work (dealing, sealing, sketching, its share sum) runs on a
    pool of ``workers`` threads (default: one per CPU), as devices work at the
    same time in a deployment; results are combined in name order, so the
    outcome does not depend on the pool.
    """
    led: Ledger = ledger if ledger is not None else MemoryLedger()
    bad = behaviour or Behaviour()
    names = sorted(updates)
    if not names:
        raise UsageError(f"{edge}: no device updates to aggregate")
    if params.threshold > len(names):
        raise UsageError(f"{edge}: threshold {params.threshold} exceeds the {len(names)} participants")
    points = {n: i + 1 for i, n in enumerate(names)}
    t: dict[str, float] = {}
    clock = time.perf_counter()

    # step 1: every device masks, binds and shares its update
    packets: dict[str, P.Packet] = {}
    dealings: dict[str, P.Dealing] = {}
    rejected: dict[str, str] = {}
    pool = ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1)

    def dealt(n: str) -> tuple[P.Packet, P.Dealing] | str:
        try:
            return P.deal(n, np.asarray(updates[n], dtype=np.float64), int(weights[n]), params=params,
                          points=points, noise_key=noise_keys[n], share_key=share_key(n))
        except UsageError as exc:  # e.g. an update outside the field's range: not a dealer
            return str(exc)

    for n, result in zip(names, pool.map(dealt, names), strict=True):
        if isinstance(result, str):
            rejected[n] = result
            continue
        packet, dealing = result
        if n in bad.bad_shares:
            packet, dealing = misdeal(packet, dealing, [points[v] - 1 for v in bad.bad_shares[n]])
        if n in bad.inconsistent:  # a poisoned masked update sent with the honest commitments
            packet = P.Packet(n, packet.point, packet.weight, (packet.masked * 3) % Q,
                              packet.noise_digest, packet.share_digests)
        packets[n], dealings[n] = packet, dealing
    # shares travel sealed (AES-256-GCM) from each dealer to each participant
    keys = {n: hashlib.sha256(b"fedledger/secagg-sim-transport\x00" + share_key(n)).digest() for n in names}
    boxes = dict(zip(dealings, pool.map(
        lambda d: _seal(dealings[d].shares, d, names, keys), dealings), strict=True))  # rows in point order
    clock = _timer(t, "deal", clock)

    # step 2: challenge, then sketches
    if not packets:
        raise VerificationFailed(f"{edge}: no device could deal its update ({'; '.join(rejected.values())})")
    challenge = P.round_challenge(context, list(packets.values()))
    length = next(iter(dealings.values())).secret.shape[0]
    matrix = SketchMatrix.from_seed(challenge, length, params.rows)
    sketches = dict(zip(packets, pool.map(lambda n: P.sketch_dealing(n, dealings[n], matrix), packets),
                        strict=True))
    clock = _timer(t, "sketch", clock)

    # step 3: verification by fog
    acc = P.accept(edge_key, context, challenge, list(packets.values()), sketches, matrix, params,
                   len(names), select)
    rejected.update(acc.rejected)
    penalised: dict[str, str] = {}
    clock = _timer(t, "verify_fog", clock)

    # step 4: secret sharing (repeated without any dealer a complaint proves bad)
    sums: dict[int, np.ndarray] = {}
    while True:
        if not acc.accepted:
            raise VerificationFailed(f"{edge}: no device update was accepted")
        led.record("secagg.accept", {"edge": edge, "accepted": list(acc.accepted),
                                     "weights": list(acc.weights), "signature": acc.signature})
        sums, recorded, guilty = {}, {}, {}
        def summed(n: str, acc: P.Acceptance = acc) -> tuple[np.ndarray | None, list[P.Complaint]]:
            P.check_acceptance(acc, edge_key.public_key, packets, sketches)
            received = _deliver(boxes, acc.accepted, points[n] - 1, n, keys)
            return P.share_sum(n, points[n], points[n] - 1, acc, received, packets, sketches, matrix)

        for n, (total, complaints) in zip(names, pool.map(summed, names), strict=True):
            for c in complaints:
                if P.check_complaint(c, packets[c.dealer], sketches[c.dealer], points[n] - 1, matrix):
                    guilty[c.dealer] = f"bad share to {n}: {c.reason}"
            if total is None or n in bad.dropouts:
                continue
            if n in bad.wrong_sums:
                total = total.copy()
                total[0] = (total[0] + 1) % Q
            recorded[points[n]] = P.digest(total)
            led.record("secagg.share_sum", {"edge": edge, "device": n, "hash": recorded[points[n]]})
            sums[points[n]] = total
        if not guilty:
            break
        for d, why in guilty.items():
            penalised[d] = why
            rejected[d] = why
            led.record("secagg.penalty", {"edge": edge, "offender": d, "reason": why})
        acc = P.exclude(acc, edge_key, guilty)
    pool.shutdown()
    clock = _timer(t, "share_sums", clock)

    # step 5: computation by fog
    total, refused = P.reconstruct(acc, sums, recorded, sketches, matrix, params)
    by_point = {v: k for k, v in points.items()}
    for point, why in refused:
        penalised[by_point[point]] = why
        led.record("secagg.penalty", {"edge": edge, "offender": by_point[point], "reason": why})
    led.record("secagg.edge_sum", {"edge": edge, "hash": P.digest(total), "weight": sum(acc.weights)})
    _timer(t, "reconstruct", clock)

    d, k, n_part = total.shape[0], params.rows, len(names)
    per_device = ELEMENT_BYTES * (d + n_part * (d + k) + (params.threshold + 1) * k + (d + k)) \
        + 32 * (n_part + 2)
    return EdgeOutcome(edge, total, sum(acc.weights), acc.accepted, rejected, penalised, t, per_device)


@dataclass
class CloudOutcome:
    """The verified global sum, or which edges refused it."""

    total: np.ndarray
    weight: int
    verdicts: dict[str, str | None]
    timings: dict[str, float]

    @property
    def accepted(self) -> bool:
        return all(v is None for v in self.verdicts.values())


@_single_threaded_blas
def run_cloud(context: bytes, outcomes: Sequence[EdgeOutcome], params: P.Params, *,
              ledger: Ledger | None = None, behaviour: Behaviour | None = None) -> CloudOutcome:
    """Step 6: the cloud sums the edges' ``c_i``; every edge verifies the result."""
    led: Ledger = ledger if ledger is not None else MemoryLedger()
    bad = behaviour or Behaviour()
    t: dict[str, float] = {}
    clock = time.perf_counter()
    total = P.cloud_sum([o.total for o in outcomes])
    if bad.forge is not None:
        from fedledger.fl.secagg.field import encode

        total = (total + encode(bad.forge, params.frac_bits)) % Q
    total_hash = P.digest(total)
    led.record("secagg.cloud_sum", {"hash": total_hash, "weight": sum(o.weight for o in outcomes)})
    clock = _timer(t, "cloud_sum", clock)
    seed = P.result_challenge(context, [P.digest(o.total) for o in outcomes], total_hash)
    matrix = SketchMatrix.from_seed(seed, total.shape[0], params.rows)
    coms = [matrix.apply(o.total) for o in outcomes]
    for o, com in zip(outcomes, coms, strict=True):
        led.record("secagg.edge_commitment", {"edge": o.edge, "com": com.astype("<u4").tobytes()})
    verdicts: dict[str, str | None] = {}
    for o in outcomes:
        verdicts[o.edge] = P.verify_cloud_sum(total, total_hash, coms, matrix)
        led.record("secagg.verdict", {"edge": o.edge, "ok": verdicts[o.edge] is None,
                                      "reason": verdicts[o.edge] or ""})
    if any(v is not None for v in verdicts.values()):
        led.record("secagg.penalty", {"offender": "cloud",
                                      "reason": next(v for v in verdicts.values() if v)})
    _timer(t, "verify_result", clock)
    return CloudOutcome(total, sum(o.weight for o in outcomes), verdicts, t)


def simulation_keys(seed: int, names: Sequence[str], label: str) -> dict[str, bytes]:
    """Deterministic 32-byte keys per party (simulations and tests; deployments use VRF outputs)."""
    return {n: hashlib.sha256(f"fedledger/secagg-sim/{label}/{seed}/{n}".encode()).digest() for n in names}
