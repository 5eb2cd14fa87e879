"""``fedledger bench microchain``: a K-validator microchain under load, as real processes.

For each committee size K the bench lays out a sub-chain whose genesis names K
validators (``committee_size = K``) and registers ``--accounts`` device
identities, starts K ``fedledger node run`` processes (role ``validator``,
full TCP mesh, durable SQLite stores) on loopback, waits until they finalize
blocks, and then measures (seed 004 §VIII-B, Fig. 4, Tables IV and V):

1. **Footprint at 1 tx/s** (Table V): one transaction a second for a few
   seconds; CPU % (process CPU time / wall time) and resident set per
   validator, and the submit → finalized latency a client sees.
2. **Offered-load steps** up to saturation: a load generator in this process
   pre-signs ``fl.submit_update`` calls (device ``d``'s ``n``-th transaction has
   nonce ``n`` and reports round ``n``, so every call *succeeds*; the contract
   path runs in full), pins each account to one validator (so its nonces arrive
   in order) and posts them in batches (``POST /v1/txs/batch``) every 50 ms at
   the offered rate. A rejected transaction (mempool full) is retried at the
   next tick; ``offered`` counts attempts. After each step the bench waits
   (at most 3 step lengths) until the mempools drain. A step *saturates* when
   its finalized rate stays below 80 % of the offered rate, over 5 % of the
   attempts are rejected, or the backlog takes over 5 s (or half the step) to
   drain; no higher step runs.
3. **Ceiling**: raw Ed25519 verifications per second on one core, measured in
   the same run before the validators start (the function ``ledger-core``
   uses); ``ceiling_ratio = finalized_tps / ceiling_tps``.
4. **Safety**: every validator's finalized chain must be identical; block
   hashes are compared height by height through ``GET /v1/headers``
   (``forks_finalized`` counts heights where they differ; it must be 0).

Definitions (all clocks are this machine's wall clock; validators record the
timestamps of a deterministic 1-in-8 sample of transactions, chosen by hash,
see :func:`fedledger.node.chain_node.sampled`, served by ``GET /v1/metrics``):

* ``submit``: the load generator posts the batch holding the transaction.
* ``admitted at v``: validator v admitted it to its mempool (from the client or
  from gossip), or, if v first saw it inside a block, when that block joined
  v's block tree.
* ``confirmed at v``: a block holding it joined v's block tree (it is valid on
  a branch; seed 004 §IV-B.2); ``finalized at v``: that block was finalized by
  the voting gadget at v (§VI) and written to v's store.
* ``T_ct`` (commit transaction) = admitted at *all* validators − submit;
  ``T_bp`` (block proposal) = confirmed at all − admitted at all;
  ``T_cf`` (chain finality) = finalized at all − confirmed at all.
  ``stages`` reports their means (means add up: ``T_ct + T_bp + T_cf`` is the
  mean submit → finalized-everywhere latency); ``stages_p50`` their medians.
* ``p50_finality_s`` / ``p99_finality_s``: submit → finalized at the validator
  the transaction was submitted to (what a client waiting on
  ``GET /v1/txs/{hash}?wait=`` sees).
* ``finalized_tps``: transactions finalized per second, averaged over the
  validators, in the steady part of a step (after the first third);
  the top-level numbers come from the step with the highest finalized rate.
* ``wire_bytes``: consensus payload bytes the validators sent during a step
  and its drain, by stage: ``t_ct`` = transaction gossip, ``t_bp`` = blocks
  (and catch-up sync), ``t_cf`` = votes and arbitrator decisions, ``other`` =
  status beacons. Broadcasts count once per peer; the transport's framing and
  per-frame signature (about 80 bytes per message) are not included unless the
  node exposes its transport counters (then ``wire_source`` is ``"p2p"``).

The load generator shares the machine's cores with the validators;
``loadgen_cpu_pct`` says how much it took. Like every benchmark, the last line
of stdout is exactly one JSON object.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import math
import os
import platform
import resource
import shutil
import statistics
import tempfile
import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from rich.console import Console

from fedledger.cli.bench import pinned_to_one_core, update_args, verify_ceiling
from fedledger.codec import cbor
from fedledger.consensus.bft.params import BftParams
from fedledger.consensus.microchain.params import MicrochainParams
from fedledger.crypto.hashing import tagged_hash
from fedledger.crypto.keys import SigningKey
from fedledger.errors import NodeUnavailable, UsageError
from fedledger.ledger import Genesis, Identity, Transaction, make_tx
from fedledger.node.chain_node import percentiles, sampled
from fedledger.node.config import NodeConfig
from fedledger.node.deployment import free_ports
from fedledger.node.supervisor import Supervisor

CHAIN_ID = "bench-micro"
FULL_VALIDATORS = (4, 8, 20)
FULL_RATES = (100, 250, 500, 1000, 2000, 4000)  # 100 tx/s: seed 004 Fig. 4's operating point
QUICK_RATES = (100, 500)
FULL_STEP_S, QUICK_STEP_S = 10.0, 6.0
FULL_FOOTPRINT_S, QUICK_FOOTPRINT_S = 10.0, 3.0
DEFAULT_ACCOUNTS = 1024
TICK_S = 0.05
POLL_S = 0.2
MAX_BATCH = 2000
SATURATED = 0.8  # finalized / offered below this: the chain is saturated
DRAIN_SLACK = 8  # mempool entries left after a drain (system calls come and go)
DRAIN_SATURATED_S = 5.0  # a backlog that takes longer than this (or half the step) to clear: saturated
LIVE_TIMEOUT_S = 90.0
CBOR = {"Content-Type": "application/cbor"}
STAGE_KINDS = {"t_ct": ("tx",), "t_bp": ("block", "sync"), "t_cf": ("vote", "decision")}


class ClusterStalled(NodeUnavailable):
    """The benchmark's validators did not make progress in time."""


@dataclass(frozen=True)
class Options:
    validators: tuple[int, ...]
    rates: tuple[int, ...]
    step_s: float
    footprint_s: float
    slot_ms: int | None
    accounts: int
    workdir: Path | None
    quick: bool
    engine: str = "microchain"  # "bft" for the main chain (``fedledger bench mainchain``)


@dataclass
class Cluster:
    """A laid-out K-validator microchain: genesis, one config per validator, client accounts."""

    k: int
    workdir: Path
    genesis: Genesis
    names: list[str]
    urls: list[str]
    config_paths: list[Path]
    accounts: list[SigningKey]


# -- layout ---------------------------------------------------------------------
def account_key(i: int) -> SigningKey:
    """Deterministic key of bench client account ``i`` (a registered device)."""
    return SigningKey.from_seed(tagged_hash("fedledger/bench/microchain/device", i.to_bytes(8, "big")))


def lay_out(workdir: Path, k: int, accounts: int, slot_ms: int | None, engine: str = "microchain") -> Cluster:
    """Genesis with K validators (committee K) and the client devices; one config per validator."""
    workdir.mkdir(parents=True, exist_ok=True)
    keys = [SigningKey.generate() for _ in range(k)]
    arbitrator = SigningKey.generate()
    clients = [account_key(i) for i in range(accounts)]
    params: dict[str, Any] = {"committee_size": k, "arbitrator": arbitrator.public_key}
    if slot_ms is not None:
        params["slot_ms"] = slot_ms
    idents = [Identity(key.public_key, "edge", f"validator-{i + 1}", CHAIN_ID) for i, key in enumerate(keys)]
    idents += [Identity(c.public_key, "device", f"device-{i}", CHAIN_ID) for i, c in enumerate(clients)]
    chain_params = {"engine": "microchain", "microchain": params} if engine == "microchain" else {"engine": engine}
    genesis = Genesis(CHAIN_ID, int(time.time() * 1000), tuple(key.public_key for key in keys), tuple(idents),
                      chain_params)
    genesis_path = workdir / f"{CHAIN_ID}.genesis"
    genesis_path.write_bytes(genesis.encode())
    ports = free_ports(2 * k)
    mesh = {key.public_key.hex(): f"127.0.0.1:{ports[k + i]}" for i, key in enumerate(keys)}
    names, urls, paths = [], [], []
    for i, key in enumerate(keys):
        name = f"validator-{i + 1}"
        cfg = NodeConfig(role="validator", name=name, port=ports[i], data_dir=workdir / name,
                         key_seed=key.seed(), genesis=genesis_path, p2p_port=ports[k + i], chain_peers=mesh,
                         arbitrator_seed=arbitrator.seed() if i == 0 else None)
        path = workdir / f"{name}.json"
        path.write_text(json.dumps(cfg.to_json(), indent=2))
        names.append(name)
        urls.append(cfg.url)
        paths.append(path)
    return Cluster(k, workdir, genesis, names, urls, paths, clients)


# -- load generation --------------------------------------------------------------
def sign_update(key: SigningKey, device: int, nonce: int, genesis_time: int) -> Transaction:
    """Device ``device``'s ``nonce``-th transaction: its update for round ``nonce`` (a call that succeeds)."""
    return make_tx(key, CHAIN_ID, nonce, "fl", "submit_update", update_args(device, nonce), genesis_time + nonce)


@dataclass
class Pending:
    account: int
    nonce: int
    tx_hash: bytes
    raw: bytes


@dataclass
class Load:
    """Client accounts, each pinned to one validator, and the nonces they have had admitted."""

    cluster: Cluster
    next_nonce: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.next_nonce = [0] * len(self.cluster.accounts)

    def accounts_of(self, v: int) -> list[int]:
        return list(range(v, len(self.cluster.accounts), self.cluster.k))

    def queue(self, v: int, count: int) -> deque[Pending]:
        """``count`` signed transactions for validator ``v``: round-robin over its accounts, nonces in order."""
        accounts = self.accounts_of(v)
        out: deque[Pending] = deque()
        t0 = self.cluster.genesis.timestamp
        for i in range(count):
            a = accounts[i % len(accounts)]
            nonce = self.next_nonce[a] + i // len(accounts)
            tx = sign_update(self.cluster.accounts[a], a, nonce, t0)
            out.append(Pending(a, nonce, tx.tx_hash, tx.encode()))
        return out


@dataclass
class FeedResult:
    attempted: int = 0
    accepted: int = 0
    rejected: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    submitted: dict[bytes, tuple[float, int]] = field(default_factory=dict)  # sampled hash -> (time, validator)


async def post_batch(session: aiohttp.ClientSession, url: str, raws: list[bytes]) -> list[dict[str, str]]:
    try:
        async with session.post(url + "/v1/txs/batch", data=cbor.encode(raws), headers=CBOR) as resp:
            body = await resp.json(content_type=None)
            if resp.status != 200:
                raise NodeUnavailable(f"{url}/v1/txs/batch answered {resp.status}: {body.get('error')}")
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        raise NodeUnavailable(f"POST {url}/v1/txs/batch failed: {exc or type(exc).__name__}") from None
    results: list[dict[str, str]] = body["results"]
    return results


async def feed(session: aiohttp.ClientSession, load: Load, v: int, queue: deque[Pending], rate: float,
               start: float, end: float, out: FeedResult) -> None:
    """Offer ``rate`` tx/s to validator ``v`` from ``start`` to ``end`` (monotonic), catching up if late."""
    url = load.cluster.urls[v]
    while True:
        now = time.monotonic()
        if now >= end or not queue:
            return
        due = min(int(rate * (now - start)) - out.attempted, len(queue), MAX_BATCH)
        if due > 0:
            batch = [queue.popleft() for _ in range(due)]
            t_submit = time.time()
            results = await post_batch(session, url, [p.raw for p in batch])
            out.attempted += len(batch)
            retry = []
            for p, r in zip(batch, results, strict=True):
                if "error" in r:
                    out.rejected += 1
                    reason = r["error"].split(":")[0]
                    out.reasons[reason] = out.reasons.get(reason, 0) + 1
                    retry.append(p)
                else:
                    out.accepted += 1
                    load.next_nonce[p.account] = p.nonce + 1
                    if sampled(p.tx_hash):
                        out.submitted[p.tx_hash] = (t_submit, v)
            queue.extendleft(reversed(retry))
        await asyncio.sleep(max(0.0, TICK_S - (time.monotonic() - now)))


# -- talking to the validators ------------------------------------------------------
async def get_json(session: aiohttp.ClientSession, url: str, timeout_s: float = 30.0) -> Any:
    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=timeout_s)) as resp:
            body = await resp.json(content_type=None)
            if resp.status != 200:
                raise NodeUnavailable(f"GET {url} answered {resp.status}: {body.get('error')}")
            return body
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        raise NodeUnavailable(f"GET {url} failed: {exc or type(exc).__name__}") from None


async def metrics(session: aiohttp.ClientSession, cluster: Cluster, samples: bool = False) -> list[dict[str, Any]]:
    query = "?samples=1" if samples else ""
    return list(await asyncio.gather(*(get_json(session, u + "/v1/metrics" + query) for u in cluster.urls)))


async def wait_live(session: aiohttp.ClientSession, cluster: Cluster, timeout_s: float = LIVE_TIMEOUT_S) -> None:
    """Until every validator has finalized a block past genesis (so the mesh is up and voting works)."""
    deadline = time.monotonic() + timeout_s
    while True:
        ms = await metrics(session, cluster)
        if all(m["height"] >= 2 for m in ms):
            return
        if time.monotonic() > deadline:
            heights = ", ".join(f"{n}={m['height']}" for n, m in zip(cluster.names, ms, strict=True))
            raise ClusterStalled(f"the {cluster.k} validators finalized no block within {timeout_s:.0f}s "
                                 f"(finalized heights: {heights}); see the logs in {cluster.workdir / 'logs'}")
        await asyncio.sleep(0.2)


class Series:
    """Every validator's metrics, polled every ``POLL_S`` while a step runs and drains."""

    def __init__(self, session: aiohttp.ClientSession, cluster: Cluster) -> None:
        self.session, self.cluster = session, cluster
        self.snaps: list[list[dict[str, Any]]] = []
        self._stop = asyncio.Event()

    async def run(self) -> None:
        while not self._stop.is_set():
            self.snaps.append(await metrics(self.session, self.cluster))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), POLL_S)

    def stop(self) -> None:
        self._stop.set()

    async def wait_drained(self, timeout_s: float) -> tuple[bool, float]:
        """Until every mempool is (nearly) empty; (drained, seconds waited)."""
        t0 = time.monotonic()
        seen = len(self.snaps)
        while time.monotonic() - t0 < timeout_s:
            await asyncio.sleep(POLL_S / 2)
            if len(self.snaps) > seen and all(m["mempool"] <= DRAIN_SLACK for m in self.snaps[-1]):
                return True, time.monotonic() - t0
        return False, time.monotonic() - t0

    def at(self, t: float) -> list[dict[str, Any]]:
        """The first snapshot taken at or after wall time ``t`` (else the last)."""
        return next((s for s in self.snaps if s[0]["time"] >= t), self.snaps[-1])

    def finalized_rate(self, t_a: float, t_b: float) -> float:
        """Finalized tx/s between wall times ``t_a`` and ``t_b``, interpolated, averaged over validators."""
        rates = []
        for v in range(self.cluster.k):
            points = [(s[v]["time"], s[v]["finalized_txs"]) for s in self.snaps]
            rates.append((_interpolate(points, t_b) - _interpolate(points, t_a)) / max(1e-9, t_b - t_a))
        return statistics.fmean(rates)


def _interpolate(points: Sequence[tuple[float, float]], t: float) -> float:
    if t <= points[0][0]:
        return points[0][1]
    for (t0, y0), (t1, y1) in itertools.pairwise(points):
        if t0 <= t <= t1:
            return y0 + (y1 - y0) * (t - t0) / max(1e-9, t1 - t0)
    return points[-1][1]


async def finalized_forks(session: aiohttp.ClientSession, cluster: Cluster) -> tuple[int, int]:
    """(heights at which the validators' finalized blocks differ, common finalized height)."""
    heights = [int(m["height"]) for m in await metrics(session, cluster)]
    top = min(heights)
    chains: list[list[str]] = [[] for _ in cluster.urls]
    for start in range(0, top + 1, 1000):
        end = min(top, start + 999)
        got = await asyncio.gather(*(get_json(session, f"{u}/v1/headers?start={start}&end={end}")
                                     for u in cluster.urls))
        for chain, g in zip(chains, got, strict=True):
            chain.extend(g["headers"])
    return sum(len(set(hs)) != 1 for hs in zip(*chains, strict=True)), top


def sent_by_kind(ms: Sequence[dict[str, Any]]) -> tuple[dict[str, int], str]:
    """Bytes sent by all validators by transport kind, from the transport's counters if exposed."""
    source = "p2p" if all(m.get("p2p") for m in ms) else "payload"
    totals: dict[str, int] = {}
    for m in ms:
        sent = (m["p2p"] if source == "p2p" else m["traffic"])["sent_bytes"]
        for kind, n in sent.items():
            totals[kind] = totals.get(kind, 0) + int(n)
    return totals, source


def by_stage(by_kind: dict[str, int]) -> dict[str, int]:
    out = {stage: sum(by_kind.get(k, 0) for k in kinds) for stage, kinds in STAGE_KINDS.items()}
    staged = {k for kinds in STAGE_KINDS.values() for k in kinds}
    out["other"] = sum(n for k, n in by_kind.items() if k not in staged)
    return out


def cpu_pct(before: Sequence[dict[str, Any]], after: Sequence[dict[str, Any]]) -> list[float]:
    """Per-validator CPU % between two metrics snapshots."""
    return [100 * (a["process"]["cpu_s"] - b["process"]["cpu_s"]) / max(1e-9, a["time"] - b["time"])
            for b, a in zip(before, after, strict=True)]


# -- latency analysis -------------------------------------------------------------------
def stage_latencies(submitted: dict[bytes, tuple[float, int]], ms: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Client finality and T_ct / T_bp / T_cf for the sampled transactions of one step."""
    tables = [{bytes.fromhex(h): t for h, *t in m["samples"]} for m in ms]
    finality: list[float] = []
    stages: dict[str, list[float]] = {"t_ct_s": [], "t_bp_s": [], "t_cf_s": [], "total_s": []}
    unfinalized = 0
    for tx_hash, (t_submit, entry) in submitted.items():
        final_entry = tables[entry].get(tx_hash, [None, None, None])[2]
        if final_entry is None:
            unfinalized += 1
            continue
        finality.append(final_entry - t_submit)
        rows = [t.get(tx_hash) for t in tables]
        if any(r is None or r[1] is None or r[2] is None for r in rows):
            continue
        admitted = max(r[1] if r[0] is None else min(r[0], r[1]) for r in rows if r is not None)
        confirmed = max(r[1] for r in rows if r is not None)
        finalized = max(r[2] for r in rows if r is not None)
        stages["t_ct_s"].append(max(0.0, admitted - t_submit))
        stages["t_bp_s"].append(confirmed - admitted)
        stages["t_cf_s"].append(finalized - confirmed)
        stages["total_s"].append(finalized - t_submit)
    fin = percentiles(finality)
    return {
        "samples": len(submitted), "unfinalized_samples": unfinalized,
        "p50_finality_s": _r(fin.get("p50")), "p99_finality_s": _r(fin.get("p99")),
        "stages": {k: _r(statistics.fmean(v)) if v else None for k, v in stages.items() if k != "total_s"},
        "stages_p50": {k: _r(statistics.median(v)) if v else None for k, v in stages.items()},
        "stages_p99": {k: _r(percentiles(v).get("p99")) for k, v in stages.items()},
    }


def _r(x: float | int | None, digits: int = 4) -> float | None:
    return None if x is None else round(float(x), digits)


# -- phases -----------------------------------------------------------------------
async def footprint(session: aiohttp.ClientSession, load: Load, seconds: float) -> dict[str, Any]:
    """Table V: 1 tx/s for ``seconds``; CPU %, RSS and client-observed finality."""
    cluster = load.cluster
    before = await metrics(session, cluster)
    waits: list[asyncio.Task[float]] = []

    async def finality(url: str, tx_hash: bytes, t0: float) -> float:
        await get_json(session, f"{url}/v1/txs/{tx_hash.hex()}?wait=60", timeout_s=70)
        return time.time() - t0

    t_end = time.monotonic() + seconds
    i = 0
    while time.monotonic() < t_end:
        v = i % cluster.k
        p = load.queue(v, 1)[0]
        t0 = time.time()
        result = (await post_batch(session, cluster.urls[v], [p.raw]))[0]
        if "error" in result:
            raise ClusterStalled(f"a 1 tx/s transaction was rejected by {cluster.names[v]}: {result['error']}")
        load.next_nonce[p.account] = p.nonce + 1
        waits.append(asyncio.create_task(finality(cluster.urls[v], p.tx_hash, t0)))
        i += 1
        await asyncio.sleep(max(0.0, 1.0 - (time.time() - t0)))
    after = await metrics(session, cluster)
    lat = await asyncio.gather(*waits)
    cpu = cpu_pct(before, after)
    return {"cpu_pct_at_1tps": round(statistics.fmean(cpu), 2), "cpu_pct_at_1tps_max": round(max(cpu), 2),
            "rss_mb_at_1tps": round(max(m["process"]["rss_mb"] for m in after), 1),
            "finality_s_at_1tps": _r(statistics.median(lat)) if lat else None, "txs_at_1tps": len(lat)}


async def load_step(session: aiohttp.ClientSession, load: Load, rate: int, seconds: float,
                    drain_timeout_s: float) -> dict[str, Any]:
    """Offer ``rate`` tx/s for ``seconds``, let the mempools drain, then gather the numbers.

    The finalized rate is measured over a window as long as the step, shifted
    by the step's median finality (so it sees the finalizations the step's
    load caused, not the pipeline filling up), and cut at the end of the drain.
    """
    cluster = load.cluster
    k = cluster.k
    per_validator = math.ceil(rate * seconds / k)
    queues = [load.queue(v, per_validator) for v in range(k)]
    results = [FeedResult() for _ in range(k)]
    series = Series(session, cluster)
    poller = asyncio.create_task(series.run())
    try:
        while not series.snaps:
            await asyncio.sleep(0.01)
        usage0 = resource.getrusage(resource.RUSAGE_SELF)
        wall_start = time.time()
        start = time.monotonic()
        await asyncio.gather(*(feed(session, load, v, queues[v], rate / k, start, start + seconds, results[v])
                               for v in range(k)))
        wall_end = wall_start + seconds
        usage1 = resource.getrusage(resource.RUSAGE_SELF)
        drained, drain_s = await series.wait_drained(drain_timeout_s)
    finally:
        series.stop()
        await poller
    after = await metrics(session, cluster, samples=True)
    before, at_end = series.snaps[0], series.at(wall_end)
    loadgen_s = (usage1.ru_utime + usage1.ru_stime) - (usage0.ru_utime + usage0.ru_stime)
    attempted = sum(r.attempted for r in results)
    accepted = sum(r.accepted for r in results)
    reasons: dict[str, int] = {}
    submitted: dict[bytes, tuple[float, int]] = {}
    for r in results:
        submitted.update(r.submitted)
        for reason, n in r.reasons.items():
            reasons[reason] = reasons.get(reason, 0) + n
    latency = stage_latencies(submitted, after)
    shift = latency["p50_finality_s"] or 0.0
    t_b = min(wall_end + shift, after[0]["time"])
    t_a = max(wall_start, t_b - seconds)
    finalized_tps = series.finalized_rate(t_a, t_b)
    kinds0, source = sent_by_kind(before)
    kinds1, _ = sent_by_kind(after)
    kinds = {kind: n - kinds0.get(kind, 0) for kind, n in sorted(kinds1.items())}
    wire = by_stage(kinds)
    finalized_step = statistics.fmean(b["finalized_txs"] - a["finalized_txs"] for a, b in zip(before, after, strict=True))
    blocks_step = statistics.fmean(b["finalized_blocks"] - a["finalized_blocks"] for a, b in zip(before, after, strict=True))
    window = after[0]["time"] - before[0]["time"]
    saturated = (finalized_tps < SATURATED * rate or attempted - accepted > 0.05 * attempted
                 or not drained or drain_s > max(DRAIN_SATURATED_S, seconds / 2))
    return {
        "offered_tps": rate,
        "attempted": attempted, "accepted": accepted, "rejected": attempted - accepted,
        "reject_reasons": reasons,
        "accepted_tps": round(accepted / seconds, 1),
        "finalized_tps": round(finalized_tps, 1),
        "window_s": [round(t_a - wall_start, 2), round(t_b - wall_start, 2)],
        "saturated": saturated,
        **latency,
        "wire_bytes": wire, "wire_bytes_by_kind": kinds, "wire_source": source,
        "wire_bytes_per_tx": {s: round(n / finalized_step, 1) if finalized_step else None for s, n in wire.items()},
        "wire_mb_per_s": round(sum(wire.values()) / max(1e-9, window) / 1e6, 3),
        "avg_block_txs": round(finalized_step / blocks_step, 1) if blocks_step else 0.0,
        "drained": drained, "drain_s": round(drain_s, 2),
        "cpu_pct": [round(c, 1) for c in cpu_pct(before, at_end)],
        "missing_parents": [m.get("engine", {}).get("missing_parents") for m in after],
        "loadgen_cpu_pct": round(100 * loadgen_s / seconds, 1),
        "rss_mb_max": round(max(m["process"]["rss_mb"] for m in after), 1),
    }


async def measure(cluster: Cluster, opts: Options, console: Console) -> dict[str, Any]:
    """Everything measured against one running cluster."""
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        t0 = time.monotonic()
        await wait_live(session, cluster)
        console.print(f"[dim]K={cluster.k}: finalizing after {time.monotonic() - t0:.1f}s; "
                      f"1 tx/s for {opts.footprint_s:g}s (footprint)…[/dim]")
        load = Load(cluster)
        foot = await footprint(session, load, opts.footprint_s)
        steps: list[dict[str, Any]] = []
        for rate in opts.rates:
            console.print(f"[dim]K={cluster.k}: offering {rate} tx/s for {opts.step_s:g}s…[/dim]")
            step = await load_step(session, load, rate, opts.step_s, drain_timeout_s=max(15.0, 3 * opts.step_s))
            steps.append(step)
            console.print(f"[dim]  finalized {step['finalized_tps']} tx/s, p50 {step['p50_finality_s']} s, "
                          f"p99 {step['p99_finality_s']} s, rejected {step['rejected']}, "
                          f"drained in {step['drain_s']} s[/dim]")
            if step["saturated"]:
                break
        forks, height = await finalized_forks(session, cluster)
        final = await metrics(session, cluster)
    engine_totals: dict[str, int] = {}
    for m in final:
        for key in ("proposed", "spin_proposed", "accepted", "rejected_blocks", "forks", "slashings", "decisions"):
            engine_totals[key] = engine_totals.get(key, 0) + int(m.get("engine", {}).get(key, 0))
    return {"footprint": foot, "steps": steps, "forks_finalized": forks, "finalized_height": height,
            "engine": engine_totals, "rss_mb_max": round(max(m["process"]["max_rss_mb"] for m in final), 1)}


# -- orchestration ----------------------------------------------------------------
def run_cluster(k: int, opts: Options, root: Path, ceiling_tps: float, console: Console) -> dict[str, Any]:
    """Lay out, start, measure and always stop one K-validator cluster."""
    load_before = _loadavg()
    cluster = lay_out(root / f"k{k}", k, opts.accounts, opts.slot_ms, opts.engine)
    sup = Supervisor(cluster.workdir / "logs")
    try:
        console.print(f"[dim]K={k}: starting {k} validator processes…[/dim]")
        for name, path in zip(cluster.names, cluster.config_paths, strict=True):
            sup.start(name, path)
        for name, url in zip(cluster.names, cluster.urls, strict=True):
            sup.wait_ready(name, url, timeout_s=LIVE_TIMEOUT_S)
        got = asyncio.run(measure(cluster, opts, console))
    finally:
        sup.stop_all()
    got["loadavg"] = [load_before, _loadavg()]
    return summarize(k, got, cluster, ceiling_tps, opts)


def _loadavg() -> float | None:
    """The 1-minute load average: other work on the machine skews every number here."""
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def summarize(k: int, got: dict[str, Any], cluster: Cluster, ceiling_tps: float, opts: Options) -> dict[str, Any]:
    steps: list[dict[str, Any]] = got["steps"]
    peak = max(steps, key=lambda s: s["finalized_tps"]) if steps else {}
    finalized_tps = float(peak.get("finalized_tps", 0.0))
    if opts.engine == "microchain":
        p = MicrochainParams.from_obj(cluster.genesis.params["microchain"])
        engine_params: dict[str, Any] = {"slot_ms": p.slot_ms, "epoch_blocks": p.epoch_blocks,
                                         "max_block_txs": p.max_block_txs}
    else:
        b = BftParams.from_obj(cluster.genesis.params.get("bft"))
        engine_params = {"timeout_propose_ms": b.timeout_propose_ms, "empty_block_ms": b.empty_block_ms,
                         "max_block_txs": b.max_block_txs}
    return {
        "bench": "microchain" if opts.engine == "microchain" else "mainchain",
        "validators": k,
        "finalized_tps": finalized_tps,
        "p50_finality_s": peak.get("p50_finality_s"),
        "p99_finality_s": peak.get("p99_finality_s"),
        "peak_offered_tps": peak.get("offered_tps"),
        "saturated": any(s["saturated"] for s in steps),
        "stages": peak.get("stages", {}),
        "stages_p50": peak.get("stages_p50", {}),
        "wire_bytes": peak.get("wire_bytes", {}),
        "wire_bytes_per_tx": peak.get("wire_bytes_per_tx", {}),
        "wire_source": peak.get("wire_source"),
        **got["footprint"],
        "rss_mb_max": got["rss_mb_max"],
        "ceiling_tps": round(ceiling_tps, 1),
        "ceiling_ratio": round(finalized_tps / ceiling_tps, 5),
        "forks_finalized": got["forks_finalized"],
        "finalized_height": got["finalized_height"],
        "engine": got["engine"],
        "loadgen_cpu_pct": peak.get("loadgen_cpu_pct"),
        "steps": steps,
        **engine_params,
        "accounts": opts.accounts, "step_s": opts.step_s, "quick": opts.quick,
        "cpus": os.cpu_count(), "loadavg_1m": got["loadavg"], "python": platform.python_version(),
    }


def measure_ceiling(count: int = 512) -> float:
    """Ed25519 verifications/s on one core over bench-like transaction signatures (before nodes start)."""
    txs = [sign_update(account_key(i), i, 0, 0) for i in range(count)]
    with pinned_to_one_core():
        return verify_ceiling(txs)


def run(opts: Options, console: Console) -> dict[str, Any]:
    """The whole benchmark: the ceiling, then one cluster per K; the JSON object."""
    if opts.workdir is not None:
        opts.workdir.mkdir(parents=True, exist_ok=True)
    root = opts.workdir or Path(tempfile.mkdtemp(prefix="fedledger-bench-microchain-"))
    try:
        console.print("[dim]measuring the Ed25519 verification ceiling (one core)…[/dim]")
        ceiling = measure_ceiling()
        runs = [run_cluster(k, opts, root, ceiling, console) for k in opts.validators]
    finally:
        if opts.workdir is None:
            shutil.rmtree(root, ignore_errors=True)
    if len(runs) == 1:
        return runs[0]
    primary = next((r for r in runs if r["validators"] == 4), runs[0])
    return {**primary, "runs": runs}


def parse_validators(values: Iterable[str], quick: bool) -> tuple[int, ...]:
    """``--validators`` may repeat and hold comma lists; default 4,8,20 (4 with ``--quick``)."""
    out: list[int] = []
    for value in values:
        for part in value.split(","):
            part = part.strip()
            if not part:
                continue
            if not part.isdigit() or int(part) < 1:
                raise UsageError(f"--validators takes positive integers, not {part!r}")
            out.append(int(part))
    if not out:
        out = [4] if quick else list(FULL_VALIDATORS)
    return tuple(dict.fromkeys(out))


def parse_rates(value: str | None, quick: bool) -> tuple[int, ...]:
    if value is None:
        return QUICK_RATES if quick else FULL_RATES
    try:
        rates = tuple(int(p) for p in value.split(",") if p.strip())
    except ValueError:
        raise UsageError(f"--rates takes a comma list of tx/s, not {value!r}") from None
    if not rates or min(rates) < 1:
        raise UsageError("--rates needs at least one positive rate")
    return rates


def table(r: dict[str, Any]) -> str:
    """The human summary of one run (stdout, before the JSON line)."""
    stages = r.get("stages", {})
    rows: list[tuple[str, str]] = [
        ("validators", f"{r['validators']}  " + (f"(slot {r['slot_ms']} ms, epoch {r['epoch_blocks']} blocks)"
                                                  if "slot_ms" in r else
                                                  f"(BFT, timeout_propose {r.get('timeout_propose_ms')} ms)")),
        ("finalized", f"{r['finalized_tps']:,} tx/s at {r['peak_offered_tps']} tx/s offered"
                      f"{'  (saturated)' if r['saturated'] else ''}"),
        ("finality", f"p50 {r['p50_finality_s']} s, p99 {r['p99_finality_s']} s"),
        ("stages (mean)", f"T_ct {stages.get('t_ct_s')} s, T_bp {stages.get('t_bp_s')} s, "
                          f"T_cf {stages.get('t_cf_s')} s"),
        ("wire bytes/tx", ", ".join(f"{k} {v}" for k, v in r.get("wire_bytes_per_tx", {}).items())),
        ("at 1 tx/s", f"CPU {r['cpu_pct_at_1tps']} % per validator, RSS {r['rss_mb_at_1tps']} MB, "
                      f"finality {r['finality_s_at_1tps']} s"),
        ("RSS peak", f"{r['rss_mb_max']} MB"),
        ("Ed25519 verify", f"{r['ceiling_tps']:,} /s on one core; ratio {r['ceiling_ratio']}"),
        ("finalized forks", f"{r['forks_finalized']} (over {r['finalized_height']} heights)"),
    ]
    for s in r["steps"]:
        rows.append((f"  {s['offered_tps']} tx/s", f"finalized {s['finalized_tps']} tx/s, "
                     f"p50 {s['p50_finality_s']} s, p99 {s['p99_finality_s']} s, rejected {s['rejected']}"))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)


def tables(result: dict[str, Any]) -> str:
    return "\n\n".join(table(r) for r in result.get("runs", [result]))


def options(validators: Iterable[str], quick: bool, duration: float | None, slot_ms: int | None,
            workdir: Path | None, rates: str | None, accounts: int,
            footprint_s: float | None) -> Options:
    return Options(
        validators=parse_validators(validators, quick),
        rates=parse_rates(rates, quick),
        step_s=duration if duration is not None else (QUICK_STEP_S if quick else FULL_STEP_S),
        footprint_s=footprint_s if footprint_s is not None else (QUICK_FOOTPRINT_S if quick else FULL_FOOTPRINT_S),
        slot_ms=slot_ms, accounts=accounts, workdir=workdir, quick=quick,
    )

