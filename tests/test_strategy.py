"""Strategies: FedAvg selection and aggregation, failures, wrappers (NumPy only)."""

from __future__ import annotations

import itertools
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from fedledger.errors import FedledgerError, UsageError, VerificationFailed
from fedledger.fl.aggregate import fedavg
from fedledger.fl.strategy import (
    Aggregate,
    Failure,
    FedAvg,
    NotEnoughResults,
    Strategy,
    StrategyWrapper,
    TrainIns,
    TrainRes,
)
from fedledger.fl.weights import Weights, encode_weights

SRC = Path(__file__).resolve().parents[1] / "src"


def _w(scale: float, bias: float = 0.0) -> Weights:
    return [
        ("w", np.full((2, 3), scale, dtype=np.float32)),
        ("b", np.array([bias], dtype=np.float32)),
    ]


def _random_results(n: int, seed: int) -> list[TrainRes]:
    rng = np.random.default_rng(seed)
    return [
        TrainRes(
            f"dev-{i}",
            [
                ("w", rng.standard_normal((4, 5)).astype(np.float32)),
                ("b", rng.standard_normal(5).astype(np.float32)),
            ],
            int(rng.integers(1, 500)),
            {"loss": float(rng.uniform(0.1, 2.0))},
        )
        for i in range(n)
    ]


# --- aggregation ----------------------------------------------------------------------------


def test_fedavg_is_the_sample_weighted_mean() -> None:
    results = [TrainRes("a", _w(1.0, 2.0), 1), TrainRes("b", _w(3.0, -2.0), 3)]
    agg = FedAvg().aggregate(1, results, [])
    assert np.array_equal(agg.weights[0][1], np.full((2, 3), 2.5, dtype=np.float32))
    assert np.array_equal(agg.weights[1][1], np.array([-1.0], dtype=np.float32))
    assert agg.num_samples == 4
    assert agg.used == ("a", "b")
    assert agg.metrics == {"results": 2, "failures": 0}


def test_fedavg_aggregates_in_client_name_order_whatever_the_arrival_order() -> None:
    results = _random_results(5, seed=7)
    reference = encode_weights(fedavg([(r.weights, r.num_samples) for r in results]))
    for perm in itertools.permutations(results):
        agg = FedAvg().aggregate(3, list(perm), [])
        assert encode_weights(agg.weights) == reference
        assert agg.used == tuple(f"dev-{i}" for i in range(5))
        assert agg.metrics == FedAvg().aggregate(3, results, []).metrics


def test_canonical_order_matters_because_float_addition_is_not_associative() -> None:
    """The raw kernel gives different bits for two arrival orders; FedAvg gives one answer."""
    big, one = np.float32(1e30), np.float32(1.0)
    res = {
        "a": TrainRes("a", [("x", np.array(big))], 1),
        "b": TrainRes("b", [("x", np.array(one))], 1),
        "c": TrainRes("c", [("x", np.array(-big))], 1),
    }
    abc = fedavg([(res[c].weights, 1) for c in "abc"])
    acb = fedavg([(res[c].weights, 1) for c in "acb"])
    assert encode_weights(abc) != encode_weights(acb)
    for order in ("abc", "acb", "cba", "bca"):
        agg = FedAvg().aggregate(1, [res[c] for c in order], [])
        assert encode_weights(agg.weights) == encode_weights(abc)


def test_metrics_count_failures_and_weight_the_loss_by_samples() -> None:
    results = [
        TrainRes("a", _w(0.0), 1, {"loss": 1.0}),
        TrainRes("b", _w(0.0), 3, {"loss": 3.0, "accuracy": 0.5}),
        TrainRes("c", _w(0.0), 4, {"loss": "n/a"}),
        TrainRes("d", _w(0.0), 4, {"loss": True}),
        TrainRes("e", _w(0.0), 4),
    ]
    failures = [Failure("f", 2, "offline")]
    agg = FedAvg().aggregate(2, results, failures)
    assert agg.metrics == {"results": 5, "failures": 1, "loss": 2.5}
    assert agg.num_samples == 16


def test_too_few_results_raise_with_counts_and_reasons() -> None:
    strategy = FedAvg(min_results=2)
    failures = [Failure("d2", 4, "offline"), Failure("d3", 4, "missed the deadline")]
    with pytest.raises(NotEnoughResults) as exc:
        strategy.aggregate(4, [TrainRes("d1", _w(1.0), 10)], failures)
    assert str(exc.value) == (
        "round 4: 1 result and 2 failures, need at least 2 results "
        "(d2: offline; d3: missed the deadline)"
    )
    assert isinstance(exc.value, VerificationFailed)
    assert exc.value.exit_code == 11
    with pytest.raises(
        NotEnoughResults, match=r"round 1: 0 results and 0 failures, need at least 1 result$"
    ):
        FedAvg().aggregate(1, [], [])
    many = [Failure(f"d{i}", 1, "offline") for i in range(5)]
    with pytest.raises(NotEnoughResults, match=r"d2: offline; and 2 more\)$"):
        FedAvg().aggregate(1, [], many)


def test_duplicate_or_mismatched_results_are_verification_failures() -> None:
    with pytest.raises(VerificationFailed, match="more than one result from 'a'"):
        FedAvg().aggregate(1, [TrainRes("a", _w(1.0), 1), TrainRes("a", _w(2.0), 1)], [])
    bad = [("w", np.zeros((3, 2), dtype=np.float32)), ("b", np.zeros(1, dtype=np.float32))]
    with pytest.raises(VerificationFailed, match=r"results of a, b \(in that order\).*shape"):
        FedAvg().aggregate(1, [TrainRes("b", bad, 1), TrainRes("a", _w(1.0), 1)], [])
    with pytest.raises(VerificationFailed, match="total sample count is zero"):
        FedAvg().aggregate(1, [TrainRes("a", _w(1.0), 0)], [])


# --- configuration --------------------------------------------------------------------------


def test_configure_all_clients_sorted_with_the_shared_config_and_model() -> None:
    w = _w(1.0)
    strategy = FedAvg(config={"epochs": 2})
    ins = strategy.configure(5, w, ["c", "a", "b"])
    assert [i.client for i in ins] == ["a", "b", "c"]
    assert all(i.round == 5 and i.weights is w for i in ins)
    assert all(dict(i.config) == {"epochs": 2} for i in ins)
    with pytest.raises(TypeError):
        ins[0].config["epochs"] = 9  # type: ignore[index]


def test_configure_selection_is_a_function_of_seed_round_and_client_set() -> None:
    clients = [f"dev-{i:02d}" for i in range(10)]
    strategy = FedAvg(fraction=0.5, seed=3)
    picks = {}
    for r in range(1, 6):
        chosen = [i.client for i in strategy.configure(r, _w(0.0), clients)]
        assert len(chosen) == 5 == len(set(chosen))
        assert chosen == sorted(chosen) and set(chosen) <= set(clients)
        again = [
            i.client for i in FedAvg(fraction=0.5, seed=3).configure(r, _w(0.0), clients[::-1])
        ]
        assert again == chosen
        picks[r] = chosen
    assert len({tuple(p) for p in picks.values()}) > 1  # rounds draw different samples
    other_seed = [
        [i.client for i in FedAvg(fraction=0.5, seed=4).configure(r, _w(0.0), clients)]
        for r in range(1, 6)
    ]
    assert other_seed != list(picks.values())


def test_configure_selects_at_least_min_clients() -> None:
    clients = [f"d{i}" for i in range(10)]
    assert len(FedAvg(fraction=0.1, min_clients=3).configure(1, _w(0.0), clients)) == 3
    assert len(FedAvg(fraction=0.35).configure(1, _w(0.0), clients)) == 3
    assert len(FedAvg(fraction=0.01).configure(1, _w(0.0), clients)) == 1
    assert FedAvg(fraction=0.5, min_clients=4).num_selected(4) == 4
    with pytest.raises(UsageError, match="2 clients available, min_clients is 3"):
        FedAvg(min_clients=3).configure(1, _w(0.0), ["a", "b"])
    with pytest.raises(UsageError, match="duplicate"):
        FedAvg().configure(1, _w(0.0), ["a", "a"])


@pytest.mark.parametrize(
    "options",
    [
        {"fraction": 0.0},
        {"fraction": 1.5},
        {"min_clients": 0},
        {"min_results": 0},
        {"min_results": True},
        {"seed": -1},
    ],
)
def test_bad_options_are_usage_errors(options: dict[str, object]) -> None:
    with pytest.raises(UsageError):
        FedAvg(**options)  # type: ignore[arg-type]


# --- wrappers -------------------------------------------------------------------------------


class _TagRound(StrategyWrapper):
    """Adds the round to every instruction's config and drops results from ``banned``."""

    def __init__(self, inner: Strategy, banned: str) -> None:
        super().__init__(inner)
        self.banned = banned

    def configure(self, round_: int, weights: Weights, clients: Sequence[str]) -> list[TrainIns]:
        return [
            TrainIns(i.client, i.round, i.weights, {**i.config, "tag": round_})
            for i in super().configure(round_, weights, clients)
        ]

    def aggregate(
        self, round_: int, results: Sequence[TrainRes], failures: Sequence[Failure]
    ) -> Aggregate:
        kept = [r for r in results if r.client != self.banned]
        dropped = [Failure(r.client, round_, "banned") for r in results if r.client == self.banned]
        return super().aggregate(round_, kept, [*failures, *dropped])


def test_wrapper_delegates_to_its_inner_strategy() -> None:
    inner = FedAvg(config={"epochs": 1})
    plain = StrategyWrapper(inner)
    results = _random_results(3, seed=1)
    assert [i.client for i in plain.configure(2, _w(0.0), ["b", "a"])] == ["a", "b"]
    assert encode_weights(plain.aggregate(2, results, []).weights) == encode_weights(
        inner.aggregate(2, results, []).weights
    )
    assert repr(plain).startswith("StrategyWrapper(FedAvg(")

    tagged = _TagRound(inner, banned="dev-1")
    assert [dict(i.config) for i in tagged.configure(7, _w(0.0), ["a"])] == [
        {"epochs": 1, "tag": 7}
    ]
    agg = tagged.aggregate(2, results, [])
    assert agg.used == ("dev-0", "dev-2")
    assert agg.metrics["failures"] == 1


def test_errors_are_in_the_project_tree() -> None:
    assert issubclass(NotEnoughResults, FedledgerError)


def test_strategy_and_hierarchy_do_not_load_torch() -> None:
    code = (
        "import sys\n"
        "import fedledger.fl.strategy, fedledger.fl.hierarchy\n"
        "bad = [m for m in ('torch', 'sklearn') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env={"PYTHONPATH": str(SRC)})
