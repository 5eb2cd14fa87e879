"""The in-memory hierarchical FL engine: schedule, failures, deadlines, recorder order.

Most tests use a toy trainer (each device moves the model half-way towards its own
target), so every number can be computed by hand; one test trains digits-mlp.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pytest

from fedledger.errors import FedledgerError, UsageError, VerificationFailed
from fedledger.fl.hierarchy import (
    CLOUD,
    DeviceDropout,
    HierarchyPlan,
    NullRecorder,
    run_hierarchy,
)
from fedledger.fl.strategy import (
    Aggregate,
    Failure,
    FedAvg,
    NotEnoughResults,
    TrainIns,
    TrainRes,
)
from fedledger.fl.weights import Weights, encode_weights

Train = Callable[[TrainIns], TrainRes]


def _scalar(x: float) -> Weights:
    return [("x", np.array([x], dtype=np.float32))]


def _value(w: Weights) -> float:
    return float(w[0][1][0])


def toy_trainer(
    targets: Mapping[str, Any],
    samples: Mapping[str, int],
    *,
    fail: Mapping[tuple[str, int], BaseException] | None = None,
    log: list[TrainIns] | None = None,
) -> Train:
    """Each device moves every tensor half-way to its target; ``fail[(device, round)]`` is raised."""

    def train(ins: TrainIns) -> TrainRes:
        if log is not None:
            log.append(ins)
        if fail and (ins.client, ins.round) in fail:
            raise fail[(ins.client, ins.round)]
        target = np.asarray(targets[ins.client], dtype=np.float32)
        out = [
            (name, (a + np.float32(0.5) * (target - a)).astype(np.float32))
            for name, a in ins.weights
        ]
        loss = float(np.mean((target - ins.weights[0][1]) ** 2))
        return TrainRes(ins.client, out, samples[ins.client], {"loss": loss})

    return train


# Two edges: A has d1 (target 1, 1 sample) and d2 (target 3, 3 samples); B has d3 (target -1, 4).
TARGETS = {"d1": 1.0, "d2": 3.0, "d3": -1.0}
SAMPLES = {"d1": 1, "d2": 3, "d3": 4}
EDGES = {"A": ["d1", "d2"], "B": ["d3"]}


def _run(plan: HierarchyPlan, train: Train, **kwargs: Any) -> Any:
    return run_hierarchy(
        plan, _scalar(0.0), train, device_strategy=FedAvg(), cloud_strategy=FedAvg(), **kwargs
    )


# --- schedule -------------------------------------------------------------------------------


def test_one_edge_with_k1_is_flat_fedavg_bit_for_bit() -> None:
    rng = np.random.default_rng(11)
    devices = [f"dev-{i}" for i in range(6)]
    targets = {d: rng.standard_normal(7).astype(np.float32) for d in devices}
    samples = {d: int(rng.integers(5, 200)) for d in devices}
    train = toy_trainer(targets, samples)
    initial = [("x", rng.standard_normal(7).astype(np.float32))]
    strategy = FedAvg(fraction=0.6, seed=5)

    flat = initial
    for r in range(1, 5):
        results = [train(ins) for ins in strategy.configure(r, flat, devices)]
        flat = strategy.aggregate(r, results, []).weights

    plan = HierarchyPlan({"edge": devices}, cloud_rounds=4, device_rounds=1)
    res = run_hierarchy(plan, initial, train, device_strategy=strategy, cloud_strategy=FedAvg())
    assert encode_weights(res.weights) == encode_weights(flat)
    assert all(len(r.devices) == 3 for r in res.rounds)  # floor(0.6 * 6) devices per round


def test_k1_and_k2_by_hand() -> None:
    # k = 1. A: d1 -> 0.5, d2 -> 1.5, mean (0.5 + 3 * 1.5) / 4 = 1.25. B: d3 -> -0.5.
    # Cloud: (1.25 * 4 + -0.5 * 4) / 8 = 0.375.
    train = toy_trainer(TARGETS, SAMPLES)
    k1 = _run(HierarchyPlan(EDGES, cloud_rounds=1), train)
    assert _value(k1.weights) == 0.375
    # k = 2: A's devices restart from 1.25: d1 -> 1.125, d2 -> 2.125, mean 7.5 / 4 = 1.875;
    # B: -0.5 -> -0.75. Cloud: (1.875 * 4 + -0.75 * 4) / 8 = 0.5625.
    k2 = _run(HierarchyPlan(EDGES, cloud_rounds=1, device_rounds=2), train)
    assert _value(k2.weights) == 0.5625
    assert k2.rounds[0].edges == ("A", "B")
    assert k2.rounds[0].devices == ("d1", "d2", "d3")
    assert k2.rounds[0].metrics["results"] == 2
    # Round 2 of k = 1 starts from 0.375: A: d1 -> 0.6875, d2 -> 1.6875, mean 1.4375;
    # B: -0.3125. Cloud: (1.4375 - 0.3125) / 2 = 0.5625.
    two = _run(HierarchyPlan(EDGES, cloud_rounds=2), train)
    assert _value(two.weights) == 0.5625
    assert [r.round for r in two.rounds] == [1, 2]


def test_device_strategies_see_a_step_counter_and_the_weights_are_read_only() -> None:
    log: list[TrainIns] = []
    _run(
        HierarchyPlan({"A": ["d1"]}, cloud_rounds=2, device_rounds=3),
        toy_trainer(TARGETS, SAMPLES, log=log),
    )
    assert [i.round for i in log] == [1, 2, 3, 4, 5, 6]

    def in_place(ins: TrainIns) -> TrainRes:
        ins.weights[0][1][0] = 1.0
        return TrainRes(ins.client, ins.weights, 1)

    with pytest.raises(ValueError, match="read-only"):
        _run(HierarchyPlan({"A": ["d1"]}, cloud_rounds=1), in_place)


def test_cloud_strategy_chooses_the_edges() -> None:
    edges = {f"E{i}": [f"d{i}"] for i in range(4)}
    train = toy_trainer({f"d{i}": float(i) for i in range(4)}, {f"d{i}": 1 for i in range(4)})
    res = run_hierarchy(
        HierarchyPlan(edges, cloud_rounds=3),
        _scalar(0.0),
        train,
        device_strategy=FedAvg(),
        cloud_strategy=FedAvg(fraction=0.5, seed=1),
    )
    for report in res.rounds:
        assert len(report.edges) == 2
        assert report.devices == tuple(f"d{e[1]}" for e in report.edges)


def test_evaluate_scores_the_initial_model_and_every_round() -> None:
    seen: list[float] = []

    def evaluate(w: Weights) -> float:
        seen.append(_value(w))
        return -abs(_value(w) - 1.0)

    res = _run(
        HierarchyPlan(EDGES, cloud_rounds=2), toy_trainer(TARGETS, SAMPLES), evaluate=evaluate
    )
    assert seen == [0.0, 0.375, 0.5625]
    assert res.accuracy == (-1.0, -0.625, -0.4375)
    assert len(res.wall_s) == 2 and all(t >= 0 for t in res.wall_s)
    assert _run(HierarchyPlan(EDGES, cloud_rounds=1), toy_trainer(TARGETS, SAMPLES)).accuracy == ()


# --- failures -------------------------------------------------------------------------------


def test_a_dropping_device_is_reported_and_the_round_goes_on() -> None:
    train = toy_trainer(TARGETS, SAMPLES, fail={("d2", 1): DeviceDropout("missed the deadline")})
    res = _run(HierarchyPlan(EDGES, cloud_rounds=2), train)
    assert res.failures == (Failure("d2", 1, "missed the deadline"),)
    assert res.rounds[0].devices == ("d1", "d3")
    assert res.rounds[1].devices == ("d1", "d2", "d3")
    # Round 1: A = d1 alone = 0.5 (1 sample); B = -0.5 (4). Cloud: (0.5 - 2) / 5 = -0.3.
    only_d1 = _run(HierarchyPlan(EDGES, cloud_rounds=1), train)
    assert _value(only_d1.weights) == np.float32(-0.3)


def test_a_device_over_its_deadline_is_discarded_and_reported() -> None:
    fast = toy_trainer(TARGETS, SAMPLES)

    def train(ins: TrainIns) -> TrainRes:
        if ins.client == "d1":
            time.sleep(0.25)
        return fast(ins)

    res = _run(HierarchyPlan(EDGES, cloud_rounds=1, deadline_s=0.2), train)
    [late] = res.failures
    assert late.client == "d1" and late.round == 1
    assert late.reason.startswith("missed its deadline (0.")
    assert late.reason.endswith(" s > 0.2 s)")
    assert res.rounds[0].devices == ("d2", "d3")


def test_errors_that_are_not_dropouts_propagate_unless_listed() -> None:
    train = toy_trainer(TARGETS, SAMPLES, fail={("d1", 1): ValueError("diverged")})
    with pytest.raises(ValueError, match="diverged"):
        _run(HierarchyPlan(EDGES, cloud_rounds=1), train)
    res = _run(HierarchyPlan(EDGES, cloud_rounds=1), train, dropouts=(FedledgerError, ValueError))
    assert res.failures == (Failure("d1", 1, "diverged"),)


def test_a_result_under_another_name_is_a_failure() -> None:
    honest = toy_trainer(TARGETS, SAMPLES)

    def train(ins: TrainIns) -> TrainRes:
        res = honest(ins)
        return TrainRes("d2", res.weights, res.num_samples) if ins.client == "d1" else res

    res = _run(HierarchyPlan(EDGES, cloud_rounds=1), train)
    assert res.failures == (Failure("d1", 1, "returned a result for 'd2'"),)


def test_an_edge_whose_devices_all_fail_is_a_failure_at_the_cloud() -> None:
    train = toy_trainer(TARGETS, SAMPLES, fail={("d3", 1): DeviceDropout("offline")})
    res = _run(HierarchyPlan(EDGES, cloud_rounds=1), train)
    assert res.failures == (
        Failure("d3", 1, "offline"),
        Failure("B", 1, "round 1: 0 results and 1 failure, need at least 1 result (d3: offline)"),
    )
    assert res.rounds[0].edges == ("A",)
    assert res.rounds[0].metrics["failures"] == 1
    assert _value(res.weights) == 1.25  # A alone


def test_an_edge_failing_in_a_later_device_round_fails_for_the_cloud_round() -> None:
    train = toy_trainer(TARGETS, SAMPLES, fail={("d3", 2): DeviceDropout("offline")})
    res = _run(HierarchyPlan(EDGES, cloud_rounds=1, device_rounds=2), train)
    assert [(f.client, f.round) for f in res.failures] == [("d3", 2), ("B", 1)]
    assert _value(res.weights) == 1.875


def test_all_edges_failing_raises() -> None:
    fail = {(d, 1): DeviceDropout("offline") for d in TARGETS}
    with pytest.raises(
        NotEnoughResults, match=r"round 1: no edge delivered an aggregate \(A: .*; B: .*\)"
    ):
        _run(HierarchyPlan(EDGES, cloud_rounds=1), toy_trainer(TARGETS, SAMPLES, fail=fail))


# --- recorder -------------------------------------------------------------------------------


class Log(NullRecorder):
    """Records every hook call; refuses the updates of ``refuse`` and the artefacts of ``refuse_edge``."""

    def __init__(self, refuse: str = "", refuse_edge: str = "") -> None:
        self.events: list[tuple[Any, ...]] = []
        self.interim: dict[str, bytes] = {}
        self.refuse = refuse
        self.refuse_edge = refuse_edge

    def global_model(self, round_: int, weights: Weights) -> None:
        self.events.append(("global", round_, _value(weights)))

    def device_update(self, round_: int, edge: str, device_round: int, res: TrainRes) -> None:
        if res.client == self.refuse:
            raise VerificationFailed("blob hash mismatch")
        self.events.append(("update", round_, edge, device_round, res.client))

    def interim_aggregate(self, round_: int, edge: str, device_round: int, agg: Aggregate) -> None:
        self.events.append(("interim", round_, edge, device_round, agg.used))
        self.interim[edge] = encode_weights(agg.weights)

    def edge_aggregate(self, round_: int, edge: str, agg: Aggregate) -> None:
        if edge == self.refuse_edge:
            raise VerificationFailed("anchor missing")
        self.events.append(("edge", round_, edge, agg.used, agg.num_samples))

    def cloud_aggregate(self, round_: int, agg: Aggregate) -> None:
        self.events.append(("cloud", round_, agg.used, agg.num_samples))

    def failure(self, f: Failure, where: str) -> None:
        self.events.append(("failure", f.client, f.round, where))


def test_recorder_sees_the_data_flow_in_order() -> None:
    log = Log()
    seen: list[TrainIns] = []
    train = toy_trainer(TARGETS, SAMPLES, fail={("d3", 2): DeviceDropout("offline")}, log=seen)
    _run(HierarchyPlan(EDGES, cloud_rounds=1, device_rounds=2), train, recorder=log)
    assert log.events == [
        ("global", 1, 0.0),
        ("update", 1, "A", 1, "d1"),
        ("update", 1, "A", 1, "d2"),
        ("interim", 1, "A", 1, ("d1", "d2")),
        ("update", 1, "A", 2, "d1"),
        ("update", 1, "A", 2, "d2"),
        ("edge", 1, "A", ("d1", "d2"), 4),
        ("update", 1, "B", 1, "d3"),
        ("interim", 1, "B", 1, ("d3",)),
        ("failure", "d3", 2, "B"),
        ("failure", "B", 1, CLOUD),
        ("cloud", 1, ("A",), 4),
    ]
    # The devices' second device round started from the interim aggregate their edge recorded.
    second = [i for i in seen if i.round == 2]
    assert [i.client for i in second] == ["d1", "d2", "d3"]
    assert encode_weights(second[0].weights) == log.interim["A"]
    assert encode_weights(second[2].weights) == log.interim["B"]


def test_a_refused_device_update_becomes_a_failure() -> None:
    log = Log(refuse="d2")
    res = _run(HierarchyPlan(EDGES, cloud_rounds=1), toy_trainer(TARGETS, SAMPLES), recorder=log)
    assert res.failures == (Failure("d2", 1, "update refused: blob hash mismatch"),)
    assert ("failure", "d2", 1, "A") in log.events
    assert ("edge", 1, "A", ("d1",), 1) in log.events


def test_a_refusal_at_the_edge_level_propagates() -> None:
    with pytest.raises(VerificationFailed, match="anchor missing"):
        _run(
            HierarchyPlan(EDGES, cloud_rounds=1),
            toy_trainer(TARGETS, SAMPLES),
            recorder=Log(refuse_edge="B"),
        )


# --- plan -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("edges", "kwargs", "message"),
    [
        ({}, {}, "at least one edge"),
        ({"A": []}, {}, "edge 'A' has no devices"),
        ({"A": "d1"}, {}, "must be a list"),
        ({"A": ["d1"], "B": ["d1"]}, {}, "duplicate name 'd1'"),
        ({"A": ["d1", "d1"]}, {}, "duplicate name 'd1'"),
        ({"A": ["A"]}, {}, "duplicate name 'A'"),
        ({"A": [""]}, {}, "non-empty str"),
        ({CLOUD: ["d1"]}, {}, "reserved"),
        ({"A": ["d1"]}, {"device_rounds": 0}, "device_rounds"),
        ({"A": ["d1"]}, {"cloud_rounds": 0}, "cloud_rounds"),
        ({"A": ["d1"]}, {"cloud_rounds": True}, "cloud_rounds"),
        ({"A": ["d1"]}, {"deadline_s": 0}, "deadline_s"),
        ({"A": ["d1"]}, {"deadline_s": float("inf")}, "deadline_s"),
    ],
)
def test_plan_validation(edges: Any, kwargs: dict[str, Any], message: str) -> None:
    kwargs = {"cloud_rounds": 1, **kwargs}
    with pytest.raises(UsageError, match=message):
        HierarchyPlan(edges, **kwargs)


def test_plan_is_normalised_and_read_only() -> None:
    source = {"A": ["d1", "d2"], "B": ["d3"]}
    plan = HierarchyPlan(source, cloud_rounds=2, device_rounds=3, deadline_s=1.5)
    source["A"].append("d9")
    assert dict(plan.edges) == {"A": ("d1", "d2"), "B": ("d3",)}
    assert plan.devices == ("d1", "d2", "d3")
    with pytest.raises(TypeError):
        plan.edges["C"] = ("d4",)  # type: ignore[index]


# --- real training --------------------------------------------------------------------------


def test_real_training_two_edges_three_devices_accuracy_rises() -> None:
    from fedledger.fl.data import load_digits_split, partition_iid, subset
    from fedledger.fl.models import init_weights
    from fedledger.fl.train import TrainConfig, evaluate, train_local

    model = "digits-mlp"
    train_set, test_set = load_digits_split(test_fraction=0.2, seed=0)
    small = subset(train_set, np.arange(600))
    devices = [f"dev-{i}" for i in range(6)]
    data = {
        d: subset(small, idx)
        for d, idx in zip(devices, partition_iid(len(small), 6, seed=0), strict=True)
    }

    def train(ins: TrainIns) -> TrainRes:
        cfg = TrainConfig.from_dict(dict(ins.config))
        seed = 1000 * ins.round + devices.index(ins.client)
        weights, loss = train_local(model, ins.weights, data[ins.client], cfg, seed)
        return TrainRes(ins.client, weights, len(data[ins.client]), {"loss": loss})

    plan = HierarchyPlan({"edge-0": devices[:3], "edge-1": devices[3:]}, cloud_rounds=3)
    config = {"epochs": 2, "batch_size": 16, "lr": 0.05, "momentum": 0.9}
    res = run_hierarchy(
        plan,
        init_weights(model, 0),
        train,
        device_strategy=FedAvg(config=config),
        cloud_strategy=FedAvg(),
        evaluate=lambda w: evaluate(model, w, test_set),
    )
    acc = res.accuracy
    assert len(acc) == 4
    assert acc[0] < 0.3
    assert acc[3] > acc[1] > acc[0]
    assert acc[3] > 0.7, acc  # 0.09 -> 0.57 -> 0.71 -> 0.82 on this slice
    assert res.failures == ()
    assert all(r.devices == tuple(devices) for r in res.rounds)
    assert res.rounds[-1].metrics["loss"] < res.rounds[0].metrics["loss"]
