"""The fl contract's provenance records: tasks, data pointers, training steps, sub-rounds.

Seed 000 §V-A (pointer transactions (d^E, σ, ptr) for collected data), seed 000
§V-B (tx = H(M_(i+1) ‖ M_O ‖ d_(i+1) ‖ i+1) per training step, chained) and
seed 004 §VII (the test set's hash is on chain so scores can be checked).
"""

from __future__ import annotations

from typing import Any

import pytest

from conftest import CHAIN_ID, Keys
from fedledger.contracts.base import read_state
from fedledger.contracts.fl import data_message, stage, step_digest
from fedledger.crypto.hashing import tagged_hash
from fedledger.crypto.keys import Domain, SigningKey
from fedledger.ledger import ChainState, Receipt, apply_block, make_tx, propose_block
from fedledger.ledger.chain import account_nonce
from fedledger.ledger.state import State


def h32(label: str) -> bytes:
    return tagged_hash("test", label.encode())


def call(chain: ChainState, keys: Keys, sender: SigningKey, method: str, args: Any) -> Receipt:
    tx = make_tx(sender, CHAIN_ID, account_nonce(chain.state, sender.address), "fl", method, args, 1)
    block, rejected = propose_block(chain, [tx], keys.validator, chain.head.timestamp + 1)
    assert not rejected
    (receipt,) = apply_block(chain, block)
    return receipt


def fl_state(state: State, key: str) -> Any:
    return read_state(state, "fl", key)


def data_args(device: SigningKey, label: str, signer: SigningKey | None = None, samples: int = 16) -> dict[str, Any]:
    data, ptr = h32(f"data {label}"), h32(f"ptr {label}")
    sig = (signer or device).sign(Domain.DATA, data_message(CHAIN_ID, device.public_key, data, ptr, samples))
    return {"device": device.public_key, "data": data, "ptr": ptr, "samples": samples, "sig": sig}


def step_args(index: int, prev: bytes, model: bytes, data: bytes, global_model: bytes = h32("M_O"),
              round_: int = 1, sub_round: int = 1) -> dict[str, Any]:
    return {"round": round_, "sub_round": sub_round, "index": index, "prev": prev, "model": model,
            "global": global_model, "data": data, "blob": model,
            "digest": step_digest(model, global_model, data, index)}


def test_open_task_records_the_test_set_hash_once(chain: ChainState, keys: Keys) -> None:
    """seed 004 §VII: the held-out test set's hash is on chain before any score is published."""
    args = {"program": h32("program"), "model": "mudfl-cnn", "dataset": "digits28", "test_set": h32("test"),
            "test_samples": 360, "device_rounds": 2, "readers": [keys.cloud.public_key], "config": {"split": "iid"}}
    assert call(chain, keys, keys.cloud, "open_task", args).success
    task = fl_state(chain.state, "task")
    assert task["test_set"] == h32("test") and task["owner"] == keys.cloud.public_key
    again = call(chain, keys, keys.cloud, "open_task", args)
    assert not again.success and "already open" in again.error
    device = call(chain, keys, keys.devices[0], "open_task", args)
    assert not device.success and "needs cloud" in device.error


@pytest.mark.parametrize("change, reason", [
    ({"device_rounds": 0}, "device_rounds"),
    ({"test_samples": 0}, "test set must not be empty"),
    ({"readers": [b"short"]}, "32-byte public keys"),
])
def test_open_task_rejects_bad_settings(chain: ChainState, keys: Keys, change: dict[str, Any], reason: str) -> None:
    args = {"program": h32("program"), "model": "m", "dataset": "d", "test_set": h32("test"),
            "test_samples": 1, "device_rounds": 1, "readers": [], "config": {}, **change}
    receipt = call(chain, keys, keys.cloud, "open_task", args)
    assert not receipt.success and reason in receipt.error


def test_data_pointer_signed_by_the_device(chain: ChainState, keys: Keys) -> None:
    """seed 000 §V-A: (d^E, σ, ptr) with σ the device's signature; the data stays off-chain."""
    d = keys.devices[0]
    args = data_args(d, "a")
    assert call(chain, keys, d, "record_data", args).success
    rec = fl_state(chain.state, f"data/{d.public_key.hex()}/{args['data'].hex()}")
    assert rec["ptr"] == args["ptr"] and rec["signer"] == d.public_key
    dup = call(chain, keys, d, "record_data", args)
    assert not dup.success and "already recorded" in dup.error


def test_data_pointer_signed_by_the_edge_for_a_weak_device(chain: ChainState, keys: Keys) -> None:
    """seed 000 §V-A: a device with little power delegates σ to its edge peer."""
    d = keys.devices[1]
    args = data_args(d, "delegated", signer=keys.validator)
    assert call(chain, keys, keys.validator, "record_data", args).success
    assert fl_state(chain.state, f"data/{d.public_key.hex()}/{args['data'].hex()}")["signer"] == keys.validator.public_key


@pytest.mark.parametrize("case", ["forged σ", "σ for another size", "another device posts it", "unknown device"])
def test_data_pointer_rejections(chain: ChainState, keys: Keys, case: str) -> None:
    d, other = keys.devices[0], keys.devices[1]
    sender = d
    if case == "forged σ":
        args = data_args(d, "x", signer=other)
    elif case == "σ for another size":
        args = {**data_args(d, "x"), "samples": 17}
    elif case == "another device posts it":
        args, sender = data_args(d, "x", signer=other), other
    else:
        args = data_args(keys.outsider, "x")
    receipt = call(chain, keys, sender, "record_data", args)
    assert not receipt.success
    expected = {"forged σ": "σ does not verify", "σ for another size": "σ does not verify",
                "another device posts it": "needs edge", "unknown device": "not a registered device"}[case]
    assert expected in receipt.error


def _record_two_batches(chain: ChainState, keys: Keys, d: SigningKey) -> tuple[bytes, bytes]:
    a, b = data_args(d, "a"), data_args(d, "b")
    assert call(chain, keys, d, "record_data", a).success
    assert call(chain, keys, d, "record_data", b).success
    return a["data"], b["data"]


def test_training_steps_chain_from_the_global_model_to_the_update(chain: ChainState, keys: Keys) -> None:
    """seed 000 §V-B: M_1 = T(M_O, d_1), M_2 = T(M_1, d_2); the update is the last step."""
    d = keys.devices[0]
    d1, d2 = _record_two_batches(chain, keys, d)
    m_o, m1, m2 = h32("M_O"), h32("M_1"), h32("M_2")
    assert call(chain, keys, d, "record_step", step_args(1, m_o, m1, d1)).success
    assert call(chain, keys, d, "record_step", step_args(2, m1, m2, d2)).success
    where = f"1/{d.address.hex()}"
    assert fl_state(chain.state, f"step/{where}/2")["digest"] == step_digest(m2, m_o, d2, 2)
    update = {"round": 1, "base": m_o, "model": m2, "samples": 32, "data": h32("all"), "steps": 2}
    wrong = call(chain, keys, d, "submit_update", {**update, "model": m1})
    assert not wrong.success and "not the last recorded step" in wrong.error
    short = call(chain, keys, d, "submit_update", {**update, "steps": 3})
    assert not short.success and "no 3 training steps" in short.error
    assert call(chain, keys, d, "submit_update", update).success
    late = call(chain, keys, d, "record_step", step_args(3, m2, h32("M_3"), d1))
    assert not late.success and "already submitted" in late.error


@pytest.mark.parametrize("case, reason", [
    ("digest", "digest is not H("),
    ("unrecorded data", "not a recorded data batch"),
    ("skipped index", "step index must be 1"),
    ("first step not from M_O", "M_i is not the previous step's model"),
    ("another device's data", "not a recorded data batch"),
])
def test_forged_training_steps_are_refused(chain: ChainState, keys: Keys, case: str, reason: str) -> None:
    d, other = keys.devices[0], keys.devices[1]
    d1, _ = _record_two_batches(chain, keys, d)
    args = step_args(1, h32("M_O"), h32("M_1"), d1)
    sender = d
    if case == "digest":
        args["digest"] = step_digest(h32("M_1"), h32("M_O"), d1, 2)
    elif case == "unrecorded data":
        args = step_args(1, h32("M_O"), h32("M_1"), h32("never collected"))
    elif case == "skipped index":
        args = step_args(2, h32("M_O"), h32("M_1"), d1)
    elif case == "first step not from M_O":
        args = step_args(1, h32("somewhere else"), h32("M_1"), d1)
    else:
        sender = other
    receipt = call(chain, keys, sender, "record_step", args)
    assert not receipt.success and reason in receipt.error


def test_sub_rounds_chain_edge_aggregates_within_a_cloud_round(chain: ChainState, keys: Keys) -> None:
    """An edge aggregates its devices k times per cloud round; sub-round 2 starts from sub-round 1's aggregate."""
    d = keys.devices[0]
    base, agg1, agg2 = h32("global"), h32("edge agg 1"), h32("edge agg 2")
    up1 = call(chain, keys, d, "submit_update", {"round": 1, "base": base, "model": h32("u1"), "samples": 5,
                                                 "data": h32("d")})
    assert up1.success
    rec1 = {"round": 1, "base": base, "model": agg1, "samples": 5, "updates": [up1.tx_hash]}
    assert call(chain, keys, keys.validator, "record_aggregate", rec1).success
    up2 = call(chain, keys, d, "submit_update", {"round": 1, "sub_round": 2, "base": agg1, "model": h32("u2"),
                                                 "samples": 5, "data": h32("d")})
    assert up2.success
    bad = call(chain, keys, keys.validator, "record_aggregate",
               {"round": 1, "sub_round": 2, "base": base, "model": agg2, "samples": 5, "updates": [up2.tx_hash]})
    assert not bad.success and "must start from the sub-round 1 aggregate" in bad.error
    good = {"round": 1, "sub_round": 2, "base": agg1, "model": agg2, "samples": 5, "updates": [up2.tx_hash]}
    assert call(chain, keys, keys.validator, "record_aggregate", good).success
    assert fl_state(chain.state, f"aggregate/{stage(1, 2)}")["model"] == agg2
    mixed = call(chain, keys, keys.validator, "record_aggregate",
                 {"round": 1, "sub_round": 3, "base": agg2, "model": h32("x"), "samples": 5, "updates": [up1.tx_hash]})
    assert not mixed.success and "another round or base" in mixed.error
