"""Multi-process: k device rounds per edge round, delegated data signing, the training audit
(seed 000 §V-B) and model verification, CLI and auditor-node endpoints, on a live deployment.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest

from clusterlib import get, post, running, wait_job
from fedledger.cli.main import main
from fedledger.contracts.fl import data_message, step_digest
from fedledger.crypto.keys import Domain, SigningKey
from fedledger.fl.data import encode_dataset, subset
from fedledger.fl.datasets import load_dataset
from fedledger.fl.steps import run_step, step_seed
from fedledger.fl.weights import decode_weights, encode_weights, weights_hash
from fedledger.ledger.proofs import TxProof, verify_tx_proof
from fedledger.net.client import NodeClient
from fedledger.node.config import load_genesis
from fedledger.node.deployment import Deployment, make_deployment
from fedledger.node.roles.base import FLSettings
from fedledger.node.submit import RemoteChain
from fedledger.storage.artefacts import DATA, MODEL, open_artefact, seal_artefact

pytestmark = pytest.mark.slow
ROUNDS = 2
K = 2
DEVICES = 2


@pytest.fixture(scope="module")
def job(tmp_path_factory: pytest.TempPathFactory) -> Any:
    workdir = tmp_path_factory.mktemp("audit")
    fl = {"epochs": 1, "device_rounds": K, "delegate_signing": True, "readings": 48}
    dep = make_deployment(workdir, edges=1, devices_per_edge=DEVICES, fl=fl, validators_per_edge=1,
                          main_validators=1)
    with running(dep):
        status, state = post(dep.url("cloud") + "/v1/fl/job", {"rounds": ROUNDS})
        assert status == 202, state
        state = wait_job(dep, 240)
        assert state["state"] == "done", state
        final = get(dep.url("cloud") + f"/v1/state/fl/model/{ROUNDS}")["value"]
        model_file = workdir / "final-model.bin"
        stored = asyncio.run(_blob(dep.url("cloud"), final["blob"]))
        model_file.write_bytes(open_artefact(stored, bytes.fromhex(final["model"]), dep.auditor(), MODEL))
        yield dep, final, model_file


async def _blob(url: str, address: str) -> bytes:
    async with aiohttp.ClientSession() as s:
        return await NodeClient(url, s).get_blob(address)


def _state(dep: Deployment, key: str) -> Any:
    return get(dep.url("edge-1") + f"/v1/state/fl/{key}")["value"]


def test_k_device_rounds_chain_and_delegated_data_is_signed_by_the_edge(job: Any) -> None:
    """Issue 5 §3 (edges aggregate every k device rounds) and seed 000 §V-A (signing delegated to the edge)."""
    dep, _final, _file = job
    edge_key = dep.configs["edge-1"].key.public_key.hex()
    for r in range(1, ROUNDS + 1):
        first, second = _state(dep, f"aggregate/{r}"), _state(dep, f"aggregate/{r}.2")
        assert second["base"] == first["model"], "sub-round 2 must start from sub-round 1's aggregate"
        assert len(second["updates"]) == DEVICES
    devices = dep.configs["devices-1"].fl["devices"]
    pk = SigningKey.from_seed(bytes.fromhex(devices[0]["key_seed"])).public_key.hex()
    update = _state(dep, f"update_tx/{_state(dep, f'aggregate/{ROUNDS}.2')['updates'][0]}")
    step = _state(dep, f"step/{ROUNDS}.2/{_address(update['device'])}/1")
    data = get(dep.url("edge-1") + f"/v1/state/fl/data/{update['device']}/{step['data']}")["value"]
    assert data["signer"] == edge_key != data["device"]
    assert pk in {_state(dep, f"update_tx/{u}")["device"] for u in _state(dep, f"aggregate/{ROUNDS}.2")["updates"]}


def _address(pk_hex: str) -> str:
    from fedledger.crypto.keys import address_of

    return address_of(bytes.fromhex(pk_hex)).hex()


def _run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, Any]:
    code = main(args)
    out = capsys.readouterr().out.strip().splitlines()
    return code, json.loads(out[-1]) if out and out[-1].startswith("{") else None


def test_verify_model_gives_full_provenance_and_fails_on_one_altered_byte(
        job: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 5 §7: rounds, edges, devices, every artefact hash and proofs that they are on chain."""
    dep, final, model_file = job
    code, prov = _run_cli(["verify", "model", str(model_file), "--workdir", str(dep.workdir), "--json", "--proofs"],
                          capsys)
    assert code == 0 and prov["ok"], prov
    assert (prov["kind"], prov["round"], prov["model"]) == ("global", ROUNDS, final["model"])
    arts = prov["lineage"]["artefacts"]
    kinds = [a["kind"] for a in arts]
    assert kinds.count("device_update") == ROUNDS * K * DEVICES
    assert kinds.count("edge_aggregate") == ROUNDS * K
    assert kinds.count("global_model") == ROUNDS + 1
    assert {r["round"] for r in prov["lineage"]["rounds"]} == set(range(1, ROUNDS + 1))
    assert all(len(r["devices"]) == DEVICES for r in prov["lineage"]["rounds"])
    geneses = {load_genesis(p).chain_id: load_genesis(p) for p in dep.geneses.values()}
    for a in arts:  # every proof checks on its own against the genesis, with no node involved
        tx, receipt, header = verify_tx_proof(TxProof.from_json(a["proof"]), geneses[a["chain"]])
        assert (tx.tx_hash.hex(), header.height, receipt.success) == (a["tx"], a["height"], True)

    altered = tmp_path / "altered.bin"
    data = bytearray(model_file.read_bytes())
    data[len(data) // 2] ^= 0x01
    altered.write_bytes(bytes(data))
    code, prov = _run_cli(["verify", "model", str(altered), "--workdir", str(dep.workdir), "--json"], capsys)
    assert code == 11 and not prov["ok"]
    assert "no chain records a model" in prov["reason"]


def test_auditor_node_endpoints(job: Any) -> None:
    dep, final, model_file = job

    async def go() -> tuple[Any, Any, Any]:
        async with aiohttp.ClientSession() as s:
            auditor = NodeClient(dep.url("auditor"), s, timeout_s=300)
            ok = await auditor.post_bytes("/v1/verify/model", model_file.read_bytes())
            bad = await auditor.post_bytes("/v1/verify/model", model_file.read_bytes()[:-1])
            audit = await auditor.post_json("/v1/audit/training", {"model": final["model"], "samples": 1, "seed": 3})
            return ok, bad, audit

    ok, bad, audit = asyncio.run(go())
    assert ok["ok"] and ok["kind"] == "global"
    assert not bad["ok"]
    assert audit["ok"], audit
    assert audit["updates_checked"] == K * DEVICES and audit["steps_checked"] == K * DEVICES


async def _forge(dep: Deployment, final: dict[str, Any]) -> tuple[str, str]:
    """A device trains round ROUNDS+1 in three recorded steps, forging step 2 (step 3 honestly continues from it).

    Returns (the forged update's model hash, the forged step's model hash).
    """
    settings = FLSettings.from_config(dep.configs["devices-1"].fl)
    program = settings.program()
    device = SigningKey.from_seed(bytes.fromhex(dep.configs["devices-1"].fl["devices"][0]["key_seed"]))
    auditor = dep.auditor()
    assert auditor is not None
    readers = [device.public_key, auditor.public_key]
    r = ROUNDS + 1
    async with aiohttp.ClientSession() as s:
        edge = NodeClient(dep.url("edge-1"), s)
        sub = RemoteChain(edge, "sub-1")
        stored = await NodeClient(dep.url("cloud"), s).get_blob(final["blob"])
        base = decode_weights(open_artefact(stored, bytes.fromhex(final["model"]), auditor, MODEL))
        train, _test, _info = load_dataset("digits")
        batch = subset(train, np.arange(900, 940))
        data_hash, stored = seal_artefact(encode_dataset(batch), readers, DATA)
        ptr = bytes.fromhex(await edge.put_blob(stored))
        sig = device.sign(Domain.DATA, data_message("sub-1", device.public_key, data_hash, ptr, len(batch)))
        await sub.call(device, "fl", "record_data", {"device": device.public_key, "data": data_hash, "ptr": ptr,
                                                     "samples": len(batch), "sig": sig})
        prev_w, prev_h, global_h = base, bytes.fromhex(final["model"]), bytes.fromhex(final["model"])
        forged_h = b""
        for index in (1, 2, 3):
            w = run_step(program, prev_w, batch, step_seed(device.public_key, r, 1, index))
            if index == 2:  # the forgery: not what T(M_1, M_O, d_2) gives
                w = [(name, a + np.float32(0.01)) for name, a in w]
            h = weights_hash(w)
            forged_h = h if index == 2 else forged_h
            _, sealed = seal_artefact(encode_weights(w), readers, MODEL)
            address = bytes.fromhex(await edge.put_blob(sealed))
            await sub.call(device, "fl", "record_step", {
                "round": r, "sub_round": 1, "index": index, "prev": prev_h, "model": h, "global": global_h,
                "data": data_hash, "blob": address, "digest": step_digest(h, global_h, data_hash, index)})
            prev_w, prev_h = w, h
        await sub.call(device, "fl", "submit_update", {
            "round": r, "sub_round": 1, "base": global_h, "model": prev_h, "blob": address,
            "samples": len(batch), "data": data_hash, "steps": 3})
    return prev_h.hex(), forged_h.hex()


def test_audit_training_catches_a_forged_step(job: Any, capsys: pytest.CaptureFixture[str]) -> None:
    """Seed 000 §V-B: a recorded step that T(M_i, M_O, d_(i+1)) does not reproduce is caught and named."""
    dep, final, _file = job
    code, honest = _run_cli(["audit", "training", "--model", final["model"], "--samples", "100",
                             "--workdir", str(dep.workdir), "--json"], capsys)
    assert code == 0 and honest["ok"], honest
    assert honest["updates_checked"] == K * DEVICES
    steps_per_update = {(s["device"], s["sub_round"]): s["of"] for s in honest["steps"]}
    assert honest["steps_checked"] == sum(steps_per_update.values()) > K * DEVICES  # every step re-ran

    forged_update, forged_step = asyncio.run(_forge(dep, final))
    code, verdict = _run_cli(["audit", "training", "--model", forged_update, "--samples", "3",
                              "--workdir", str(dep.workdir), "--json"], capsys)
    assert code == 11 and not verdict["ok"]
    assert verdict["kind"] == "device_update"
    by_index = {s["index"]: s for s in verdict["steps"]}
    assert by_index[1]["ok"] and by_index[3]["ok"], "honest steps around the forgery still reproduce"
    assert not by_index[2]["ok"]
    assert "re-running step 2" in by_index[2]["reason"] and forged_step[:16] in by_index[2]["reason"]
