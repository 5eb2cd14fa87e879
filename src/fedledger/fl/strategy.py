"""Federated learning strategies: who trains in a round, and how results are combined.

A strategy is the decision logic of one aggregator (an edge over its devices, or
the cloud over its edges) and nothing else: it never touches the network, a
clock or global randomness. :meth:`Strategy.configure` returns instructions
(:class:`TrainIns`) for the caller to deliver; :meth:`Strategy.aggregate` is
handed the results that came back *and* the failures (devices that dropped out,
missed a deadline or were refused), and returns an :class:`Aggregate`. The
round loop that delivers instructions lives elsewhere
(:mod:`fedledger.fl.hierarchy` in memory, the node roles over HTTP).

New behaviour (secure aggregation, robust aggregation, differential privacy) is
added by wrapping an inner strategy in a :class:`StrategyWrapper` subclass.

This module is NumPy-only: auditors and edge validators import it without torch.
"""

from __future__ import annotations

import math
import numbers
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np

from fedledger.errors import UsageError, VerificationFailed
from fedledger.fl.aggregate import fedavg
from fedledger.fl.weights import Weights

__all__ = [
    "Aggregate",
    "Failure",
    "FedAvg",
    "NotEnoughResults",
    "Strategy",
    "StrategyWrapper",
    "TrainIns",
    "TrainRes",
]


class NotEnoughResults(VerificationFailed):
    """Too few clients delivered a usable result for the round to be aggregated."""


@dataclass(frozen=True, eq=False)
class TrainIns:
    """An instruction to ``client``: train from ``weights`` in ``round`` with ``config``.

    Compared by identity (the weights are arrays); the arrays may be shared by
    every instruction of a round and must not be modified in place.
    """

    client: str
    round: int
    weights: Weights
    config: Mapping[str, Any]


@dataclass(frozen=True, eq=False)
class TrainRes:
    """What ``client`` sent back: its new weights, how many samples it trained on, metrics."""

    client: str
    weights: Weights
    num_samples: int
    metrics: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Failure:
    """``client`` delivered no usable result in ``round``; ``reason`` says why, for people."""

    client: str
    round: int
    reason: str


@dataclass(frozen=True, eq=False)
class Aggregate:
    """The combined model of a round.

    ``num_samples`` is the total sample count of the results used, ``used`` the
    clients whose results went into ``weights``, in the order they were combined.
    """

    weights: Weights
    num_samples: int
    metrics: dict[str, Any]
    used: tuple[str, ...]


class Strategy(ABC):
    """Decision logic of one aggregator: configure a round, then aggregate what came back."""

    @abstractmethod
    def configure(self, round_: int, weights: Weights, clients: Sequence[str]) -> list[TrainIns]:
        """Choose among the available ``clients`` and say what each should train from."""

    @abstractmethod
    def aggregate(
        self, round_: int, results: Sequence[TrainRes], failures: Sequence[Failure]
    ) -> Aggregate:
        """Combine the ``results`` of ``round_``; ``failures`` are the clients that delivered none.

        Raises a :class:`~fedledger.errors.FedledgerError` (typically
        :class:`NotEnoughResults`) when the round cannot be aggregated.
        """


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _shortfall(round_: int, results: int, failures: Sequence[Failure], needed: int) -> str:
    """Human-readable reason why a round has too few results (lists up to three failures)."""
    msg = (
        f"round {round_}: {_count(results, 'result')} and {_count(len(failures), 'failure')}, "
        f"need at least {_count(needed, 'result')}"
    )
    if failures:
        shown = "; ".join(f"{f.client}: {f.reason}" for f in failures[:3])
        more = f"; and {len(failures) - 3} more" if len(failures) > 3 else ""
        msg += f" ({shown}{more})"
    return msg


def _weighted_loss(results: Sequence[TrainRes]) -> float | None:
    """Sample-weighted mean of the numeric ``loss`` metrics, or None if no result has one."""
    total = 0
    acc = 0.0
    for res in results:
        loss = res.metrics.get("loss")
        if isinstance(loss, bool) or not isinstance(loss, numbers.Real):
            continue
        total += res.num_samples
        acc += res.num_samples * float(loss)
    return acc / total if total > 0 else None


class FedAvg(Strategy):
    """Federated averaging (McMahan et al. 2017): sample-count-weighted mean of the results.

    ``configure`` selects ``max(min_clients, floor(fraction * available))`` clients
    (all of them when that is every client); a partial selection is drawn with
    ``np.random.default_rng(seed + round_)``, so it is a pure function of the
    seed, the round and the set of available clients. Instructions come out
    sorted by client name and all carry ``config``.

    ``aggregate`` needs at least ``min_results`` results, else raises
    :class:`NotEnoughResults`. Results are combined in a canonical order, sorted
    by client name, whatever order they arrived in: :func:`~fedledger.fl.aggregate.fedavg`
    accumulates in the order given, and auditors recompute an aggregate
    bit-for-bit from the recorded updates, which they can only do if the order
    is a function of the updates themselves. The metrics are ``results`` and
    ``failures`` (counts) and, when any result reports a numeric ``loss``, the
    sample-weighted mean ``loss``.
    """

    fraction: float
    min_clients: int
    min_results: int
    config: Mapping[str, Any]
    seed: int

    def __init__(
        self,
        *,
        fraction: float = 1.0,
        min_clients: int = 1,
        min_results: int = 1,
        config: Mapping[str, Any] | None = None,
        seed: int = 0,
    ) -> None:
        if not (isinstance(fraction, numbers.Real) and 0.0 < float(fraction) <= 1.0):
            raise UsageError(f"FedAvg: fraction must be in (0, 1], got {fraction!r}")
        for name, value in (("min_clients", min_clients), ("min_results", min_results)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UsageError(f"FedAvg: {name} must be an int >= 1, got {value!r}")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise UsageError(f"FedAvg: seed must be an int >= 0, got {seed!r}")
        self.fraction = float(fraction)
        self.min_clients = min_clients
        self.min_results = min_results
        self.config = MappingProxyType(dict(config or {}))
        self.seed = seed

    def __repr__(self) -> str:
        return (
            f"FedAvg(fraction={self.fraction}, min_clients={self.min_clients}, "
            f"min_results={self.min_results}, config={dict(self.config)}, seed={self.seed})"
        )

    def num_selected(self, available: int) -> int:
        """How many of ``available`` clients a round selects (Flower's rule: floor, then the minimum)."""
        return min(available, max(self.min_clients, math.floor(self.fraction * available)))

    def configure(self, round_: int, weights: Weights, clients: Sequence[str]) -> list[TrainIns]:
        """Select clients (see the class docstring); UsageError if fewer than ``min_clients`` exist."""
        if isinstance(round_, bool) or not isinstance(round_, int) or round_ < 0:
            raise UsageError(f"FedAvg: round must be an int >= 0, got {round_!r}")
        pool = sorted(clients)
        if len(set(pool)) != len(pool):
            raise UsageError(f"round {round_}: duplicate client names in {pool}")
        if len(pool) < self.min_clients:
            raise UsageError(
                f"round {round_}: {len(pool)} clients available, min_clients is {self.min_clients}"
            )
        k = self.num_selected(len(pool))
        if k < len(pool):
            rng = np.random.default_rng(self.seed + round_)
            picked = np.sort(rng.choice(len(pool), size=k, replace=False))
            pool = [pool[int(i)] for i in picked]
        return [TrainIns(c, round_, weights, self.config) for c in pool]

    def aggregate(
        self, round_: int, results: Sequence[TrainRes], failures: Sequence[Failure]
    ) -> Aggregate:
        """Sample-weighted mean of the results in client-name order (see the class docstring)."""
        if len(results) < self.min_results:
            raise NotEnoughResults(_shortfall(round_, len(results), failures, self.min_results))
        ordered = sorted(results, key=lambda r: r.client)
        names = tuple(r.client for r in ordered)
        for a, b in zip(names, names[1:], strict=False):
            if a == b:
                raise VerificationFailed(f"round {round_}: more than one result from {a!r}")
        try:
            weights = fedavg([(r.weights, r.num_samples) for r in ordered])
        except ValueError as exc:
            raise VerificationFailed(
                f"round {round_}: cannot average the results of {', '.join(names)} "
                f"(in that order): {exc}"
            ) from None
        metrics: dict[str, Any] = {"results": len(ordered), "failures": len(failures)}
        loss = _weighted_loss(ordered)
        if loss is not None:
            metrics["loss"] = loss
        return Aggregate(weights, sum(r.num_samples for r in ordered), metrics, names)


class StrategyWrapper(Strategy):
    """A strategy that delegates to ``inner``; subclasses override what they change.

    The base class on its own is a transparent pass-through. A wrapper may
    rewrite the instructions (e.g. add a masking seed), filter or transform the
    results before the inner aggregation (e.g. clip, drop outliers), or
    post-process the aggregate (e.g. add calibrated noise).
    """

    def __init__(self, inner: Strategy) -> None:
        self.inner = inner

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.inner!r})"

    def configure(self, round_: int, weights: Weights, clients: Sequence[str]) -> list[TrainIns]:
        return self.inner.configure(round_, weights, clients)

    def aggregate(
        self, round_: int, results: Sequence[TrainRes], failures: Sequence[Failure]
    ) -> Aggregate:
        return self.inner.aggregate(round_, results, failures)
