"""Poisoning attacks against robust aggregation rules, on the in-memory hierarchy.

One experiment runs :func:`~fedledger.fl.hierarchy.run_hierarchy` once per cell of
a grid *attack x defence x attacker fraction*, plus one clean run (no attacker)
per defence; the clean run with plain FedAvg is the baseline every cell is
compared with. Every run shares the data set, its partition across devices, the
initial model and the devices' training seeds, so two runs differ only by the
attack and the defence. The score is the final model's accuracy on the held-out
test set.

Set-up
------
``devices`` devices, split evenly over ``edges`` edges, each holding a share of
the training set (IID by default). Each cloud round every edge aggregates its
devices once with the defence (the device strategy) and the cloud averages the
edges with FedAvg. Attackers are the first ``round(fraction * devices)`` devices
taken edge by edge in turn (device 1 of every edge, then device 2, ...), so they
are spread evenly over the edges and the attackers at 10 % are among those at
20 %. Defences are provisioned for the largest fraction they are meant to
tolerate: ``f = floor(tolerate * devices per edge)`` at every fraction (they do
not know how many attackers there really are).

Attacks (:mod:`fedledger.fl.attacks`), with the strengths of the papers they come from:

* ``label-flip``: attackers train on labels ``y -> 9 - y`` (data poisoning);
* ``boosted-flip``: the same, and the update is scaled by ``devices / attackers``
  (explicit boosting, Bhagoji et al. 2019);
* ``sign-flip``: attackers send ``-4 x`` their honest update (Li et al. 2019);
* ``gaussian``: attackers send ``N(0, 200)`` noise as their update (Blanchard et al. 2017);
* ``alie``: attackers collude and all send ``mu - z sigma`` of their own honest
  updates with Baruch et al.'s ``z_max`` for the edge's size (the edge's attackers
  form one coalition).

Defences (:mod:`fedledger.fl.robust`): ``fedavg`` (none), ``top-n`` (seed 001's fog
filter, keeps ``n - f``), ``krum``, ``multi-krum`` (``m = n - f``), ``median``,
``trimmed-mean`` (``beta = tolerate``) and ``reputation`` (seed 002 §5.2.2 step 16).

Reputation votes are simulated as the contract would sum them: every device votes on
every peer update of its edge as it arrives, before the edge aggregates; an honest
device scores it with the update's accuracy on its own local data, in basis points
(what :func:`fedledger.fl.peer.accuracy_score` computes), and attackers stuff the ballot (the
maximum for each other, 0 for the honest). A device's reputation is the sum of every
vote it has received so far, this round's included.

A run whose global model stops training (every device of every edge fails, e.g. the
model's weights overflow) keeps the last global model and is marked ``collapsed``.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fedledger.errors import FedledgerError, NotFound, UsageError
from fedledger.fl.attacks import (
    Coalition,
    GaussianNoise,
    LittleIsEnough,
    Scale,
    SignFlip,
    Train,
    alie_z,
    poison_data,
    poison_updates,
)
from fedledger.fl.data import Dataset, partition, subset
from fedledger.fl.hierarchy import DeviceDropout, HierarchyPlan, NullRecorder, run_hierarchy
from fedledger.fl.peer import MAX_SCORE
from fedledger.fl.robust import (
    CoordinateMedian,
    Krum,
    MultiKrum,
    ReputationWeighted,
    StatisticalFilter,
    TrimmedMean,
)
from fedledger.fl.specs import check_model_dataset
from fedledger.fl.strategy import Aggregate, FedAvg, NotEnoughResults, Strategy, TrainIns, TrainRes
from fedledger.fl.weights import Weights

__all__ = [
    "ATTACKS",
    "CLEAN",
    "DEFENCES",
    "FRACTIONS",
    "Cell",
    "Job",
    "RobustnessConfig",
    "RobustnessOutcome",
    "Tracker",
    "VoteBook",
    "attacked_trainer",
    "attackers_for",
    "defence_strategy",
    "grid",
    "honest_trainer",
    "prepare",
    "run_cell",
    "run_robustness",
]

ATTACKS = ("label-flip", "boosted-flip", "sign-flip", "gaussian", "alie")
DEFENCES = ("fedavg", "top-n", "krum", "multi-krum", "median", "trimmed-mean", "reputation")
FRACTIONS = (0.1, 0.2, 0.3)
CLEAN = "none"
"""The attack name of the runs without attackers."""
SIGN_FLIP_SCALE = 4.0
GAUSSIAN_SIGMA = math.sqrt(200.0)


@dataclass(frozen=True)
class RobustnessConfig:
    """The grid and the federated job every cell runs."""

    model: str = "digits-mlp"
    dataset: str = "digits"
    devices: int = 20
    edges: int = 1
    rounds: int = 10
    epochs: int = 2
    batch_size: int = 16
    lr: float = 0.05
    momentum: float = 0.9
    partition: str = "iid"
    seed: int = 0
    tolerate: float = 0.3
    attacks: tuple[str, ...] = ATTACKS
    defences: tuple[str, ...] = DEFENCES
    fractions: tuple[float, ...] = FRACTIONS

    def __post_init__(self) -> None:
        check_model_dataset(self.model, self.dataset)
        for name in ("devices", "edges", "rounds", "epochs", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UsageError(f"{name} must be an int >= 1, got {value!r}")
        if self.devices % self.edges:
            raise UsageError(f"{self.devices} devices do not split evenly over {self.edges} edges")
        if not 0.0 <= self.tolerate < 0.5:
            raise UsageError(f"tolerate must be in [0, 0.5), got {self.tolerate}")
        for what, chosen, known in (("attack", self.attacks, ATTACKS), ("defence", self.defences, DEFENCES)):
            unknown = [c for c in chosen if c not in known]
            if unknown or not chosen:
                raise UsageError(f"unknown {what} {', '.join(unknown) or '(none given)'}; known: {', '.join(known)}")
        for frac in self.fractions:
            if not 0.0 < frac < 1.0:
                raise UsageError(f"attacker fractions must be in (0, 1), got {frac}")
            if abs(frac * self.devices - round(frac * self.devices)) > 1e-9:
                raise UsageError(f"{frac:.0%} of {self.devices} devices is not a whole number of devices")
        n, f = self.per_edge, self.f
        if {"krum", "multi-krum"} & set(self.defences) and n <= 2 * f + 2:
            raise UsageError(f"Krum needs more than 2f + 2 = {2 * f + 2} devices per edge, got {n} "
                             f"(f = {f} for tolerate = {self.tolerate}); add devices or lower tolerate")

    @property
    def per_edge(self) -> int:
        """Devices per edge."""
        return self.devices // self.edges

    @property
    def f(self) -> int:
        """How many attackers per edge the defences are provisioned for."""
        return math.floor(self.tolerate * self.per_edge)

    def plan(self) -> HierarchyPlan:
        """Edges ``edge-i`` with devices ``device-i-jj``."""
        return HierarchyPlan(
            {f"edge-{i}": [f"device-{i}-{j:02d}" for j in range(1, self.per_edge + 1)]
             for i in range(1, self.edges + 1)},
            cloud_rounds=self.rounds)

    def train_config(self) -> dict[str, Any]:
        """What the device strategy sends to every device (a :class:`~fedledger.fl.train.TrainConfig`)."""
        return {"epochs": self.epochs, "batch_size": self.batch_size, "lr": self.lr, "momentum": self.momentum}


def attackers_for(plan: HierarchyPlan, count: int) -> tuple[str, ...]:
    """The first ``count`` devices taken edge by edge in turn (see the module docstring)."""
    columns = [list(devices) for devices in plan.edges.values()]
    order = [col[j] for j in range(max(len(c) for c in columns)) for col in columns if j < len(col)]
    return tuple(order[:count])


@dataclass(frozen=True)
class Cell:
    """One run: its attack, defence and attacker fraction, and the final test accuracy."""

    attack: str
    defence: str
    fraction: float
    attackers: int
    accuracy: float
    collapsed: bool = False
    rejected_attackers: float | None = None
    """Share of the attackers' updates the defence left out (selection rules), over all rounds."""


@dataclass(frozen=True)
class RobustnessOutcome:
    """Every cell of the grid, the clean runs included (attack :data:`CLEAN`, fraction 0)."""

    config: RobustnessConfig
    cells: tuple[Cell, ...]
    alie_z: Mapping[float, float] = field(default_factory=dict)

    def clean(self, defence: str = "fedavg") -> float:
        """Accuracy of the run without attackers under ``defence``."""
        return self.cell(CLEAN, defence, 0.0).accuracy

    def cell(self, attack: str, defence: str, fraction: float) -> Cell:
        for c in self.cells:
            if (c.attack, c.defence) == (attack, defence) and math.isclose(c.fraction, fraction):
                return c
        raise NotFound(f"no run for attack {attack}, defence {defence}, fraction {fraction}")


# -- the pieces of one run -----------------------------------------------------------------
@dataclass(frozen=True)
class Job:
    """What every run shares: the plan, each device's data, the initial model and the test set."""

    config: RobustnessConfig
    plan: HierarchyPlan
    data: Mapping[str, Dataset]
    initial: Weights
    test: Dataset
    num_classes: int


def prepare(config: RobustnessConfig) -> Job:
    """Load and partition the data set and draw the initial model (torch is imported here)."""
    from fedledger.fl.datasets import load_dataset
    from fedledger.fl.models import init_weights

    train, test, info = load_dataset(config.dataset, seed=config.seed)
    plan = config.plan()
    parts = partition(train.y, len(plan.devices), config.partition, seed=config.seed)
    data = {d: subset(train, idx) for d, idx in zip(plan.devices, parts, strict=True)}
    return Job(config, plan, data, init_weights(config.model, config.seed), test, info.num_classes)


def honest_trainer(model: str, data: Mapping[str, Dataset], seed: int) -> Train:
    """Local training of each device on its data with the instruction's config, seeded per device and round.

    Training that diverges (a non-finite loss) is reported as a dropout of that device.
    """
    from fedledger.fl.train import TrainConfig, train_local

    index = {d: i for i, d in enumerate(sorted(data))}

    def train(ins: TrainIns) -> TrainRes:
        cfg = TrainConfig.from_dict(dict(ins.config))
        device_seed = seed * 1_000_003 + 1000 * ins.round + index[ins.client]
        try:
            weights, loss = train_local(model, ins.weights, data[ins.client], cfg, device_seed)
        except ValueError as exc:
            raise DeviceDropout(f"{ins.client}: {exc}") from None
        return TrainRes(ins.client, weights, len(data[ins.client]), {"loss": loss})

    return train


def attacked_trainer(job: Job, attack: str, attackers: Sequence[str]) -> Train:
    """The trainer of a run in which ``attackers`` mount ``attack`` (honest devices train normally)."""
    cfg = job.config
    if not attackers:
        return honest_trainer(cfg.model, job.data, cfg.seed)
    if attack in ("label-flip", "boosted-flip"):
        train = honest_trainer(cfg.model, poison_data(job.data, attackers, job.num_classes), cfg.seed)
        if attack == "label-flip":
            return train
        return poison_updates(train, attackers, Scale(cfg.devices / len(attackers)), seed=cfg.seed)
    honest = honest_trainer(cfg.model, job.data, cfg.seed)
    if attack == "sign-flip":
        return poison_updates(honest, attackers, SignFlip(SIGN_FLIP_SCALE), seed=cfg.seed)
    if attack == "gaussian":
        return poison_updates(honest, attackers, GaussianNoise(GAUSSIAN_SIGMA), seed=cfg.seed)
    if attack == "alie":
        return _alie_trainer(job, honest, attackers)
    raise UsageError(f"unknown attack {attack!r}")


def _alie_trainer(job: Job, honest: Train, attackers: Sequence[str]) -> Train:
    """One coalition per edge (its attackers collude on the model their edge hands out)."""
    edge_of = {d: e for e, devices in job.plan.edges.items() for d in devices}
    by_edge: dict[str, list[str]] = defaultdict(list)
    for a in attackers:
        by_edge[edge_of[a]].append(a)
    coalitions = {e: Coalition(honest, members, LittleIsEnough(alie_z(job.config.per_edge, len(members))),
                               seed=job.config.seed) for e, members in by_edge.items()}

    def train(ins: TrainIns) -> TrainRes:
        coalition = coalitions.get(edge_of[ins.client])
        return coalition(ins) if coalition is not None else honest(ins)

    return train


def defence_strategy(name: str, config: RobustnessConfig, reputation: Callable[[int], Mapping[str, float]]) -> Strategy:
    """The device strategy of defence ``name``, wrapping FedAvg with the job's training config."""
    inner = FedAvg(config=config.train_config())
    f = config.f
    if name == "fedavg":
        return inner
    if name == "top-n":
        return StatisticalFilter(inner, f=f)
    if name == "krum":
        return Krum(inner, f=f)
    if name == "multi-krum":
        return MultiKrum(inner, f=f)
    if name == "median":
        return CoordinateMedian(inner)
    if name == "trimmed-mean":
        return TrimmedMean(inner, beta=config.tolerate)
    if name == "reputation":
        return ReputationWeighted(inner, reputation=reputation)
    raise UsageError(f"unknown defence {name!r}")


class VoteBook(NullRecorder):
    """Seed 002 §5.2.2 step 16, simulated: peers vote on every update as it arrives.

    ``accuracy(weights)`` gives, for every device, the accuracy of ``weights`` on that
    device's own data. An honest voter scores a peer's update with its accuracy in
    basis points; an attacker gives ``MAX_SCORE`` to fellow attackers and 0 to the
    honest. Voters are the other devices of the update's edge; no self-votes.
    :meth:`reputation` is the running sum of the votes each device received.
    """

    def __init__(self, edges: Mapping[str, Sequence[str]], attackers: Sequence[str],
                 accuracy: Callable[[Weights], Mapping[str, float]]) -> None:
        self.edges = edges
        self.attackers = frozenset(attackers)
        self.accuracy = accuracy
        self.totals: dict[str, float] = defaultdict(float)

    def device_update(self, round_: int, edge: str, device_round: int, res: TrainRes) -> None:
        acc = self.accuracy(res.weights)
        for voter in self.edges[edge]:
            if voter == res.client:
                continue
            if voter in self.attackers:
                score = MAX_SCORE if res.client in self.attackers else 0
            else:
                score = round(acc[voter] * MAX_SCORE)
            self.totals[res.client] += score

    def reputation(self, round_: int) -> Mapping[str, float]:
        return dict(self.totals)


class Tracker(NullRecorder):
    """Keeps the latest global model and counts how often attackers' updates were left out."""

    def __init__(self, attackers: Sequence[str], inner: NullRecorder | None = None) -> None:
        self.attackers = frozenset(attackers)
        self.inner = inner or NullRecorder()
        self.latest: Weights | None = None
        self.sent = 0
        self.rejected = 0
        self.selection = False

    def global_model(self, round_: int, weights: Weights) -> None:
        self.latest = weights

    def device_update(self, round_: int, edge: str, device_round: int, res: TrainRes) -> None:
        self.inner.device_update(round_, edge, device_round, res)

    def edge_aggregate(self, round_: int, edge: str, agg: Aggregate) -> None:
        if "kept" not in agg.metrics:  # not a selection rule
            return
        self.selection = True
        rejected = set(agg.metrics.get("rejected", ()))
        self.sent += len((rejected | set(agg.used)) & self.attackers)
        self.rejected += len(rejected & self.attackers)


def _per_device_accuracy(model: str, data: Mapping[str, Dataset]) -> Callable[[Weights], dict[str, float]]:
    """``weights -> {device: accuracy on its own data}``, one forward pass over all devices' data."""
    import torch

    from fedledger.fl.models import build_model, set_weights

    names = sorted(data)
    x = torch.from_numpy(np.concatenate([data[d].x for d in names]))
    y = np.concatenate([data[d].y for d in names])
    bounds = np.cumsum([0] + [len(data[d]) for d in names])
    net = build_model(model)
    net.eval()

    def accuracy(weights: Weights) -> dict[str, float]:
        set_weights(net, weights)
        with torch.no_grad():
            correct = net(x).argmax(dim=1).numpy() == y
        return {d: float(correct[bounds[i]:bounds[i + 1]].mean()) for i, d in enumerate(names)}

    return accuracy


def run_cell(job: Job, attack: str, defence: str, fraction: float,
             accuracy: Callable[[Weights], dict[str, float]] | None = None) -> Cell:
    """One run of the grid: ``attack`` by ``fraction`` of the devices against ``defence``."""
    from fedledger.fl.train import evaluate

    cfg = job.config
    count = round(fraction * cfg.devices)
    attackers = attackers_for(job.plan, count) if attack != CLEAN else ()
    votes = None
    if defence == "reputation":
        votes = VoteBook(job.plan.edges, attackers, accuracy or _per_device_accuracy(cfg.model, job.data))
    tracker = Tracker(attackers, votes)
    strategy = defence_strategy(defence, cfg, votes.reputation if votes else lambda _r: {})
    train = attacked_trainer(job, attack, attackers)
    collapsed = False
    try:
        final = run_hierarchy(job.plan, job.initial, train, device_strategy=strategy,
                              cloud_strategy=FedAvg(), recorder=tracker).weights
    except NotEnoughResults:
        collapsed = True
        assert tracker.latest is not None
        final = tracker.latest
    try:
        acc = float(evaluate(cfg.model, final, job.test))
    except (ValueError, FedledgerError):
        acc, collapsed = 1.0 / job.num_classes, True
    share = tracker.rejected / tracker.sent if tracker.selection and tracker.sent else None
    return Cell(attack, defence, fraction if attack != CLEAN else 0.0, len(attackers), acc, collapsed, share)


def grid(config: RobustnessConfig) -> list[tuple[str, str, float]]:
    """Every (attack, defence, fraction) to run, the clean runs (fraction 0) first."""
    cells = [(CLEAN, d, 0.0) for d in config.defences]
    if "fedavg" not in config.defences:
        cells.insert(0, (CLEAN, "fedavg", 0.0))
    cells += [(a, d, frac) for a in config.attacks for frac in config.fractions for d in config.defences]
    return cells


def run_robustness(config: RobustnessConfig,
                   progress: Callable[[int, int, str], None] | None = None) -> RobustnessOutcome:
    """Run the whole grid; ``progress(done, total, label)`` is called after each run."""
    job = prepare(config)
    accuracy = _per_device_accuracy(config.model, job.data) if "reputation" in config.defences else None
    todo = grid(config)
    cells = []
    for i, (attack, defence, fraction) in enumerate(todo, start=1):
        cells.append(run_cell(job, attack, defence, fraction, accuracy))
        if progress is not None:
            progress(i, len(todo), f"{attack} / {defence} / {fraction:.0%}")
    zs = {}
    if "alie" in config.attacks:  # the z of the first edge's coalition
        first = set(next(iter(job.plan.edges.values())))
        for frac in config.fractions:
            members = len(first.intersection(attackers_for(job.plan, round(frac * config.devices))))
            if members:
                zs[frac] = alie_z(config.per_edge, members)
    return RobustnessOutcome(config, tuple(cells), zs)
