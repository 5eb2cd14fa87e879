"""Byzantine-robust aggregation: pure kernels over stacked updates, and strategy wrappers.

An *update* is a client's model minus the model it trained from (the round's
global model, or an edge's interim model), flattened into one vector. The
kernels work on a 2-D array ``U`` of shape ``(n, D)``, one update per row,
and never look at names or sample counts; the wrappers turn a round's results
into ``U`` (rows in client-name order, FedAvg's canonical order) and back.

Rules
-----
* :func:`statistical_top_n`: seed 001's "Verification by Fog": the fog node
  selects the top ``n`` devices "using statistical methods like mean and
  standard deviation". Each row is scored by its mean absolute z-score against
  the coordinate-wise mean and standard deviation of all rows (see
  :func:`statistical_scores`); the ``n`` lowest scores are kept.
* :func:`krum` / :func:`multi_krum`: Blanchard et al., "Machine learning with
  adversaries: Byzantine tolerant gradient descent", NeurIPS 2017. A row's score
  is the sum of squared distances to its ``n - f - 2`` nearest other rows; Krum
  keeps the single best row, Multi-Krum the ``m`` best. Both need ``n > 2f + 2``.
* :func:`coordinate_median` and :func:`trimmed_mean`: Yin et al., "Byzantine-robust
  distributed learning: towards optimal statistical rates", ICML 2018.
* :func:`reputation_weights`: seed 002 §5.2.2 step 16: peers vote on every
  model and the contract keeps ``reputation/<addr>`` as the sum of the votes;
  an update's weight is proportional to its sender's reputation (times its
  sample count in the wrapper), and a sender with zero or negative reputation
  gets no weight.

Which rules compose with secure aggregation
-------------------------------------------
Secure aggregation (seed 001's Shamir secret sharing) reveals only a *sum* of
updates, never an individual one.

* The seed-001 filter, Krum, Multi-Krum, the median and the trimmed mean all
  need the individual updates in plaintext. Under seed 001's design they run at
  the edge (fog) on the differentially-private *masked* updates ``g + eta`` it
  receives: the selection is made on the masked updates, and the selected
  devices' true updates are then summed under secret sharing. So only the
  *selection-style* rules (seed-001 filter, Krum, Multi-Krum) apply with secure
  aggregation: their output is "which devices", which the secure sum then uses.
* The median's and the trimmed mean's *output* is not a linear function of the
  updates, so it cannot come out of a secure sum; they do not compose with
  secure aggregation.
* Sum-based rules compose directly: FedAvg and reputation weighting with public
  weights (reputations are on chain) are a weighted sum of ``weight * update``,
  which each device can scale before sharing, so the sum is computed under
  secret sharing.

Numerics
--------
:func:`flatten` widens float32 tensors to one float64 vector (exact), every
kernel computes in float64, and :func:`unflatten` rounds back to float32 once.
Ties are always broken towards the lower row index (stable sorts), so every
rule is a deterministic function of ``U``.

This module is NumPy-only: auditors and edge validators import it without torch.
"""

from __future__ import annotations

import math
import numbers
from abc import abstractmethod
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from fedledger.errors import UsageError, VerificationFailed
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
from fedledger.fl.weights import Weights, flatten, layout_problem, unflatten

__all__ = [
    "EPS",
    "CoordinateMedian",
    "Krum",
    "MultiKrum",
    "ReputationSource",
    "ReputationWeighted",
    "RobustRule",
    "StatisticalFilter",
    "TrimmedMean",
    "coordinate_median",
    "flatten",
    "krum",
    "krum_scores",
    "multi_krum",
    "reputation_weights",
    "statistical_scores",
    "statistical_top_n",
    "trimmed_mean",
    "trimmed_count",
    "unflatten",
    "weighted_mean",
]

EPS = 1e-12
"""Added to each coordinate's standard deviation so that constant coordinates score 0, not NaN."""

ReputationSource = Mapping[str, float] | Callable[[int], Mapping[str, float]]
"""Each client's reputation: a fixed mapping, or a function of the round (read from the chain)."""


# -- kernels -------------------------------------------------------------------------------
def _matrix(U: np.ndarray) -> np.ndarray:
    """``U`` as a finite float64 2-D array with at least one row, else UsageError."""
    arr = np.asarray(U, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[0] < 1:
        raise UsageError(f"updates must be a 2-D array with at least one row, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise UsageError("updates contain NaN or infinite values")
    return arr


def _count(name: str, value: object, lo: int, hi: int | None = None) -> int:
    """An int in ``[lo, hi]`` (bool refused), else UsageError."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise UsageError(f"{name} must be an int, got {value!r}")
    v = int(value)
    if v < lo or (hi is not None and v > hi):
        bound = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
        raise UsageError(f"{name} must be {bound}, got {v}")
    return v


def _best(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` lowest scores, ties to the lower index, sorted ascending."""
    order = np.argsort(scores, kind="stable")
    return np.sort(order[:k]).astype(np.int64)


def statistical_scores(U: np.ndarray) -> np.ndarray:
    """Seed 001's fog statistic: each row's mean absolute z-score.

    With ``mu`` and ``sigma`` the coordinate-wise mean and (population) standard
    deviation over the rows, row ``i`` scores ``mean_j |U[i, j] - mu[j]| / (sigma[j] + EPS)``.
    Lower is more typical; a coordinate on which every row agrees contributes 0.
    """
    arr = _matrix(U)
    if arr.shape[1] == 0:
        return np.zeros(arr.shape[0])
    mu = arr.mean(axis=0)
    sigma = arr.std(axis=0)
    return np.asarray(np.mean(np.abs(arr - mu) / (sigma + EPS), axis=1))


def statistical_top_n(U: np.ndarray, n: int) -> np.ndarray:
    """Seed 001 "Verification by Fog": indices of the ``n`` rows with the lowest scores.

    Scores are :func:`statistical_scores`; ties go to the lower index; the result is
    sorted ascending (int64). ``n`` must be in ``[1, rows]``, else UsageError.
    """
    arr = _matrix(U)
    n = _count("n", n, 1, arr.shape[0])
    return _best(statistical_scores(arr), n)


def _krum_f(arr: np.ndarray, f: object) -> int:
    rows = arr.shape[0]
    f = _count("f", f, 0)
    if rows <= 2 * f + 2:
        raise UsageError(f"Krum needs n > 2f + 2 updates: n = {rows}, f = {f} needs at least {2 * f + 3}")
    return f


def krum_scores(U: np.ndarray, f: int) -> np.ndarray:
    """Blanchard et al. 2017: each row's sum of squared distances to its ``n - f - 2`` nearest other rows.

    Requires ``n > 2f + 2`` (UsageError otherwise).
    """
    arr = _matrix(U)
    f = _krum_f(arr, f)
    n = arr.shape[0]
    dist = np.empty((n, n), dtype=np.float64)
    for i in range(n):  # row by row: memory O(n * D), and no cancellation as in the Gram form
        d = arr - arr[i]
        dist[i] = np.einsum("ij,ij->i", d, d)
    np.fill_diagonal(dist, np.inf)
    nearest = np.sort(dist, axis=1)[:, : n - f - 2]
    return np.asarray(nearest.sum(axis=1))


def krum(U: np.ndarray, f: int) -> int:
    """Krum: the index of the row with the lowest :func:`krum_scores` (the lower index on a tie)."""
    return int(np.argmin(krum_scores(U, f)))


def multi_krum(U: np.ndarray, f: int, m: int) -> np.ndarray:
    """Multi-Krum: the ``m`` rows with the lowest :func:`krum_scores`, sorted ascending.

    Scores are computed once over all rows, as in Blanchard et al. 2017; ``m`` must be
    in ``[1, n]``.
    """
    scores = krum_scores(U, f)
    m = _count("m", m, 1, scores.shape[0])
    return _best(scores, m)


def coordinate_median(U: np.ndarray) -> np.ndarray:
    """Coordinate-wise median of the rows (the mean of the two middle values for an even count)."""
    return np.asarray(np.median(_matrix(U), axis=0))


def _beta(beta: object) -> float:
    if isinstance(beta, bool) or not isinstance(beta, numbers.Real) or not 0.0 <= float(beta) < 0.5:
        raise UsageError(f"beta must be a number in [0, 0.5), got {beta!r}")
    return float(beta)


def trimmed_count(n: int, beta: float) -> int:
    """How many values :func:`trimmed_mean` drops from each end: ``floor(beta * n)``.

    ``beta`` must be in ``[0, 0.5)`` and ``2 * floor(beta * n) < n`` (UsageError otherwise;
    with ``beta < 0.5`` the second condition always holds, it is checked for clarity).
    """
    k = math.floor(_beta(beta) * n)
    if 2 * k >= n:
        raise UsageError(f"trimmed mean: trimming {k} from each end leaves nothing of {n} updates")
    return k


def trimmed_mean(U: np.ndarray, beta: float) -> np.ndarray:
    """Coordinate-wise beta-trimmed mean: drop the ``floor(beta * n)`` lowest and highest values of each coordinate, average the rest."""
    arr = _matrix(U)
    k = trimmed_count(arr.shape[0], beta)
    ordered = np.sort(arr, axis=0)
    return np.asarray(ordered[k : arr.shape[0] - k].mean(axis=0))


def reputation_weights(
    reputation: Mapping[str, float], clients: Sequence[str], samples: Sequence[int] | None = None
) -> np.ndarray:
    """Normalised averaging weights from reputations (seed 002 §5.2.2 step 16).

    Client ``i`` weighs ``max(reputation[i], 0)`` (a missing client has reputation 0),
    times ``samples[i]`` when given; the weights are divided by their sum. If every
    weight is 0 the result is uniform (over samples when given): nobody has earned
    trust yet, so nobody is singled out. Non-finite reputations raise UsageError.
    """
    raw = np.zeros(len(clients), dtype=np.float64)
    for i, c in enumerate(clients):
        value = reputation.get(c, 0.0)
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
            raise UsageError(f"reputation of {c!r} must be a finite number, got {value!r}")
        raw[i] = max(float(value), 0.0)
    base = np.ones(len(clients)) if samples is None else np.asarray(samples, dtype=np.float64)
    if base.shape != raw.shape:
        raise UsageError(f"{len(clients)} clients but {base.shape[0]} sample counts")
    w = raw * base
    if not np.any(w > 0):
        w = base.copy()
    total = w.sum()
    if total <= 0:
        raise UsageError("reputation weights: every client counts zero samples")
    return np.asarray(w / total)


def weighted_mean(U: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``sum_i weights[i] * U[i]``, accumulated row by row in order (weights are not renormalised)."""
    arr = _matrix(U)
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (arr.shape[0],):
        raise UsageError(f"{arr.shape[0]} updates but weights of shape {w.shape}")
    acc = w[0] * arr[0]
    for i in range(1, arr.shape[0]):
        acc = acc + w[i] * arr[i]
    return np.asarray(acc)


# -- strategy wrappers ---------------------------------------------------------------------
_KEEP_ROUNDS = 2  # configured base models kept for rounds this far behind the latest


class RobustRule(StrategyWrapper):
    """Base of the robust wrappers: updates relative to the configured model, in client-name order.

    ``configure`` delegates to ``inner`` (FedAvg by default) and remembers the model it
    hands out, keyed by round; ``aggregate`` turns each result into its update against
    that model and calls :meth:`combine`. Aggregating a round that was never configured
    is a UsageError. Results are put in client-name order first; a duplicate client or
    a result with another tensor layout is a VerificationFailed. Subclasses set
    :attr:`rule` and :attr:`min_needed`.
    """

    rule = "robust"

    def __init__(self, inner: Strategy | None = None) -> None:
        super().__init__(inner if inner is not None else FedAvg())
        self._bases: dict[int, Weights] = {}

    def min_needed(self) -> int:
        """The fewest results :meth:`combine` can work with."""
        return 1

    def configure(self, round_: int, weights: Weights, clients: Sequence[str]) -> list[TrainIns]:
        """The inner strategy's instructions; UsageError if they are too few for the rule."""
        ins = self.inner.configure(round_, weights, clients)
        if len(ins) < self.min_needed():
            raise UsageError(
                f"round {round_}: {self.rule} needs at least {self.min_needed()} clients, "
                f"{len(ins)} selected"
            )
        self._bases[round_] = [(name, np.array(a, dtype=np.float32, copy=True)) for name, a in weights]
        for old in [r for r in self._bases if r < round_ - _KEEP_ROUNDS]:
            del self._bases[old]
        return ins

    def aggregate(
        self, round_: int, results: Sequence[TrainRes], failures: Sequence[Failure]
    ) -> Aggregate:
        """Order and check the results, stack their updates and :meth:`combine` them."""
        base = self._bases.get(round_)
        if base is None:
            raise UsageError(
                f"round {round_}: {self.rule} cannot aggregate a round it did not configure "
                "(updates are measured from the model handed out in configure)"
            )
        ordered = sorted(results, key=lambda r: r.client)
        names = [r.client for r in ordered]
        for a, b in zip(names, names[1:], strict=False):
            if a == b:
                raise VerificationFailed(f"round {round_}: more than one result from {a!r}")
        if len(ordered) < self.min_needed():
            raise NotEnoughResults(
                f"round {round_}: {self.rule} needs at least {self.min_needed()} results, "
                f"got {len(ordered)} ({len(failures)} failed)"
            )
        base_vec = flatten(base)
        rows = []
        for r in ordered:
            problem = layout_problem(r.weights, base)
            if problem is not None:
                raise VerificationFailed(f"round {round_}: result of {r.client!r}: {problem}")
            try:
                rows.append(flatten(r.weights) - base_vec)
            except ValueError as exc:
                raise VerificationFailed(f"round {round_}: result of {r.client!r}: {exc}") from None
        U = np.stack(rows) if rows else np.zeros((0, base_vec.shape[0]))
        agg = self.combine(round_, ordered, U, base, failures)
        agg.metrics.setdefault("rule", self.rule)
        return agg

    @abstractmethod
    def combine(
        self, round_: int, ordered: Sequence[TrainRes], U: np.ndarray, base: Weights,
        failures: Sequence[Failure],
    ) -> Aggregate:
        """Combine the results (client-name order) whose updates are the rows of ``U``."""


class _Selection(RobustRule):
    """Keep the results :meth:`select` picks and let ``inner`` average them (FedAvg: by sample count)."""

    @abstractmethod
    def select(self, U: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Indices of the rows to keep (ascending) and every row's score (lower is better)."""

    def combine(
        self, round_: int, ordered: Sequence[TrainRes], U: np.ndarray, base: Weights,
        failures: Sequence[Failure],
    ) -> Aggregate:
        keep, scores = self.select(U)
        kept = set(int(i) for i in keep)
        agg = self.inner.aggregate(round_, [ordered[i] for i in sorted(kept)], failures)
        agg.metrics.update({
            "kept": [ordered[i].client for i in sorted(kept)],
            "rejected": [r.client for i, r in enumerate(ordered) if i not in kept],
            "scores": {r.client: float(s) for r, s in zip(ordered, scores, strict=True)},
        })
        return agg


class StatisticalFilter(_Selection):
    """Seed 001's fog filter: keep the ``n - f`` results with the lowest mean |z| (:func:`statistical_top_n`).

    ``f`` is how many results to reject each round; the kept ones are averaged by ``inner``.
    """

    rule = "statistical-top-n"

    def __init__(self, inner: Strategy | None = None, *, f: int) -> None:
        super().__init__(inner)
        self.f = _count("f", f, 0)

    def __repr__(self) -> str:
        return f"StatisticalFilter({self.inner!r}, f={self.f})"

    def min_needed(self) -> int:
        return self.f + 1

    def select(self, U: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return statistical_top_n(U, U.shape[0] - self.f), statistical_scores(U)


class Krum(_Selection):
    """Krum (Blanchard et al. 2017): keep the one result closest to its ``n - f - 2`` neighbours.

    Tolerates ``f`` Byzantine results when ``n > 2f + 2``; fewer clients in ``configure``
    is a UsageError, fewer results in ``aggregate`` a NotEnoughResults.
    """

    rule = "krum"

    def __init__(self, inner: Strategy | None = None, *, f: int) -> None:
        super().__init__(inner)
        self.f = _count("f", f, 0)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.inner!r}, f={self.f})"

    def min_needed(self) -> int:
        return 2 * self.f + 3

    def select(self, U: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        scores = krum_scores(U, self.f)
        return np.array([int(np.argmin(scores))], dtype=np.int64), scores


class MultiKrum(Krum):
    """Multi-Krum (Blanchard et al. 2017): keep the ``m`` best-scored results (default ``n - f``)."""

    rule = "multi-krum"

    def __init__(self, inner: Strategy | None = None, *, f: int, m: int | None = None) -> None:
        super().__init__(inner, f=f)
        self.m = None if m is None else _count("m", m, 1)

    def __repr__(self) -> str:
        return f"MultiKrum({self.inner!r}, f={self.f}, m={self.m})"

    def select(self, U: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        scores = krum_scores(U, self.f)
        n = U.shape[0]
        return _best(scores, n - self.f if self.m is None else min(self.m, n)), scores


class _Replacement(RobustRule):
    """Rules that replace the mean: the new model is ``base + rule(U)``, every result is used."""

    @abstractmethod
    def center(self, round_: int, ordered: Sequence[TrainRes], U: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
        """The aggregated update and extra metrics."""

    def combine(
        self, round_: int, ordered: Sequence[TrainRes], U: np.ndarray, base: Weights,
        failures: Sequence[Failure],
    ) -> Aggregate:
        update, extra = self.center(round_, ordered, U)
        weights = unflatten(flatten(base) + update, base)
        metrics: dict[str, Any] = {"results": len(ordered), "failures": len(failures), "rejected": [], **extra}
        return Aggregate(weights, sum(r.num_samples for r in ordered), metrics,
                         tuple(r.client for r in ordered))


class CoordinateMedian(_Replacement):
    """Coordinate-wise median of the updates (Yin et al. 2018). Sample counts are ignored.

    ``inner`` only chooses the clients; its ``aggregate`` is not used.
    """

    rule = "median"

    def center(self, round_: int, ordered: Sequence[TrainRes], U: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
        return coordinate_median(U), {}


class TrimmedMean(_Replacement):
    """Coordinate-wise beta-trimmed mean of the updates (Yin et al. 2018). Sample counts are ignored.

    Drops ``floor(beta * n)`` values at each end of every coordinate. ``inner`` only
    chooses the clients; its ``aggregate`` is not used.
    """

    rule = "trimmed-mean"

    def __init__(self, inner: Strategy | None = None, *, beta: float) -> None:
        super().__init__(inner)
        self.beta = _beta(beta)

    def __repr__(self) -> str:
        return f"TrimmedMean({self.inner!r}, beta={self.beta})"

    def center(self, round_: int, ordered: Sequence[TrainRes], U: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
        return trimmed_mean(U, self.beta), {"trimmed": trimmed_count(U.shape[0], self.beta)}


class ReputationWeighted(_Replacement):
    """Average the updates weighted by reputation times sample count (seed 002 §5.2.2 step 16).

    ``reputation`` maps each client to its reputation, or is a function of the round
    returning that mapping (e.g. reading ``reputation/<addr>`` from the chain). A client
    with zero or negative reputation gets weight 0 and is listed in ``rejected``; if no
    client has a positive reputation the mean is FedAvg's and ``reputation_fallback`` is
    True in the metrics. With equal positive reputations this is FedAvg.
    """

    rule = "reputation"

    def __init__(self, inner: Strategy | None = None, *, reputation: ReputationSource) -> None:
        super().__init__(inner)
        if not (isinstance(reputation, Mapping) or callable(reputation)):
            raise UsageError(f"reputation must be a mapping or a callable, got {type(reputation).__name__}")
        self.reputation = reputation

    def center(self, round_: int, ordered: Sequence[TrainRes], U: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
        rep = self.reputation if isinstance(self.reputation, Mapping) else self.reputation(round_)
        names = [r.client for r in ordered]
        try:
            w = reputation_weights(rep, names, [r.num_samples for r in ordered])
        except UsageError as exc:
            raise VerificationFailed(f"round {round_}: {exc}") from None
        fallback = not any(float(rep.get(c, 0.0)) > 0 for c in names)
        return weighted_mean(U, w), {
            "reputation_fallback": fallback,
            "weights": {c: float(x) for c, x in zip(names, w, strict=True)},
            "rejected": [] if fallback else [c for c, x in zip(names, w, strict=True) if x == 0.0],
        }
