"""Seed 001 as strategy wrappers in the hierarchical engine: same model as FedAvg, forged sums refused."""

from __future__ import annotations

import numpy as np
import pytest

from fedledger.errors import VerificationFailed
from fedledger.fl import robust
from fedledger.fl.attacks import protocol as A
from fedledger.fl.hierarchy import HierarchyPlan, run_hierarchy
from fedledger.fl.secagg.session import MemoryLedger
from fedledger.fl.secagg.strategy import SecureAggregation, SecureCloudSum
from fedledger.fl.strategy import FedAvg, TrainIns, TrainRes
from fedledger.fl.weights import Weights

TARGETS = {f"d{i}": float(i % 4) - 1.5 for i in range(8)}
EDGES = {"A": [f"d{i}" for i in range(4)], "B": [f"d{i}" for i in range(4, 8)]}


def _init() -> Weights:
    return [("w", np.zeros((3, 4), dtype=np.float32)), ("b", np.zeros(5, dtype=np.float32))]


def _train(ins: TrainIns) -> TrainRes:
    t = np.float32(TARGETS[ins.client])
    out = [(n, (a + np.float32(0.5) * (t - a)).astype(np.float32)) for n, a in ins.weights]
    return TrainRes(ins.client, out, 10 + int(ins.client[1:]), {})


def _flat(w: Weights) -> np.ndarray:
    return np.concatenate([a.ravel() for _, a in w]).astype(np.float64)


def test_secure_hierarchy_matches_fedavg_within_the_encoding_bound() -> None:
    """Seed 001 end to end (steps 1–6) gives FedAvg's model: secure aggregation changes no result."""
    plan = HierarchyPlan(EDGES, cloud_rounds=3)
    plain = run_hierarchy(plan, _init(), _train, device_strategy=FedAvg(), cloud_strategy=FedAvg())
    led = MemoryLedger()
    secure = run_hierarchy(plan, _init(), _train,
                           device_strategy=SecureAggregation(threshold=0.75, noise_sigma=0.2, ledger=led),
                           cloud_strategy=SecureCloudSum(ledger=led))
    assert np.max(np.abs(_flat(secure.weights) - _flat(plain.weights))) < 1e-4
    assert len(led.of("secagg.edge_sum")) == 6 and len(led.of("secagg.verdict")) == 6
    assert all(v["ok"] for v in led.of("secagg.verdict"))


def test_forged_global_sum_stops_the_round() -> None:
    """Step 6: a cloud that forges c is refused by the edges; no new global model is accepted."""
    plan = HierarchyPlan(EDGES, cloud_rounds=1)
    forge = np.zeros(17)
    forge[3] = 0.5
    with pytest.raises(VerificationFailed, match="rejected the cloud's sum"):
        run_hierarchy(plan, _init(), _train, device_strategy=SecureAggregation(),
                      cloud_strategy=SecureCloudSum(behaviour=A.forged_aggregate(forge)))


def test_krum_selection_composes_with_secure_summation() -> None:
    """A plaintext rule (Multi-Krum) selects on the masked updates; the kept ones are summed securely."""

    def poisoned(ins: TrainIns) -> TrainRes:
        res = _train(ins)
        if ins.client == "d2":
            res = TrainRes(res.client, [(n, a * np.float32(-5)) for n, a in res.weights], res.num_samples, {})
        return res

    plan = HierarchyPlan({"A": [f"d{i}" for i in range(8)]}, cloud_rounds=1)
    strat = SecureAggregation(select=lambda u: robust.multi_krum(u, 1, 6), threshold=0.6, noise_sigma=0.01)
    res = run_hierarchy(plan, _init(), poisoned, device_strategy=strat, cloud_strategy=SecureCloudSum())
    assert "d2" not in res.rounds[0].devices
    assert np.max(np.abs(_flat(res.weights))) < 2.0  # the ×−5 update did not get in
