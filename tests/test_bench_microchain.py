"""Tests for ``fedledger bench microchain`` and what it relies on in the node.

The fast tests drive a one-validator microchain replica in process: the batch
submission endpoint, the replica metrics (stage timestamps, counters) and the
bench's stage-latency arithmetic. The slow test runs the real benchmark
(K validator processes) with ``--quick --json`` and checks the output
contract, never the speed.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from fedledger.cli.bench_microchain import CHAIN_ID, sign_update, stage_latencies, table
from fedledger.codec import cbor
from fedledger.crypto.keys import SigningKey
from fedledger.ledger import Genesis, Identity
from fedledger.net.api import NodeAPI
from fedledger.node import chain_node
from fedledger.node.chain_node import ChainNode, percentiles
from fedledger.storage.blobs import BlobStore

T0 = 1_700_000_000_000
REQUIRED = ("bench", "validators", "finalized_tps", "p50_finality_s", "p99_finality_s", "rss_mb_max",
            "ceiling_tps", "ceiling_ratio", "stages", "wire_bytes", "cpu_pct_at_1tps", "forks_finalized", "steps")


def one_validator_node(tmp_path: Path, devices: list[SigningKey]) -> ChainNode:
    validator = SigningKey.from_seed(bytes([7]) * 32)
    idents = [Identity(validator.public_key, "edge", "v", CHAIN_ID)]
    idents += [Identity(d.public_key, "device", f"d{i}", CHAIN_ID) for i, d in enumerate(devices)]
    genesis = Genesis(CHAIN_ID, T0, (validator.public_key,), tuple(idents),
                      {"engine": "microchain", "microchain": {"committee_size": 1}})
    return ChainNode(tmp_path / "chain.db", genesis, validator, durable=False)


def test_batch_endpoint_admits_in_order_and_metrics_time_every_stage(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(chain_node, "SAMPLE_EVERY", 1)  # time every transaction
    devices = [SigningKey.from_seed(bytes([10 + i]) * 32) for i in range(2)]
    node = one_validator_node(tmp_path, devices)
    api = NodeAPI("v", "validator", BlobStore(tmp_path / "blobs"), node)
    good = [sign_update(d, i, n, T0) for i, d in enumerate(devices) for n in range(3)]
    gap = sign_update(devices[0], 0, 9, T0)  # nonce 9 while 3 is next: rejected, the rest still go in

    async def scenario() -> tuple[Any, Any, Any, Any]:
        async with TestServer(api.app) as server, aiohttp.ClientSession() as session:
            url = str(server.make_url("/v1/txs/batch"))
            body = cbor.encode([tx.encode() for tx in good[:3]] + [gap.encode()] + [tx.encode() for tx in good[3:]])
            async with session.post(url, data=body) as resp:
                batch = (resp.status, await resp.json())
            async with session.post(url, data=cbor.encode({"not": "a list"})) as resp:
                bad = (resp.status, await resp.json())
            for slot in range(40):
                node.step(T0 + 100 * slot)
            async with session.get(str(server.make_url("/v1/metrics?samples=1"))) as resp:
                metrics = await resp.json()
            async with session.get(str(server.make_url("/openapi.json"))) as resp:
                spec = await resp.json()
            return batch, bad, metrics, spec

    (status, batch), bad, metrics, spec = asyncio.run(scenario())
    node.close()
    assert status == 200 and (batch["accepted"], batch["rejected"]) == (6, 1)
    assert "error" in batch["results"][3] and "nonce" in batch["results"][3]["error"]
    assert [r["tx_hash"] for i, r in enumerate(batch["results"]) if i != 3] == [tx.tx_hash.hex() for tx in good]
    assert bad[0] == 400
    assert metrics["admitted_txs"] >= 6 and metrics["rejected_txs"] == 1
    assert metrics["finalized_txs"] >= 6 and metrics["height"] > 0
    assert metrics["process"]["cpu_s"] > 0 and metrics["process"]["rss_mb"] > 0
    times = {h: t for h, *t in metrics["samples"]}
    for tx in good:
        admitted, confirmed, finalized = times[tx.tx_hash.hex()]
        assert admitted <= confirmed <= finalized
    assert metrics["stages"]["admitted_to_finalized_s"]["n"] >= 6
    assert {"/v1/txs/batch", "/v1/metrics"} <= set(spec["paths"])


def test_stage_latencies_follow_the_documented_definitions() -> None:
    h1, h2, h3 = (bytes([i]) * 32 for i in (1, 2, 3))
    submitted = {h1: (100.0, 0), h2: (100.0, 1), h3: (100.0, 0)}
    validators = [
        {"samples": [[h1.hex(), 100.1, 100.5, 101.0], [h2.hex(), 100.2, 100.6, 101.2], [h3.hex(), 100.1, None, None]]},
        # validator 1 saw h1 first inside a block: its admission counts as the confirmation
        {"samples": [[h1.hex(), None, 100.4, 101.5], [h2.hex(), 100.05, 100.6, 101.1]]},
    ]
    out = stage_latencies(submitted, validators)
    assert (out["samples"], out["unfinalized_samples"]) == (3, 1)
    # h1: admitted everywhere 100.4, confirmed everywhere 100.5, final everywhere 101.5
    # h2: admitted everywhere 100.2, confirmed 100.6, final 101.2
    assert out["stages"]["t_ct_s"] == pytest.approx((0.4 + 0.2) / 2, abs=1e-3)
    assert out["stages"]["t_bp_s"] == pytest.approx((0.1 + 0.4) / 2, abs=1e-3)
    assert out["stages"]["t_cf_s"] == pytest.approx((1.0 + 0.6) / 2, abs=1e-3)
    assert out["p50_finality_s"] == pytest.approx(1.0, abs=1e-3)  # h1 at validator 0; h2 at validator 1: 1.1
    assert out["p99_finality_s"] == pytest.approx(1.1, abs=1e-3)
    assert percentiles([]) == {"n": 0}
    assert percentiles([3.0, 1.0, 2.0])["p50"] == 2.0


@pytest.mark.parametrize("engine_params", [
    {"slot_ms": 200, "epoch_blocks": 4},  # bench microchain
    {"timeout_propose_ms": 1000, "empty_block_ms": 5000},  # bench mainchain (BFT): no slots or epochs
])
def test_summary_table_prints_for_both_engines(engine_params: dict[str, Any]) -> None:
    step = {"offered_tps": 500, "finalized_tps": 490.0, "p50_finality_s": 0.1, "p99_finality_s": 0.2, "rejected": 0}
    r = {"validators": 4, "finalized_tps": 490.0, "peak_offered_tps": 500, "saturated": False,
         "p50_finality_s": 0.1, "p99_finality_s": 0.2, "stages": {}, "wire_bytes_per_tx": {},
         "cpu_pct_at_1tps": 2.0, "rss_mb_at_1tps": 70.0, "finality_s_at_1tps": 0.1, "rss_mb_max": 71.0,
         "ceiling_tps": 14000.0, "ceiling_ratio": 0.035, "forks_finalized": 0, "finalized_height": 99,
         "steps": [step], **engine_params}
    text = table(r)
    assert "490.0 tx/s at 500 tx/s offered" in text
    assert ("slot 200 ms" in text) == ("slot_ms" in engine_params)
    assert ("BFT" in text) == ("slot_ms" not in engine_params)


@pytest.mark.slow
def test_quick_run_prints_the_json_contract(tmp_path: Path) -> None:
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    proc = subprocess.run(
        [sys.executable, "-m", "fedledger.cli.main", "bench", "microchain", "--quick", "--json"],
        capture_output=True, text=True, timeout=180, env={**os.environ, "TMPDIR": str(scratch)},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1  # --json: nothing but the JSON line
    r = json.loads(lines[-1])
    for key in REQUIRED:
        assert key in r, key
    assert r["bench"] == "microchain" and r["validators"] == 4
    assert r["finalized_tps"] > 0 and r["ceiling_tps"] > 0
    assert r["ceiling_ratio"] == pytest.approx(r["finalized_tps"] / r["ceiling_tps"], rel=1e-2)
    assert 0 < r["p50_finality_s"] <= r["p99_finality_s"]
    assert r["forks_finalized"] == 0 and r["finalized_height"] > 0
    assert set(r["stages"]) == {"t_ct_s", "t_bp_s", "t_cf_s"}
    assert all(v is not None and v >= 0 for v in r["stages"].values())
    assert set(r["wire_bytes"]) >= {"t_ct", "t_bp", "t_cf"} and r["wire_bytes"]["t_ct"] > 0
    assert r["cpu_pct_at_1tps"] > 0 and r["rss_mb_max"] > 0
    assert r["steps"] and all(s["accepted"] > 0 for s in r["steps"])
    assert list(scratch.iterdir()) == []  # the default work directory is removed afterwards
