"""Multi-process: seed 001's verifiable secure aggregation between real node processes.

Two edges, three devices each (t = ⌈0.6 · 3⌉ = 2), over HTTP on 127.0.0.1, with
the protocol's records and penalties on the sub-chains and the main chain:

- edge 1: device-1-1 deals a bad share to device-1-2 (seed 001 §III "Secret
  sharing": a bad share identifies its sender, who is penalised) and
  device-1-3 drops out before sending its share sum (n − t = 1 dropout);
- edge 2: device-2-1 records and sends a wrong share sum ("Computation by
  fog": share sums are checked against their on-chain hashes);
- round 1 completes; in round 2 the cloud forges the sum ("Aggregation and
  result verification"): every edge refuses it, the cloud is penalised on the
  main chain and the round's model cannot be published.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest

from clusterlib import get, post, running, wait_job
from fedledger.audit.chainview import ChainView
from fedledger.audit.lineage import LineageVerifier
from fedledger.crypto.keys import address_of
from fedledger.net.client import NodeClient
from fedledger.node.config import load_genesis
from fedledger.node.deployment import Deployment, make_deployment

pytestmark = pytest.mark.slow
FAULTS = {"bad_shares": {"device-1-1": ["device-1-2"]}, "dropouts": ["device-1-3"],
          "wrong_sums": ["device-2-1"], "forge": {"round": 2, "by": 1e-3}}


@pytest.fixture(scope="module")
def job(tmp_path_factory: pytest.TempPathFactory) -> Any:
    workdir = tmp_path_factory.mktemp("secagg")
    fl = {"epochs": 1, "aggregation": "secagg", "verify_steps": 0, "secagg_threshold": 0.6,
          "secagg_faults": FAULTS}
    dep = make_deployment(workdir, edges=2, devices_per_edge=3, fl=fl, validators_per_edge=1, main_validators=1)
    with running(dep):
        status, state = post(dep.url("cloud") + "/v1/fl/job", {"rounds": 2})
        assert status == 202, state
        yield dep, wait_job(dep, 300)


def _state(dep: Deployment, node: str, contract: str, key: str) -> Any:
    try:
        return get(dep.url(node) + f"/v1/state/{contract}/{key}")["value"]
    except Exception:  # noqa: BLE001 - absent keys answer 404
        return None


def _device_key(dep: Deployment, name: str) -> str:
    pool = f"devices-{name.split('-')[1]}"
    devices = dep.configs[pool].fl["devices"]
    seed = next(d["key_seed"] for d in devices if d["name"] == name)
    from fedledger.crypto.keys import SigningKey

    return SigningKey.from_seed(bytes.fromhex(seed)).public_key.hex()


def test_round_one_completes_with_a_penalised_dealer_a_dropout_and_a_wrong_sum(job: Any) -> None:
    """Seed 001 §III steps 3–5: the round survives the faults, each offender penalised on its sub-chain."""
    dep, state = job
    assert state["round"] == 1, state
    model = _state(dep, "cloud", "fl", "model/1")
    assert model is not None
    bad_dealer = address_of(bytes.fromhex(_device_key(dep, "device-1-1"))).hex()
    penalty = _state(dep, "edge-1", "secagg", f"penalty/1/{bad_dealer}")
    assert penalty is not None and "bad share" in penalty["reason"]
    evidence = bytes.fromhex(penalty["evidence"])
    assert len(evidence) == 32  # the bad share, stored at this address for anyone to check
    # it misbehaved in both rounds the edges ran, and each round penalised it once
    assert _state(dep, "edge-1", "secagg", f"penalty/2/{bad_dealer}") is not None
    assert _state(dep, "edge-1", "secagg", f"penalties/{bad_dealer}") == 2
    # the sharing ran again without the dealer, who is not in the last acceptance
    assert _state(dep, "edge-1", "secagg", "attempt/1") == 2
    accept = _state(dep, "edge-1", "secagg", "accept/1/2")
    assert _device_key(dep, "device-1-1") not in accept["devices"]
    assert len(accept["devices"]) == 2
    dropped = address_of(bytes.fromhex(_device_key(dep, "device-1-3"))).hex()
    assert _state(dep, "edge-1", "secagg", f"sum/1/2/{dropped}") is None  # it never recorded H(S_Dj)
    wrong = address_of(bytes.fromhex(_device_key(dep, "device-2-1"))).hex()
    penalty = _state(dep, "edge-2", "secagg", f"penalty/1/{wrong}")
    assert penalty is not None and "hash recorded on chain" not in penalty["reason"]
    assert "commitments" in penalty["reason"]
    agg = _state(dep, "edge-2", "fl", "aggregate/1")
    assert agg["secagg"]["attempt"] == 1 and len(agg["updates"]) == 3
    # step 6 of round 1: both edges committed and accepted the cloud's sum
    for chain in ("sub-1", "sub-2"):
        assert _state(dep, "cloud", "secagg", f"verdict/1/{chain}")["ok"] is True


def test_a_forged_cloud_sum_is_refused_by_every_edge_and_penalised(job: Any) -> None:
    """Seed 001 §III step 6: COM(c) ≠ Σ COM(c_i) at every edge; the cloud is penalised, no model is published."""
    dep, state = job
    assert state["state"] == "failed" and "did not accept the cloud's sum" in state["error"], state
    for chain in ("sub-1", "sub-2"):
        verdict = _state(dep, "cloud", "secagg", f"verdict/2/{chain}")
        assert verdict["ok"] is False and "forged" in verdict["reason"]
    owner = _state(dep, "cloud", "fl", "task")["owner"]
    cloud = address_of(bytes.fromhex(owner)).hex()
    penalty = _state(dep, "cloud", "secagg", f"penalty/cloud/2/{cloud}")
    assert penalty is not None and penalty["offender"] == owner
    assert _state(dep, "cloud", "secagg", f"penalties/{cloud}") == 1
    assert _state(dep, "cloud", "fl", "model/2") is None
    assert _state(dep, "cloud", "fl", "latest_round") == 1


def test_the_edge_never_holds_a_readable_update(job: Any) -> None:
    """Seed 001's privacy goal: updates and steps are sealed for the device and the task's readers, not the edge."""
    dep, _ = job
    from fedledger.crypto.keys import SigningKey
    from fedledger.crypto.sealed import is_sealed, sealed_header

    edge_key = SigningKey.from_seed(dep.configs["edge-1"].key_seed).public_key
    device = address_of(bytes.fromhex(_device_key(dep, "device-1-2"))).hex()
    update = _state(dep, "edge-1", "fl", f"update/1/{device}")
    assert update["masked"]  # the packet the device bound
    stored = urlopen_blob(dep.url("edge-1"), update["blob"])
    assert is_sealed(stored)
    readers = sealed_header(stored).recipients
    assert edge_key not in readers and len(readers) == 2  # the device and the auditor


def urlopen_blob(url: str, address: str) -> bytes:
    import urllib.request

    with urllib.request.urlopen(f"{url}/v1/blobs/{address}", timeout=10) as r:
        return bytes(r.read())


def test_lineage_audit_recomputes_the_secure_round_bit_for_bit(job: Any) -> None:
    """An auditor (a task reader) recomputes every c_i from the devices' updates and the global model from c."""
    dep, _ = job

    async def run() -> Any:
        async with aiohttp.ClientSession() as session:
            main = ChainView(NodeClient(dep.url("cloud"), session), load_genesis(dep.geneses["main"]))
            subs = {dep.chain_of(e): ChainView(NodeClient(dep.url(e), session),
                                               load_genesis(dep.geneses[dep.chain_of(e)])) for e in dep.edges}
            return await LineageVerifier(main, subs, dep.auditor()).verify()

    report = asyncio.run(run())
    assert report.ok, report.reason
    assert report.final_round == 1 and report.rounds_checked == 2  # rounds 1 and 0
    assert report.edge_aggregates_checked == 2 and report.device_updates_checked == 5  # 2 at edge 1, 3 at edge 2
