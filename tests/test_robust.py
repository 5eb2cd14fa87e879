"""Robust aggregation: the kernels on synthetic updates, their breakdown points, and the strategy wrappers.

Kernels are checked against what their papers claim: seed 001's "Verification by Fog"
(keep the top n updates by mean and standard deviation), Krum and Multi-Krum
(Blanchard et al., NeurIPS 2017: tolerate f Byzantine rows when n > 2f + 2), the
coordinate-wise median and trimmed mean (Yin et al., ICML 2018) and reputation
weighting (seed 002 §5.2.2 step 16). Each breakdown test shows the bound beyond
which the rule no longer neutralises the attack.
"""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fedledger.errors import UsageError, VerificationFailed
from fedledger.fl.hierarchy import HierarchyPlan, run_hierarchy
from fedledger.fl.robust import (
    CoordinateMedian,
    Krum,
    MultiKrum,
    ReputationWeighted,
    StatisticalFilter,
    TrimmedMean,
    coordinate_median,
    flatten,
    krum,
    krum_scores,
    multi_krum,
    reputation_weights,
    statistical_scores,
    statistical_top_n,
    trimmed_mean,
    unflatten,
    weighted_mean,
)
from fedledger.fl.strategy import FedAvg, NotEnoughResults, TrainIns, TrainRes
from fedledger.fl.weights import Weights

D = 50
SRC = Path(__file__).resolve().parents[1] / "src"


def honest_rows(n: int, seed: int = 0, d: int = D) -> np.ndarray:
    """``n`` honest updates: a common direction plus small per-client noise."""
    rng = np.random.default_rng(seed)
    return np.ones(d) * 0.1 + rng.normal(0.0, 0.02, size=(n, d))


def model(values: list[float]) -> Weights:
    return [("w", np.asarray(values[:2], dtype=np.float32).reshape(2)), ("b", np.asarray(values[2:], dtype=np.float32))]


BASE = model([0.0, 0.0, 0.0])


def res(client: str, values: list[float], n: int = 10) -> TrainRes:
    return TrainRes(client, model(values), n, {"loss": 1.0})


# -- flatten / unflatten -------------------------------------------------------------------
def test_flatten_unflatten_round_trip_keeps_names_shapes_and_float32() -> None:
    w = [("a", np.arange(6, dtype=np.float32).reshape(2, 3)), ("b", np.array(1.5, dtype=np.float32))]
    vec = flatten(w)
    assert vec.dtype == np.float64 and vec.tolist() == [0, 1, 2, 3, 4, 5, 1.5]
    back = unflatten(vec, w)
    assert [n for n, _ in back] == ["a", "b"]
    assert all(a.dtype == np.float32 and a.shape == b.shape and np.array_equal(a, b)
               for (_, a), (_, b) in zip(back, w, strict=True))
    with pytest.raises(UsageError, match="7 values"):
        unflatten(vec[:-1], w)


def test_robust_rules_and_attacks_load_without_torch() -> None:
    """Auditors and edge validators import the robust rules (and the attack definitions) without torch."""
    code = (
        "import sys\n"
        "import fedledger.fl.robust, fedledger.fl.attacks\n"
        "bad = [m for m in ('torch', 'sklearn') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env={"PYTHONPATH": str(SRC)})


# -- seed 001: statistical top n -----------------------------------------------------------
def test_statistical_score_is_the_mean_absolute_z_score() -> None:
    U = np.array([[0.0, 1.0], [2.0, 1.0], [4.0, 1.0]])
    # column 0: mean 2, std sqrt(8/3); column 1 is constant and contributes 0
    z = 2.0 / np.sqrt(8.0 / 3.0)
    np.testing.assert_allclose(statistical_scores(U), [z / 2, 0.0, z / 2])


def test_statistical_top_n_drops_a_scaled_update() -> None:
    """Seed 001, "Verification by Fog": a boosted (x10) update is not among the top n."""
    U = honest_rows(10)
    U[3] *= 10.0
    kept = statistical_top_n(U, 9)
    assert 3 not in kept
    assert kept.tolist() == sorted(kept.tolist()) and kept.dtype == np.int64


def test_statistical_top_n_drops_sign_flipped_and_noise_updates() -> None:
    U = honest_rows(10)
    U[0] = -4.0 * U[0]
    U[7] = np.random.default_rng(1).normal(0, 14.0, D)
    assert statistical_top_n(U, 8).tolist() == [1, 2, 3, 4, 5, 6, 8, 9]


def test_statistical_top_n_breaks_ties_towards_the_lower_index() -> None:
    U = np.zeros((4, 3))
    assert statistical_top_n(U, 2).tolist() == [0, 1]


@pytest.mark.parametrize("n", [0, 5, -1])
def test_statistical_top_n_rejects_a_bad_n(n: int) -> None:
    with pytest.raises(UsageError):
        statistical_top_n(np.zeros((4, 3)), n)


def test_kernels_reject_non_finite_or_empty_updates() -> None:
    with pytest.raises(UsageError, match="NaN"):
        coordinate_median(np.array([[np.nan, 1.0]]))
    with pytest.raises(UsageError, match="2-D"):
        trimmed_mean(np.zeros(3), 0.1)


# -- Krum and Multi-Krum (Blanchard et al. 2017) -------------------------------------------
def test_krum_score_is_the_sum_over_the_n_minus_f_minus_2_nearest() -> None:
    U = np.array([[0.0], [1.0], [3.0], [7.0], [15.0]])  # n = 5, f = 1: the 2 nearest
    assert krum_scores(U, 1).tolist() == [1 + 9, 1 + 4, 4 + 9, 16 + 36, 64 + 144]
    assert krum(U, 1) == 1


@pytest.mark.parametrize("spread", ["far", "colluding"])
def test_krum_picks_an_honest_row_when_f_attackers_send_far_away_vectors(spread: str) -> None:
    n, f = 11, 4  # n > 2f + 2
    U = honest_rows(n)
    rng = np.random.default_rng(2)
    for i in range(f):
        U[i] = 100.0 + (rng.normal(0, 1, D) if spread == "far" else 0.0)
    assert krum(U, f) >= f


def test_multi_krum_excludes_every_attacker() -> None:
    n, f = 12, 3
    U = honest_rows(n)
    U[[2, 5, 9]] = -4.0 * U[[2, 5, 9]]
    assert multi_krum(U, f, n - f).tolist() == [i for i in range(n) if i not in (2, 5, 9)]


@pytest.mark.parametrize(("n", "f"), [(8, 3), (4, 1), (2, 0)])
def test_krum_needs_more_than_2f_plus_2_rows(n: int, f: int) -> None:
    with pytest.raises(UsageError, match=r"n > 2f \+ 2"):
        krum_scores(np.zeros((n, 3)), f)


def test_krum_breaks_down_when_half_the_clients_collude() -> None:
    """Breakdown: with f >= n/2 - 1 colluding attackers Krum is not neutralised.

    The defence is provisioned for f = 3 (valid: 10 > 8), but 5 of the 10 clients send
    the same vector: each attacker's nearest neighbours are its 4 accomplices at distance
    0, so an attacker has the lowest score and Krum returns it.
    """
    n, attackers = 10, 5
    U = honest_rows(n)
    U[:attackers] = -1.0
    assert krum(U, 3) < attackers
    assert set(multi_krum(U, 3, n - 3).tolist()) >= set(range(attackers))


# -- median and trimmed mean (Yin et al. 2018) ---------------------------------------------
@pytest.mark.parametrize("sign", [1.0, -1.0, 0.0])
def test_median_and_trimmed_mean_stay_bounded_under_30_percent_huge_outliers(sign: float) -> None:
    """With 30 % of rows at +-1e12 the result stays inside the honest rows' range, coordinate-wise."""
    n, bad = 20, 6
    U = honest_rows(n)
    signs = np.where(np.arange(bad) % 2 == 0, 1.0, -1.0) if sign == 0.0 else np.full(bad, sign)
    U[:bad] = signs[:, None] * 1e12
    lo, hi = U[bad:].min(axis=0), U[bad:].max(axis=0)
    for out in (coordinate_median(U), trimmed_mean(U, 0.3)):
        assert np.all(out >= lo) and np.all(out <= hi)


def test_trimmed_mean_drops_floor_beta_n_from_each_end() -> None:
    U = np.array([[1.0], [2.0], [3.0], [4.0], [100.0]])
    assert trimmed_mean(U, 0.2).tolist() == [3.0]  # floor(0.2 * 5) = 1 dropped at each end
    assert trimmed_mean(U, 0.0).tolist() == [22.0]
    with pytest.raises(UsageError, match="beta"):
        trimmed_mean(U, 0.5)


def test_median_and_trimmed_mean_break_down_beyond_their_bounds() -> None:
    """Breakdown: the median fails once attackers are half the rows; the trimmed mean once
    attackers outnumber the floor(beta n) values it trims at each end."""
    n = 10
    U = honest_rows(n)
    U[:5] = 1e12  # 50 %: the median is the mean of an honest and an attacker value
    assert np.all(coordinate_median(U) > 1e11)
    V = honest_rows(n)
    V[:3] = 1e12  # 3 attackers, beta = 0.2 trims 2 per end: one attacker value survives
    assert np.all(trimmed_mean(V, 0.2) > 1e11)
    assert np.all(trimmed_mean(V, 0.3) < 1.0)  # trims 3: neutralised


# -- reputation weights (seed 002 §5.2.2 step 16) ------------------------------------------
def test_reputation_weights_zero_out_untrusted_clients_and_fall_back_to_uniform() -> None:
    w = reputation_weights({"a": 3.0, "b": 0.0, "c": -5.0, "d": 1.0}, ["a", "b", "c", "d", "e"])
    assert w.tolist() == [0.75, 0.0, 0.0, 0.25, 0.0]
    assert reputation_weights({"a": 0.0}, ["a", "b"]).tolist() == [0.5, 0.5]
    assert reputation_weights({"a": 1.0, "b": 1.0}, ["a", "b"], [30, 10]).tolist() == [0.75, 0.25]
    with pytest.raises(UsageError, match="finite"):
        reputation_weights({"a": float("nan")}, ["a"])


def test_weighted_mean() -> None:
    U = np.array([[1.0, 2.0], [3.0, 6.0]])
    assert weighted_mean(U, np.array([0.25, 0.75])).tolist() == [2.5, 5.0]


# -- wrappers ------------------------------------------------------------------------------
def test_aggregate_without_configure_is_a_clear_usage_error() -> None:
    with pytest.raises(UsageError, match="did not configure"):
        StatisticalFilter(f=1).aggregate(3, [res("a", [1, 1, 1])], [])


@pytest.mark.parametrize("wrapper", [Krum(f=2), MultiKrum(f=2)])
def test_krum_wrappers_reject_clearly_when_n_is_at_most_2f_plus_2(wrapper: Krum) -> None:
    clients = [f"c{i}" for i in range(6)]
    with pytest.raises(UsageError, match="at least 7 clients, 6 selected"):
        wrapper.configure(1, BASE, clients)
    wrapper.configure(1, BASE, [*clients, "c6"])
    results = [res(c, [1, 1, 1]) for c in clients]  # one dropped out
    with pytest.raises(NotEnoughResults, match="at least 7 results, got 6"):
        wrapper.aggregate(1, results, [])


def test_statistical_filter_rejects_the_boosted_update_and_fedavgs_the_rest() -> None:
    strategy = StatisticalFilter(f=1)
    strategy.configure(1, BASE, ["a", "b", "c", "d"])
    results = [res("d", [0.1, 0.2, 0.1], 30), res("a", [0.1, 0.1, 0.1]), res("b", [0.12, 0.1, 0.11]),
               res("c", [5.0, 5.0, 5.0])]
    agg = strategy.aggregate(1, results, [])
    assert agg.metrics["rejected"] == ["c"] and agg.metrics["kept"] == ["a", "b", "d"]
    assert agg.used == ("a", "b", "d") and agg.num_samples == 50
    expected = FedAvg().aggregate(1, [results[1], results[2], results[0]], [])
    assert all(np.array_equal(x, y) for (_, x), (_, y) in zip(agg.weights, expected.weights, strict=True))
    assert agg.metrics["rule"] == "statistical-top-n" and set(agg.metrics["scores"]) == {"a", "b", "c", "d"}


def test_wrappers_are_independent_of_arrival_order() -> None:
    results = [res(c, [0.1 * i, -0.05 * i, 0.2]) for i, c in enumerate("abcdefgh")]
    for make in (lambda: MultiKrum(f=2), CoordinateMedian, lambda: TrimmedMean(beta=0.2),
                 lambda: ReputationWeighted(reputation={c: i for i, c in enumerate("abcdefgh")})):
        outs = []
        for seed in range(3):
            shuffled = list(results)
            random.Random(seed).shuffle(shuffled)
            s = make()
            s.configure(2, BASE, list("abcdefgh"))
            outs.append(s.aggregate(2, shuffled, []))
        assert all(o.used == outs[0].used for o in outs)
        assert all(np.array_equal(flatten(o.weights), flatten(outs[0].weights)) for o in outs)


def test_updates_are_measured_from_the_configured_model() -> None:
    base = model([1.0, 2.0, 3.0])
    s = CoordinateMedian()
    s.configure(4, base, ["a", "b", "c"])
    agg = s.aggregate(4, [res("a", [1.0, 2.0, 3.0]), res("b", [2.0, 2.0, 3.0]), res("c", [9.0, 9.0, 9.0])], [])
    assert flatten(agg.weights).tolist() == [2.0, 2.0, 3.0]
    assert agg.used == ("a", "b", "c") and agg.num_samples == 30 and agg.metrics["rejected"] == []


def test_wrappers_refuse_duplicates_and_foreign_layouts() -> None:
    s = TrimmedMean(beta=0.1)
    s.configure(1, BASE, ["a", "b"])
    with pytest.raises(VerificationFailed, match="more than one result from 'a'"):
        s.aggregate(1, [res("a", [1, 1, 1]), res("a", [1, 1, 1])], [])
    foreign = TrainRes("b", [("w", np.zeros(3, dtype=np.float32))], 5)
    with pytest.raises(VerificationFailed, match="'b'"):
        s.aggregate(1, [res("a", [1, 1, 1]), foreign], [])


def test_reputation_weighted_ignores_untrusted_clients_and_reports_the_fallback() -> None:
    results = [res("a", [1.0, 1.0, 1.0]), res("b", [3.0, 3.0, 3.0]), res("evil", [-100.0, -100.0, -100.0])]
    s = ReputationWeighted(reputation=lambda r: {"a": 5.0, "b": 5.0, "evil": 0.0})
    s.configure(1, BASE, ["a", "b", "evil"])
    agg = s.aggregate(1, results, [])
    assert flatten(agg.weights).tolist() == [2.0, 2.0, 2.0]
    assert agg.metrics["rejected"] == ["evil"] and agg.metrics["reputation_fallback"] is False
    s = ReputationWeighted(reputation={})
    s.configure(1, BASE, ["a", "b", "evil"])
    agg = s.aggregate(1, results, [])
    assert agg.metrics["reputation_fallback"] is True and agg.metrics["rejected"] == []
    np.testing.assert_allclose(flatten(agg.weights), flatten(FedAvg().aggregate(1, results, []).weights), rtol=1e-6)


def test_robust_rules_run_at_the_edges_of_the_hierarchy() -> None:
    """Two edges of 5 devices, one attacker each pushing the model to 1000: Multi-Krum at the edges
    keeps the global model where the honest devices take it (seed 001: selection at the fog)."""
    plan = HierarchyPlan({"e1": [f"d1{i}" for i in range(5)], "e2": [f"d2{i}" for i in range(5)]}, cloud_rounds=3)
    attackers = {"d10", "d20"}

    def train(ins: TrainIns) -> TrainRes:
        target = 1000.0 if ins.client in attackers else 1.0
        w = [(n, (a + 0.5 * (target - a)).astype(np.float32)) for n, a in ins.weights]
        return TrainRes(ins.client, w, 10)

    initial = [("x", np.zeros(4, dtype=np.float32))]
    out = run_hierarchy(plan, initial, train, device_strategy=MultiKrum(f=1), cloud_strategy=FedAvg())
    assert np.allclose(out.weights[0][1], 0.875)  # 1 - 0.5**3: the honest devices alone
    assert all(not attackers & set(r.devices) for r in out.rounds)
    plain = run_hierarchy(plan, initial, train, device_strategy=FedAvg(), cloud_strategy=FedAvg())
    assert plain.weights[0][1][0] > 100
