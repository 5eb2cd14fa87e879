"""Differential privacy: clipping, noise, the dp-accounting wrapper, DPFedAvg, LocalDP, the CLI."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import dp_accounting
import numpy as np
import pytest
from dp_accounting.pld import PLDAccountant
from dp_accounting.rdp import RdpAccountant

from fedledger.cli.main import main
from fedledger.errors import UsageError
from fedledger.fl.dp import (
    DPFedAvg,
    LocalDP,
    PrivacyAccountant,
    central_noise,
    clip_by_l2,
    gaussian_noise,
    local_gaussian_sigma,
)
from fedledger.fl.strategy import FedAvg, TrainRes
from fedledger.fl.weights import Weights

DELTA = 1e-5


def _model(size: int, value: float = 0.0) -> Weights:
    """A two-tensor model with ``size`` parameters in total (``size`` even)."""
    half = size // 2
    return [
        ("w", np.full((half // 2, 2), value, dtype=np.float32)),
        ("b", np.full(half, value, dtype=np.float32)),
    ]


def _vec(w: Weights) -> np.ndarray:
    return np.concatenate([a.astype(np.float64).ravel() for _, a in w])


def _shifted(w: Weights, update: np.ndarray) -> Weights:
    """``w`` plus the flat ``update``, cut back into ``w``'s tensors."""
    out: Weights = []
    start = 0
    for name, a in w:
        part = update[start : start + a.size].reshape(a.shape)
        out.append((name, (a.astype(np.float64) + part).astype(np.float32)))
        start += a.size
    return out


def _round(strategy: DPFedAvg, round_: int, base: Weights, updates: dict[str, np.ndarray],
           samples: int = 10) -> tuple[np.ndarray, dict[str, Any]]:
    """Configure and aggregate one round; return (aggregate - base) as a vector, and the metrics."""
    ins = strategy.configure(round_, base, sorted(updates))
    results = [TrainRes(i.client, _shifted(base, updates[i.client]), samples) for i in ins]
    agg = strategy.aggregate(round_, results, [])
    return _vec(agg.weights) - _vec(base), agg.metrics


# -- clipping and noise --------------------------------------------------------------------
def test_clipping_bounds_the_norm_over_all_layers_and_keeps_the_direction() -> None:
    vec = np.arange(1.0, 13.0).reshape(3, 4)
    clipped, norm = clip_by_l2(vec, 2.0)
    assert norm == pytest.approx(float(np.sqrt((np.arange(1.0, 13.0) ** 2).sum())))
    assert clipped.shape == (3, 4) and clipped.dtype == np.float64
    assert float(np.linalg.norm(clipped)) == pytest.approx(2.0, rel=1e-12)
    np.testing.assert_allclose(clipped * (norm / 2.0), vec, rtol=1e-12)


def test_clipping_leaves_small_updates_untouched() -> None:
    vec = np.array([0.3, -0.4], dtype=np.float32)
    clipped, norm = clip_by_l2(vec, 1.0)
    assert norm == pytest.approx(0.5)
    np.testing.assert_array_equal(clipped, vec.astype(np.float64))


@pytest.mark.parametrize("clip", [0.0, -1.0, float("nan"), float("inf"), True])
def test_clipping_rejects_a_bad_bound(clip: float) -> None:
    with pytest.raises(UsageError):
        clip_by_l2(np.ones(3), clip)


def test_clipping_rejects_non_finite_updates() -> None:
    with pytest.raises(UsageError, match="NaN"):
        clip_by_l2(np.array([1.0, np.nan]), 1.0)


def test_gaussian_noise_has_the_requested_scale() -> None:
    noise = gaussian_noise((200, 100), 3.0, np.random.default_rng(1))
    assert noise.shape == (200, 100) and noise.dtype == np.float64
    assert float(noise.std()) == pytest.approx(3.0, rel=0.03)
    assert not np.any(gaussian_noise(5, 0.0, np.random.default_rng(1)))
    with pytest.raises(UsageError):
        gaussian_noise(5, -1.0, np.random.default_rng(1))


# -- accountant ----------------------------------------------------------------------------
def _eps(z: float, rounds: int, q: float = 1.0, kind: str = "rdp") -> float:
    acct = PrivacyAccountant(z, q, DELTA, kind)
    acct.step(rounds)
    return acct.epsilon_total()


def test_epsilon_grows_with_rounds_and_shrinks_with_more_noise() -> None:
    assert _eps(1.0, 1) < _eps(1.0, 10) < _eps(1.0, 100)
    assert _eps(0.8, 10) > _eps(1.5, 10) > _eps(4.0, 10)


def test_total_after_one_round_is_the_round_epsilon_and_zero_before() -> None:
    for kind in ("rdp", "pld"):
        acct = PrivacyAccountant(1.2, 0.2, DELTA, kind)
        assert acct.rounds == 0 and acct.epsilon_total() == 0.0
        acct.step()
        assert acct.rounds == 1
        assert acct.epsilon_total() == pytest.approx(acct.epsilon_round(), rel=1e-12)
        acct.step(4)
        assert acct.rounds == 5 and acct.epsilon_total() > acct.epsilon_round()


def test_sampling_amplifies_privacy() -> None:
    for kind in ("rdp", "pld"):
        assert _eps(1.0, 20, 0.1, kind) < _eps(1.0, 20, 1.0, kind)


def test_rdp_matches_a_reference_built_directly_with_dp_accounting() -> None:
    z, q, rounds = 1.1, 0.05, 300
    ref = RdpAccountant()  # the library's defaults: add/remove-one adjacency
    ref.compose(dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(z)), rounds))
    expected = ref.get_epsilon(DELTA)
    assert 0.5 < expected < 10  # a meaningful value, not a degenerate one
    assert _eps(z, rounds, q) == pytest.approx(expected, rel=1e-12)


def test_pld_matches_a_reference_built_directly_with_dp_accounting() -> None:
    z, rounds = 2.0, 10
    ref = PLDAccountant(value_discretization_interval=1e-3)
    ref.compose(dp_accounting.SelfComposedDpEvent(dp_accounting.GaussianDpEvent(z), rounds))
    assert _eps(z, rounds, 1.0, "pld") == pytest.approx(ref.get_epsilon(DELTA), rel=1e-9)
    # Unsampled Gaussian: RDP is a looser bound than PLD, but close.
    assert _eps(z, rounds, 1.0, "pld") <= _eps(z, rounds, 1.0, "rdp") < 1.2 * _eps(z, rounds, 1.0, "pld")


def test_rounds_at_different_rates_compose() -> None:
    acct = PrivacyAccountant(1.0, 1.0, DELTA)
    acct.step(3, sample_rate=0.1)
    acct.step(2)
    ref = RdpAccountant()
    ref.compose(dp_accounting.ComposedDpEvent([
        dp_accounting.SelfComposedDpEvent(dp_accounting.PoissonSampledDpEvent(
            0.1, dp_accounting.GaussianDpEvent(1.0)), 3),
        dp_accounting.SelfComposedDpEvent(dp_accounting.GaussianDpEvent(1.0), 2),
    ]))
    assert acct.rounds == 5
    assert acct.epsilon_total() == pytest.approx(ref.get_epsilon(DELTA), rel=1e-12)


@pytest.mark.parametrize("args", [
    (0.0, 1.0, DELTA, "rdp"), (-1.0, 1.0, DELTA, "rdp"), (float("nan"), 1.0, DELTA, "rdp"),
    (1.0, 0.0, DELTA, "rdp"), (1.0, 1.5, DELTA, "rdp"),
    (1.0, 1.0, 0.0, "rdp"), (1.0, 1.0, 1.0, "rdp"), (1.0, 1.0, DELTA, "moments"),
])
def test_accountant_rejects_bad_parameters(args: tuple[float, float, float, str]) -> None:
    with pytest.raises(UsageError):
        PrivacyAccountant(*args)


def test_step_rejects_bad_rounds() -> None:
    acct = PrivacyAccountant(1.0)
    for bad in (0, -1, 1.5, True):
        with pytest.raises(UsageError):
            acct.step(bad)  # type: ignore[arg-type]
    with pytest.raises(UsageError):
        acct.step(1, sample_rate=0.0)


# -- DPFedAvg ------------------------------------------------------------------------------
CLIENTS = ("a", "b", "c", "d")


def _dp(seed: int = 7, z: float = 1.0, clip: float = 2.0, inner: FedAvg | None = None) -> DPFedAvg:
    return DPFedAvg(inner or FedAvg(), clip, z, DELTA, seed)


def test_noise_std_of_the_aggregate_is_z_clip_over_n() -> None:
    z, clip, n = 1.5, 2.0, len(CLIENTS)
    base = _model(40_000, 0.25)
    zero = {c: np.zeros(40_000) for c in CLIENTS}
    noise, _ = _round(_dp(z=z, clip=clip), 1, base, zero)
    expected = z * clip / n
    # 40 000 draws: the sample std is within 2 % of sigma with overwhelming probability.
    assert float(noise.std()) == pytest.approx(expected, rel=0.02)
    assert abs(float(noise.mean())) < 5 * expected / np.sqrt(noise.size)


def test_a_huge_update_moves_the_aggregate_by_at_most_clip_over_n() -> None:
    clip, size = 2.0, 1_000
    rng = np.random.default_rng(3)
    honest = {c: rng.normal(0.0, 0.01, size) for c in CLIENTS}  # norms ~0.3 < clip
    honest["d"] = np.zeros(size)  # zero-out neighbour: d contributes nothing
    attacked = dict(honest, d=np.full(size, 1e6))
    base = _model(size)
    clean, m_clean = _round(_dp(clip=clip), 1, base, honest)
    dirty, m_dirty = _round(_dp(clip=clip), 1, base, attacked)  # same seed, round, clients: same noise
    moved = float(np.linalg.norm(dirty - clean))
    assert moved <= clip / len(CLIENTS) * (1 + 1e-5)
    assert moved == pytest.approx(clip / len(CLIENTS), rel=1e-5)  # bounded, not cancelled
    assert (m_clean["clipped"], m_dirty["clipped"]) == (0, 1)


def test_updates_are_averaged_uniformly_whatever_the_sample_counts() -> None:
    base = _model(4)
    strategy = _dp(z=1e-9, clip=100.0)  # noise negligible
    ins = strategy.configure(1, base, ["a", "b"])
    results = [TrainRes("a", _shifted(base, np.full(4, 1.0)), 1),
               TrainRes("b", _shifted(base, np.full(4, 3.0)), 1000)]
    assert [i.client for i in ins] == ["a", "b"]
    agg = strategy.aggregate(1, results, [])
    np.testing.assert_allclose(_vec(agg.weights), np.full(4, 2.0), atol=1e-6)
    assert agg.num_samples == 1001  # the true total goes up the hierarchy


def test_metrics_report_the_privacy_budget() -> None:
    strategy = _dp()
    base = _model(8)
    zero = {c: np.zeros(8) for c in CLIENTS}
    _, m1 = _round(strategy, 1, base, zero)
    for key in ("dp_epsilon_round", "dp_epsilon_total", "dp_delta", "dp_clip",
                "dp_noise_multiplier", "clipped", "results", "failures"):
        assert key in m1, key
    assert (m1["dp_delta"], m1["dp_clip"], m1["dp_noise_multiplier"]) == (DELTA, 2.0, 1.0)
    assert m1["dp_sample_rate"] == 1.0
    assert m1["dp_epsilon_total"] == pytest.approx(m1["dp_epsilon_round"])
    assert m1["dp_epsilon_round"] == pytest.approx(_eps(1.0, 1))
    _, m2 = _round(strategy, 2, base, zero)
    assert m2["dp_epsilon_total"] == pytest.approx(_eps(1.0, 2))
    assert strategy.accountant.rounds == 2


def test_sampling_rate_is_the_selected_fraction() -> None:
    base = _model(8)
    clients = {f"c{i}": np.zeros(8) for i in range(8)}
    _, half = _round(_dp(inner=FedAvg(fraction=0.5, seed=1)), 1, base, clients)
    _, full = _round(_dp(), 1, base, clients)
    assert half["dp_sample_rate"] == 0.5 and half["results"] == 4
    assert half["dp_epsilon_round"] < full["dp_epsilon_round"]
    forced = DPFedAvg(FedAvg(fraction=0.5, seed=1), 2.0, 1.0, DELTA, 7, sample_rate=1.0)
    _, m = _round(forced, 1, base, clients)
    assert m["dp_sample_rate"] == 1.0 and m["dp_epsilon_round"] == full["dp_epsilon_round"]


def test_fixed_seed_is_deterministic_and_recomputable_by_an_auditor() -> None:
    base = _model(64, 0.5)
    rng = np.random.default_rng(5)
    updates = {c: rng.normal(0, 1.0, 64) for c in CLIENTS}
    first, _ = _round(_dp(seed=11), 3, base, updates)
    again, _ = _round(_dp(seed=11), 3, base, updates)
    other, _ = _round(_dp(seed=12), 3, base, updates)
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first, other)
    # The auditor's recomputation: uniform mean of the clipped updates plus central_noise.
    mean = np.mean([clip_by_l2(updates[c], 2.0)[0] for c in CLIENTS], axis=0)
    noise = central_noise(11, 3, CLIENTS, 64, 1.0 * 2.0 / 4)
    np.testing.assert_allclose(first, mean + noise, atol=1e-5)


def test_one_round_over_two_groups_gets_independent_noise_and_counts_once() -> None:
    strategy = _dp()
    base = _model(2_000)
    a, _ = _round(strategy, 1, base, {"a": np.zeros(2_000), "b": np.zeros(2_000)})
    b, m = _round(strategy, 1, base, {"c": np.zeros(2_000), "d": np.zeros(2_000)})
    assert abs(float(np.corrcoef(a, b)[0, 1])) < 0.1
    assert strategy.accountant.rounds == 1 and m["dp_epsilon_total"] == m["dp_epsilon_round"]


def test_aggregating_an_unconfigured_round_is_refused() -> None:
    with pytest.raises(UsageError, match="did not configure"):
        _dp().aggregate(1, [TrainRes("a", _model(4), 1)], [])


@pytest.mark.parametrize("kwargs", [
    {"clip": 0.0}, {"noise_multiplier": -1.0}, {"delta": 1.0}, {"seed": -1}, {"sample_rate": 0.0},
    {"accountant": "moments"},
])
def test_dpfedavg_rejects_bad_parameters(kwargs: dict[str, object]) -> None:
    args: dict[str, object] = {"clip": 1.0, "noise_multiplier": 1.0, "delta": DELTA, "seed": 0}
    args.update(kwargs)
    with pytest.raises(UsageError):
        DPFedAvg(FedAvg(), **args)  # type: ignore[arg-type]


# -- LocalDP (seed 001) --------------------------------------------------------------------
def test_local_dp_masks_the_clipped_update_with_the_callers_noise() -> None:
    local = LocalDP(clip=1.0, noise_multiplier=2.0, delta=DELTA)
    assert local.sigma == local_gaussian_sigma(1.0, 2.0) == 2.0
    update = np.array([3.0, 4.0])
    noise = local.sigma * np.random.default_rng(9).standard_normal(2)
    masked = local.mask(update, noise)
    np.testing.assert_allclose(masked, np.array([0.6, 0.8]) + noise, rtol=1e-12)
    np.testing.assert_allclose(local.clip_update(update), [0.6, 0.8])
    with pytest.raises(UsageError, match="shape"):
        local.mask(update, np.zeros(3))


def test_local_dp_accounts_one_gaussian_mechanism_per_masked_update() -> None:
    local = LocalDP(clip=0.5, noise_multiplier=1.3, delta=DELTA)
    for _ in range(3):
        local.mask(np.ones(4), np.zeros(4))
    ref = RdpAccountant()
    ref.compose(dp_accounting.SelfComposedDpEvent(dp_accounting.GaussianDpEvent(1.3), 3))
    assert local.accountant.rounds == 3
    assert local.accountant.epsilon_total() == pytest.approx(ref.get_epsilon(DELTA), rel=1e-12)
    assert local.accountant.epsilon_round() < local.accountant.epsilon_total()


# -- CLI -----------------------------------------------------------------------------------
def test_cli_prints_the_json_line_last(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["privacy", "--noise-multiplier", "1.1", "--rounds", "50",
                 "--sample-rate", "0.1", "--delta", "1e-5"])
    captured = capsys.readouterr()
    assert code == 0
    r = json.loads(captured.out.strip().splitlines()[-1])
    assert set(r) == {"epsilon_round", "epsilon_total", "delta", "rounds", "noise_multiplier",
                      "sample_rate", "accountant"}
    assert (r["rounds"], r["noise_multiplier"], r["sample_rate"], r["delta"], r["accountant"]) == (
        50, 1.1, 0.1, 1e-5, "rdp")
    assert r["epsilon_total"] == pytest.approx(_eps(1.1, 50, 0.1))
    assert 0 < r["epsilon_round"] < r["epsilon_total"]
    assert "epsilon total" in captured.err  # the table


@pytest.mark.parametrize("argv", [
    ["--noise-multiplier", "0", "--rounds", "5"],
    ["--noise-multiplier", "1", "--rounds", "0"],
    ["--noise-multiplier", "1", "--rounds", "5", "--sample-rate", "1.5"],
    ["--noise-multiplier", "1", "--rounds", "5", "--delta", "2"],
    ["--noise-multiplier", "1", "--rounds", "5", "--accountant", "moments"],
    ["--noise-multiplier", "x", "--rounds", "5"],
])
def test_cli_bad_input_exits_cleanly(argv: Sequence[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["privacy", "--json", *argv]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "Traceback" not in captured.err
    assert "error" in captured.err.lower()
