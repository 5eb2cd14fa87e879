"""Seed 001 as strategy wrappers in the hierarchical engine.

Same model as FedAvg, forged sums refused, the DP noise clipped and accounted.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from fedledger.errors import UsageError, VerificationFailed
from fedledger.fl import robust
from fedledger.fl.attacks import protocol as A
from fedledger.fl.dp import LocalDP, PrivacyAccountant
from fedledger.fl.hierarchy import HierarchyPlan, NullRecorder, run_hierarchy
from fedledger.fl.secagg.session import MemoryLedger
from fedledger.fl.secagg.strategy import SecureAggregation, SecureCloudSum
from fedledger.fl.strategy import Aggregate, FedAvg, TrainIns, TrainRes
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


# -- DP noise as a Gaussian mechanism (LocalDP) ---------------------------------------------


class _EdgeMetrics(NullRecorder):
    """Keeps every edge aggregate's metrics, by cloud round and edge."""

    def __init__(self) -> None:
        self.metrics: dict[tuple[int, str], dict[str, Any]] = {}

    def edge_aggregate(self, round_: int, edge: str, agg: Aggregate) -> None:
        self.metrics[(round_, edge)] = dict(agg.metrics)


def _weights(vec: np.ndarray) -> Weights:
    """A flat 17-value vector as the model of :func:`_init` (float32)."""
    return [("w", vec[:12].reshape(3, 4).astype(np.float32)), ("b", vec[12:].astype(np.float32))]


def _one_round(strat: SecureAggregation, updates: dict[str, np.ndarray],
               samples: dict[str, int]) -> Aggregate:
    """Configure round 1 from the zero model and aggregate ``updates`` (flat vectors)."""
    strat.configure(1, _init(), sorted(updates))
    results = [TrainRes(c, _weights(u), samples[c], {}) for c, u in sorted(updates.items())]
    return strat.aggregate(1, results, [])


def test_dp_reports_epsilon_per_round_composed_like_an_independent_accountant() -> None:
    """Seed 001 §III, local training: DP noise. With dp set, η has std z · clip and every edge
    aggregate reports ε for one device's masked update: per round, and composed over the rounds
    so far exactly as a separate PrivacyAccountant stepped once per round (both edges aggregate
    the same round over disjoint devices, which counts once)."""
    dp = LocalDP(clip=1.0, noise_multiplier=1.1, delta=1e-5)
    strat = SecureAggregation(threshold=0.75, dp=dp)
    assert strat.template.noise_sigma == pytest.approx(1.1 * 1.0)
    rec = _EdgeMetrics()
    run_hierarchy(HierarchyPlan(EDGES, cloud_rounds=3), _init(), _train, device_strategy=strat,
                  cloud_strategy=SecureCloudSum(), recorder=rec)
    reference = PrivacyAccountant(1.1, 1.0, 1e-5)
    one_round = reference.epsilon_round()
    totals = []
    for r in (1, 2, 3):
        reference.step()
        for edge in EDGES:
            m = rec.metrics[(r, edge)]
            assert m["dp_epsilon_round"] == pytest.approx(one_round, rel=1e-12)
            assert m["dp_epsilon_total"] == pytest.approx(reference.epsilon_total(), rel=1e-12)
            assert (m["dp_delta"], m["dp_clip"], m["dp_noise_multiplier"], m["dp_sample_rate"]) == (
                1e-5, 1.0, 1.1, 1.0)
        totals.append(rec.metrics[(r, "A")]["dp_epsilon_total"])
    assert totals[0] == pytest.approx(one_round, rel=1e-12) and totals[0] < totals[1] < totals[2]
    assert dp.accountant.rounds == 3


def test_dp_clips_every_update_before_it_is_dealt() -> None:
    """Seed 001 §III, local training: DP noise. A device's update is clipped to L2 norm clip
    before masking and sharing, so a huge update (far outside the field's range) enters the sum
    scaled down: the aggregate is the sample-weighted FedAvg of the clipped updates, within the
    fixed-point bound. Without dp the same update cannot be encoded and its device is left out."""
    rng = np.random.default_rng(3)
    updates = {"d0": np.full(17, 1000.0), "d1": 0.05 * rng.standard_normal(17),
               "d2": rng.standard_normal(17)}
    samples = {"d0": 10, "d1": 20, "d2": 30}
    clip = 2.0
    agg = _one_round(SecureAggregation(dp=LocalDP(clip=clip, noise_multiplier=0.5)), updates, samples)

    sent = {c: u.astype(np.float32).astype(np.float64) for c, u in updates.items()}
    scaled = {c: u * min(1.0, clip / float(np.sqrt(np.sum(u * u)))) for c, u in sent.items()}
    total = sum(samples.values())
    expected = sum(samples[c] * scaled[c] for c in scaled) / total
    assert np.linalg.norm(scaled["d0"]) == pytest.approx(clip)
    assert np.max(np.abs(_flat(agg.weights) - expected)) <= 2.0 ** -17 + 1e-6
    assert agg.used == ("d0", "d1", "d2") and agg.metrics["rejected"] == []
    assert agg.metrics["clipped"] == sum(np.linalg.norm(u) > clip for u in sent.values()) == 2

    plain = _one_round(SecureAggregation(noise_sigma=0.5), updates, samples)
    assert "d0" not in plain.used and plain.metrics["rejected"] == ["d0"]


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"noise_sigma": 0.1, "dp": LocalDP(clip=1.0, noise_multiplier=1.0)}, "either noise_sigma or dp"),
    ({"noise_sigma": 0.0, "dp": LocalDP(clip=1.0, noise_multiplier=1.0)}, "either noise_sigma or dp"),
    ({"dp": 1.0}, "LocalDP"),
    ({"dp": LocalDP(clip=5.0, noise_multiplier=1.0)}, r"clip 5 exceeds .*±4"),
    ({"dp": LocalDP(clip=1.0, noise_multiplier=1.0), "weight_budget": 1 << 14}, r"clip 1 exceeds"),
    ({"dp": LocalDP(clip=1.0, noise_multiplier=2000.0)}, "does not fit the field's range"),
])
def test_dp_arguments_that_conflict_or_cannot_be_encoded_are_refused(kwargs: dict[str, Any],
                                                                     match: str) -> None:
    """Seed 001 §III, local training: DP noise. The noise comes from noise_sigma or from dp,
    never both, and a clip (or clip plus noise) the fixed-point field cannot hold is refused
    up front rather than dropping devices during the round."""
    with pytest.raises(UsageError, match=match):
        SecureAggregation(**kwargs)


@pytest.mark.parametrize("kwargs", [{}, {"noise_sigma": 0.2}])
def test_no_epsilon_is_claimed_without_dp(kwargs: dict[str, Any]) -> None:
    """Seed 001 §III, local training: DP noise. Noise without a clip bounds nothing, so an
    aggregate made with noise_sigma alone (or no noise) reports no ε and no DP metrics at all."""
    updates = {f"d{i}": np.full(17, 0.1 * i) for i in range(3)}
    agg = _one_round(SecureAggregation(**kwargs), updates, {c: 10 for c in updates})
    assert not [k for k in agg.metrics if k.startswith("dp_") or k == "clipped"]
