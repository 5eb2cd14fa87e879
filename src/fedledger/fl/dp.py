"""Differential privacy for federated learning: L2 clipping, Gaussian noise, (ε, δ) accounting.

Two places to add noise are supported:

* **Central DP** (:class:`DPFedAvg`), DP-FedAvg in the style of McMahan et al.,
  "Learning differentially private recurrent language models", ICLR 2018: the
  aggregator clips every client's update, averages the clipped updates with
  uniform weights and adds Gaussian noise to the mean.
* **Local DP** (:class:`LocalDP`), seed 001's "Local Training" step: each device
  masks its gradient with noise η drawn from a normal distribution before it
  sends the masked update ``g + η`` to its edge (fog) node.

The ε values come from Google's ``dp-accounting`` library (RDP by default, PLD
on request); this module only describes the mechanism to it as events
(``GaussianDpEvent``, ``PoissonSampledDpEvent``, ``SelfComposedDpEvent``) and
never computes ε itself.

Unit of privacy and adjacency
-----------------------------
The protected unit is one *client* of the strategy (a device when the strategy
runs at an edge, an edge when it runs at the cloud), i.e. user-level privacy.
Two inputs are neighbours when one client's update is replaced by the zero
update ("zero-out" adjacency, Kairouz et al. 2021; ``REPLACE_SPECIAL`` in
``dp-accounting``). Every update is clipped to L2 norm ``clip``, so the L2
sensitivity of the *sum* of clipped updates is ``clip`` and that of their mean
over ``n`` clients is ``clip / n``; the number of participants ``n`` does not
change between neighbours (it is public anyway: aggregates name the clients
they used). For the Gaussian mechanism, with or without Poisson sampling, this
gives the same ε as add/remove-one adjacency. Protecting against the
*substitution* of one arbitrary update for another (replace-one) doubles the
sensitivity to ``2 * clip``, i.e. it is the guarantee reported here for half
the noise multiplier; it is not what these accountants report.

Who the guarantee holds against
-------------------------------
Noise that can be recomputed can be subtracted. :class:`DPFedAvg` derives its
noise from ``seed`` so that an auditor can recompute an aggregate; the ε holds
only against parties who do not know the seed. The same applies to
:class:`LocalDP` when the caller derives η from randomness others can read.

This module needs only NumPy; ``dp-accounting`` is imported when an ε is
first computed, so auditors can recompute noise without it.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np

from fedledger.crypto.hashing import sha256
from fedledger.errors import UsageError, VerificationFailed
from fedledger.fl.strategy import (
    Aggregate,
    Failure,
    Strategy,
    StrategyWrapper,
    TrainIns,
    TrainRes,
)
from fedledger.fl.weights import Weights, flatten, layout_problem, unflatten
from fedledger.logs import quieted

__all__ = [
    "ACCOUNTANTS",
    "DPFedAvg",
    "LocalDP",
    "PrivacyAccountant",
    "central_noise",
    "clip_by_l2",
    "gaussian_noise",
    "local_gaussian_sigma",
]

ACCOUNTANTS = ("rdp", "pld")
"""Accountant kinds: Rényi DP (``RdpAccountant``) or privacy loss distributions (``PLDAccountant``)."""

_KEEP_ROUNDS = 2  # configured base models kept for rounds this far behind the latest


# -- validation ----------------------------------------------------------------------------
def _positive(name: str, value: object) -> float:
    """``value`` as a finite float > 0, else UsageError."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise UsageError(f"{name} must be a number, got {value!r}")
    out = float(value)
    if not (math.isfinite(out) and out > 0.0):
        raise UsageError(f"{name} must be a finite number > 0, got {value!r}")
    return out


def _rate(value: object) -> float:
    """A sampling rate in (0, 1], else UsageError."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise UsageError(f"sample rate must be a number, got {value!r}")
    out = float(value)
    if not (0.0 < out <= 1.0):
        raise UsageError(f"sample rate must be in (0, 1], got {value!r}")
    return out


def _delta(value: object) -> float:
    """A δ in (0, 1), else UsageError."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise UsageError(f"delta must be a number, got {value!r}")
    out = float(value)
    if not (0.0 < out < 1.0):
        raise UsageError(f"delta must be in (0, 1), got {value!r}")
    return out


def _kind(value: object) -> str:
    if value not in ACCOUNTANTS:
        raise UsageError(f"accountant must be one of {', '.join(ACCOUNTANTS)}, got {value!r}")
    return str(value)


def _seed(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise UsageError(f"seed must be an int >= 0, got {value!r}")
    return value


# -- mechanisms ----------------------------------------------------------------------------
def clip_by_l2(vec: np.ndarray, clip: float) -> tuple[np.ndarray, float]:
    """Scale ``vec`` down to L2 norm at most ``clip``; return it (float64) and its original norm.

    The norm is taken over all elements together, so a whole model update (all
    layers flattened) is clipped as one vector. A vector already within the
    bound is returned unchanged (as float64). UsageError for a bad ``clip`` or
    a vector with NaN or infinite values.
    """
    bound = _positive("clip", clip)
    arr = np.asarray(vec, dtype=np.float64)
    if not np.all(np.isfinite(arr)):
        raise UsageError("clip_by_l2: the vector contains NaN or infinite values")
    norm = float(np.linalg.norm(arr.ravel()))
    if norm <= bound:
        return arr.copy(), norm
    return arr * (bound / norm), norm


def gaussian_noise(shape: int | Sequence[int], sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Independent N(0, sigma²) values of the given shape, as float64 (sigma = 0 gives zeros)."""
    if isinstance(sigma, bool) or not isinstance(sigma, numbers.Real):
        raise UsageError(f"sigma must be a number, got {sigma!r}")
    scale = float(sigma)
    if not (math.isfinite(scale) and scale >= 0.0):
        raise UsageError(f"sigma must be a finite number >= 0, got {sigma!r}")
    return np.asarray(rng.normal(0.0, scale, size=shape), dtype=np.float64)


def central_noise(
    seed: int, round_: int, clients: Sequence[str], size: int, sigma: float
) -> np.ndarray:
    """The noise :class:`DPFedAvg` adds to the mean of ``clients``' clipped updates in ``round_``.

    A pure function of its arguments, so an auditor who knows the seed can
    recompute an aggregate: the generator is NumPy's default (PCG64) seeded with
    ``SeedSequence([seed, round_, H])`` where ``H`` is the SHA-256 of the client
    names (in the order given, one per line) read as a big-endian integer.
    Mixing in the clients keeps two aggregates of the same round over different
    groups (two edges sharing one strategy) from receiving the same noise,
    which would cancel in their difference.
    """
    digest = sha256("\n".join(clients).encode("utf-8"))
    entropy = [_seed(seed), int(round_), int.from_bytes(digest, "big")]
    rng = np.random.default_rng(np.random.SeedSequence(entropy))
    return gaussian_noise(int(size), sigma, rng)


def local_gaussian_sigma(clip: float, noise_multiplier: float) -> float:
    """Per-coordinate standard deviation of a device's noise η: ``noise_multiplier * clip``.

    One device's clipped update has L2 sensitivity ``clip`` under zero-out
    adjacency (see the module docstring), so this is the Gaussian mechanism with
    noise multiplier ``noise_multiplier``.
    """
    return _positive("noise multiplier", noise_multiplier) * _positive("clip", clip)


# -- accounting ----------------------------------------------------------------------------
def _dp_accounting() -> Any:
    try:
        import dp_accounting
    except ImportError:
        raise UsageError(
            "privacy accounting needs the dp-accounting package: pip install 'fedledger[fl]'"
        ) from None
    return dp_accounting


class PrivacyAccountant:
    """(ε, δ) of repeated rounds of a (Poisson-sampled) Gaussian mechanism, via ``dp-accounting``.

    Each round releases one Gaussian mechanism with noise multiplier ``z`` (noise
    standard deviation over L2 sensitivity); with ``sample_rate`` q < 1 every
    client takes part in a round independently with probability q
    (``PoissonSampledDpEvent``), which amplifies privacy; q = 1 means every
    client in every round (``GaussianDpEvent``, no amplification). Rounds
    compose (``SelfComposedDpEvent``). ``accountant`` is ``"rdp"`` (default,
    ``RdpAccountant``) or ``"pld"`` (``PLDAccountant`` with value discretisation
    ``pld_discretization``; tighter, slower, still an upper bound).
    Adjacency is zero-out (``REPLACE_SPECIAL``), see the module docstring.

    Results are cached until the next :meth:`step`.
    """

    noise_multiplier: float
    sample_rate: float
    delta: float
    accountant: str
    pld_discretization: float

    def __init__(
        self,
        noise_multiplier: float,
        sample_rate: float = 1.0,
        delta: float = 1e-5,
        accountant: str = "rdp",
        *,
        pld_discretization: float = 1e-3,
    ) -> None:
        self.noise_multiplier = _positive("noise multiplier", noise_multiplier)
        self.sample_rate = _rate(sample_rate)
        self.delta = _delta(delta)
        self.accountant = _kind(accountant)
        self.pld_discretization = _positive("pld_discretization", pld_discretization)
        self._steps: dict[float, int] = {}
        self._cache: dict[tuple[tuple[float, int], ...], float] = {}

    def __repr__(self) -> str:
        return (
            f"PrivacyAccountant(noise_multiplier={self.noise_multiplier}, "
            f"sample_rate={self.sample_rate}, delta={self.delta}, "
            f"accountant={self.accountant!r}, rounds={self.rounds})"
        )

    @property
    def rounds(self) -> int:
        """How many rounds have been recorded with :meth:`step`."""
        return sum(self._steps.values())

    def step(self, rounds: int = 1, sample_rate: float | None = None) -> None:
        """Record ``rounds`` more rounds, at ``sample_rate`` (default: the configured rate)."""
        if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
            raise UsageError(f"rounds must be an int >= 1, got {rounds!r}")
        q = self.sample_rate if sample_rate is None else _rate(sample_rate)
        self._steps[q] = self._steps.get(q, 0) + rounds

    def round_event(self, sample_rate: float | None = None) -> Any:
        """The ``dp_accounting`` event of one round (at ``sample_rate``, default the configured one)."""
        dpa = _dp_accounting()
        q = self.sample_rate if sample_rate is None else _rate(sample_rate)
        gaussian = dpa.GaussianDpEvent(self.noise_multiplier)
        return gaussian if q == 1.0 else dpa.PoissonSampledDpEvent(q, gaussian)

    def event(self) -> Any:
        """The ``dp_accounting`` event of every round recorded so far (NoOp before the first)."""
        return self._event(tuple(sorted(self._steps.items())))

    def epsilon_round(self, sample_rate: float | None = None) -> float:
        """ε at ``delta`` of a single round on its own (at ``sample_rate``, default the configured one)."""
        q = self.sample_rate if sample_rate is None else _rate(sample_rate)
        return self._epsilon(((q, 1),))

    def epsilon_total(self) -> float:
        """ε at ``delta`` of all rounds recorded so far (0.0 before the first)."""
        return self._epsilon(tuple(sorted(self._steps.items())))

    def _event(self, steps: tuple[tuple[float, int], ...]) -> Any:
        dpa = _dp_accounting()
        if not steps:
            return dpa.NoOpDpEvent()
        parts = [dpa.SelfComposedDpEvent(self.round_event(q), count) for q, count in steps]
        return parts[0] if len(parts) == 1 else dpa.ComposedDpEvent(parts)

    def _epsilon(self, steps: tuple[tuple[float, int], ...]) -> float:
        if not steps:
            return 0.0
        cached = self._cache.get(steps)
        if cached is not None:
            return cached
        dpa = _dp_accounting()
        relation = dpa.NeighboringRelation.REPLACE_SPECIAL
        with quieted("absl"):
            if self.accountant == "pld":
                acct = dpa.pld.PLDAccountant(
                    relation, value_discretization_interval=self.pld_discretization
                )
            else:
                acct = dpa.rdp.RdpAccountant(neighboring_relation=relation)
            acct.compose(self._event(steps))
            eps = float(acct.get_epsilon(self.delta))
        self._cache[steps] = eps
        return eps


# -- central DP ----------------------------------------------------------------------------
class DPFedAvg(StrategyWrapper):
    """Central differential privacy for one aggregator (DP-FedAvg, McMahan et al. 2018).

    ``configure`` delegates client selection to ``inner`` and remembers the
    model it hands out. ``aggregate`` then, for round ``r``:

    1. turns each result into its update (result − handed-out model) and clips
       the update, all layers together, to L2 norm ≤ ``clip``;
    2. lets ``inner`` average ``model + clipped update`` with every sample count
       set to 1, i.e. the *uniform* mean of the clipped updates (``inner`` also
       enforces its minimum number of results and the canonical order);
    3. adds N(0, (z · clip / n)²) to every coordinate, n being the number of
       clients averaged, drawn by :func:`central_noise` from ``seed``, ``r`` and
       the clients' names, so an auditor with the seed can recompute it.

    ``inner`` must average (FedAvg): the noise is calibrated to a mean, whose
    sensitivity is ``clip / n``. Why uniform weights: with sample-count weights
    ``n_k / N`` a client's influence is ``(n_k / N) · clip``, which depends on a
    count the client reports itself; one client claiming a huge count would
    push its influence up to ``clip`` and the sensitivity would no longer be
    ``clip / n``. (McMahan et al. bound the weights and use a fixed
    denominator instead.) The aggregate's ``num_samples`` is still the true
    total, for the level above.

    Accounting: each round is a Gaussian mechanism with noise multiplier z,
    Poisson-sampled at rate q. Unless ``sample_rate`` is given, q is the
    fraction of the available clients that ``inner`` selected in
    ``configure``: this approximates the selection of a fixed-size subset by
    Poisson sampling with the same expected size. Amplification by sampling
    assumes an observer does not learn who was selected; FedAvg's selection
    follows from a public seed and the aggregate lists the clients used, so
    pass ``sample_rate=1.0`` for the guarantee against an observer who sees
    them. Aggregating a round number again (the hierarchy engine does so once
    per edge, over disjoint groups of devices) adds no composition: a client's
    data enters only one of those aggregates. A round counts once, at the
    largest rate seen for it.

    Metrics added to the inner aggregate's: ``dp_epsilon_round``,
    ``dp_epsilon_total``, ``dp_delta``, ``dp_clip``, ``dp_noise_multiplier``,
    ``dp_sample_rate`` and ``clipped`` (how many of the averaged updates had
    to be scaled down).
    """

    clip: float
    noise_multiplier: float
    delta: float
    seed: int
    sample_rate: float | None
    accountant_kind: str

    def __init__(
        self,
        inner: Strategy,
        clip: float,
        noise_multiplier: float,
        delta: float,
        seed: int,
        *,
        sample_rate: float | None = None,
        accountant: str = "rdp",
    ) -> None:
        super().__init__(inner)
        self.clip = _positive("clip", clip)
        self.noise_multiplier = _positive("noise multiplier", noise_multiplier)
        self.delta = _delta(delta)
        self.seed = _seed(seed)
        self.sample_rate = None if sample_rate is None else _rate(sample_rate)
        self.accountant_kind = _kind(accountant)
        self._bases: dict[int, Weights] = {}
        self._rates: dict[int, float] = {}
        self._round_rates: dict[int, float] = {}
        self._accountant: PrivacyAccountant | None = None

    def __repr__(self) -> str:
        return (
            f"DPFedAvg({self.inner!r}, clip={self.clip}, "
            f"noise_multiplier={self.noise_multiplier}, delta={self.delta}, seed={self.seed}, "
            f"sample_rate={self.sample_rate}, accountant={self.accountant_kind!r})"
        )

    @property
    def accountant(self) -> PrivacyAccountant:
        """The accountant of every round aggregated so far (one step per round number)."""
        if self._accountant is None:
            acct = PrivacyAccountant(
                self.noise_multiplier, 1.0, self.delta, self.accountant_kind
            )
            for q in self._round_rates.values():
                acct.step(1, q)
            self._accountant = acct
        return self._accountant

    def configure(self, round_: int, weights: Weights, clients: Sequence[str]) -> list[TrainIns]:
        """The inner strategy's instructions; remembers the model and the round's sampling rate."""
        ins = self.inner.configure(round_, weights, clients)
        available = len(set(clients))
        if self.sample_rate is not None:
            rate = self.sample_rate
        else:
            rate = min(1.0, len(ins) / available) if available and ins else 1.0
        self._bases[round_] = [
            (name, np.array(a, dtype=np.float32, copy=True)) for name, a in weights
        ]
        self._rates[round_] = rate
        for old in [r for r in self._bases if r < round_ - _KEEP_ROUNDS]:
            del self._bases[old]
            self._rates.pop(old, None)
        return ins

    def aggregate(
        self, round_: int, results: Sequence[TrainRes], failures: Sequence[Failure]
    ) -> Aggregate:
        """Clip, average uniformly, add noise, account (see the class docstring)."""
        base = self._bases.get(round_)
        if base is None:
            raise UsageError(
                f"round {round_}: DPFedAvg cannot aggregate a round it did not configure "
                "(updates are measured from the model handed out in configure)"
            )
        base_vec = flatten(base)
        pseudo: list[TrainRes] = []
        clipped: set[str] = set()
        for res in results:
            problem = layout_problem(res.weights, base)
            if problem is not None:
                raise VerificationFailed(f"round {round_}: result of {res.client!r}: {problem}")
            try:
                vec = flatten(res.weights)
            except ValueError as exc:
                raise VerificationFailed(
                    f"round {round_}: result of {res.client!r}: {exc}"
                ) from None
            update, norm = clip_by_l2(vec - base_vec, self.clip)
            if norm > self.clip:
                clipped.add(res.client)
            pseudo.append(TrainRes(res.client, unflatten(base_vec + update, base), 1, res.metrics))
        mean = self.inner.aggregate(round_, pseudo, failures)
        n = len(mean.used)
        sigma = self.noise_multiplier * self.clip / n
        noise = central_noise(self.seed, round_, mean.used, base_vec.shape[0], sigma)
        weights = unflatten(flatten(mean.weights) + noise, base)

        rate = self._rates[round_]
        if rate > self._round_rates.get(round_, 0.0):
            self._round_rates[round_] = rate
            self._accountant = None
        acct = self.accountant
        used = set(mean.used)
        metrics = dict(mean.metrics)
        metrics.update({
            "dp_epsilon_round": acct.epsilon_round(rate),
            "dp_epsilon_total": acct.epsilon_total(),
            "dp_delta": self.delta,
            "dp_clip": self.clip,
            "dp_noise_multiplier": self.noise_multiplier,
            "dp_sample_rate": rate,
            "clipped": len(clipped & used),
        })
        num_samples = sum(r.num_samples for r in results if r.client in used)
        return Aggregate(weights, num_samples, metrics, mean.used)


# -- local DP (seed 001) -------------------------------------------------------------------
class LocalDP:
    """Seed 001's device-side masking: clip the update to ``clip``, add η ~ N(0, (z · clip)²).

    The edge sees one device's masked update ``clipped + η`` per round. Under
    zero-out adjacency (the device's update against the zero update; see the
    module docstring) its L2 sensitivity is ``clip``, so each round is a
    Gaussian mechanism with noise multiplier z and no sampling; :attr:`accountant`
    composes the rounds in which :meth:`mask` was called and reports the ε the
    edge gets about one device, per round and in total.

    The noise is supplied by the caller (the secure-aggregation code derives it
    from on-chain randomness as ``sigma * standard_normal``). The ε holds only
    against parties who cannot reproduce η: noise derived from randomness the
    edge can read gives no privacy against the edge. It also covers only the
    masked update: a sum of *unmasked* updates reconstructed later under
    secret sharing carries no DP noise of its own.
    """

    clip: float
    noise_multiplier: float
    accountant: PrivacyAccountant

    def __init__(
        self,
        clip: float,
        noise_multiplier: float,
        delta: float = 1e-5,
        accountant: str = "rdp",
    ) -> None:
        self.clip = _positive("clip", clip)
        self.noise_multiplier = _positive("noise multiplier", noise_multiplier)
        self.accountant = PrivacyAccountant(self.noise_multiplier, 1.0, delta, accountant)

    def __repr__(self) -> str:
        return (
            f"LocalDP(clip={self.clip}, noise_multiplier={self.noise_multiplier}, "
            f"delta={self.accountant.delta}, accountant={self.accountant.accountant!r})"
        )

    @property
    def sigma(self) -> float:
        """Per-coordinate standard deviation of η (:func:`local_gaussian_sigma`)."""
        return local_gaussian_sigma(self.clip, self.noise_multiplier)

    def clip_update(self, update_vec: np.ndarray) -> np.ndarray:
        """The update scaled to L2 norm ≤ ``clip`` (float64): what the device commits to."""
        clipped, _ = clip_by_l2(update_vec, self.clip)
        return clipped

    def mask(self, update_vec: np.ndarray, noise: np.ndarray) -> np.ndarray:
        """``clip_update(update_vec) + noise`` (float64), and one more round on the accountant.

        ``noise`` must have the update's shape and finite values, and should be
        ``sigma * N(0, 1)`` per coordinate; UsageError otherwise (shape, values).
        """
        clipped = self.clip_update(update_vec)
        eta = np.asarray(noise, dtype=np.float64)
        if eta.shape != clipped.shape:
            raise UsageError(f"noise has shape {eta.shape}, the update {clipped.shape}")
        if not np.all(np.isfinite(eta)):
            raise UsageError("noise contains NaN or infinite values")
        self.accountant.step()
        return np.asarray(clipped + eta)
