"""A synchronous, in-memory hierarchical FL engine: devices -> edges -> cloud.

This is the schedule the networked edge and cloud nodes run over HTTP, executed
in one process with training injected as a callable. It serves simulations,
tests, and the no-ledger baseline of the benchmarks. NumPy only.

Schedule of cloud round ``r`` (1-based) with ``k = plan.device_rounds``:

1. The cloud publishes the global model (recorder: ``global_model``) and
   ``cloud_strategy.configure(r, global, edges)`` chooses the edges it goes to.
2. Each chosen edge, in instruction order, runs ``k`` device rounds ``j = 1..k``:
   ``device_strategy.configure(t, model, devices)`` with the step counter
   ``t = (r - 1) * k + j`` (so with ``k = 1`` devices see the cloud round), one
   ``train`` call per instruction (recorder: ``device_update`` or ``failure``),
   then ``device_strategy.aggregate``. Between device rounds the aggregate is
   sent back down as the devices' next starting model (recorder:
   ``interim_aggregate``); after the ``k``-th the aggregate goes up to the
   cloud (recorder: ``edge_aggregate``) weighted by its sample count, the
   devices' samples in that last device round.
3. ``cloud_strategy.aggregate(r, edge results, edge failures)`` gives the new
   global model (recorder: ``cloud_aggregate``).

Failures are reported, never waited for. A ``train`` call that raises one of the
``dropouts`` types (by default any :class:`~fedledger.errors.FedledgerError`,
which includes :class:`DeviceDropout`) or returns after more than
``plan.deadline_s`` seconds becomes a :class:`~fedledger.fl.strategy.Failure` of
that device; other exceptions are bugs and propagate. An edge whose device
strategy cannot aggregate (e.g. every device failed) becomes a Failure at the
cloud level; if no edge delivers, the round raises
:class:`~fedledger.fl.strategy.NotEnoughResults`.

The engine reads a clock only to enforce deadlines and to time rounds; it has
no randomness of its own (strategies draw theirs from their seed).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Protocol

from fedledger.errors import FedledgerError, NodeUnavailable, UsageError
from fedledger.fl.strategy import Aggregate, Failure, NotEnoughResults, Strategy, TrainIns, TrainRes
from fedledger.fl.weights import Weights, as_float32

__all__ = [
    "CLOUD",
    "DeviceDropout",
    "HierarchyPlan",
    "HierarchyResult",
    "NullRecorder",
    "Recorder",
    "RoundReport",
    "run_hierarchy",
]

CLOUD = "cloud"
"""The cloud aggregator's name: where edge failures are reported (no edge or device may use it)."""


class DeviceDropout(NodeUnavailable):
    """A device delivered no update this round (offline, crashed, missed the deadline)."""


def _is_count(value: object, minimum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


@dataclass(frozen=True)
class HierarchyPlan:
    """Who is where and how long to run.

    ``edges`` maps each edge to its devices (kept in the given order);
    ``cloud_rounds`` is the number of global rounds; ``device_rounds`` (k) is how
    many times an edge aggregates its devices per cloud round; ``deadline_s``,
    if set, is the wall time each device's ``train`` call may take before its
    result is discarded. Names must be unique non-empty strings across edges and
    devices, and none may be :data:`CLOUD`. Invalid plans raise UsageError.
    """

    edges: Mapping[str, Sequence[str]]
    cloud_rounds: int
    device_rounds: int = 1
    deadline_s: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.edges, Mapping) or not self.edges:
            raise UsageError("hierarchy plan: at least one edge is required")
        seen: set[str] = set()

        def claim(name: object, what: str) -> str:
            if not isinstance(name, str) or not name:
                raise UsageError(
                    f"hierarchy plan: {what} name must be a non-empty str, got {name!r}"
                )
            if name == CLOUD:
                raise UsageError(f"hierarchy plan: {what} name {CLOUD!r} is reserved for the cloud")
            if name in seen:
                raise UsageError(f"hierarchy plan: duplicate name {name!r}")
            seen.add(name)
            return name

        edges: dict[str, tuple[str, ...]] = {}
        for edge, devices in self.edges.items():
            claim(edge, "edge")
            if isinstance(devices, str) or not isinstance(devices, Sequence):
                raise UsageError(
                    f"hierarchy plan: devices of edge {edge!r} must be a list of names"
                )
            if not devices:
                raise UsageError(f"hierarchy plan: edge {edge!r} has no devices")
            edges[edge] = tuple(claim(d, "device") for d in devices)
        object.__setattr__(self, "edges", MappingProxyType(edges))
        if not _is_count(self.cloud_rounds, 1):
            raise UsageError(
                f"hierarchy plan: cloud_rounds must be an int >= 1, got {self.cloud_rounds!r}"
            )
        if not _is_count(self.device_rounds, 1):
            raise UsageError(
                f"hierarchy plan: device_rounds (k) must be an int >= 1, got {self.device_rounds!r}"
            )
        if self.deadline_s is not None and not (
            isinstance(self.deadline_s, (int, float))
            and not isinstance(self.deadline_s, bool)
            and math.isfinite(self.deadline_s)
            and self.deadline_s > 0
        ):
            raise UsageError(
                f"hierarchy plan: deadline_s must be a number > 0, got {self.deadline_s!r}"
            )

    @property
    def devices(self) -> tuple[str, ...]:
        """Every device, edge by edge, in plan order."""
        return tuple(d for devices in self.edges.values() for d in devices)


class Recorder(Protocol):
    """Observer of a run, called in data-flow order (see the module docstring).

    A ledger-backed recorder stores blobs and commits transactions here. A hook
    may refuse an artefact by raising a FedledgerError (e.g. VerificationFailed):
    a refused *device update* becomes a Failure of that device (reported through
    :meth:`failure`) and the round goes on without it; a refusal in any other
    hook propagates and ends the run. Subclass :class:`NullRecorder` to
    override only some hooks.
    """

    def global_model(self, round_: int, weights: Weights) -> None:
        """The cloud sends ``weights`` to the edges at the start of ``round_`` (round 1: the initial model)."""

    def device_update(self, round_: int, edge: str, device_round: int, res: TrainRes) -> None:
        """A device of ``edge`` delivered ``res`` in device round ``device_round`` (1..k) of ``round_``."""

    def interim_aggregate(self, round_: int, edge: str, device_round: int, agg: Aggregate) -> None:
        """``edge`` aggregated device round ``device_round`` < k and sends ``agg`` back to its devices."""

    def edge_aggregate(self, round_: int, edge: str, agg: Aggregate) -> None:
        """``edge`` sends its aggregate of ``round_`` (after k device rounds) to the cloud."""

    def cloud_aggregate(self, round_: int, agg: Aggregate) -> None:
        """The cloud's aggregate of ``round_``: the new global model."""

    def failure(self, f: Failure, where: str) -> None:
        """``f`` was reported to ``where``: the device's edge, or :data:`CLOUD` for an edge."""


class NullRecorder:
    """A recorder whose hooks do nothing: the base class for recorders."""

    def global_model(self, round_: int, weights: Weights) -> None:
        return None

    def device_update(self, round_: int, edge: str, device_round: int, res: TrainRes) -> None:
        return None

    def interim_aggregate(self, round_: int, edge: str, device_round: int, agg: Aggregate) -> None:
        return None

    def edge_aggregate(self, round_: int, edge: str, agg: Aggregate) -> None:
        return None

    def cloud_aggregate(self, round_: int, agg: Aggregate) -> None:
        return None

    def failure(self, f: Failure, where: str) -> None:
        return None


@dataclass(frozen=True)
class RoundReport:
    """What happened in one cloud round.

    ``edges`` are the edges whose aggregates went into the global model (in the
    cloud's order), ``devices`` the devices whose updates went into those edges'
    aggregates in any device round. ``failures`` are in the order reported; a
    device failure carries the device step ``t`` as its round, an edge failure
    the cloud round. ``wall_s`` covers the whole round including the recorder,
    not the evaluation.
    """

    round: int
    wall_s: float
    edges: tuple[str, ...]
    devices: tuple[str, ...]
    failures: tuple[Failure, ...]
    metrics: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, eq=False)
class HierarchyResult:
    """Outcome of :func:`run_hierarchy`.

    ``accuracy[r]`` is the accuracy after cloud round ``r`` and ``accuracy[0]``
    that of the initial model (empty when no ``evaluate`` was given).
    """

    weights: Weights
    accuracy: tuple[float, ...]
    rounds: tuple[RoundReport, ...]

    @property
    def wall_s(self) -> tuple[float, ...]:
        """Wall time of each cloud round, in seconds."""
        return tuple(r.wall_s for r in self.rounds)

    @property
    def failures(self) -> tuple[Failure, ...]:
        """Every failure of the run, in the order reported."""
        return tuple(f for r in self.rounds for f in r.failures)


def _read_only(w: Weights) -> Weights:
    """A validated float32 copy of ``w`` whose arrays cannot be written to.

    The model handed to devices is shared by all of them, so a trainer that
    updated it in place would corrupt the others' starting point; it gets an
    error instead.
    """
    out: Weights = []
    for name, value in w:
        arr = as_float32(name, value).copy()
        arr.flags.writeable = False
        out.append((name, arr))
    return out


@dataclass
class _Run:
    """The fixed parts of one run, shared by the helpers below."""

    plan: HierarchyPlan
    train: Callable[[TrainIns], TrainRes]
    device_strategy: Strategy
    recorder: Recorder
    dropouts: tuple[type[BaseException], ...]
    failures: list[Failure] = field(default_factory=list)

    def report(self, f: Failure, where: str) -> None:
        self.failures.append(f)
        self.recorder.failure(f, where)

    def train_device(self, ins: TrainIns) -> TrainRes | Failure:
        """One ``train`` call, with dropouts and the deadline turned into a Failure."""
        start = time.perf_counter()
        try:
            res = self.train(ins)
        except self.dropouts as exc:
            return Failure(ins.client, ins.round, str(exc) or type(exc).__name__)
        elapsed = time.perf_counter() - start
        if not isinstance(res, TrainRes):
            raise TypeError(
                f"train returned {type(res).__name__} for {ins.client!r}, not a TrainRes"
            )
        if res.client != ins.client:
            return Failure(ins.client, ins.round, f"returned a result for {res.client!r}")
        deadline = self.plan.deadline_s
        if deadline is not None and elapsed > deadline:
            return Failure(
                ins.client, ins.round, f"missed its deadline ({elapsed:.2f} s > {deadline:g} s)"
            )
        return res

    def run_edge(self, r: int, edge: str, model: Weights) -> tuple[Aggregate, list[str]] | str:
        """Run the k device rounds of ``edge``; return its aggregate and devices used, or why it failed."""
        k = self.plan.device_rounds
        used: list[str] = []
        agg: Aggregate | None = None
        for j in range(1, k + 1):
            t = (r - 1) * k + j
            results: list[TrainRes] = []
            failures: list[Failure] = []
            for ins in self.device_strategy.configure(t, model, self.plan.edges[edge]):
                outcome = self.train_device(ins)
                if isinstance(outcome, TrainRes):
                    try:
                        self.recorder.device_update(r, edge, j, outcome)
                    except FedledgerError as exc:
                        outcome = Failure(ins.client, t, f"update refused: {exc}")
                    else:
                        results.append(outcome)
                        continue
                failures.append(outcome)
                self.report(outcome, edge)
            try:
                agg = self.device_strategy.aggregate(t, results, failures)
            except FedledgerError as exc:
                return str(exc) or type(exc).__name__
            used.extend(d for d in agg.used if d not in used)
            if j < k:
                self.recorder.interim_aggregate(r, edge, j, agg)
                model = _read_only(agg.weights)
        assert agg is not None  # k >= 1
        self.recorder.edge_aggregate(r, edge, agg)
        return agg, used


def run_hierarchy(
    plan: HierarchyPlan,
    initial: Weights,
    train: Callable[[TrainIns], TrainRes],
    *,
    device_strategy: Strategy,
    cloud_strategy: Strategy,
    recorder: Recorder | None = None,
    evaluate: Callable[[Weights], float] | None = None,
    dropouts: tuple[type[BaseException], ...] = (FedledgerError,),
) -> HierarchyResult:
    """Run ``plan.cloud_rounds`` rounds of hierarchical FL from ``initial`` (schedule above).

    ``train`` is called once per device instruction, one at a time; the
    ``weights`` it receives are read-only. Its exceptions of a ``dropouts`` type
    are reported as failures. The deadline is checked when the call returns: the
    in-memory engine cannot interrupt it, it only discards the late result.
    ``evaluate`` (optional) scores the initial model and each new global model.
    Raises NotEnoughResults when no edge delivers in a round, and propagates any
    error of the strategies' ``configure``, the cloud strategy's ``aggregate``
    and the recorder (except a refused device update).
    """
    rec: Recorder = recorder if recorder is not None else NullRecorder()
    run = _Run(plan, train, device_strategy, rec, tuple(dropouts))
    global_w = _read_only(initial)
    final: Weights = global_w
    accuracy: list[float] = [float(evaluate(global_w))] if evaluate is not None else []
    reports: list[RoundReport] = []
    for r in range(1, plan.cloud_rounds + 1):
        start = time.perf_counter()
        first_failure = len(run.failures)
        rec.global_model(r, global_w)
        instructions = cloud_strategy.configure(r, global_w, list(plan.edges))
        results: list[TrainRes] = []
        failures: list[Failure] = []
        devices_of: dict[str, list[str]] = {}
        for ins in instructions:
            if ins.client not in plan.edges:
                raise UsageError(
                    f"round {r}: the cloud strategy chose {ins.client!r}, not an edge of the plan"
                )
            outcome = run.run_edge(r, ins.client, ins.weights)
            if isinstance(outcome, str):
                f = Failure(ins.client, r, outcome)
                failures.append(f)
                run.report(f, CLOUD)
                continue
            agg, devices_of[ins.client] = outcome
            results.append(TrainRes(ins.client, agg.weights, agg.num_samples, agg.metrics))
        if not results:
            reasons = "; ".join(f"{f.client}: {f.reason}" for f in failures) or "no edge was chosen"
            raise NotEnoughResults(f"round {r}: no edge delivered an aggregate ({reasons})")
        cloud = cloud_strategy.aggregate(r, results, failures)
        rec.cloud_aggregate(r, cloud)
        wall_s = time.perf_counter() - start
        final = cloud.weights
        global_w = _read_only(cloud.weights)
        if evaluate is not None:
            accuracy.append(float(evaluate(global_w)))
        reports.append(
            RoundReport(
                round=r,
                wall_s=wall_s,
                edges=cloud.used,
                devices=tuple(d for e in cloud.used for d in devices_of.get(e, ())),
                failures=tuple(run.failures[first_failure:]),
                metrics=dict(cloud.metrics),
            )
        )
    return HierarchyResult(final, tuple(accuracy), tuple(reports))
