"""``fedledger bench table1``: seed 000 Table I (transaction creation) on our chains.

The seed runs 10 training clients with 100 transactions each (1,000 in all)
against a 2-peer Hyperledger Fabric sub-chain, at transaction sizes 32 B, 8 KB,
16 KB and 32 KB, and reports the maximum and average latency and the
throughput. We run the same workload against K = 4 validator processes of
one chain (``--engine microchain`` for an edge sub-chain, ``bft`` for the main
chain), with ``records.put`` transactions whose value is the given size.

* Each client is pinned to one validator and submits its transactions one
  after another (``POST /v1/txs``), as fast as the node admits them; the
  10 clients run concurrently.
* ``latency`` of a transaction = the time it was first seen in a finalized
  block of validator 1 (polled every 20 ms) − the time its client submitted
  it. ``throughput`` = transactions / (last finalization − first submission).
* Latency includes block creation, finality and the accumulator update of
  every block (the seed's "regular block creation time and accumulator
  calculation time").

The seed's numbers (AWS t2.2xlarge, 8 vCPUs) are printed next to ours, with
the ratio; our baseline measured in the same run is the Ed25519 verification
ceiling of one core.
"""

from __future__ import annotations

import asyncio
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from rich.console import Console

from fedledger.cli.bench_microchain import (
    LIVE_TIMEOUT_S,
    Cluster,
    get_json,
    lay_out,
    measure_ceiling,
    wait_live,
)
from fedledger.crypto.hashing import tagged_hash
from fedledger.errors import NodeUnavailable
from fedledger.ledger.block import Block
from fedledger.ledger.tx import Transaction, make_tx
from fedledger.node.supervisor import Supervisor

SIZES = (32, 8 * 1024, 16 * 1024, 32 * 1024)
PAPER = {  # seed 000 Table I: max latency (s), average latency (s), throughput (tx/s)
    32: (0.65, 0.33, 193.33),
    8 * 1024: (0.70, 0.41, 173.04),
    16 * 1024: (0.97, 0.54, 131.98),
    32 * 1024: (2.35, 1.09, 65.69),
}
POLL_S = 0.02
FINISH_TIMEOUT_S = 120.0


def record_tx(cluster: Cluster, client: int, nonce: int, size: int) -> Transaction:
    value = tagged_hash("fedledger/bench/table1", f"{client}/{nonce}/{size}".encode()) * (size // 32 + 1)
    return make_tx(cluster.accounts[client], cluster.genesis.chain_id, nonce, "records", "put",
                   {"key": f"r{size}-{nonce}", "value": value[:size]}, cluster.genesis.timestamp + nonce)


async def _client(session: aiohttp.ClientSession, url: str, txs: list[Transaction],
                  submitted: dict[bytes, float]) -> None:
    for tx in txs:
        raw = tx.encode()
        while True:
            submitted[tx.tx_hash] = time.time()
            async with session.post(url + "/v1/txs", data=raw,
                                    headers={"Content-Type": "application/cbor"}) as resp:
                if resp.status == 202:
                    break
                body = await resp.json(content_type=None)
                if "mempool" not in str(body.get("error", "")):
                    raise NodeUnavailable(f"{url} refused a transaction: {body.get('error')}")
            await asyncio.sleep(0.05)  # mempool full: back off and retry


async def _watch(session: aiohttp.ClientSession, url: str, start: int, want: set[bytes],
                 seen: dict[bytes, float]) -> None:
    height = start
    deadline = time.monotonic() + FINISH_TIMEOUT_S
    while want - seen.keys():
        if time.monotonic() > deadline:
            raise NodeUnavailable(f"{len(want - seen.keys())} transactions not finalized in {FINISH_TIMEOUT_S:.0f}s")
        head = int((await get_json(session, url + "/v1/status"))["height"])
        while height < head:
            height += 1
            async with session.get(url + f"/v1/blocks/{height}?format=cbor") as resp:
                block = Block.decode(await resp.read())
            now = time.time()
            for tx in block.txs:
                seen.setdefault(tx.tx_hash, now)
        await asyncio.sleep(POLL_S)


async def run_size(session: aiohttp.ClientSession, cluster: Cluster, size: int, clients: int, per_client: int,
                   nonces: list[int]) -> dict[str, Any]:
    batches = []
    for c in range(clients):
        batches.append([record_tx(cluster, c, nonces[c] + i, size) for i in range(per_client)])
        nonces[c] += per_client
    want = {tx.tx_hash for b in batches for tx in b}
    submitted: dict[bytes, float] = {}
    seen: dict[bytes, float] = {}
    start = int((await get_json(session, cluster.urls[0] + "/v1/status"))["height"])
    watcher = asyncio.create_task(_watch(session, cluster.urls[0], start, want, seen))
    await asyncio.gather(*(_client(session, cluster.urls[c % cluster.k], b, submitted)
                           for c, b in enumerate(batches)))
    await watcher
    latencies = [seen[h] - submitted[h] for h in want]
    span = max(seen[h] for h in want) - min(submitted.values())
    paper_max, paper_avg, paper_tps = PAPER[size]
    tps = len(want) / span
    return {"tx_size": size, "txs": len(want), "max_latency_s": round(max(latencies), 3),
            "avg_latency_s": round(sum(latencies) / len(latencies), 3), "throughput_tps": round(tps, 2),
            "paper": {"max_latency_s": paper_max, "avg_latency_s": paper_avg, "throughput_tps": paper_tps},
            "throughput_vs_paper": round(tps / paper_tps, 3)}


async def measure(cluster: Cluster, clients: int, per_client: int, console: Console) -> list[dict[str, Any]]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        await wait_live(session, cluster)
        nonces = [0] * clients
        rows = []
        for size in SIZES:
            console.print(f"[dim]{clients} clients x {per_client} transactions of {size} B…[/dim]")
            rows.append(await run_size(session, cluster, size, clients, per_client, nonces))
            r = rows[-1]
            console.print(f"[dim]  max {r['max_latency_s']} s, avg {r['avg_latency_s']} s, "
                          f"{r['throughput_tps']} tx/s[/dim]")
        return rows


def run(engine: str, clients: int, per_client: int, console: Console) -> dict[str, Any]:
    ceiling = measure_ceiling()
    root = Path(tempfile.mkdtemp(prefix="fedledger-bench-table1-"))
    try:
        cluster = lay_out(root, 4, clients, None, engine)
        sup = Supervisor(root / "logs")
        try:
            for name, path in zip(cluster.names, cluster.config_paths, strict=True):
                sup.start(name, path)
            for name, url in zip(cluster.names, cluster.urls, strict=True):
                sup.wait_ready(name, url, timeout_s=LIVE_TIMEOUT_S)
            rows = asyncio.run(measure(cluster, clients, per_client, console))
        finally:
            sup.stop_all()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return {"bench": "table1", "engine": engine, "validators": 4, "clients": clients,
            "txs_per_client": per_client, "rows": rows, "ceiling_tps": round(ceiling, 1),
            "throughput_ratio_to_ceiling": {str(r["tx_size"]): round(r["throughput_tps"] / ceiling, 5) for r in rows},
            "cpus": os.cpu_count(), "python": platform.python_version()}


def table(result: dict[str, Any]) -> str:
    lines = [f"seed 000 Table I on {result['validators']} {result['engine']} validators "
             f"({result['clients']} clients x {result['txs_per_client']} txs); paper in brackets",
             f"{'size':>7}  {'max latency s':>17}  {'avg latency s':>17}  {'throughput tx/s':>19}"]
    for r in result["rows"]:
        p = r["paper"]
        lines.append(f"{r['tx_size']:>7}  {r['max_latency_s']:>8} ({p['max_latency_s']:>5})  "
                     f"{r['avg_latency_s']:>8} ({p['avg_latency_s']:>5})  "
                     f"{r['throughput_tps']:>9} ({p['throughput_tps']:>6})")
    return "\n".join(lines)
