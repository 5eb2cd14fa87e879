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

With ``dp`` (a :class:`~fedledger.fl.dp.LocalDP`), :class:`SecureAggregation`
also runs seed 001's DP noise as a Gaussian mechanism (§III, local training):
every update is clipped before it is dealt, η has standard deviation
``z · clip`` per coordinate, and each aggregate reports ε per round and in
total. That ε is about one device's masked update ``g + η`` as the edge sees
it; the reconstructed sum carries no noise, so neither the edge aggregate nor
the cloud's model has a DP guarantee of its own (see the class docstring).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from fedledger.crypto.keys import SigningKey
from fedledger.errors import UsageError, VerificationFailed
from fedledger.fl.dp import LocalDP, clip_by_l2
from fedledger.fl.secagg import protocol as P
from fedledger.fl.secagg import session as S
from fedledger.fl.secagg.field import capacity, check_frac_bits, decode
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

NOISE_HEADROOM = 10.0
"""Standard deviations of η that must fit in the field on top of ``clip``.

A masked coordinate ``g + η`` is encoded and decoded in the centred range of
the field; a device whose η falls outside it cannot deal. With ten standard
deviations of room that happens with probability below 2·10⁻²³ per
coordinate, so in practice never.
"""


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

    DP noise: either ``noise_sigma`` (the standard deviation of η per
    coordinate; default 0, no noise) or ``dp``, not both. ``noise_sigma`` on
    its own masks the updates but bounds nothing: an update of any size gets
    the same noise, so no ε exists and none is reported. ``dp`` makes the
    noise a Gaussian mechanism, as :class:`~fedledger.fl.dp.LocalDP`
    describes: each device's update is clipped to L2 norm ``dp.clip`` before
    it is dealt (the device commits to the clipped update, so the secure sum
    is the FedAvg of clipped updates), η has standard deviation
    ``dp.sigma = z · clip``, and the aggregate's metrics carry
    ``dp_epsilon_round``, ``dp_epsilon_total``, ``dp_delta`` (the keys of
    :class:`~fedledger.fl.dp.DPFedAvg`) with ``dp_clip``,
    ``dp_noise_multiplier``, ``dp_sample_rate`` (always 1: the edge knows who
    took part, so no amplification by sampling is claimed) and ``clipped``
    (how many of the summed updates were scaled down).

    What that ε covers: what the edge learns about one device from the masked
    update ``g + η`` the device sends it in a round (zero-out adjacency, L2
    sensitivity ``clip``), composed over rounds by ``dp.accountant``, which
    this strategy steps once per round; ``dp_epsilon_total`` is the ε of the
    device that has sent the most masked updates through this strategy
    (aggregating one round over several edges, as the hierarchy engine does,
    counts once for each device). It does not cover:

    * parties who can recompute η — the device itself, an auditor shown its
      VRF proof, anyone with the simulation ``seed``;
    * the reconstructed sum ``c_i = Σ n_j g_j``, which has no noise: the edge
      and the cloud learn it exactly, so whoever knows the other devices'
      updates recovers one device's update from it (and with a single device
      the sum is that device's update). The aggregate model is therefore not
      differentially private; the ε bounds only the per-device view that
      seed 001's masking protects;
    * the fixed-point rounding of ``g`` and ``η`` (2^-(f+1) per coordinate),
      which the Gaussian accountant does not model.

    Range: a clipped update has every coordinate within ``±clip``, so
    ``clip`` must not exceed ``Params.limit`` (``capacity / weight_budget``)
    or devices could not deal; and ``clip`` plus :data:`NOISE_HEADROOM`
    standard deviations of η must fit in the field's centred range. Both are
    checked here, with a UsageError that says which bound failed.
    """

    def __init__(self, inner: Strategy | None = None, *, edge: str = "edge",
                 edge_key: SigningKey | None = None, threshold: float = 0.6, keep: int | None = None,
                 noise_sigma: float | None = None, dp: LocalDP | None = None, frac_bits: int = 16,
                 weight_budget: int = 1 << 12, weighting: str = "samples", seed: int = 0,
                 noise_key: Callable[[str, int], bytes] | None = None,
                 ledger: S.Ledger | None = None, behaviour: S.Behaviour | None = None,
                 select: P.Selector | None = None) -> None:
        super().__init__(inner if inner is not None else FedAvg())
        if weighting not in ("samples", "uniform"):
            raise UsageError(f"weighting must be 'samples' or 'uniform', got {weighting!r}")
        if not (isinstance(threshold, int | float) and threshold > 0):
            raise UsageError(f"threshold must be a count >= 1 or a fraction in (0, 1], got {threshold!r}")
        if dp is not None and not isinstance(dp, LocalDP):
            raise UsageError(f"dp must be a fedledger.fl.dp.LocalDP, got {type(dp).__name__}")
        if dp is not None and noise_sigma is not None:
            raise UsageError("pass either noise_sigma or dp, not both: with dp the noise's standard "
                             f"deviation is dp.sigma = noise_multiplier · clip = {dp.sigma:g}")
        self.edge = edge
        self.edge_key = edge_key or SigningKey.from_seed(S.simulation_keys(seed, [edge], "edge")[edge])
        self.threshold = threshold
        sigma = dp.sigma if dp is not None else (0.0 if noise_sigma is None else noise_sigma)
        self.template = P.Params(threshold=1, frac_bits=frac_bits, noise_sigma=sigma, keep=keep,
                                 weight_budget=weight_budget)
        self.dp = dp
        if dp is not None:
            _check_dp_range(dp, self.template)
        self._released: dict[str, int] = {}  # masked updates each device has sent through this strategy
        self._accounted = 0  # rounds this strategy has recorded on dp.accountant
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
        return P.threshold_of(self.threshold, n)

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
        clipped: set[str] = set()
        if self.dp is not None:
            for name, update in updates.items():
                updates[name], norm = clip_by_l2(update, self.dp.clip)
                if norm > self.dp.clip:
                    clipped.add(name)
            # Accounted before the protocol runs: the edge sees every masked
            # update in step 1, even if the round fails afterwards.
            self._account(names)
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
        if self.dp is not None:
            acct = self.dp.accountant
            metrics.update({
                "dp_epsilon_round": acct.epsilon_round(),
                "dp_epsilon_total": acct.epsilon_total(),
                "dp_delta": acct.delta,
                "dp_clip": self.dp.clip,
                "dp_noise_multiplier": self.dp.noise_multiplier,
                "dp_sample_rate": 1.0,
                "clipped": len(clipped.intersection(out.used)),
            })
        del self._global[round_]
        samples = sum(r.num_samples for r in results if r.client in out.used)
        return Aggregate(unflat(g0 + mean, base), samples, metrics, out.used)

    def _account(self, devices: Sequence[str]) -> None:
        """Count one more masked update from each of ``devices``; step the accountant to the most sent.

        Counting per device rather than per call keeps one round aggregated
        at several edges (disjoint groups of devices) to a single step.
        """
        assert self.dp is not None
        for name in devices:
            self._released[name] = self._released.get(name, 0) + 1
        most = max(self._released.values())
        if most > self._accounted:
            self.dp.accountant.step(most - self._accounted)
            self._accounted = most


def _check_dp_range(dp: LocalDP, params: P.Params) -> None:
    """UsageError unless clipped updates and their noise fit the fixed-point encoding.

    See "Range" in :class:`SecureAggregation`.
    """
    field_range = capacity(check_frac_bits(params.frac_bits))
    if dp.clip > params.limit:
        raise UsageError(
            f"clip {dp.clip:g} exceeds the largest update coordinate the field can sum, ±{params.limit:g} "
            f"(frac_bits={params.frac_bits}, weight_budget={params.weight_budget}); lower clip, "
            "frac_bits or weight_budget")
    if dp.clip + NOISE_HEADROOM * dp.sigma > field_range:
        raise UsageError(
            f"noise standard deviation {dp.sigma:g} (noise_multiplier {dp.noise_multiplier:g} × clip "
            f"{dp.clip:g}) does not fit the field's range ±{field_range:g} with {NOISE_HEADROOM:g} standard "
            f"deviations of room (frac_bits={params.frac_bits}); lower frac_bits or the noise")


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
