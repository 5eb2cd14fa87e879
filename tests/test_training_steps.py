"""Training as a chain of re-runnable steps (seed 000 §V-B).

M_(i+1) = T(M_i, M_O, d_(i+1)); tx = H(M_(i+1) ‖ M_O ‖ d_(i+1) ‖ i+1). A verifier that
holds M_i, d_(i+1) and the program re-runs one step and must get M_(i+1) bit for bit;
a forged step (other data, another seed, altered weights) must not reproduce.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from fedledger.contracts.fl import step_digest
from fedledger.errors import DecodeError
from fedledger.fl.data import Dataset, dataset_hash, decode_dataset, encode_dataset, subset
from fedledger.fl.datasets import load_dataset
from fedledger.fl.models import init_weights
from fedledger.fl.program import training_program
from fedledger.fl.steps import Batch, Step, recompute_step, step_seed, train_steps
from fedledger.fl.weights import weights_hash

DEVICE = bytes(range(32))
PROGRAM = training_program("digits-mlp", 2, 16, 0.05, 0.9)


@pytest.fixture(scope="module")
def batches() -> list[Batch]:
    train, _test, _info = load_dataset("digits")
    out = []
    for start in (0, 24):
        data = subset(train, np.arange(start, start + 24))
        out.append(Batch(dataset_hash(data), data))
    return out


def _record(s: Step, round_: int = 1) -> dict[str, Any]:
    """The on-chain ``fl.record_step`` record of a step."""
    return {"index": s.index, "prev": s.prev, "model": s.model, "global": s.global_model, "data": s.data,
            "device": DEVICE, "round": round_, "sub_round": 1}


def test_steps_cover_every_epoch_and_batch_and_chain_their_hashes(batches: list[Batch]) -> None:
    start = init_weights("digits-mlp", 0)
    steps = train_steps(PROGRAM, start, batches, device=DEVICE, round_=1)
    assert [s.index for s in steps] == [1, 2, 3, 4]  # 2 epochs × 2 batches
    assert [s.data for s in steps] == [b.data_hash for b in batches] * 2
    assert steps[0].prev == weights_hash(start) == steps[0].global_model
    for before, after in zip(steps, steps[1:], strict=False):
        assert after.prev == before.model
    assert steps[2].digest == step_digest(steps[2].model, steps[2].global_model, steps[2].data, 3)
    again = train_steps(PROGRAM, start, batches, device=DEVICE, round_=1)
    assert [s.model for s in again] == [s.model for s in steps]  # bit-for-bit deterministic


def test_every_recorded_step_re_runs_to_its_recorded_model(batches: list[Batch]) -> None:
    start = init_weights("digits-mlp", 0)
    steps = train_steps(PROGRAM, start, batches, device=DEVICE, round_=1)
    prevs = [start] + [s.weights for s in steps[:-1]]
    for step, prev in zip(steps, prevs, strict=True):
        batch = batches[(step.index - 1) % len(batches)].data
        assert recompute_step(PROGRAM, _record(step), prev, batch) is None


def test_a_forged_step_does_not_re_run(batches: list[Batch]) -> None:
    """A device that trained on other data, or with another seed, or edited M_(i+1), is caught."""
    start = init_weights("digits-mlp", 0)
    steps = train_steps(PROGRAM, start, batches, device=DEVICE, round_=1)
    honest = _record(steps[0])
    other_data = batches[1].data  # claims d_1 but trained on d_2
    assert "re-running step 1" in (recompute_step(PROGRAM, honest, start, other_data) or "")
    wrong_round = _record(steps[0], round_=2)  # the seed depends on the round
    assert step_seed(DEVICE, 1, 1, 1) != step_seed(DEVICE, 2, 1, 1)
    assert "re-running step 1" in (recompute_step(PROGRAM, wrong_round, start, batches[0].data) or "")
    edited = {**honest, "prev": weights_hash(steps[1].weights)}
    assert "M_i does not hash" in (recompute_step(PROGRAM, edited, start, batches[0].data) or "")


def test_data_batches_round_trip_and_reject_garbage(batches: list[Batch]) -> None:
    raw = encode_dataset(batches[0].data)
    back = decode_dataset(raw)
    assert isinstance(back, Dataset) and dataset_hash(back) == batches[0].data_hash
    for bad in (raw[:-1], raw + b"\x00", b"FLW1" + raw[4:], b""):
        with pytest.raises(DecodeError):
            decode_dataset(bad)
