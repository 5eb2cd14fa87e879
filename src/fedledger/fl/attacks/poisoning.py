"""Data- and model-poisoning attacks on federated learning, as reusable pieces.

Every attack acts on what a malicious client sends, never on the aggregator:

* **data poisoning**: :func:`flip_labels` / :func:`poison_data` relabel an
  attacker's local data (label flipping, Biggio et al. 2012; Fang et al. 2020
  use ``y -> C - 1 - y``), and the attacker then trains honestly on it;
* **model poisoning** of one update (:class:`UpdateAttack`, applied to the
  update = trained model minus starting model, flattened, float64):
  :class:`SignFlip` sends ``-scale * update`` (Li et al., "RSA: Byzantine-robust
  stochastic aggregation methods", AAAI 2019, use ``scale = 4``), :class:`Scale`
  sends ``factor * update`` (explicit boosting, Bhagoji et al., "Analyzing
  federated learning through an adversarial lens", ICML 2019),
  :class:`GaussianNoise` replaces the update with ``N(0, sigma^2)`` noise
  (Blanchard et al. 2017 use variance 200);
* **colluding attackers** (:class:`Coalition`): every member sends the same
  crafted update, computed from the members' own honest updates.
  :class:`LittleIsEnough` is Baruch et al., "A little is enough: circumventing
  defenses for distributed learning", NeurIPS 2019: ``mu - z * sigma``
  coordinate-wise, with the mean and standard deviation estimated from the
  members' honest updates and ``z`` from :func:`alie_z`; :class:`MeanOf` sends
  the mean of the members' individually attacked updates.

:func:`poison_updates` and :class:`Coalition` wrap a ``train(TrainIns) -> TrainRes``
callable so that the chosen clients behave maliciously; the result plugs into
:func:`~fedledger.fl.hierarchy.run_hierarchy` in place of the honest trainer.
Attackers report their honest sample count and metrics. Randomness (the noise
attack) comes from :func:`attack_rng`, a pure function of a seed, the round and
the client, so runs are reproducible.

NumPy only: torch is needed only by the honest trainer being wrapped.
"""

from __future__ import annotations

import math
import numbers
import statistics
import zlib
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from fedledger.errors import UsageError
from fedledger.fl.data import Dataset
from fedledger.fl.strategy import TrainIns, TrainRes
from fedledger.fl.weights import flatten, unflatten, weights_hash

__all__ = [
    "Coalition",
    "Craft",
    "GaussianNoise",
    "LittleIsEnough",
    "MeanOf",
    "Scale",
    "SignFlip",
    "Train",
    "UpdateAttack",
    "alie_z",
    "attack_rng",
    "flip_labels",
    "poison_data",
    "poison_updates",
]

Train = Callable[[TrainIns], TrainRes]


class UpdateAttack(Protocol):
    """Turns one honest update (a float64 vector) into the malicious one sent instead."""

    def __call__(self, update: np.ndarray, rng: np.random.Generator) -> np.ndarray: ...


class Craft(Protocol):
    """Turns the coalition's honest updates (one per row) into the one update all members send."""

    def __call__(self, honest: np.ndarray, rng: np.random.Generator) -> np.ndarray: ...


def _real(name: str, value: object, *, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise UsageError(f"{name} must be a finite number, got {value!r}")
    if positive and value <= 0:
        raise UsageError(f"{name} must be > 0, got {value!r}")
    return float(value)


# -- data poisoning ------------------------------------------------------------------------
def flip_labels(y: np.ndarray, num_classes: int, perm: np.ndarray | None = None) -> np.ndarray:
    """Label flipping: ``y -> C - 1 - y``, or ``y -> perm[y]`` for a permutation of the classes."""
    y = np.asarray(y, dtype=np.int64)
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise UsageError(f"labels must lie in [0, {num_classes}), got [{y.min()}, {y.max()}]")
    if perm is None:
        return num_classes - 1 - y
    p = np.asarray(perm, dtype=np.int64)
    if sorted(p.tolist()) != list(range(num_classes)):
        raise UsageError(f"perm must be a permutation of 0..{num_classes - 1}, got {p.tolist()}")
    return np.asarray(p[y])


def poison_data(
    data: Mapping[str, Dataset], attackers: Collection[str], num_classes: int,
    perm: np.ndarray | None = None,
) -> dict[str, Dataset]:
    """A copy of ``data`` in which every attacker's labels are flipped (:func:`flip_labels`)."""
    unknown = sorted(set(attackers) - set(data))
    if unknown:
        raise UsageError(f"attackers without data: {', '.join(unknown)}")
    return {c: Dataset(ds.x, flip_labels(ds.y, num_classes, perm)) if c in attackers else ds
            for c, ds in data.items()}


# -- model poisoning of one update --------------------------------------------------------
@dataclass(frozen=True)
class SignFlip:
    """Send ``-scale * update``: push the model the other way (Li et al. 2019 use ``scale = 4``)."""

    scale: float = 4.0

    def __post_init__(self) -> None:
        _real("sign flip scale", self.scale, positive=True)

    def __call__(self, update: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return np.asarray(-self.scale * update)


@dataclass(frozen=True)
class Scale:
    """Send ``factor * update`` (boosting, Bhagoji et al. 2019: e.g. ``factor = n / attackers``)."""

    factor: float

    def __post_init__(self) -> None:
        _real("scale factor", self.factor)

    def __call__(self, update: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return np.asarray(self.factor * update)


@dataclass(frozen=True)
class GaussianNoise:
    """Replace the update with ``N(0, sigma^2)`` noise (Blanchard et al. 2017: variance 200)."""

    sigma: float = math.sqrt(200.0)

    def __post_init__(self) -> None:
        _real("noise sigma", self.sigma, positive=True)

    def __call__(self, update: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return rng.normal(0.0, self.sigma, size=np.shape(update))


# -- colluding attackers -------------------------------------------------------------------
def alie_z(n: int, f: int) -> float:
    """Baruch et al. 2019's ``z_max``: ``Phi^-1((n - s) / n)`` with ``s = floor(n / 2 + 1) - f``.

    ``s`` is how many honest clients the attackers need to appear closer to the mean
    than; a larger ``z`` moves further but risks being detected. Requires ``0 < f < n``
    and ``0 < s``: with ``f >= n / 2 + 1`` the attackers are a majority and need no care.
    """
    if isinstance(n, bool) or isinstance(f, bool) or not (0 < f < n):
        raise UsageError(f"alie_z needs 0 < f < n, got n = {n}, f = {f}")
    s = n // 2 + 1 - f
    if s <= 0:
        raise UsageError(f"alie_z: with f = {f} of n = {n} the attackers are a majority")
    return statistics.NormalDist().inv_cdf((n - s) / n)


@dataclass(frozen=True)
class LittleIsEnough:
    """"A little is enough" (Baruch et al. 2019): ``mu - z * sigma`` of the members' honest updates.

    With a single member the standard deviation is 0 and the crafted update is its honest one.
    """

    z: float

    def __post_init__(self) -> None:
        _real("z", self.z)

    def __call__(self, honest: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return np.asarray(honest.mean(axis=0) - self.z * honest.std(axis=0))


@dataclass(frozen=True)
class MeanOf:
    """Every member sends the mean of the members' individually attacked updates (e.g. sign-flipped)."""

    attack: UpdateAttack

    def __call__(self, honest: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return np.asarray(np.mean([self.attack(row, rng) for row in honest], axis=0))


# -- wrapping a trainer --------------------------------------------------------------------
def attack_rng(seed: int, round_: int, client: str) -> np.random.Generator:
    """The generator an attacker draws from in ``round_``: a pure function of its arguments."""
    return np.random.default_rng([seed, round_, zlib.crc32(client.encode())])


def _send(ins: TrainIns, honest: TrainRes, update: np.ndarray) -> TrainRes:
    """A result from ``ins.client`` whose model is ``ins.weights + update`` (honest count and metrics)."""
    weights = unflatten(flatten(ins.weights) + update, ins.weights)
    return TrainRes(ins.client, weights, honest.num_samples, dict(honest.metrics))


def poison_updates(train: Train, attackers: Collection[str], attack: UpdateAttack, *, seed: int = 0) -> Train:
    """``train`` in which each attacker trains honestly, then sends ``attack(update)`` instead.

    Honest clients are untouched. The update is measured from the instruction's weights.
    """
    members = frozenset(attackers)

    def malicious(ins: TrainIns) -> TrainRes:
        res = train(ins)
        if ins.client not in members:
            return res
        update = flatten(res.weights) - flatten(ins.weights)
        return _send(ins, res, attack(update, attack_rng(seed, ins.round, ins.client)))

    return malicious


class Coalition:
    """A ``train`` callable in which the ``members`` collude: all send ``craft(their honest updates)``.

    The first member asked in a round trains every member honestly from the model it
    was handed (the members share it: they collude on one starting model), crafts one
    update, and every member of that round and model sends it. Honest results are
    cached by (round, model hash, member), so each member trains once per round. Other
    clients are passed to ``train`` unchanged.
    """

    def __init__(self, train: Train, members: Collection[str], craft: Craft, *, seed: int = 0) -> None:
        if not members:
            raise UsageError("a coalition needs at least one member")
        self.train = train
        self.members = tuple(sorted(set(members)))
        self.craft = craft
        self.seed = seed
        self._honest: dict[tuple[int, bytes, str], TrainRes] = {}
        self._crafted: dict[tuple[int, bytes], np.ndarray] = {}

    def _honest_result(self, ins: TrainIns, member: str, model: bytes) -> TrainRes:
        key = (ins.round, model, member)
        if key not in self._honest:
            self._honest[key] = self.train(TrainIns(member, ins.round, ins.weights, ins.config))
        return self._honest[key]

    def __call__(self, ins: TrainIns) -> TrainRes:
        if ins.client not in self.members:
            return self.train(ins)
        model = weights_hash(ins.weights)
        self._crafted = {k: v for k, v in self._crafted.items() if k[0] >= ins.round}
        self._honest = {k: v for k, v in self._honest.items() if k[0] >= ins.round}
        if (ins.round, model) not in self._crafted:
            base = flatten(ins.weights)
            honest = np.stack([flatten(self._honest_result(ins, m, model).weights) - base for m in self.members])
            rng = attack_rng(self.seed, ins.round, "coalition")
            self._crafted[(ins.round, model)] = np.asarray(self.craft(honest, rng), dtype=np.float64)
        return _send(ins, self._honest_result(ins, ins.client, model), self._crafted[(ins.round, model)])
