"""Local training as a chain of verifiable steps (seed 000 §V-B).

A device's local training for one device round is the sequence
M_(i+1) = T(M_i, M_O, d_(i+1)), i = 0 … ℓ-1, with M_0 = M_O (the model the round
starts from). Step i+1 trains on one recorded data batch d_(i+1) for one pass
with a fresh SGD optimiser and a seed derived from (device, round, sub-round,
i+1); E local epochs visit the device's batches E times in order. Because each
step starts from nothing but (M_i, d_(i+1), the program, the seed), anyone
holding those can re-run exactly that step and compare hashes: that is what the
edge does before it accepts an update and what ``fedledger audit training``
does afterwards for randomly sampled steps.

This module imports torch only inside the functions that train.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from fedledger.contracts.fl import step_digest
from fedledger.crypto.hashing import tagged_hash
from fedledger.fl.data import Dataset
from fedledger.fl.weights import Weights, weights_hash


@dataclass(frozen=True)
class Batch:
    """A recorded data batch: its hash (signed on chain) and the readings."""

    data_hash: bytes
    data: Dataset


@dataclass(frozen=True)
class Step:
    """One intermediate model M_(i+1) and what it was computed from."""

    index: int  # i+1
    prev: bytes  # H(M_i)
    model: bytes  # H(M_(i+1))
    global_model: bytes  # H(M_O)
    data: bytes  # H(d_(i+1))
    weights: Weights

    @property
    def digest(self) -> bytes:
        return step_digest(self.model, self.global_model, self.data, self.index)


def step_seed(device: bytes, round_: int, sub_round: int, index: int) -> int:
    """The shuffling seed of one step: fixed by who trains, when, and which step."""
    msg = device + round_.to_bytes(8, "big") + sub_round.to_bytes(8, "big") + index.to_bytes(8, "big")
    return int.from_bytes(tagged_hash("fedledger/step-seed", msg)[:4], "big")


def step_config(program: dict[str, Any]) -> Any:
    """The one-pass ``TrainConfig`` a step of ``program`` runs with."""
    from fedledger.fl.train import TrainConfig

    opt = program["optimizer"]
    return TrainConfig(epochs=1, batch_size=int(program["local"]["batch_size"]), lr=float(opt["lr"]),
                       momentum=float(opt["momentum"]))


def run_step(program: dict[str, Any], prev: Weights, batch: Dataset, seed: int) -> Weights:
    """T(M_i, M_O, d_(i+1)): one pass of the program's SGD over one batch."""
    from fedledger.fl.train import train_local

    weights, _loss = train_local(str(program["model"]["name"]), prev, batch, step_config(program), seed)
    return weights


def train_steps(program: dict[str, Any], start: Weights, batches: Sequence[Batch], *, device: bytes,
                round_: int, sub_round: int = 1) -> list[Step]:
    """All steps of one device round: the program's local epochs, each a pass over ``batches`` in order."""
    if not batches:
        raise ValueError("a device round needs at least one data batch")
    global_model = weights_hash(start)
    prev_w, prev_h = start, global_model
    steps: list[Step] = []
    for _ in range(int(program["local"]["epochs"])):
        for batch in batches:
            index = len(steps) + 1
            w = run_step(program, prev_w, batch.data, step_seed(device, round_, sub_round, index))
            h = weights_hash(w)
            steps.append(Step(index, prev_h, h, global_model, batch.data_hash, w))
            prev_w, prev_h = w, h
    return steps


def recompute_step(program: dict[str, Any], record: dict[str, Any], prev: Weights, batch: Dataset) -> str | None:
    """Re-run one recorded step; ``None`` if it reproduces, else why not."""
    if weights_hash(prev) != record["prev"]:
        return "M_i does not hash to the step's recorded M_i"
    seed = step_seed(record["device"], record["round"], record.get("sub_round", 1), record["index"])
    got = weights_hash(run_step(program, prev, batch, seed))
    if got != record["model"]:
        return (f"re-running step {record['index']} gives M_(i+1) {got.hex()[:16]}…, "
                f"not the recorded {record['model'].hex()[:16]}…")
    return None
