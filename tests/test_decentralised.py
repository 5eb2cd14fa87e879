"""Decentralised federated learning (seed 002 §5.2.2 steps 13–18): no aggregator.

The fl contract lists every update of a round, closes the round once every
device submitted or its deadline passed, takes VoteReputation votes and each
device's recorded view; ``fl/peer.py`` is the pure view a device computes; and
a multi-process run checks that honest devices agree and reject a faulty peer.
"""

from __future__ import annotations

import random
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from clusterlib import get, running, wait_job
from clusterlib import post as post_json
from conftest import Keys
from fedledger.contracts import fl as fl_contract
from fedledger.contracts.base import read_state
from fedledger.crypto.keys import SigningKey, address_of
from fedledger.errors import VerificationFailed
from fedledger.fl.aggregate import fedavg
from fedledger.fl.peer import MAX_SCORE, PeerView, UpdateRecord, build_view, vote_scores
from fedledger.fl.weights import Weights, decode_weights, encode_weights, weights_hash
from fedledger.ledger import ChainState, Receipt, apply_block, propose_block
from test_fl_contract import call, h32


def empty_block(chain: ChainState, keys: Keys) -> None:
    block, _ = propose_block(chain, [], keys.validator, chain.head.timestamp + 1)
    apply_block(chain, block)


def fl_state(chain: ChainState, key: str) -> Any:
    return read_state(chain.state, "fl", key)


def submit(chain: ChainState, keys: Keys, device: SigningKey, round_: int = 1, label: str = "") -> Receipt:
    receipt = call(chain, keys, device, "submit_update", {
        "round": round_, "base": h32("M_O"), "model": h32(f"model {device.public_key.hex()} {label}"),
        "samples": 10, "data": h32("data")})
    assert receipt.success, receipt.error
    return receipt


def closed_round(chain: ChainState, keys: Keys) -> list[bytes]:
    """Round 1 with every device's update, closed; the update tx hashes."""
    txs = [submit(chain, keys, d).tx_hash for d in keys.devices]
    assert call(chain, keys, keys.devices[0], "close_round", {"round": 1}).success
    return txs


# -- contract -------------------------------------------------------------------


def test_updates_are_listed_and_the_round_closes_once_every_device_submitted(chain: ChainState, keys: Keys) -> None:
    """seed 002 §5.2.2 step 13–14: the round's updates are enumerable; it closes when all devices are in."""
    d0, d1, d2 = keys.devices
    nothing = call(chain, keys, d0, "close_round", {"round": 1})
    assert not nothing.success and "no update" in nothing.error
    first = submit(chain, keys, d0)
    start = chain.height
    second = submit(chain, keys, d1)
    assert fl_state(chain, "round_updates/1") == [first.tx_hash, second.tx_hash]
    assert fl_state(chain, "round_start/1") == start
    early = call(chain, keys, d1, "close_round", {"round": 1})
    assert not early.success and "1 device(s) have not submitted" in early.error
    third = submit(chain, keys, d2)
    cloud = call(chain, keys, keys.cloud, "close_round", {"round": 1})
    assert not cloud.success and "needs device/edge" in cloud.error
    assert call(chain, keys, d2, "close_round", {"round": 1}).success
    closed = fl_state(chain, "closed/1")
    assert closed["updates"] == [first.tx_hash, second.tx_hash, third.tx_hash]
    assert closed["height"] == chain.height and closed["missing"] == 0 and closed["closer"] == d2.public_key


def test_a_closed_round_refuses_a_second_close_and_late_updates(chain: ChainState, keys: Keys) -> None:
    """seed 002 §5.2.2 step 14: the closed set is fixed once."""
    closed_round(chain, keys)
    again = call(chain, keys, keys.validator, "close_round", {"round": 1})
    assert not again.success and "round 1 is already closed" in again.error
    late = call(chain, keys, keys.devices[0], "submit_update", {
        "round": 1, "base": h32("M_O"), "model": h32("late"), "samples": 1, "data": h32("data")})
    assert not late.success and "round 1 is closed" in late.error
    assert submit(chain, keys, keys.devices[0], round_=2).success  # the next round is open


def test_the_round_closes_without_missing_devices_after_its_deadline(chain: ChainState, keys: Keys,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """seed 002 §5.2.2 step 14: "the deadline for the current epoch expires" (first update + DEADLINE_BLOCKS)."""
    monkeypatch.setattr(fl_contract, "DEADLINE_BLOCKS", 4)
    only = submit(chain, keys, keys.devices[0])
    start = chain.height
    early = call(chain, keys, keys.validator, "close_round", {"round": 1})  # block start + 1
    assert not early.success and f"deadline is height {start + 4}" in early.error
    while chain.height < start + 3:
        empty_block(chain, keys)
    assert call(chain, keys, keys.validator, "close_round", {"round": 1}).success  # block start + 4
    closed = fl_state(chain, "closed/1")
    assert closed["updates"] == [only.tx_hash] and closed["missing"] == 2


@pytest.mark.parametrize("score, reason", [(-1, "0..10000"), (MAX_SCORE + 1, "0..10000"), (True, "wrong type")])
def test_vote_scores_are_basis_points(chain: ChainState, keys: Keys, score: Any, reason: str) -> None:
    """seed 002 §5.2.2 step 16: VoteReputation(addr, score) with a bounded score."""
    txs = closed_round(chain, keys)
    bad = call(chain, keys, keys.devices[0], "vote", {"round": 1, "update_tx": txs[1], "score": score})
    assert not bad.success and reason in bad.error


def test_votes_one_per_voter_never_on_own_update_and_summed_per_device(chain: ChainState, keys: Keys) -> None:
    """seed 002 §5.2.2 step 16: each device votes on its peers' updates; reputation accumulates."""
    d0, d1, d2 = keys.devices
    first = submit(chain, keys, d0).tx_hash
    early = call(chain, keys, d1, "vote", {"round": 1, "update_tx": first, "score": 5})
    assert not early.success and "not closed" in early.error
    txs = [first, submit(chain, keys, d1).tx_hash, submit(chain, keys, d2).tx_hash]
    assert call(chain, keys, d0, "close_round", {"round": 1}).success
    own = call(chain, keys, d0, "vote", {"round": 1, "update_tx": txs[0], "score": 9000})
    assert not own.success and "its own update" in own.error
    stranger = call(chain, keys, d0, "vote", {"round": 1, "update_tx": h32("nope"), "score": 1})
    assert not stranger.success and "not in round 1's closed set" in stranger.error
    assert call(chain, keys, d0, "vote", {"round": 1, "update_tx": txs[2], "score": 9000}).success
    assert call(chain, keys, d1, "vote", {"round": 1, "update_tx": txs[2], "score": 0}).success
    twice = call(chain, keys, d1, "vote", {"round": 1, "update_tx": txs[2], "score": 100})
    assert not twice.success and "already voted" in twice.error
    edge = call(chain, keys, keys.validator, "vote", {"round": 1, "update_tx": txs[2], "score": 1})
    assert not edge.success and "needs device" in edge.error
    vote = fl_state(chain, f"vote/1/{txs[2].hex()}/{d0.address.hex()}")
    assert vote["score"] == 9000 and vote["device"] == d2.public_key and vote["voter"] == d0.public_key
    assert fl_state(chain, f"reputation/{d2.address.hex()}") == {"sum": 9000, "count": 2}
    assert fl_state(chain, f"reputation/{d0.address.hex()}") is None


def test_record_view_stores_each_devices_model_hash_once(chain: ChainState, keys: Keys) -> None:
    """seed 002 §5.2.2 step 17: each device's own global model is on chain, so agreement is checkable."""
    d0, d1, _ = keys.devices
    first = submit(chain, keys, d0).tx_hash
    early = call(chain, keys, d0, "record_view", {"round": 1, "model": h32("view")})
    assert not early.success and "not closed" in early.error
    txs = [first, submit(chain, keys, d1).tx_hash, submit(chain, keys, keys.devices[2]).tx_hash]
    assert call(chain, keys, d1, "close_round", {"round": 1}).success
    foreign = call(chain, keys, d0, "record_view", {"round": 1, "model": h32("view"), "updates": [h32("x")]})
    assert not foreign.success and "not in the round's closed set" in foreign.error
    args = {"round": 1, "model": h32("view"), "blob": h32("blob"), "updates": txs[:2]}
    assert call(chain, keys, d0, "record_view", args).success
    view = fl_state(chain, f"view/1/{d0.address.hex()}")
    assert (view["model"], view["blob"], view["updates"], view["device"]) == (h32("view"), h32("blob"), txs[:2],
                                                                              d0.public_key)
    again = call(chain, keys, d0, "record_view", {"round": 1, "model": h32("other")})
    assert not again.success and "already recorded its view of round 1" in again.error
    cloud = call(chain, keys, keys.cloud, "record_view", {"round": 1, "model": h32("view")})
    assert not cloud.success and "needs device" in cloud.error


# -- fl/peer.py -----------------------------------------------------------------

DEVICES = [bytes([i]) * 32 for i in range(1, 6)]
BASE = h32("round-0 model")


def weights(seed: int, shape: tuple[int, ...] = (3, 2)) -> Weights:
    rng = np.random.default_rng(seed)
    return [("w", rng.standard_normal(shape).astype(np.float32)), ("b", rng.standard_normal(2).astype(np.float32))]


def record(i: int, w: Weights, *, samples: int = 10, round_: int = 1, base: bytes = BASE,
           device: bytes | None = None) -> UpdateRecord:
    model = weights_hash(w)
    return UpdateRecord(tx=h32(f"tx {i}"), device=device or DEVICES[i], round=round_, sub_round=1, base=base,
                        model=model, blob=model, samples=samples)


def peer_round() -> tuple[list[bytes], list[UpdateRecord], dict[bytes, Weights | str]]:
    """Five closed updates: two good, then one per kind of fault; plus a late record outside the closed set."""
    good = [record(0, weights(0), samples=30), record(1, weights(1), samples=10)]
    faulty = [
        record(2, weights(2), device=h32("stranger")),  # not a registered device
        record(3, weights(3), round_=2),  # another round
        record(4, weights(4), base=h32("another model")),  # trained from something else
    ]
    bad_blob = record(5, weights(5), device=DEVICES[2])
    reshaped = record(6, weights(6, (2, 3)), device=DEVICES[3])
    duplicate = record(7, weights(7), device=DEVICES[0])
    late = record(8, weights(8), device=DEVICES[4])
    records = [*good, *faulty, bad_blob, reshaped, duplicate, late]
    closed = [r.tx for r in records[:-1]] + [h32("unrecorded")]
    opened: dict[bytes, Weights | str] = {r.tx: weights(i) for i, r in enumerate(records)}
    opened[reshaped.tx] = weights(6, (2, 3))
    opened[bad_blob.tx] = "the update's blob does not open to its recorded model hash"
    return closed, records, opened


def view_of(closed: list[bytes], records: list[UpdateRecord], opened: dict[bytes, Weights | str]) -> PeerView:
    return build_view(1, closed, records, lambda rec: opened[rec.tx], devices=DEVICES, base=BASE, like=weights(0))


def test_peer_view_is_fedavg_of_the_valid_updates_in_closed_order() -> None:
    """seed 002 §5.2.2 step 17: aggregate all valid local models, weighted by samples."""
    closed, records, opened = peer_round()
    view = view_of(closed, records, opened)
    expected = fedavg([(weights(0), 30), (weights(1), 10)])
    assert encode_weights(view.weights) == encode_weights(expected)
    assert view.model == weights_hash(expected) and view.samples == 40
    assert [r.tx for r in view.accepted] == closed[:2]


def test_peer_view_rejects_each_invalid_update_with_its_reason() -> None:
    """seed 002 §5.2.2 step 16: VERIFY each local model against its on-chain record before using it."""
    closed, records, opened = peer_round()
    reasons = {r.tx: r.reason for r in view_of(closed, records, opened).rejected}
    assert reasons == {
        h32("tx 2"): "the sender is not a registered device of this chain",
        h32("tx 3"): "the update is for round 2.1, not 1",
        h32("tx 4"): f"the update was trained from {h32('another model').hex()[:16]}…, "
                     f"not the agreed model {BASE.hex()[:16]}…",
        h32("tx 5"): "the update's blob does not open to its recorded model hash",
        h32("tx 6"): "tensor 'w' has shape (2, 3), expected (3, 2)",
        h32("tx 7"): "the device already contributed an update to this round",
        h32("unrecorded"): "the update has no record on chain",
        h32("tx 8"): "the update is not in round 1's closed set",
    }


def test_peer_view_depends_on_the_closed_list_not_on_the_order_records_arrive() -> None:
    """Honest devices fetch records in any order yet reach the same view and the same verdicts."""
    closed, records, opened = peer_round()
    ref = view_of(closed, records, opened)
    for seed in range(5):
        shuffled = records[:]
        random.Random(seed).shuffle(shuffled)
        view = view_of(closed, shuffled, opened)
        assert view.model == ref.model and view.rejected == ref.rejected and view.accepted == ref.accepted
    reordered = view_of([closed[1], closed[0], *closed[2:]], records, opened)
    assert reordered.accepted == (ref.accepted[1], ref.accepted[0])  # averaging order is the closed order


def test_peer_view_with_no_valid_update_is_an_error() -> None:
    closed, records, opened = peer_round()
    with pytest.raises(VerificationFailed, match="no valid update"):
        view_of(closed[2:7], records, opened)  # every fault, no good update


def test_vote_scores_give_zero_to_rejected_updates_and_skip_the_voters_own() -> None:
    """seed 002 §5.2.2 step 16: votes score quality; an invalid model scores 0."""
    closed, records, opened = peer_round()
    view = view_of(closed, records, opened)
    owners = {r.tx: r.device for r in records}
    scores = vote_scores(view, closed, DEVICES[1], lambda w: 7000, owners)
    assert h32("tx 1") not in scores  # the voter's own update
    assert scores[h32("tx 0")] == 7000
    assert all(scores[tx] == 0 for tx in closed[2:])
    with pytest.raises(ValueError, match="outside"):
        vote_scores(view, closed, DEVICES[1], lambda w: MAX_SCORE + 1, owners)


def test_update_record_reads_the_contract_value_or_its_http_rendering(chain: ChainState, keys: Keys) -> None:
    tx = submit(chain, keys, keys.devices[0]).tx_hash
    stored = fl_state(chain, f"update_tx/{tx.hex()}")
    as_http = {k: v.hex() if isinstance(v, bytes) else v for k, v in stored.items()}
    rec = UpdateRecord.from_state(stored)
    assert rec == UpdateRecord.from_state(as_http)
    assert (rec.tx, rec.device, rec.round, rec.sub_round, rec.samples) == (tx, keys.devices[0].public_key, 1, 1, 10)


def test_peer_core_imports_no_torch() -> None:
    code = "import sys, fedledger.fl.peer\nassert 'torch' not in sys.modules\n"
    src = Path(__file__).resolve().parents[1] / "src"
    subprocess.run([sys.executable, "-c", code], check=True, env={"PYTHONPATH": str(src)})


# -- multi-process ----------------------------------------------------------------

FAULTY = "device-1-2"


def _state(url: str, key: str) -> Any:
    try:
        return get(f"{url}/v1/state/fl/{key}")["value"]
    except urllib.error.HTTPError as err:
        if err.code == 404:
            return None
        raise


def _blob(url: str, address: str) -> bytes:
    with urllib.request.urlopen(f"{url}/v1/blobs/{address}", timeout=10) as resp:
        return bytes(resp.read())


@pytest.fixture(scope="module")
def peer_cluster(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from fedledger.node.deployment import make_deployment

    workdir = tmp_path_factory.mktemp("decentralised")
    dep = make_deployment(workdir, edges=1, devices_per_edge=4, validators_per_edge=2, main_validators=1,
                          fl={"epochs": 1, "mode": "decentralised", "faulty": {FAULTY: "bad-blob"}})
    with running(dep, [n for n, c in dep.configs.items() if c.role != "auditor"]):
        yield dep


@pytest.mark.slow
def test_decentralised_devices_agree_and_reject_a_faulty_peer(peer_cluster: Any) -> None:
    """seed 002 §5.2.2 steps 15–18 across real processes: every device downloads its peers' updates,
    validates them, votes, and averages the valid ones itself; honest views agree every round, the update
    whose blob does not hold its recorded model is rejected (and voted 0) by every honest device, and the
    view is the FedAvg of the accepted updates."""
    from fedledger.storage.artefacts import MODEL, open_artefact

    dep = peer_cluster
    cloud, edge = dep.url("cloud"), dep.url("edge-1")
    status, job = post_json(cloud + "/v1/fl/job", {"rounds": 2})
    assert status == 202, job
    job = wait_job(dep, 600)
    assert job["state"] == "done", job
    assert job["agreed"] == [True, True], job["views"]
    assert not job["failures"], job["failures"]

    devices = {d["name"]: SigningKey.from_seed(bytes.fromhex(d["key_seed"]))
               for d in dep.configs["devices-1"].fl["devices"]}
    honest = [n for n in devices if n != FAULTY]
    auditor = dep.auditor()
    base = get(cloud + "/v1/state/fl/model/0")["value"]["model"]
    for round_ in (1, 2):
        views = {n: _state(edge, f"view/{round_}/{k.address.hex()}") for n, k in devices.items()}
        assert len({views[n]["model"] for n in honest}) == 1, views
        view = views[honest[0]]
        closed = _state(edge, f"closed/{round_}")["updates"]
        assert len(closed) == 4
        bad_tx = _state(edge, f"update/{round_}/{devices[FAULTY].address.hex()}")["tx"]
        assert bad_tx in closed
        for name in honest:
            assert bad_tx not in views[name]["updates"]
            voter = devices[name].address.hex()
            assert _state(edge, f"vote/{round_}/{bad_tx}/{voter}")["score"] == 0
            peers = [tx for tx in views[name]["updates"] if _state(edge, f"update_tx/{tx}")["device"] !=
                     devices[name].public_key.hex()]
            assert len(peers) == 2
            assert all(_state(edge, f"vote/{round_}/{tx}/{voter}")["score"] > 0 for tx in peers)
        rejections = [r for r in job["rejected"] if r["round"] == round_ and r["by"] in honest]
        assert {(r["by"], r["tx"], r["reason"]) for r in rejections} == {
            (n, bad_tx, "the update's blob does not open to its recorded model hash") for n in honest}
        # The view is FedAvg of the accepted updates, in the closed set's order, all trained from the agreed model.
        accepted = [_state(edge, f"update_tx/{tx}") for tx in closed if tx != bad_tx]
        assert [u["tx"] for u in accepted] == view["updates"]
        assert all(u["base"] == base for u in accepted)
        results = [(decode_weights(open_artefact(_blob(edge, u["blob"]), bytes.fromhex(u["model"]), auditor, MODEL)),
                    u["samples"]) for u in accepted]
        assert weights_hash(fedavg(results)).hex() == view["model"]
        stored = open_artefact(_blob(edge, view["blob"]), bytes.fromhex(view["model"]), auditor, MODEL)
        assert weights_hash(decode_weights(stored)).hex() == view["model"]
        base = view["model"]  # round 2 trains from the round-1 view
    reputation = _state(edge, f"reputation/{address_of(devices[FAULTY].public_key).hex()}")
    assert reputation == {"sum": 0, "count": 6}
    acc = job["accuracy_per_round"]
    assert len(acc) == 3 and acc[-1] > acc[0] + 0.2, acc  # round 0 is an untrained model (~0.1 on ten digits)


@pytest.mark.slow
def test_pool_refuses_a_bad_decentralised_request(peer_cluster: Any) -> None:
    """seed 002 §5.2.2 step 9: devices start only from the round-0 model whose authenticator is on chain."""
    pool = peer_cluster.url("devices-1")

    def post(body: dict[str, Any]) -> tuple[int, Any]:
        return post_json(pool + "/v1/fl/decentralised", body, 60)

    status, body = post({"rounds": 0, "base": "ab" * 32})
    assert status == 400 and "rounds must be" in body["error"]
    if get(peer_cluster.url("cloud") + "/v1/fl/job")["state"] != "done":
        pytest.skip("depends on the job of the previous test (an open task)")
    status, body = post({"rounds": 1, "base": "ab" * 32})
    assert status == 422 and "not the round-0 global model" in body["error"]
