"""Seed 001 as strategy wrappers: secure summation at the edges, a verified sum at the cloud.

:class:`SecureAggregation` wraps an edge's strategy. It keeps the inner
strategy's client selection, and replaces the plaintext average by seed 001's
protocol (:mod:`fedledger.fl.secagg.session`): each result becomes the update
``g = w − w_global``, the devices mask, commit and secret-share it, the edge
verifies and filters, and only the weighted sum ``c_i = Σ n_j g_j`` is
reconstructed. The aggregate is ``w_global + c_i / Σ n_j`` — FedAvg's result,
up to the fixed-point error bound of :mod:`fedledger.fl.secagg.field`.
:class:`SecureCloudSum` wraps the cloud's strategy: it adds the edges' field
sums and has every edge verify ``COM(c) = Π COM(c_i)`` before the new global
model is accepted.

Any strategy that selects clients composes with it (FedAvg, the robust
selection rules); rules whose output is not a weighted sum (median, trimmed
mean) cannot run on secret-shared updates — see :mod:`fedledger.fl.robust`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from fedledger.crypto.keys import SigningKey
from fedledger.errors import UsageError, VerificationFailed
from fedledger.fl.secagg import protocol as P
from fedledger.fl.secagg import session as S
from fedledger.fl.secagg.field import decode
from fedledger.fl.strategy import (
    Aggregate,
    Failure,
    FedAvg,
    NotEnoughResults,
    Strategy,
    StrategyWrapper,
    TrainRes,
)
from fedledger.fl.weights import Weights
from fedledger.fl.weights import flatten as flat
from fedledger.fl.weights import unflatten as unflat

__all__ = ["SecureAggregation", "SecureCloudSum"]


class SecureAggregation(StrategyWrapper):
    """Seed 001 steps 1–5 at one edge (see the module docstring).

    ``threshold``: share sums needed, as a count or a fraction of the round's
    participants (rounded up). ``keep``: seed 001's top-n filter (None: off).
    ``weighting``: ``"samples"`` (FedAvg) or ``"uniform"``; weights are public.
    ``select``: another plaintext selection rule on the masked updates, e.g.
    ``lambda u: robust.multi_krum(u, f, m)`` (replaces ``keep``).
    ``noise_key(client, round)`` gives a device's noise key — its VRF output on
    the round's randomness in a deployment (:func:`session.vrf_noise_key`); by
    default a deterministic simulation key from ``seed``.
    """

    def __init__(self, inner: Strategy | None = None, *, edge: str = "edge",
                 edge_key: SigningKey | None = None, threshold: float = 0.6, keep: int | None = None,
                 noise_sigma: float = 0.0, frac_bits: int = 16, weight_budget: int = 1 << 12,
                 weighting: str = "samples", seed: int = 0,
                 noise_key: Callable[[str, int], bytes] | None = None,
                 ledger: S.Ledger | None = None, behaviour: S.Behaviour | None = None,
                 select: P.Selector | None = None) -> None:
        super().__init__(inner if inner is not None else FedAvg())
        if weighting not in ("samples", "uniform"):
            raise UsageError(f"weighting must be 'samples' or 'uniform', got {weighting!r}")
        if not (isinstance(threshold, int | float) and threshold > 0):
            raise UsageError(f"threshold must be a count >= 1 or a fraction in (0, 1], got {threshold!r}")
        self.edge = edge
        self.edge_key = edge_key or SigningKey.from_seed(S.simulation_keys(seed, [edge], "edge")[edge])
        self.threshold = threshold
        self.template = P.Params(threshold=1, frac_bits=frac_bits, noise_sigma=noise_sigma, keep=keep,
                                 weight_budget=weight_budget)
        self.weighting = weighting
        self.seed = seed
        self.noise_key = noise_key
        self.ledger: S.Ledger = ledger if ledger is not None else S.MemoryLedger()
        self.behaviour = behaviour
        self.select = select
        self._global: dict[int, Weights] = {}

    def configure(self, round_: int, weights: Weights, clients: Sequence[str]) -> list:
        self._global[round_] = weights
        return self.inner.configure(round_, weights, clients)

    def _t(self, n: int) -> int:
        if isinstance(self.threshold, int) and not isinstance(self.threshold, bool) and self.threshold >= 1:
            return min(self.threshold, n)
        if not 0 < float(self.threshold) <= 1:
            raise UsageError(f"threshold fraction must be in (0, 1], got {self.threshold!r}")
        return max(1, math.ceil(float(self.threshold) * n))

    def aggregate(self, round_: int, results: Sequence[TrainRes], failures: Sequence[Failure]) -> Aggregate:
        if round_ not in self._global:
            raise UsageError(f"{self.edge}: round {round_} was never configured, so its global model is unknown")
        min_results = getattr(self.inner, "min_results", 1)
        if len(results) < min_results or not results:
            raise NotEnoughResults(f"round {round_}: {len(results)} results, at least {max(1, min_results)} needed")
        base = self._global[round_]
        g0 = flat(base)
        names = [r.client for r in results]
        if len(set(names)) != len(names):
            raise VerificationFailed(f"round {round_}: more than one result from a client")
        updates = {r.client: flat(r.weights) - g0 for r in results}
        weights = {r.client: (r.num_samples if self.weighting == "samples" else 1) for r in results}
        if any(w < 1 for w in weights.values()):
            raise VerificationFailed(f"round {round_}: a result reports no samples")
        params = P.Params(threshold=self._t(len(results)), frac_bits=self.template.frac_bits,
                          noise_sigma=self.template.noise_sigma, keep=self.template.keep,
                          weight_budget=self.template.weight_budget)
        context = f"fedledger/secagg/{self.edge}/{round_}".encode()
        if self.noise_key is not None:
            noise_keys = {n: self.noise_key(n, round_) for n in names}
        else:
            noise_keys = S.simulation_keys(self.seed * 1_000_003 + round_, names, "noise")
        share_keys = S.simulation_keys(self.seed * 1_000_003 + round_, names, "share")
        out = S.run_edge(self.edge, self.edge_key, context, updates, weights, params,
                         noise_keys=noise_keys, share_key=share_keys.__getitem__, ledger=self.ledger,
                         behaviour=self.behaviour, select=self.select)
        mean = decode(out.total, params.frac_bits) / out.weight
        metrics: dict[str, Any] = {
            "results": len(out.used), "failures": len(failures), "rejected": sorted(out.rejected),
            "penalised": sorted(out.penalised), "secagg_sum": out.total, "secagg_weight": out.weight,
            "secagg_threshold": params.threshold, "secagg_frac_bits": params.frac_bits,
        }
        del self._global[round_]
        samples = sum(r.num_samples for r in results if r.client in out.used)
        return Aggregate(unflat(g0 + mean, base), samples, metrics, out.used)


class SecureCloudSum(StrategyWrapper):
    """Seed 001 step 6 at the cloud: sum the edges' ``c_i`` and have every edge verify it.

    Expects each edge result's metrics to carry ``secagg_sum`` and
    ``secagg_weight`` (as :class:`SecureAggregation` produces). Raises
    VerificationFailed if any edge refuses the sum (a forged aggregate).
    """

    def __init__(self, inner: Strategy | None = None, *, frac_bits: int = 16,
                 ledger: S.Ledger | None = None, behaviour: S.Behaviour | None = None) -> None:
        super().__init__(inner if inner is not None else FedAvg())
        self.frac_bits = frac_bits
        self.ledger: S.Ledger = ledger if ledger is not None else S.MemoryLedger()
        self.behaviour = behaviour
        self._global: dict[int, Weights] = {}
        self.last: S.CloudOutcome | None = None

    def configure(self, round_: int, weights: Weights, clients: Sequence[str]) -> list:
        self._global[round_] = weights
        return self.inner.configure(round_, weights, clients)

    def aggregate(self, round_: int, results: Sequence[TrainRes], failures: Sequence[Failure]) -> Aggregate:
        if round_ not in self._global:
            raise UsageError(f"cloud: round {round_} was never configured, so its global model is unknown")
        if not results:
            raise NotEnoughResults(f"round {round_}: no edge delivered a sum")
        outcomes = []
        for r in sorted(results, key=lambda r: r.client):
            m: Mapping[str, Any] = r.metrics
            if "secagg_sum" not in m:
                raise VerificationFailed(f"round {round_}: edge {r.client} sent no secure sum")
            outcomes.append(S.EdgeOutcome(r.client, m["secagg_sum"], int(m["secagg_weight"]), (), {}, {}, {}, 0))
        params = P.Params(threshold=1, frac_bits=self.frac_bits)
        cloud = S.run_cloud(f"fedledger/secagg/cloud/{round_}".encode(), outcomes, params,
                            ledger=self.ledger, behaviour=self.behaviour)
        self.last = cloud
        if not cloud.accepted:
            bad = sorted(e for e, v in cloud.verdicts.items() if v)
            raise VerificationFailed(f"round {round_}: edges {', '.join(bad)} rejected the cloud's sum: "
                                     f"{cloud.verdicts[bad[0]]}")
        base = self._global.pop(round_)
        g0 = flat(base)
        mean = decode(cloud.total, self.frac_bits) / cloud.weight
        used = tuple(o.edge for o in outcomes)
        metrics = {"results": len(used), "failures": len(failures), "secagg_verified_by": list(used)}
        return Aggregate(unflat(g0 + mean, base), sum(r.num_samples for r in results), metrics, used)
