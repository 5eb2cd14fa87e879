"""Seed 001 §III's on-chain records (``contracts.secagg``) and the fl contract's secure-aggregation hooks.

Sub-chain (the conftest chain: edge ``sub-1`` and its three devices): devices bind their packet in
``fl.submit_update`` (``masked``), the edge accepts (Verification by fog), devices record H(S_Dij)
and the edge penalises bad dealers (Secret sharing), and the edge records H(c_i) with
``fl.record_aggregate`` (Computation by fog). Main chain (built here: the cloud and the edges of
``sub-1``, ``sub-2`` and ``sub-3``): ``cloud_sum``, ``commit``, ``verdict`` and ``fl.publish_model``
(Aggregation and result verification). Also the ``FLSettings`` checks for ``aggregation = "secagg"``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from conftest import CHAIN_ID, GENESIS_TIME, Keys, seeded_key
from fedledger.contracts.base import read_state, write_state
from fedledger.contracts.fl import authenticator_message
from fedledger.contracts.secagg import COM_BYTES, MAX_REASON
from fedledger.crypto.hashing import tagged_hash
from fedledger.crypto.keys import Domain, SigningKey
from fedledger.errors import ConfigError
from fedledger.ledger import (
    ChainState,
    Genesis,
    Identity,
    Receipt,
    apply_block,
    make_tx,
    propose_block,
)
from fedledger.ledger.chain import account_nonce
from fedledger.node.roles.base import FLSettings

BASE = b"\x00" * 32  # the global model every device round of these tests starts from


def h32(label: str) -> bytes:
    return tagged_hash("test", label.encode())


def send(chain: ChainState, proposer: SigningKey, sender: SigningKey, contract: str, method: str,
         args: Any) -> Receipt:
    """One transaction in its own block on ``chain``, proposed by ``proposer``; its receipt."""
    tx = make_tx(sender, chain.chain_id, account_nonce(chain.state, sender.address), contract, method, args, 1)
    block, rejected = propose_block(chain, [tx], proposer, chain.head.timestamp + 1)
    assert not rejected
    (receipt,) = apply_block(chain, block)
    return receipt


def call(chain: ChainState, keys: Keys, sender: SigningKey, method: str, args: Any) -> Receipt:
    """A ``secagg`` call on the conftest sub-chain."""
    return send(chain, keys.validator, sender, "secagg", method, args)


def fl_call(chain: ChainState, keys: Keys, sender: SigningKey, method: str, args: Any) -> Receipt:
    return send(chain, keys.validator, sender, "fl", method, args)


def sec(chain: ChainState, key: str) -> Any:
    return read_state(chain.state, "secagg", key)


def fl_state(chain: ChainState, key: str) -> Any:
    return read_state(chain.state, "fl", key)


# -- sub-chain helpers -------------------------------------------------------------------------


def packet(device: SigningKey, round_: int = 1) -> bytes:
    """The digest of ``device``'s seed 001 packet for ``round_`` (what ``masked`` binds)."""
    return h32(f"packet {device.public_key.hex()} {round_}")


def commitment(masked: bytes) -> bytes:
    """What the edge checked: packet digest ‖ sketches digest."""
    return masked + h32(f"sketches of {masked.hex()}")


@dataclass(frozen=True)
class Update:
    device: SigningKey
    tx: bytes
    masked: bytes
    samples: int

    @property
    def com(self) -> bytes:
        return commitment(self.masked)


def submit(chain: ChainState, keys: Keys, device: SigningKey, samples: int, round_: int = 1,
           masked: bytes | None = None, bind: bool = True) -> Update:
    """``device``'s ``fl.submit_update`` for ``round_``, binding its packet unless ``bind`` is False."""
    masked = masked or packet(device, round_)
    args: dict[str, Any] = {"round": round_, "base": BASE, "model": h32(f"model {masked.hex()}"),
                            "samples": samples, "data": h32("data")}
    if bind:
        args["masked"] = masked
    receipt = fl_call(chain, keys, device, "submit_update", args)
    assert receipt.success, receipt.error
    return Update(device, receipt.tx_hash, masked, samples)


def accept_args(attempt: int, updates: list[Update], round_: int = 1) -> dict[str, Any]:
    return {"round": round_, "attempt": attempt, "challenge": h32(f"challenge {round_}/{attempt}"),
            "updates": [u.tx for u in updates], "commitments": [u.com for u in updates]}


def penalise_args(offender: SigningKey, round_: int = 1, reason: str = "share 2 fails its sketch") -> dict[str, Any]:
    return {"round": round_, "offender": offender.public_key, "reason": reason, "evidence": h32("bad share")}


@pytest.fixture
def updates(chain: ChainState, keys: Keys) -> list[Update]:
    """Round 1: the three devices submit bound updates of 10, 20 and 30 samples."""
    return [submit(chain, keys, d, samples) for d, samples in zip(keys.devices, (10, 20, 30), strict=True)]


# -- Verification by fog: accept ---------------------------------------------------------------


def test_submit_update_binds_a_32_byte_packet_digest(chain: ChainState, keys: Keys) -> None:
    """Seed 001 §III, Verification by fog: the device binds its packet digest in its own update."""
    d = keys.devices[0]
    args = {"round": 1, "base": BASE, "model": h32("m"), "samples": 5, "data": h32("d")}
    short = fl_call(chain, keys, d, "submit_update", {**args, "masked": b"\x01" * 31})
    assert not short.success and "argument 'masked' must be 32 bytes" in short.error
    assert fl_state(chain, f"update/1/{d.address.hex()}") is None
    bound = fl_call(chain, keys, d, "submit_update", {**args, "masked": packet(d)})
    assert bound.success, bound.error
    assert fl_state(chain, f"update_tx/{bound.tx_hash.hex()}")["masked"] == packet(d)
    plain = fl_call(chain, keys, keys.devices[1], "submit_update", args)
    assert plain.success and "masked" not in fl_state(chain, f"update_tx/{plain.tx_hash.hex()}")


def test_accept_takes_weights_and_devices_from_the_recorded_updates(
        chain: ChainState, keys: Keys, updates: list[Update]) -> None:
    """Seed 001 §III, Verification by fog: the edge's acceptance; weights are the devices' own sample counts."""
    args = accept_args(1, updates)
    receipt = call(chain, keys, keys.validator, "accept", args)
    assert receipt.success, receipt.error
    acc = sec(chain, "accept/1/1")
    assert acc["devices"] == [d.public_key for d in keys.devices]
    assert acc["weights"] == [10, 20, 30]
    assert acc["updates"] == args["updates"] and acc["commitments"] == args["commitments"]
    assert acc["challenge"] == args["challenge"] and acc["edge"] == keys.validator.public_key
    assert acc["tx"] == receipt.tx_hash
    assert sec(chain, "attempt/1") == 1


def test_accept_attempts_follow_each_other(chain: ChainState, keys: Keys, updates: list[Update]) -> None:
    """Seed 001 §III, Verification by fog: attempts are 1, 2, … (a repeat drops penalised dealers)."""
    early = call(chain, keys, keys.validator, "accept", accept_args(2, updates))
    assert not early.success and "attempt must be 1" in early.error
    assert sec(chain, "attempt/1") is None and sec(chain, "accept/1/2") is None
    assert call(chain, keys, keys.validator, "accept", accept_args(1, updates)).success
    again = call(chain, keys, keys.validator, "accept", accept_args(1, updates[:2]))
    assert not again.success and "attempt must be 2" in again.error
    skip = call(chain, keys, keys.validator, "accept", accept_args(3, updates[:2]))
    assert not skip.success and "attempt must be 2" in skip.error
    second = call(chain, keys, keys.validator, "accept", accept_args(2, updates[:2]))
    assert second.success, second.error
    assert sec(chain, "attempt/1") == 2
    assert sec(chain, "accept/1/1")["weights"] == [10, 20, 30]  # the first attempt stays as it was
    assert sec(chain, "accept/1/2")["weights"] == [10, 20]


def test_accept_refuses_a_commitment_the_device_did_not_bind(
        chain: ChainState, keys: Keys, updates: list[Update]) -> None:
    """Seed 001 §III, Verification by fog: the checked packet must be the one its device signed on chain."""
    args = accept_args(1, updates)
    forged = h32("another packet") + args["commitments"][1][32:]
    receipt = call(chain, keys, keys.validator, "accept", {**args, "commitments": [
        args["commitments"][0], forged, args["commitments"][2]]})
    assert not receipt.success
    assert f"commitment for {updates[1].tx.hex()[:16]}… is not the packet its device bound" in receipt.error
    assert sec(chain, "attempt/1") is None and sec(chain, "accept/1/1") is None
    # the second half (the sketches digest) is the edge's own: only the packet digest is checked
    other_sketches = updates[0].masked + h32("other sketches")
    ok = call(chain, keys, keys.validator, "accept", {**accept_args(1, updates[:1]), "commitments": [other_sketches]})
    assert ok.success, ok.error


def test_accept_refuses_an_update_that_bound_no_packet(chain: ChainState, keys: Keys) -> None:
    """Seed 001 §III, Verification by fog: a plain (unmasked) update cannot be accepted as a packet."""
    plain = submit(chain, keys, keys.devices[0], 10, bind=False)
    receipt = call(chain, keys, keys.validator, "accept", accept_args(1, [plain]))
    assert not receipt.success and "is not the packet its device bound" in receipt.error
    assert sec(chain, "attempt/1") is None


def test_accept_refuses_an_update_of_another_round(chain: ChainState, keys: Keys, updates: list[Update]) -> None:
    """Seed 001 §III, Verification by fog: every accepted update belongs to the accepted round."""
    later = submit(chain, keys, keys.devices[0], 10, round_=2)
    receipt = call(chain, keys, keys.validator, "accept", accept_args(1, [updates[1], later]))
    assert not receipt.success
    assert f"update {later.tx.hex()[:16]}… is not an update of round 1 on this chain" in receipt.error
    unknown = Update(keys.devices[2], h32("no such tx"), updates[2].masked, 30)
    missing = call(chain, keys, keys.validator, "accept", accept_args(1, [unknown]))
    assert not missing.success and "is not an update of round 1 on this chain" in missing.error
    assert sec(chain, "attempt/1") is None
    assert call(chain, keys, keys.validator, "accept", accept_args(1, [later], round_=2)).success


def test_accept_refuses_a_listed_update_twice_and_mismatched_commitments(
        chain: ChainState, keys: Keys, updates: list[Update]) -> None:
    """Seed 001 §III, Verification by fog: one commitment per accepted update, each update once."""
    twice = call(chain, keys, keys.validator, "accept", accept_args(1, [updates[0], updates[0]]))
    assert not twice.success and "an update is listed twice" in twice.error
    args = accept_args(1, updates)
    short = call(chain, keys, keys.validator, "accept", {**args, "commitments": args["commitments"][:2]})
    assert not short.success and "one commitment per accepted update" in short.error
    empty = call(chain, keys, keys.validator, "accept", accept_args(1, []))
    assert not empty.success and "an acceptance lists 1..4096 updates" in empty.error
    assert sec(chain, "attempt/1") is None


def test_a_penalised_device_is_barred_from_later_attempts(
        chain: ChainState, keys: Keys, updates: list[Update]) -> None:
    """Seed 001 §III, Verification by fog and Secret sharing: a dealer penalised in a round is not re-accepted."""
    assert call(chain, keys, keys.validator, "accept", accept_args(1, updates)).success
    assert call(chain, keys, keys.validator, "penalise", penalise_args(keys.devices[0])).success
    receipt = call(chain, keys, keys.validator, "accept", accept_args(2, updates))
    assert not receipt.success
    assert f"device {keys.devices[0].public_key.hex()[:16]}… was penalised in round 1" in receipt.error
    assert sec(chain, "attempt/1") == 1
    without = call(chain, keys, keys.validator, "accept", accept_args(2, updates[1:]))
    assert without.success, without.error
    assert sec(chain, "accept/1/2")["devices"] == [d.public_key for d in keys.devices[1:]]
    # the penalty is for round 1 only: the device's round-2 packet may be accepted
    later = submit(chain, keys, keys.devices[0], 10, round_=2)
    assert call(chain, keys, keys.validator, "accept", accept_args(1, [later], round_=2)).success


@pytest.mark.parametrize("who, reason", [
    ("device", "role 'device' may not do this (needs edge)"),
    ("cloud", "role 'cloud' may not do this (needs edge)"),
    ("outsider", "sender is not a registered identity"),
])
def test_only_an_edge_accepts(chain: ChainState, keys: Keys, updates: list[Update], who: str, reason: str) -> None:
    """Seed 001 §III, Verification by fog: the acceptance is the edge's signed statement."""
    sender = {"device": keys.devices[0], "cloud": keys.cloud, "outsider": keys.outsider}[who]
    receipt = call(chain, keys, sender, "accept", accept_args(1, updates))
    assert not receipt.success and reason in receipt.error
    assert sec(chain, "attempt/1") is None and sec(chain, "accept/1/1") is None


# -- Secret sharing: share_sum, penalise -------------------------------------------------------


def test_share_sum_once_per_device_and_attempt(chain: ChainState, keys: Keys, updates: list[Update]) -> None:
    """Seed 001 §III, Secret sharing: H(S_Dij) of an accepted attempt, recorded once per device."""
    d = keys.devices[1]
    key1 = f"sum/1/1/{d.address.hex()}"
    early = call(chain, keys, d, "share_sum", {"round": 1, "attempt": 1, "hash": h32("S 1")})
    assert not early.success and "round 1 has no acceptance 1" in early.error
    assert sec(chain, key1) is None
    assert call(chain, keys, keys.validator, "accept", accept_args(1, updates)).success
    first = call(chain, keys, d, "share_sum", {"round": 1, "attempt": 1, "hash": h32("S 1")})
    assert first.success, first.error
    assert sec(chain, key1) == {"hash": h32("S 1"), "device": d.public_key, "tx": first.tx_hash}
    again = call(chain, keys, d, "share_sum", {"round": 1, "attempt": 1, "hash": h32("S 1'")})
    assert not again.success and "already recorded its share sum for the attempt" in again.error
    assert sec(chain, key1)["hash"] == h32("S 1")
    next_ = call(chain, keys, d, "share_sum", {"round": 1, "attempt": 2, "hash": h32("S 2")})
    assert not next_.success and "round 1 has no acceptance 2" in next_.error
    assert call(chain, keys, keys.validator, "accept", accept_args(2, updates[1:])).success
    assert call(chain, keys, d, "share_sum", {"round": 1, "attempt": 2, "hash": h32("S 2")}).success
    assert sec(chain, f"sum/1/2/{d.address.hex()}")["hash"] == h32("S 2")
    other = call(chain, keys, keys.devices[2], "share_sum", {"round": 1, "attempt": 1, "hash": h32("S 1 of 2")})
    assert other.success, other.error


def test_share_sum_only_from_devices_homed_on_the_chain(
        chain: ChainState, keys: Keys, updates: list[Update]) -> None:
    """Seed 001 §III, Secret sharing: share sums come from this edge's own devices."""
    assert call(chain, keys, keys.validator, "accept", accept_args(1, updates)).success
    visitor = seeded_key(30)
    admitted = send(chain, keys.validator, keys.validator, "identity", "register_identity", {
        "public_key": visitor.public_key, "role": "device", "name": "visitor", "home_chain": "sub-2"})
    assert admitted.success, admitted.error
    args = {"round": 1, "attempt": 1, "hash": h32("S")}
    foreign = call(chain, keys, visitor, "share_sum", args)
    assert not foreign.success and "the device is not homed on this chain" in foreign.error
    assert sec(chain, f"sum/1/1/{visitor.address.hex()}") is None
    edge = call(chain, keys, keys.validator, "share_sum", args)
    assert not edge.success and "needs device" in edge.error
    assert sec(chain, f"sum/1/1/{keys.validator.address.hex()}") is None


def test_penalise_records_the_penalty_and_counts_it(chain: ChainState, keys: Keys, updates: list[Update]) -> None:
    """Seed 001 §III, Secret sharing: a provably wrong dealer is penalised once per round, counted per device."""
    d = keys.devices[2]
    early = call(chain, keys, keys.validator, "penalise", penalise_args(d))
    assert not early.success and "round 1 has no acceptance" in early.error
    assert call(chain, keys, keys.validator, "accept", accept_args(1, updates)).success
    first = call(chain, keys, keys.validator, "penalise", penalise_args(d))
    assert first.success, first.error
    rec = sec(chain, f"penalty/1/{d.address.hex()}")
    assert rec["offender"] == d.public_key and rec["reason"] == "share 2 fails its sketch"
    assert rec["evidence"] == h32("bad share") and rec["by"] == keys.validator.public_key
    assert rec["tx"] == first.tx_hash
    assert sec(chain, f"penalties/{d.address.hex()}") == 1
    again = call(chain, keys, keys.validator, "penalise", penalise_args(d, reason="its share sum is wrong"))
    assert not again.success and "already penalised in the round" in again.error
    assert sec(chain, f"penalties/{d.address.hex()}") == 1
    assert sec(chain, f"penalty/1/{d.address.hex()}")["reason"] == "share 2 fails its sketch"
    later = submit(chain, keys, keys.devices[0], 10, round_=2)
    assert call(chain, keys, keys.validator, "accept", accept_args(1, [later], round_=2)).success
    assert call(chain, keys, keys.validator, "penalise", penalise_args(d, round_=2)).success
    assert sec(chain, f"penalties/{d.address.hex()}") == 2


@pytest.mark.parametrize("case, reason", [
    ("offender is the cloud", "the offender is not a registered device"),
    ("offender is unregistered", "the offender is not a registered device"),
    ("a device penalises", "role 'device' may not do this (needs edge)"),
    ("reason too long", "reason is too long"),
])
def test_penalise_rejections(chain: ChainState, keys: Keys, updates: list[Update], case: str, reason: str) -> None:
    """Seed 001 §III, Secret sharing: only the edge penalises, and only a registered device."""
    assert call(chain, keys, keys.validator, "accept", accept_args(1, updates)).success
    sender, offender, why = keys.validator, keys.devices[0], "bad share"
    if case == "offender is the cloud":
        offender = keys.cloud
    elif case == "offender is unregistered":
        offender = keys.outsider
    elif case == "a device penalises":
        sender = keys.devices[1]
    else:
        why = "x" * (MAX_REASON + 1)
    receipt = call(chain, keys, sender, "penalise", penalise_args(offender, reason=why))
    assert not receipt.success and reason in receipt.error
    assert sec(chain, f"penalty/1/{offender.address.hex()}") is None
    assert sec(chain, f"penalties/{offender.address.hex()}") is None


# -- Computation by fog: record_aggregate with secagg ------------------------------------------


def aggregate_args(listed: list[Update], attempt: int, round_: int = 1) -> dict[str, Any]:
    return {"round": round_, "base": BASE, "model": h32(f"c_i {attempt}"), "samples": sum(u.samples for u in listed),
            "updates": [u.tx for u in listed], "secagg": {"attempt": attempt, "sum": h32(f"H(c_i) {attempt}")}}


def test_record_aggregate_lists_exactly_the_last_acceptance_in_order(
        chain: ChainState, keys: Keys, updates: list[Update]) -> None:
    """Seed 001 §III, Computation by fog: the edge sum H(c_i) is of the last acceptance's updates, in order."""
    none_yet = fl_call(chain, keys, keys.validator, "record_aggregate", aggregate_args(updates, 1))
    assert not none_yet.success and "acceptance 1 is not the round's last" in none_yet.error
    assert call(chain, keys, keys.validator, "accept", accept_args(1, updates)).success
    assert call(chain, keys, keys.validator, "penalise", penalise_args(keys.devices[0])).success
    kept = updates[1:]
    assert call(chain, keys, keys.validator, "accept", accept_args(2, kept)).success
    earlier = fl_call(chain, keys, keys.validator, "record_aggregate", aggregate_args(updates, 1))
    assert not earlier.success and "acceptance 1 is not the round's last" in earlier.error
    earlier_kept = fl_call(chain, keys, keys.validator, "record_aggregate", aggregate_args(kept, 1))
    assert not earlier_kept.success and "acceptance 1 is not the round's last" in earlier_kept.error
    future = fl_call(chain, keys, keys.validator, "record_aggregate", aggregate_args(kept, 3))
    assert not future.success and "acceptance 3 is not the round's last" in future.error
    swapped = fl_call(chain, keys, keys.validator, "record_aggregate", aggregate_args(kept[::-1], 2))
    assert not swapped.success and "the updates are not the accepted ones, in order" in swapped.error
    extra = fl_call(chain, keys, keys.validator, "record_aggregate", aggregate_args(updates, 2))
    assert not extra.success and "the updates are not the accepted ones, in order" in extra.error
    fewer = fl_call(chain, keys, keys.validator, "record_aggregate", aggregate_args(kept[:1], 2))
    assert not fewer.success and "the updates are not the accepted ones, in order" in fewer.error
    assert fl_state(chain, "aggregate/1") is None
    good = fl_call(chain, keys, keys.validator, "record_aggregate", aggregate_args(kept, 2))
    assert good.success, good.error
    rec = fl_state(chain, "aggregate/1")
    assert rec["secagg"] == {"attempt": 2, "sum": h32("H(c_i) 2")}
    assert rec["updates"] == [u.tx for u in kept] and rec["samples"] == 50


def test_a_secure_round_cannot_record_a_plain_aggregate(chain: ChainState, keys: Keys,
                                                        updates: list[Update]) -> None:
    """Seed 001 §III, Computation by fog: once a round has an acceptance, its aggregate must carry H(c_i)."""
    assert call(chain, keys, keys.validator, "accept", accept_args(1, updates)).success
    args = {k: v for k, v in aggregate_args(updates, 1).items() if k != "secagg"}
    receipt = fl_call(chain, keys, keys.validator, "record_aggregate", args)
    assert not receipt.success and "missing argument 'secagg'" in receipt.error
    assert fl_state(chain, "aggregate/1") is None


def test_record_aggregate_secagg_sum_must_be_32_bytes(chain: ChainState, keys: Keys, updates: list[Update]) -> None:
    """Seed 001 §III, Computation by fog: ``sum`` is the 32-byte H(c_i)."""
    assert call(chain, keys, keys.validator, "accept", accept_args(1, updates)).success
    args = aggregate_args(updates, 1)
    receipt = fl_call(chain, keys, keys.validator, "record_aggregate",
                      {**args, "secagg": {"attempt": 1, "sum": b"\x01" * 31}})
    assert not receipt.success and "argument 'sum' must be 32 bytes" in receipt.error
    assert fl_state(chain, "aggregate/1") is None


# -- Aggregation and result verification: the main chain ---------------------------------------


MAIN = "main"


@dataclass(frozen=True)
class Main:
    """The main chain: the cloud, a second (non-owner) cloud and the edges of sub-1, sub-2 and sub-3."""

    chain: ChainState
    validator: SigningKey
    cloud: SigningKey
    other_cloud: SigningKey
    edges: dict[str, SigningKey]  # home chain → that chain's edge

    def call(self, sender: SigningKey, method: str, args: Any, contract: str = "secagg") -> Receipt:
        return send(self.chain, self.validator, sender, contract, method, args)

    def sec(self, key: str) -> Any:
        return read_state(self.chain.state, "secagg", key)


@pytest.fixture
def main(keys: Keys) -> Main:
    edges = {CHAIN_ID: keys.validator, "sub-2": seeded_key(10), "sub-3": seeded_key(11)}
    other_cloud, validator = seeded_key(101), seeded_key(50)
    identities = (
        Identity(keys.cloud.public_key, "cloud", "cloud", MAIN),
        Identity(other_cloud.public_key, "cloud", "cloud-2", MAIN),
        *(Identity(k.public_key, "edge", f"edge of {home}", home) for home, k in edges.items()),
        Identity(keys.devices[0].public_key, "device", "device-0", CHAIN_ID),
    )
    genesis = Genesis(MAIN, GENESIS_TIME, (validator.public_key,), identities, {})
    return Main(ChainState.from_genesis(genesis), validator, keys.cloud, other_cloud, edges)


def task_args() -> dict[str, Any]:
    return {"program": h32("program"), "model": "digits-mlp", "dataset": "digits", "test_set": h32("test set"),
            "test_samples": 360, "device_rounds": 1, "readers": [], "config": {}}


def publish_args(cloud: SigningKey, round_: int, parents: list[Any]) -> dict[str, Any]:
    model, program = h32(f"global {round_}"), h32("program")
    auth = cloud.sign(Domain.AUTHENTICATOR, authenticator_message(model, program, round_))
    return {"round": round_, "model": model, "program": program, "authenticator": auth, "parents": parents,
            "metrics": {}}


def parents_of_round(m: Main, chains: list[str]) -> list[dict[str, Any]]:
    """Edge aggregates of ``chains``, each with a Type-II anchor recorded in ``interlock``.

    The anchors are written straight into the interlock state (``by_tx/<tx>`` = [chain, height]), as
    ``interlock.anchor_subchain`` would record them: these tests are about the secure sum, not anchoring.
    """
    parents = []
    for i, chain in enumerate(chains):
        anchor = h32(f"anchor tx {chain}")
        write_state(m.chain.state, "interlock", f"by_tx/{anchor.hex()}", [chain, 7 + i])
        parents.append({"chain": chain, "tx": h32(f"aggregate tx {chain}"), "model": h32(f"c_i {chain}"),
                        "samples": 60, "anchor": anchor})
    return parents


def start_task(m: Main) -> None:
    """Open the task and publish round 0 (the initial model), so that round 1 may be summed."""
    assert m.call(m.cloud, "open_task", task_args(), contract="fl").success
    published = m.call(m.cloud, "publish_model", publish_args(m.cloud, 0, []), contract="fl")
    assert published.success, published.error


def sum_args(round_: int = 1, chains: tuple[str, ...] = (CHAIN_ID, "sub-2")) -> dict[str, Any]:
    return {"round": round_, "total": h32(f"H(c) {round_}"), "blob": h32(f"c blob {round_}"),
            "edges": [{"chain": c, "sum": h32(f"H(c_i) {c}"), "weight": 60} for c in chains]}


def com(chain: str) -> bytes:
    return h32(f"COM(c_i) {chain}")[:COM_BYTES]


def commit_all(m: Main, chains: tuple[str, ...] = (CHAIN_ID, "sub-2")) -> None:
    for c in chains:
        receipt = m.call(m.edges[c], "commit", {"round": 1, "com": com(c)})
        assert receipt.success, receipt.error


def test_cloud_sum_only_by_the_task_owner_for_the_next_round_once(main: Main) -> None:
    """Seed 001 §III, Aggregation and result verification: the task owner commits to H(c) of round r+1, once."""
    m = main
    no_task = m.call(m.cloud, "cloud_sum", sum_args())
    assert not no_task.success and "only the task owner sums a round" in no_task.error
    assert m.call(m.cloud, "open_task", task_args(), contract="fl").success
    before_zero = m.call(m.cloud, "cloud_sum", sum_args(round_=0))
    assert not before_zero.success and "the sum must be for the next round" in before_zero.error
    assert m.call(m.cloud, "publish_model", publish_args(m.cloud, 0, []), contract="fl").success
    not_owner = m.call(m.other_cloud, "cloud_sum", sum_args())
    assert not not_owner.success and "only the task owner sums a round" in not_owner.error
    edge = m.call(m.edges[CHAIN_ID], "cloud_sum", sum_args())
    assert not edge.success and "needs cloud" in edge.error
    for round_ in (0, 2):
        wrong = m.call(m.cloud, "cloud_sum", sum_args(round_=round_))
        assert not wrong.success and "the sum must be for the next round" in wrong.error
        assert m.sec(f"cloud_sum/{round_}") is None
    assert m.sec("cloud_sum/1") is None
    args = sum_args()
    first = m.call(m.cloud, "cloud_sum", args)
    assert first.success, first.error
    rec = m.sec("cloud_sum/1")
    assert rec["total"] == args["total"] and rec["edges"] == args["edges"] and rec["owner"] == m.cloud.public_key
    again = m.call(m.cloud, "cloud_sum", {**args, "total": h32("another H(c)")})
    assert not again.success and "round 1's sum is already recorded" in again.error
    assert m.sec("cloud_sum/1")["total"] == args["total"]


@pytest.mark.parametrize("edges, reason", [
    ([], "the sum lists 1..4096 edge sums"),
    ([{"chain": CHAIN_ID, "sum": h32("a"), "weight": 1}, {"chain": CHAIN_ID, "sum": h32("b"), "weight": 1}],
     "edge 'sub-1' is listed twice"),
    ([{"chain": CHAIN_ID, "sum": h32("a"), "weight": 0}], "edge weights are positive"),
    ([{"chain": CHAIN_ID, "sum": b"\x01" * 31, "weight": 1}], "argument 'sum' must be 32 bytes"),
    (["sub-1"], "an edge sum is a map"),
])
def test_cloud_sum_rejects_malformed_edge_sums(main: Main, edges: list[Any], reason: str) -> None:
    """Seed 001 §III, Aggregation and result verification: the edge sums the cloud added, each once."""
    start_task(main)
    receipt = main.call(main.cloud, "cloud_sum", {**sum_args(), "edges": edges})
    assert not receipt.success and reason in receipt.error
    assert main.sec("cloud_sum/1") is None


def test_commit_only_by_a_listed_edge_once(main: Main) -> None:
    """Seed 001 §III, Aggregation and result verification: each listed edge records COM(c_i) once."""
    m = main
    start_task(m)
    early = m.call(m.edges[CHAIN_ID], "commit", {"round": 1, "com": com(CHAIN_ID)})
    assert not early.success and "round 1 has no recorded cloud sum" in early.error
    assert m.call(m.cloud, "cloud_sum", sum_args()).success
    unlisted = m.call(m.edges["sub-3"], "commit", {"round": 1, "com": com("sub-3")})
    assert not unlisted.success and "'sub-3' is not an edge of round 1's sum" in unlisted.error
    assert m.sec("commit/1/sub-3") is None
    cloud = m.call(m.cloud, "commit", {"round": 1, "com": com(CHAIN_ID)})
    assert not cloud.success and "needs edge" in cloud.error
    short = m.call(m.edges[CHAIN_ID], "commit", {"round": 1, "com": b"\x01" * (COM_BYTES - 1)})
    assert not short.success and f"argument 'com' must be {COM_BYTES} bytes" in short.error
    first = m.call(m.edges[CHAIN_ID], "commit", {"round": 1, "com": com(CHAIN_ID)})
    assert first.success, first.error
    assert m.sec(f"commit/1/{CHAIN_ID}") == {"com": com(CHAIN_ID), "edge": m.edges[CHAIN_ID].public_key,
                                             "tx": first.tx_hash}
    again = m.call(m.edges[CHAIN_ID], "commit", {"round": 1, "com": com("again")})
    assert not again.success and "'sub-1' already committed for round 1" in again.error
    assert m.sec(f"commit/1/{CHAIN_ID}")["com"] == com(CHAIN_ID)


def test_verdict_waits_until_every_listed_edge_committed(main: Main) -> None:
    """Seed 001 §III, Aggregation and result verification: COM(c) = Σ COM(c_i) needs every COM(c_i)."""
    m = main
    start_task(m)
    assert m.call(m.cloud, "cloud_sum", sum_args()).success
    commit_all(m, (CHAIN_ID,))
    ok = {"round": 1, "ok": True, "reason": ""}
    early = m.call(m.edges[CHAIN_ID], "verdict", ok)
    assert not early.success and "edges sub-2 have not committed COM(c_i) yet" in early.error
    assert m.sec(f"verdict/1/{CHAIN_ID}") is None
    commit_all(m, ("sub-2",))
    first = m.call(m.edges[CHAIN_ID], "verdict", ok)
    assert first.success, first.error
    assert m.sec(f"verdict/1/{CHAIN_ID}") == {"ok": True, "reason": "", "edge": m.edges[CHAIN_ID].public_key,
                                              "tx": first.tx_hash}
    again = m.call(m.edges[CHAIN_ID], "verdict", {**ok, "ok": False, "reason": "changed my mind"})
    assert not again.success and "'sub-1' already gave its verdict on round 1" in again.error
    assert m.sec(f"verdict/1/{CHAIN_ID}")["ok"] is True
    unlisted = m.call(m.edges["sub-3"], "verdict", ok)
    assert not unlisted.success and "'sub-3' is not an edge of round 1's sum" in unlisted.error


def test_refusing_verdicts_penalise_the_cloud_once(main: Main) -> None:
    """Seed 001 §III, Aggregation and result verification: a refused sum penalises the cloud, once per round."""
    m = main
    start_task(m)
    assert m.call(m.cloud, "cloud_sum", sum_args()).success
    commit_all(m)
    cloud = m.cloud.address.hex()
    first = m.call(m.edges[CHAIN_ID], "verdict", {"round": 1, "ok": False, "reason": "COM(c) != sum COM(c_i)"})
    assert first.success, first.error
    penalty = m.sec(f"penalty/cloud/1/{cloud}")
    assert penalty["offender"] == m.cloud.public_key and penalty["by"] == m.edges[CHAIN_ID].public_key
    assert penalty["reason"] == "COM(c) != sum COM(c_i)" and penalty["evidence"] == h32("H(c) 1")
    assert m.sec(f"penalties/{cloud}") == 1
    second = m.call(m.edges["sub-2"], "verdict", {"round": 1, "ok": False, "reason": "wrong total"})
    assert second.success, second.error
    assert m.sec("verdict/1/sub-2")["ok"] is False
    assert m.sec(f"penalties/{cloud}") == 1
    assert m.sec(f"penalty/cloud/1/{cloud}")["by"] == m.edges[CHAIN_ID].public_key


def test_publish_model_needs_every_listed_edge_to_accept_the_sum(main: Main) -> None:
    """Seed 001 §III, Aggregation and result verification: the round's model is published only once verified."""
    m = main
    start_task(m)
    assert m.call(m.cloud, "cloud_sum", sum_args()).success
    parents = parents_of_round(m, [CHAIN_ID, "sub-2"])
    args = publish_args(m.cloud, 1, parents)
    commit_all(m)
    none = m.call(m.cloud, "publish_model", args, contract="fl")
    assert not none.success and "edge 'sub-1' has not verified round 1's secure sum" in none.error
    assert m.call(m.edges[CHAIN_ID], "verdict", {"round": 1, "ok": True, "reason": ""}).success
    one = m.call(m.cloud, "publish_model", args, contract="fl")
    assert not one.success and "edge 'sub-2' has not verified round 1's secure sum" in one.error
    assert read_state(m.chain.state, "fl", "latest_round") == 0
    assert m.call(m.edges["sub-2"], "verdict", {"round": 1, "ok": True, "reason": ""}).success
    both = m.call(m.cloud, "publish_model", args, contract="fl")
    assert both.success, both.error
    assert read_state(m.chain.state, "fl", "latest_round") == 1
    assert read_state(m.chain.state, "fl", "model/1")["parents"] == parents


def test_publish_model_refuses_a_sum_an_edge_rejected(main: Main) -> None:
    """Seed 001 §III, Aggregation and result verification: one refusing edge blocks the round's model."""
    m = main
    start_task(m)
    assert m.call(m.cloud, "cloud_sum", sum_args()).success
    commit_all(m)
    assert m.call(m.edges[CHAIN_ID], "verdict", {"round": 1, "ok": True, "reason": ""}).success
    assert m.call(m.edges["sub-2"], "verdict", {"round": 1, "ok": False, "reason": "COM mismatch"}).success
    receipt = m.call(m.cloud, "publish_model", publish_args(m.cloud, 1, parents_of_round(m, [CHAIN_ID, "sub-2"])),
                     contract="fl")
    assert not receipt.success
    assert "edge 'sub-2' rejected round 1's secure sum: COM mismatch" in receipt.error
    assert read_state(m.chain.state, "fl", "latest_round") == 0
    assert read_state(m.chain.state, "fl", "model/1") is None


def test_publish_model_of_a_round_without_a_cloud_sum_is_unaffected(main: Main) -> None:
    """Seed 001 §III, Aggregation and result verification: only a round with a secure sum waits for verdicts."""
    m = main
    start_task(m)
    receipt = m.call(m.cloud, "publish_model", publish_args(m.cloud, 1, parents_of_round(m, [CHAIN_ID])),
                     contract="fl")
    assert receipt.success, receipt.error
    assert read_state(m.chain.state, "fl", "latest_round") == 1
    stale = m.call(m.cloud, "cloud_sum", sum_args(round_=1))
    assert not stale.success and "the sum must be for the next round" in stale.error


# -- FLSettings: aggregation = "secagg" --------------------------------------------------------


SECURE: dict[str, Any] = {"aggregation": "secagg", "verify_steps": 0}


@pytest.mark.parametrize("settings, reason", [
    ({"aggregation": "paillier"}, "fl aggregation must be one of fedavg, secagg, not 'paillier'"),
    ({**SECURE, "mode": "decentralised"}, "secure aggregation needs the hierarchical mode"),
    ({"aggregation": "secagg"}, "set verify_steps = 0"),
    ({**SECURE, "device_rounds": 2}, "one device round per cloud round (device_rounds = 1)"),
    ({**SECURE, "secagg_threshold": 0.0}, "secagg_threshold is a fraction in (0, 1], not 0.0"),
    ({**SECURE, "secagg_threshold": 1.5}, "secagg_threshold is a fraction in (0, 1], not 1.5"),
    ({**SECURE, "secagg_threshold": -0.5}, "secagg_threshold is a fraction in (0, 1]"),
    ({**SECURE, "secagg_noise_sigma": -1.0}, "bad secagg settings: noise_sigma must be finite and >= 0"),
    ({**SECURE, "secagg_keep": 0}, "bad secagg settings: keep must be >= 1"),
])
def test_secagg_settings_are_checked(settings: dict[str, Any], reason: str) -> None:
    """Seed 001 §III: secure aggregation needs an edge (hierarchical), hides steps, and one device round."""
    with pytest.raises(ConfigError) as info:
        FLSettings(**settings)
    assert reason in str(info.value)
    with pytest.raises(ConfigError):
        FLSettings.from_config(settings)


def test_fedavg_settings_keep_the_options_secagg_forbids() -> None:
    """Seed 001 §III: the secagg restrictions apply to ``aggregation = "secagg"`` only."""
    plain = FLSettings(mode="decentralised", verify_steps=2, device_rounds=3, secagg_threshold=5.0)
    assert not plain.secure and plain.aggregation == "fedavg"
    secure = FLSettings.from_config({**SECURE, "secagg_threshold": 1.0})
    assert secure.secure and secure.secagg_threshold == 1.0


@pytest.mark.parametrize("fraction, participants, threshold", [
    (0.6, 5, 3), (0.6, 4, 3), (0.5, 4, 2), (0.5, 5, 3), (1.0, 7, 7), (0.01, 3, 1), (0.6, 1, 1),
])
def test_secagg_params_threshold_is_the_rounded_up_fraction(fraction: float, participants: int, threshold: int) -> None:
    """Seed 001 §III, Secret sharing: t = ⌈fraction · n⌉ share sums reconstruct an edge's sum."""
    settings = FLSettings(**SECURE, secagg_threshold=fraction, secagg_noise_sigma=0.25, secagg_keep=4)
    params = settings.secagg_params(participants)
    assert params.threshold == threshold
    assert (params.noise_sigma, params.keep, params.frac_bits) == (0.25, 4, 16)


def test_secagg_params_threshold_is_exact_for_decimal_fractions() -> None:
    """Seed 001 §III, Secret sharing: ⌈0.28 · 25⌉ = 7, but 0.28 * 25 is 7.000000000000001 in binary floating point."""
    assert FLSettings(**SECURE, secagg_threshold=0.28).secagg_params(25).threshold == 7
