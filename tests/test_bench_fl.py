"""``fedledger bench fl``: the ledgered FL pipeline does what the nodes do, and the JSON contract.

The pipeline runs once at a tiny size (2 edges x 2 devices, 2 rounds, k = 2); the tests
check what it left on the chains and in the stores, never its speed.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fedledger.cli import bench_fl
from fedledger.cli.main import main
from fedledger.contracts.base import read_state
from fedledger.contracts.fl import authenticator_message, stage
from fedledger.crypto.hashing import sha256
from fedledger.crypto.keys import Domain, SigningKey, address_of, is_valid
from fedledger.crypto.sealed import is_sealed
from fedledger.errors import VerificationFailed
from fedledger.fl.data import encode_dataset
from fedledger.fl.strategy import TrainRes
from fedledger.fl.weights import weights_hash
from fedledger.node.roles.base import FLSettings
from fedledger.sim.ledgered_fl import (
    LEDGER_STAGES,
    PipelineConfig,
    PipelineOutcome,
    Turns,
    run_alternating,
    run_pipeline,
)
from fedledger.storage.artefacts import DATA, MODEL, open_artefact

EDGES, DEVICES, ROUNDS, K = 2, 2, 2, 2
CONTRACT = ("bench", "overhead_ratio", "round_s_with_ledger", "round_s_plain", "final_accuracy",
            "centralized_accuracy", "accuracy_per_round", "stages_s", "spot_check_s", "same_model", "model",
            "dataset", "params", "edges", "devices", "rounds", "device_rounds", "seal")


@pytest.fixture(scope="module")
def outcome(tmp_path_factory: pytest.TempPathFactory) -> PipelineOutcome:
    settings = FLSettings(model="digits-mlp", dataset="digits", epochs=1, readings=64, device_rounds=K,
                          verify_steps=1)
    config = PipelineConfig(settings, edges=EDGES, devices_per_edge=DEVICES, rounds=ROUNDS)
    return run_pipeline(config, tmp_path_factory.mktemp("bench-fl"))


def _steps_per_device_round(out: PipelineOutcome, device: str) -> int:
    return out.work.settings.epochs * len(out.work.batches[device])


def test_ledger_arm_trains_the_plain_arms_model_and_publishes_it(outcome: PipelineOutcome) -> None:
    plain, ledger = outcome.plain_result.weights, outcome.ledger_result.weights
    assert [n for n, _ in plain] == [n for n, _ in ledger]
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(plain, ledger, strict=True))
    published = outcome.ledger.ledger.main.read(f"model/{ROUNDS}")
    assert published["model"] == weights_hash(ledger) == outcome.final_model


def test_chains_hold_one_record_per_batch_step_update_aggregate_and_round(outcome: PipelineOutcome) -> None:
    work, ledger = outcome.work, outcome.ledger.ledger
    devices = work.plan.devices
    steps = sum(_steps_per_device_round(outcome, d) for d in devices) * ROUNDS * K
    assert ledger.tx_counts() == {
        "fl.open_task": 1,
        "fl.record_data": sum(len(work.batches[d]) for d in devices),
        "fl.record_step": steps,
        "fl.submit_update": len(devices) * ROUNDS * K,
        "fl.record_aggregate": EDGES * ROUNDS * K,
        "fl.publish_model": ROUNDS + 1,
        "interlock.anchor_subchain": EDGES * ROUNDS,
        "interlock.anchor_mainchain": EDGES * ROUNDS,
    }
    chains = [ledger.main, *ledger.subs.values()]
    assert all(receipt.success for chain in chains for _, receipt in chain.txs.values())
    assert outcome.ledger.steps_rerun == len(devices) * ROUNDS * K  # --verify-steps 1: one per update


def test_published_authenticators_verify_and_parents_are_anchored(outcome: PipelineOutcome) -> None:
    ledger, cloud = outcome.ledger.ledger, outcome.work.parties.cloud.public_key
    for round_ in range(ROUNDS + 1):
        rec = ledger.main.read(f"model/{round_}")
        message = authenticator_message(rec["model"], rec["program"], round_)
        assert rec["owner"] == cloud and is_valid(cloud, Domain.AUTHENTICATOR, message, rec["authenticator"])
        assert rec["program"] == outcome.work.settings.program_hash()
        assert sorted(p["chain"] for p in rec["parents"]) == ([] if round_ == 0 else sorted(ledger.chain_ids.values()))
        for parent in rec["parents"]:
            anchored = read_state(ledger.main.state.state, "interlock", f"by_tx/{parent['anchor'].hex()}")
            assert anchored[0] == parent["chain"]
    assert [round(a * 10_000) for a in outcome.ledger.accuracy] == [
        ledger.main.read(f"model/{r}")["metrics"]["accuracy_bp"] for r in range(ROUNDS + 1)]


def test_sealed_blobs_hide_their_plaintext_and_open_to_the_recorded_hash(outcome: PipelineOutcome) -> None:
    work, ledger = outcome.work, outcome.ledger.ledger
    device = work.plan.devices[0]
    edge = work.edge_of[device]
    chain, store, key = ledger.subs[edge], ledger.edge_stores[edge], work.parties.edges[edge]
    where = f"{stage(ROUNDS, K)}/{address_of(work.parties.devices[device].public_key).hex()}"
    records = [chain.read(f"step/{where}/{i}") for i in range(1, _steps_per_device_round(outcome, device) + 1)]
    batch = work.batches[device][0]
    data = chain.read(f"data/{work.parties.devices[device].public_key.hex()}/{batch.data_hash.hex()}")
    artefacts = [(r["blob"], r["model"], MODEL) for r in records] + [(data["ptr"], batch.data_hash, DATA)]
    for address, plain_hash, context in artefacts:
        stored = store.get(address.hex())
        plain = open_artefact(stored, plain_hash, key, context)
        assert is_sealed(stored) and sha256(plain) == plain_hash != address
        assert plain[-64:] not in stored
        with pytest.raises(VerificationFailed):
            open_artefact(stored, plain_hash, SigningKey.from_seed(bytes(32)), context)
    assert encode_dataset(batch.data)[-64:] not in store.get(data["ptr"].hex())


def test_edge_refuses_a_wrong_step_base_and_a_misreported_update(outcome: PipelineOutcome) -> None:
    run, work = outcome.ledger, outcome.work
    device = work.plan.devices[0]
    edge, pk = work.edge_of[device], work.parties.devices[device].public_key
    start = run._start[edge]  # the base of the last device round
    assert run._recompute(edge, pk, ROUNDS, K, 1, start.weights) is None
    problem = run._recompute(edge, pk, ROUNDS, K, 1, outcome.work.initial)
    assert problem is not None and "M_i" in problem
    honest = TrainRes(device, outcome.ledger_result.weights, work.samples(device))
    run._check_update(edge, ROUNDS, K, start.model, honest)
    with pytest.raises(VerificationFailed, match="samples"):
        run._check_update(edge, ROUNDS, K, start.model, TrainRes(device, honest.weights, honest.num_samples + 1))
    with pytest.raises(VerificationFailed, match="another round"):
        run._check_update(edge, ROUNDS, 1, start.model, honest)


def test_stage_clock_accounts_for_every_round(outcome: PipelineOutcome) -> None:
    clock = outcome.ledger.clock
    assert len(clock.round_s) == len(clock.round_cpu_s) == len(outcome.plain.clock.round_s) == ROUNDS
    assert all(cpu > 0 for cpu in clock.round_cpu_s)
    assert len(clock.stages) == ROUNDS + 1  # setup, then one entry per round
    for name in LEDGER_STAGES:
        assert all(s > 0 for s in clock.per_round(name)), name
    assert clock.stages[0]["train"] == 0 and clock.stages[0]["commit"] > 0
    assert clock.untimed == {"evaluate"}  # --verify-steps 1: spot checks are part of the rounds
    for round_s, stages in zip(clock.round_s, clock.stages[1:], strict=True):
        assert sum(v for k, v in stages.items() if k != "evaluate") <= round_s


def test_unsealed_run_stores_plain_blobs_under_their_hash(tmp_path: Path) -> None:
    settings = FLSettings(model="digits-mlp", dataset="digits", epochs=1, readings=256, seal=False,
                          verify_steps=0)
    out = run_pipeline(PipelineConfig(settings, edges=1, devices_per_edge=1, rounds=1), tmp_path)
    ledger = out.ledger.ledger
    rec = ledger.main.read("model/1")
    stored = ledger.cloud_store.get(rec["blob"].hex())
    assert rec["blob"] == rec["model"] == sha256(stored) and not is_sealed(stored)
    assert out.ledger.clock.untimed == {"evaluate", "spot_check"} and out.ledger.steps_rerun == 1


def test_update_only_run_records_no_steps_and_trains_the_same_model(tmp_path: Path) -> None:
    """--no-record-steps: seed 004's granularity (one recorded update per device round), same learning."""
    settings = FLSettings(model="digits-mlp", dataset="digits", epochs=1, readings=128, verify_steps=0)
    out = run_pipeline(PipelineConfig(settings, edges=1, devices_per_edge=2, rounds=1, record_steps=False), tmp_path)
    txs = out.ledger.ledger.tx_counts()
    assert txs["fl.record_step"] == 0 and txs["fl.submit_update"] == 2
    assert weights_hash(out.plain_result.weights) == out.final_model == out.ledger.ledger.main.read("model/1")["model"]
    assert out.ledger.steps_rerun == 0


def test_turns_alternate_abba_and_an_error_stops_both_arms() -> None:
    order: list[str] = []

    def arm(turns: Turns, name: str, fail_at: int | None = None) -> str:
        for r in range(3):
            turns.wait(name)
            order.append(name)
            if r == fail_at:
                raise ValueError(f"{name} broke")
            turns.done()
        return name

    turns = Turns("a", "b", 3)
    assert run_alternating({"a": lambda: arm(turns, "a"), "b": lambda: arm(turns, "b")}, turns) == {
        "a": "a", "b": "b"}
    assert order == ["a", "b", "b", "a", "a", "b"]
    order.clear()
    turns = Turns("a", "b", 3)
    with pytest.raises(ValueError, match="b broke"):  # the real error, and "a" does not wait forever
        run_alternating({"a": lambda: arm(turns, "a"), "b": lambda: arm(turns, "b", fail_at=1)}, turns)
    assert order == ["a", "b", "b"]


def test_cli_prints_the_json_contract_last(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["bench", "fl", "--quick", "--json", "--edges", "1", "--devices", "2", "--rounds", "1",
                 "--readings", "128"])
    out = capsys.readouterr().out
    assert code == 0
    r = json.loads(out.strip().splitlines()[-1])
    for key in CONTRACT:
        assert key in r, key
    assert (r["bench"], r["model"], r["dataset"], r["params"]) == ("fl", "digits-mlp", "digits", 4810)
    assert (r["edges"], r["devices"], r["rounds"], r["device_rounds"], r["seal"]) == (1, 2, 1, 1, True)
    assert r["same_model"] is True and r["quick"] is True
    assert r["overhead_ratio"] == pytest.approx(r["round_s_with_ledger"] / r["round_s_plain"], rel=1e-2)
    assert r["round_s_with_ledger"] > 0 and r["round_s_plain"] > 0
    assert r["overhead_ratio_cpu"] == pytest.approx(r["round_cpu_s_with_ledger"] / r["round_cpu_s_plain"], rel=1e-2)
    assert len(r["accuracy_per_round"]) == 2 and r["final_accuracy"] == r["accuracy_per_round"][-1]
    assert all(0 <= a <= 1 for a in [*r["accuracy_per_round"], r["centralized_accuracy"]])
    assert set(r["stages_s"]) == {*LEDGER_STAGES, bench_fl.OTHER}
    assert all(v["total"] >= v["per_round"] >= 0 for v in r["stages_s"].values())
    assert r["spot_check_s"] > 0 and r["spot_check_steps"] == 1 and r["spot_check_in_rounds"] is False
    assert r["ledger"]["txs"]["fl.submit_update"] == 2 and r["ledger"]["blobs"] > 0


@pytest.mark.parametrize("argv", [
    ["--model", "mudfl-cnn", "--dataset", "digits"],  # a 28x28 model on 8x8 data
    ["--model", "digits-mlp", "--dataset", "digits28"],
    ["--model", "no-such-model"],
    ["--partition", "bogus"],
])
def test_bad_options_exit_cleanly(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "fl", "--json", *argv]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "Traceback" not in captured.err
    assert "error" in captured.err.lower()
