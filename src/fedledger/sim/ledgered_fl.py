"""Hierarchical FedAvg with and without the ledger, in one process, measured side by side.

Both arms run the same hierarchy engine (:func:`~fedledger.fl.hierarchy.run_hierarchy`)
on the same :class:`Workload`: one data set, partition, initial model and training
program, and local training in recorded steps (:func:`~fedledger.fl.steps.train_steps`,
seed 000 §V-B) with the same seeds, so the two arms compute bit-identical models.

* :class:`PlainArm` trains and averages, nothing else.
* :class:`LedgeredRun` is the engine's recorder and device train function in one, and
  does in-process what the cloud, edge and device nodes do over HTTP
  (``node/roles/cloud.py``, ``edge.py``, ``devices.py``). It keeps one main chain and
  one sub-chain per edge, each built block by block by its proposer
  (:class:`~fedledger.sim.interlocked.ChainBuilder`: Ed25519-signed transactions, every
  block proposed and applied, accumulator and state root computed), and one on-disk
  :class:`~fedledger.storage.blobs.BlobStore` for the cloud and for each edge.

The ledger arm's data flow:

0. before round 1 (:meth:`LedgeredRun.setup`): the cloud opens the task; each device
   seals, stores at its edge and records (``fl.record_data``, σ by the device) every
   batch of its readings; the cloud publishes the initial model.
1. round r: each edge checks the global model's authenticator against the main chain,
   downloads and opens the cloud's blob, and stores a copy sealed for its devices;
2. each device checks its starting model (the authenticator, or in sub-round j > 1 the
   edge's sub-round j-1 aggregate on the sub-chain), downloads and opens it, trains
   from what it opened, seals and stores every step model, and records one
   ``fl.record_step`` per step and its ``fl.submit_update`` in one block;
3. the edge checks each update (committed with a successful receipt, signed by the
   device, for this round, sub-round and base, with the sample count the engine
   weights it by), downloads and opens its blob against the recorded hash and checks
   it is exactly the model the engine aggregates; with ``verify_steps`` N it re-runs N
   recorded steps drawn by a generator seeded with the update's transaction hash;
4. the edge seals, stores and records each aggregate (``fl.record_aggregate``); after
   the k-th, a quorum of its validators signs an anchor of its sub-chain, which it
   relays to the main chain (Type-II, ``interlock.anchor_subchain``);
5. the cloud copies each edge aggregate into its store, opens and checks it,
   evaluates the new global model on its held-out test set, seals, stores and
   publishes it (``fl.publish_model``: authenticator, parents with their anchors),
   and relays a quorum-signed anchor of the main chain to every sub-chain (Type-III).

Not modelled: sockets and consensus messages (each chain has a single proposer that
proposes and applies its blocks; ``fedledger bench microchain`` and ``bench mainchain``
measure consensus), and light-client proofs (a party reads the chain state this process
holds; nodes check Merkle proofs from a verified header chain).

Stages
------
Ledger-arm time is split into the stages of seed 004 Table III: ``train`` (local
training), ``encrypt`` (serialising a model or data batch and sealing it for its
readers; with sealing off, serialising and hashing), ``store`` (writing blobs into a
store), ``commit`` (every signature: transactions, data σ, authenticators, anchor
quorums; proposing and applying blocks), ``download`` (reading blobs back, content
hash checked), ``decrypt`` (opening a blob against its recorded hash, deserialising)
and ``verify`` (chain-state checks: authenticators, the previous aggregate, update
records and receipts, and that the opened models are the ones the engine averages).
``spot_check`` is the edge re-running sampled steps (its own downloads included);
``evaluate`` is the cloud's test-set evaluation. What a round spends outside the
stages is the engine's own work (FedAvg, bookkeeping), the same in both arms.

Timing
------
:class:`StageClock` times each round from the moment the round's global model is
handed out to the moment the next one is published, with :func:`time.perf_counter`,
and leaves out ``evaluate`` (the plain arm does not evaluate) and, with
``verify_steps`` = 0, ``spot_check``: the spot check then still re-runs one sampled
step per update, so its cost is measured, but outside the round. :func:`run_pipeline`
runs the two arms in two threads that take turns round by round (:class:`Turns`, in
ABBA order: plain then ledger in odd rounds, ledger then plain in even ones), so each
pair of rounds is measured back to back under the same machine load and neither arm
always goes first; only one arm computes at a time.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from fedledger.contracts.base import read_state
from fedledger.contracts.fl import authenticator_message, data_message, stage
from fedledger.crypto.hashing import tagged_hash
from fedledger.crypto.keys import Domain, SigningKey, address_of, is_valid
from fedledger.errors import ContractError, FedledgerError, UsageError, VerificationFailed
from fedledger.fl.data import (
    Dataset,
    dataset_hash,
    decode_dataset,
    encode_dataset,
    partition,
    subset,
)
from fedledger.fl.datasets import DatasetInfo, load_dataset
from fedledger.fl.hierarchy import HierarchyPlan, HierarchyResult, NullRecorder, run_hierarchy
from fedledger.fl.steps import Batch, Step, recompute_step, train_steps
from fedledger.fl.strategy import Aggregate, FedAvg, TrainIns, TrainRes
from fedledger.fl.weights import Weights, decode_weights, encode_weights, weights_hash
from fedledger.ledger.block import MAX_BLOCK_TXS, Receipt
from fedledger.ledger.chain import ChainState
from fedledger.ledger.genesis import Genesis, Identity
from fedledger.ledger.interlock import make_anchor, quorum, sign_anchor
from fedledger.ledger.tx import Transaction
from fedledger.node.roles.base import FLSettings
from fedledger.sim.interlocked import T0, Call, ChainBuilder
from fedledger.storage.artefacts import DATA, MODEL, open_artefact, seal_artefact
from fedledger.storage.blobs import BlobStore

__all__ = [
    "LEDGER_STAGES",
    "LedgeredRun",
    "PipelineConfig",
    "PipelineOutcome",
    "PlainArm",
    "StageClock",
    "Turns",
    "Workload",
    "prepare",
    "run_alternating",
    "run_pipeline",
]

LEDGER_STAGES = ("train", "encrypt", "store", "commit", "download", "decrypt", "verify")
"""The stages of a ledger-arm round (seed 004 Table III), in data-flow order."""
MAIN = "main"
T = TypeVar("T")


# -- what runs -----------------------------------------------------------------------------
@dataclass(frozen=True)
class PipelineConfig:
    """The job (model, data, training program, k, sealing, spot checks) and the deployment's size."""

    settings: FLSettings
    edges: int = 2
    devices_per_edge: int = 5
    rounds: int = 5
    validators_per_edge: int = 4
    main_validators: int = 4
    record_steps: bool = True  # seed 000 §V-B; False records only each device's update, as seed 004 does

    def __post_init__(self) -> None:
        for name in ("edges", "devices_per_edge", "rounds", "validators_per_edge", "main_validators"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UsageError(f"{name} must be an int >= 1, got {value!r}")
        if self.settings.verify_steps < 0:
            raise UsageError(f"verify_steps must be >= 0, got {self.settings.verify_steps}")

    def plan(self) -> HierarchyPlan:
        """Edges ``edge-i`` with devices ``device-i-jj``; edge ``edge-i`` runs sub-chain ``sub-i``."""
        return HierarchyPlan(
            {f"edge-{i}": [f"device-{i}-{j:02d}" for j in range(1, self.devices_per_edge + 1)]
             for i in range(1, self.edges + 1)},
            cloud_rounds=self.rounds, device_rounds=self.settings.device_rounds)


def _key(label: str) -> SigningKey:
    return SigningKey.from_seed(tagged_hash("fedledger/sim/ledgered-fl", label.encode()))


@dataclass(frozen=True)
class Parties:
    """Every key of the deployment, derived from its name (runs are reproducible)."""

    cloud: SigningKey
    main_validators: tuple[SigningKey, ...]  # the cloud first
    edges: dict[str, SigningKey]
    sub_validators: dict[str, tuple[SigningKey, ...]]  # each edge first
    devices: dict[str, SigningKey]
    auditor: SigningKey  # the task's reader of every sealed artefact

    @classmethod
    def named(cls, config: PipelineConfig, plan: HierarchyPlan) -> Parties:
        cloud = _key("cloud")
        edges = {e: _key(e) for e in plan.edges}
        return cls(
            cloud=cloud,
            main_validators=(cloud, *(_key(f"cloud-v{j}") for j in range(2, config.main_validators + 1))),
            edges=edges,
            sub_validators={e: (edges[e], *(_key(f"{e}-v{j}") for j in range(2, config.validators_per_edge + 1)))
                            for e in plan.edges},
            devices={d: _key(d) for d in plan.devices},
            auditor=_key("auditor"),
        )


@dataclass(frozen=True)
class Workload:
    """What both arms share: plan, keys, program, initial model, each device's batches, test set."""

    config: PipelineConfig
    plan: HierarchyPlan
    parties: Parties
    program: dict[str, Any]
    initial: Weights
    batches: dict[str, tuple[Batch, ...]]
    pooled: Dataset  # every device's readings together: the centralised baseline's training set
    test: Dataset
    info: DatasetInfo
    edge_of: dict[str, str]

    @property
    def settings(self) -> FLSettings:
        return self.config.settings

    def samples(self, device: str) -> int:
        return sum(len(b.data) for b in self.batches[device])

    def device_round(self, t: int) -> tuple[int, int]:
        """The cloud round r and sub-round j (1..k) of the engine's device-round counter t = (r-1)k + j."""
        k = self.plan.device_rounds
        return (t - 1) // k + 1, (t - 1) % k + 1

    def local_steps(self, device: str, start: Weights, t: int) -> list[Step]:
        """``device``'s local training in device round ``t`` from ``start``, in recorded steps."""
        round_, sub_round = self.device_round(t)
        return train_steps(self.program, start, self.batches[device], device=self.parties.devices[device].public_key,
                           round_=round_, sub_round=sub_round)

    def evaluate(self, weights: Weights) -> float:
        """Accuracy on the cloud's held-out test set."""
        from fedledger.fl.train import evaluate

        return float(evaluate(self.settings.model, weights, self.test))

    def centralized_accuracy(self) -> float:
        """The same model trained on every device's data pooled, for the same total epochs (R × k × E)."""
        from fedledger.fl.train import TrainConfig, train_local

        s = self.settings
        cfg = TrainConfig(epochs=self.config.rounds * self.plan.device_rounds * s.epochs, batch_size=s.batch_size,
                          lr=s.lr, momentum=s.momentum)
        weights, _loss = train_local(s.model, self.initial, self.pooled, cfg, s.seed)
        return self.evaluate(weights)


def prepare(config: PipelineConfig) -> Workload:
    """Load and partition the data set, cut each device's share into batches of ``readings``, make keys."""
    from fedledger.fl.models import init_weights

    s = config.settings
    plan = config.plan()
    program = s.program()
    train, test, info = load_dataset(s.dataset, data_dir=s.data_path, seed=s.seed)
    parts = partition(train.y, len(plan.devices), s.partition, seed=s.seed, alpha=s.alpha)
    batches = {device: tuple(_batches(train, idx, s.readings)) for device, idx in zip(plan.devices, parts, strict=True)}
    return Workload(config, plan, Parties.named(config, plan), program, init_weights(s.model, s.seed), batches,
                    subset(train, np.concatenate(parts)), test, info,
                    {d: e for e, devices in plan.edges.items() for d in devices})


def _batches(train: Dataset, idx: np.ndarray, size: int) -> Iterator[Batch]:
    for start in range(0, len(idx), size):
        data = subset(train, idx[start : start + size])
        yield Batch(dataset_hash(data), data)


# -- timing --------------------------------------------------------------------------------
def _now() -> tuple[float, float]:
    """Wall time and this thread's CPU time."""
    return time.perf_counter(), time.thread_time()


class StageClock:
    """Seconds per stage per round (``stages[0]``: before round 1) and each round's timed wall time.

    A round runs from :meth:`begin_round` to :meth:`end_round`; time spent in an
    ``untimed`` stage is measured but left out of the round. ``round_cpu_s`` is the
    CPU time of the round's thread over the same span: it leaves out waiting for the
    disk and time other processes took the core. Stages do not nest.
    """

    def __init__(self, untimed: Iterable[str] = ()) -> None:
        self.untimed = frozenset(untimed)
        self.stages: list[defaultdict[str, float]] = [defaultdict(float)]
        self.round_s: list[float] = []
        self.round_cpu_s: list[float] = []
        self._start = (0.0, 0.0)
        self._left_out = (0.0, 0.0)
        self._busy = False

    def begin_round(self) -> None:
        self.stages.append(defaultdict(float))
        self._left_out = (0.0, 0.0)
        self._start = _now()

    def end_round(self) -> None:
        (wall, cpu), (wall0, cpu0) = _now(), self._start
        self.round_s.append(wall - wall0 - self._left_out[0])
        self.round_cpu_s.append(cpu - cpu0 - self._left_out[1])

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        if self._busy:
            raise RuntimeError(f"stage {name!r} started inside another stage")
        self._busy = True
        wall0, cpu0 = _now()
        try:
            yield
        finally:
            wall, cpu = _now()
            self._busy = False
            self.stages[-1][name] += wall - wall0
            if name in self.untimed:
                self._left_out = (self._left_out[0] + wall - wall0, self._left_out[1] + cpu - cpu0)

    def total(self, name: str) -> float:
        """Seconds in stage ``name``, setup included."""
        return sum(s[name] for s in self.stages)

    def per_round(self, name: str) -> list[float]:
        """Seconds in stage ``name`` in each round (setup excluded)."""
        return [s[name] for s in self.stages[1:]]


class _OtherArmFailed(Exception):
    """The other arm stopped with an error, so this one stops too."""


class Turns:
    """Two arms taking turns round by round in ABBA order: (a, b), (b, a), (a, b), ..."""

    def __init__(self, a: str, b: str, rounds: int) -> None:
        self._order = [arm for r in range(rounds) for arm in ((a, b) if r % 2 == 0 else (b, a))]
        self._pos = 0
        self._aborted = False
        self._cond = threading.Condition()

    def wait(self, arm: str) -> None:
        """Block until it is ``arm``'s turn; raise if the other arm failed."""
        with self._cond:
            self._cond.wait_for(
                lambda: self._aborted or self._pos == len(self._order) or self._order[self._pos] == arm)
            if self._aborted:
                raise _OtherArmFailed(arm)
            if self._pos == len(self._order):
                raise RuntimeError(f"{arm} wants a turn after the last one")

    def done(self) -> None:
        """The current turn is over."""
        with self._cond:
            self._pos += 1
            self._cond.notify_all()

    def abort(self) -> None:
        with self._cond:
            self._aborted = True
            self._cond.notify_all()


class TimedArm(NullRecorder):
    """A recorder timing each round of one arm (waiting for the arm's turn first, if arms alternate)."""

    def __init__(self, name: str, clock: StageClock, turns: Turns | None) -> None:
        self.name = name
        self.clock = clock
        self.turns = turns

    def global_model(self, round_: int, weights: Weights) -> None:
        if self.turns is not None:
            self.turns.wait(self.name)
        self.clock.begin_round()

    def cloud_aggregate(self, round_: int, agg: Aggregate) -> None:
        self.clock.end_round()
        if self.turns is not None:
            self.turns.done()


def _run(work: Workload, train: Callable[[TrainIns], TrainRes], recorder: TimedArm) -> HierarchyResult:
    """The engine with FedAvg at both levels; any refused or failed device is an error here."""
    result = run_hierarchy(work.plan, work.initial, train, device_strategy=FedAvg(), cloud_strategy=FedAvg(),
                           recorder=recorder, dropouts=())
    if result.failures:
        reasons = "; ".join(f"{f.client} (round {f.round}): {f.reason}" for f in result.failures)
        raise VerificationFailed(f"the {recorder.name} arm lost updates: {reasons}")
    return result


# -- the plain arm -------------------------------------------------------------------------
class PlainArm(TimedArm):
    """Hierarchical FedAvg with the ledger arm's local training and nothing else."""

    def __init__(self, work: Workload, turns: Turns | None = None) -> None:
        super().__init__("plain", StageClock(), turns)
        self.work = work

    def train(self, ins: TrainIns) -> TrainRes:
        with self.clock.stage("train"):
            steps = self.work.local_steps(ins.client, ins.weights, ins.round)
        return TrainRes(ins.client, steps[-1].weights, self.work.samples(ins.client))

    def run(self) -> HierarchyResult:
        return _run(self.work, self.train, self)


# -- the ledger ----------------------------------------------------------------------------
@dataclass
class Chain:
    """One chain built in this process by its proposer, with every transaction and receipt by hash."""

    builder: ChainBuilder
    proposer: SigningKey
    txs: dict[bytes, tuple[Transaction, Receipt]] = field(default_factory=dict)

    @property
    def state(self) -> ChainState:
        return self.builder.state

    def read(self, key: str) -> Any:
        """An ``fl`` contract state entry (``None`` if absent)."""
        return read_state(self.state.state, "fl", key)

    def submit(self, calls: Sequence[Call]) -> list[bytes]:
        """Sign ``calls`` and commit them in the next block(s); their transaction hashes."""
        hashes: list[bytes] = []
        for start in range(0, len(calls), MAX_BLOCK_TXS):
            chunk = list(calls[start : start + MAX_BLOCK_TXS])
            block = self.builder.add(self.proposer, chunk)
            if len(block.txs) != len(chunk):
                raise FedledgerError(f"{self.state.chain_id}: a block left out {len(chunk) - len(block.txs)} calls")
            for tx, receipt in zip(block.txs, self.builder.receipts[-1], strict=True):
                self.txs[tx.tx_hash] = (tx, receipt)
                hashes.append(tx.tx_hash)
        return hashes

    def call(self, calls: Sequence[Call]) -> list[bytes]:
        """:meth:`submit` for a party's own calls, each of which must succeed."""
        hashes = self.submit(calls)
        for (_, contract, method, _), h in zip(calls, hashes, strict=True):
            receipt = self.txs[h][1]
            if not receipt.success:
                raise ContractError(f"{contract}.{method} failed on {self.state.chain_id}: {receipt.error}")
        return hashes

    def tx_counts(self) -> Counter[str]:
        """Committed transactions per ``contract.method``."""
        calls = (tx.call() for tx, _ in self.txs.values())
        return Counter(f"{c.contract}.{c.method}" for c in calls)


def _genesis(chain_id: str, role: str, validators: Sequence[SigningKey], identities: Iterable[Identity],
             peers: Mapping[str, Sequence[SigningKey]]) -> Genesis:
    interlock = {"role": role, "period": 1, "peers": {c: [k.public_key for k in ks] for c, ks in peers.items()}}
    return Genesis(chain_id, T0, tuple(k.public_key for k in validators), tuple(identities), {"interlock": interlock})


def quorum_anchor(chain: Chain, validators: Sequence[SigningKey]) -> dict[str, Any]:
    """Arguments of an anchor of ``chain``'s head signed by a quorum of its ``validators``."""
    head = chain.state.head
    anchor = make_anchor(head, head, chain.state.acc_params.fingerprint())
    signers = validators[: quorum(len(validators))]
    return {"anchor": anchor.to_obj(), "signatures": [[k.public_key, sign_anchor(k, anchor)] for k in signers]}


class Ledger:
    """The deployment's chains and stores: main chain and cloud store, a sub-chain and store per edge.

    Identities as in :func:`fedledger.node.deployment.make_deployment`: the main chain
    admits the cloud and the edges, each sub-chain its edge, the edge's validators, its
    devices and the cloud.
    """

    def __init__(self, parties: Parties, plan: HierarchyPlan, root: Path) -> None:
        self.chain_ids = {edge: f"sub-{i}" for i, edge in enumerate(plan.edges, 1)}
        cloud_id = Identity(parties.cloud.public_key, "cloud", "cloud", MAIN)
        main_ids = [cloud_id, *(Identity(k.public_key, "auditor", f"cloud-v{j}", MAIN)
                                for j, k in enumerate(parties.main_validators[1:], 2))]
        main_ids += [Identity(parties.edges[e].public_key, "edge", e, c) for e, c in self.chain_ids.items()]
        peers = {self.chain_ids[e]: parties.sub_validators[e] for e in plan.edges}
        self.main = Chain(ChainBuilder.from_genesis(_genesis(MAIN, "main", parties.main_validators, main_ids, peers)),
                          parties.cloud)
        self.subs: dict[str, Chain] = {}
        for edge, chain_id in self.chain_ids.items():
            validators = parties.sub_validators[edge]
            ids = [Identity(parties.edges[edge].public_key, "edge", edge, chain_id),
                   *(Identity(k.public_key, "edge", f"{edge}-v{j}", chain_id) for j, k in enumerate(validators[1:], 2)),
                   *(Identity(parties.devices[d].public_key, "device", d, chain_id) for d in plan.edges[edge]),
                   cloud_id]
            genesis = _genesis(chain_id, "sub", validators, ids, {MAIN: parties.main_validators})
            self.subs[edge] = Chain(ChainBuilder.from_genesis(genesis), parties.edges[edge])
        self.cloud_keys = {i.public_key for i in self.main.state.genesis.identities if i.role == "cloud"}
        self.cloud_store = BlobStore(root / "cloud")
        self.edge_stores = {edge: BlobStore(root / edge) for edge in plan.edges}

    def stores(self) -> list[BlobStore]:
        return [self.cloud_store, *self.edge_stores.values()]

    def tx_counts(self) -> Counter[str]:
        """Committed transactions per ``contract.method`` over every chain."""
        total = self.main.tx_counts()
        for chain in self.subs.values():
            total += chain.tx_counts()
        return total


def _same_weights(a: Weights, b: Weights) -> bool:
    return len(a) == len(b) and all(
        na == nb and np.array_equal(xa, xb) for (na, xa), (nb, xb) in zip(a, b, strict=True))


# -- the ledger arm ------------------------------------------------------------------------
@dataclass(frozen=True)
class _Start:
    """The model an edge's devices start a device round from: its hash, the edge's blob, the edge's copy."""

    model: bytes
    blob: bytes
    weights: Weights


class LedgeredRun(TimedArm):
    """The ledger arm: the hierarchy's recorder (edge and cloud) and its device train function.

    Call :meth:`setup` once, then :meth:`run`. Every refusal raises a FedledgerError.
    """

    def __init__(self, work: Workload, root: Path, turns: Turns | None = None,
                 note: Callable[[str], None] | None = None) -> None:
        untimed = {"evaluate"} if work.settings.verify_steps else {"evaluate", "spot_check"}
        super().__init__("ledger", StageClock(untimed), turns)
        self.work = work
        self.ledger = Ledger(work.parties, work.plan, root)
        self.program_hash = work.settings.program_hash()
        self.spot_check_steps = work.settings.verify_steps or 1
        self.steps_rerun = 0
        self.accuracy: list[float] = []  # [initial model, after round 1, ...]
        self.published: list[tuple[bytes, bytes]] = []  # (model hash, cloud blob) of each global model
        self._note = note or (lambda _msg: None)
        self._start: dict[str, _Start] = {}
        self._updates: dict[str, bytes] = {}  # device -> its update's tx in the current device round
        self._parents: list[dict[str, Any]] = []
        self._readers = self._recipients()

    def _recipients(self) -> dict[str, list[bytes] | None]:
        """Who may open each party's artefacts (``None``: stored plain), as in the node roles."""
        p, s, plan = self.work.parties, self.work.settings, self.work.plan
        extra = [p.auditor.public_key]
        out = {"cloud": s.sealed_for(p.cloud.public_key, *(k.public_key for k in p.edges.values()), readers=extra)}
        for edge, devices in plan.edges.items():
            out[edge] = s.sealed_for(p.edges[edge].public_key, p.cloud.public_key,
                                     *(p.devices[d].public_key for d in devices), readers=extra)
            for d in devices:
                out[d] = s.sealed_for(p.devices[d].public_key, p.edges[edge].public_key, readers=extra)
        return out

    def run(self) -> HierarchyResult:
        return _run(self.work, self.train, self)

    # -- cloud ---------------------------------------------------------------------------
    def setup(self) -> None:
        """Before round 1: open the task, record every device's data batches, publish the initial model."""
        s, info, cloud = self.work.settings, self.work.info, self.work.parties.cloud
        with self.clock.stage("commit"):
            self.ledger.main.call([(cloud, "fl", "open_task", {
                "program": self.program_hash, "model": s.model, "dataset": s.dataset, "test_set": info.test_hash,
                "test_samples": info.test_size, "device_rounds": s.device_rounds,
                "readers": [self.work.parties.auditor.public_key],
                "config": {"partition": s.partition, "alpha": repr(s.alpha), "readings": s.readings, "seal": s.seal,
                           "verify_steps": s.verify_steps, "program": self.work.program},
            })])
        for device in self.work.plan.devices:
            self._collect(device)
        self._publish(0, self.work.initial)

    def _publish(self, round_: int, weights: Weights) -> None:
        """Evaluate, seal, store and publish a global model with its authenticator and parents."""
        cloud = self.work.parties.cloud
        with self.clock.stage("evaluate"):
            self.accuracy.append(self.work.evaluate(weights))
        with self.clock.stage("encrypt"):
            model, stored = seal_artefact(encode_weights(weights), self._readers["cloud"], MODEL)
        with self.clock.stage("store"):
            blob = bytes.fromhex(self.ledger.cloud_store.put(stored))
        with self.clock.stage("commit"):
            auth = cloud.sign(Domain.AUTHENTICATOR, authenticator_message(model, self.program_hash, round_))
            self.ledger.main.call([(cloud, "fl", "publish_model", {
                "round": round_, "model": model, "blob": blob, "program": self.program_hash, "authenticator": auth,
                "parents": self._parents, "metrics": {"accuracy_bp": round(self.accuracy[-1] * 10_000)},
            })])
        self.published.append((model, blob))
        self._parents = []

    def cloud_aggregate(self, round_: int, agg: Aggregate) -> None:
        self._publish(round_, agg.weights)
        with self.clock.stage("commit"):
            anchor = quorum_anchor(self.ledger.main, self.work.parties.main_validators)
            for chain in self.ledger.subs.values():
                chain.call([(self.work.parties.cloud, "interlock", "anchor_mainchain", anchor)])
        super().cloud_aggregate(round_, agg)
        self._note(f"round {round_}: accuracy {self.accuracy[-1]:.3f}")

    def _check_global(self, round_: int, model: bytes) -> None:
        """Seed 004 §III-A: ``model`` is the round's global model, authenticated by the cloud, for this program."""
        rec = self.ledger.main.read(f"model/{round_}")
        if rec is None or rec["model"] != model:
            raise VerificationFailed(f"{model.hex()[:16]}… is not the round-{round_} global model")
        if rec["program"] != self.program_hash:
            raise VerificationFailed(f"round {round_} model was published for a different training program")
        if rec["owner"] not in self.ledger.cloud_keys or not is_valid(
                rec["owner"], Domain.AUTHENTICATOR, authenticator_message(model, rec["program"], round_),
                rec["authenticator"]):
            raise VerificationFailed(f"authenticator of round {round_} does not verify")

    # -- edges ---------------------------------------------------------------------------
    def global_model(self, round_: int, weights: Weights) -> None:
        super().global_model(round_, weights)
        model, blob = self.published[-1]
        for edge in self.work.plan.edges:
            self._receive_global(edge, round_, model, blob)

    def _receive_global(self, edge: str, round_: int, model: bytes, blob: bytes) -> None:
        """Check, fetch and open the global model; store a copy the edge's devices can open."""
        with self.clock.stage("verify"):
            self._check_global(round_ - 1, model)
        with self.clock.stage("download"):
            stored = self.ledger.cloud_store.get(blob.hex())
        with self.clock.stage("decrypt"):
            plain = open_artefact(stored, model, self.work.parties.edges[edge], MODEL)
            weights = decode_weights(plain)
        with self.clock.stage("encrypt"):
            _, local = seal_artefact(plain, self._readers[edge], MODEL)
        with self.clock.stage("store"):
            address = bytes.fromhex(self.ledger.edge_stores[edge].put(local))
        self._start[edge] = _Start(model, address, weights)

    def device_update(self, round_: int, edge: str, device_round: int, res: TrainRes) -> None:
        start = self._start[edge]
        with self.clock.stage("verify"):
            tx, args = self._check_update(edge, round_, device_round, start.model, res)
        with self.clock.stage("download"):
            stored = self.ledger.edge_stores[edge].get(args["blob"].hex())
        with self.clock.stage("decrypt"):
            update = decode_weights(open_artefact(stored, args["model"], self.work.parties.edges[edge], MODEL))
        with self.clock.stage("verify"):
            if not _same_weights(update, res.weights):
                raise VerificationFailed(f"the blob of {res.client}'s update is not the model it delivered")
        if self.work.config.record_steps:
            with self.clock.stage("spot_check"):
                self._spot_check(edge, tx, round_, device_round, int(args["steps"]), start.weights)

    def _check_update(self, edge: str, round_: int, sub_round: int, base: bytes,
                      res: TrainRes) -> tuple[Transaction, dict[str, Any]]:
        """The device's committed ``fl.submit_update``: successful, its own, for this round and base."""
        found = self.ledger.subs[edge].txs.get(self._updates.get(res.client, b""))
        if found is None:
            raise VerificationFailed(f"{res.client}'s update was not committed")
        tx, receipt = found
        if not receipt.success:
            raise VerificationFailed(f"{res.client}'s update was rejected on chain: {receipt.error}")
        call = tx.call()
        args = call.args
        if (call.contract, call.method, tx.sender) != ("fl", "submit_update",
                                                       self.work.parties.devices[res.client].public_key):
            raise VerificationFailed(f"{res.client}'s update transaction is not its fl.submit_update")
        if (args["round"], args.get("sub_round", 1), args["base"]) != (round_, sub_round, base):
            raise VerificationFailed(f"{res.client}'s update is for another round or base")
        if args["samples"] != res.num_samples:
            raise VerificationFailed(f"{res.client} recorded {args['samples']} samples, not {res.num_samples}")
        return tx, args

    def _spot_check(self, edge: str, tx: Transaction, round_: int, sub_round: int, steps: int,
                    base: Weights) -> None:
        """Seed 000 §V-B: re-run sampled recorded steps; which ones is not up to the device."""
        if steps < 1:
            raise VerificationFailed("update has no recorded training steps")
        rng = random.Random(tx.tx_hash)
        for index in sorted(rng.sample(range(1, steps + 1), min(steps, self.spot_check_steps))):
            problem = self._recompute(edge, tx.sender, round_, sub_round, index, base)
            if problem:
                raise VerificationFailed(f"training step {index} does not verify: {problem}")
            self.steps_rerun += 1

    def _recompute(self, edge: str, device: bytes, round_: int, sub_round: int, index: int,
                   base: Weights) -> str | None:
        """Fetch M_i and d_(i+1) of a recorded step, re-run T, compare with the recorded M_(i+1)."""
        chain, key = self.ledger.subs[edge], self.work.parties.edges[edge]
        store = self.ledger.edge_stores[edge]
        where = f"{stage(round_, sub_round)}/{address_of(device).hex()}"
        rec = chain.read(f"step/{where}/{index}")
        if rec is None:
            return "the step is not recorded"
        if index == 1:
            prev = base
        else:
            before = chain.read(f"step/{where}/{index - 1}")
            prev = decode_weights(open_artefact(store.get(before["blob"].hex()), before["model"], key, MODEL))
        data = chain.read(f"data/{device.hex()}/{rec['data'].hex()}")
        batch = decode_dataset(open_artefact(store.get(data["ptr"].hex()), rec["data"], key, DATA))
        return recompute_step(self.work.program, rec, prev, batch)

    def interim_aggregate(self, round_: int, edge: str, device_round: int, agg: Aggregate) -> None:
        _, model, blob = self._record_aggregate(round_, edge, device_round, agg)
        self._start[edge] = _Start(model, blob, agg.weights)

    def edge_aggregate(self, round_: int, edge: str, agg: Aggregate) -> None:
        """Record the k-th aggregate, anchor the sub-chain on the main chain; the cloud fetches the aggregate."""
        p, ledger = self.work.parties, self.ledger
        tx, model, blob = self._record_aggregate(round_, edge, self.work.plan.device_rounds, agg)
        with self.clock.stage("commit"):
            anchor = quorum_anchor(ledger.subs[edge], p.sub_validators[edge])
            anchor_tx = ledger.main.call([(p.edges[edge], "interlock", "anchor_subchain", anchor)])[0]
        with self.clock.stage("download"):
            stored = ledger.edge_stores[edge].get(blob.hex())
        with self.clock.stage("store"):
            ledger.cloud_store.put_verified(blob.hex(), stored)
        with self.clock.stage("decrypt"):
            weights = decode_weights(open_artefact(stored, model, p.cloud, MODEL))
        with self.clock.stage("verify"):
            if not _same_weights(weights, agg.weights):
                raise VerificationFailed(f"the blob of {edge}'s aggregate is not the model it delivered")
        self._parents.append({"chain": ledger.chain_ids[edge], "tx": tx, "model": model,
                              "samples": agg.num_samples, "anchor": anchor_tx})

    def _record_aggregate(self, round_: int, edge: str, sub_round: int, agg: Aggregate) -> tuple[bytes, bytes, bytes]:
        """Seal, store and record an edge aggregate; ``(tx hash, model hash, blob address)``."""
        with self.clock.stage("encrypt"):
            model, stored = seal_artefact(encode_weights(agg.weights), self._readers[edge], MODEL)
        with self.clock.stage("store"):
            blob = bytes.fromhex(self.ledger.edge_stores[edge].put(stored))
        with self.clock.stage("commit"):
            tx = self.ledger.subs[edge].call([(self.work.parties.edges[edge], "fl", "record_aggregate", {
                "round": round_, "sub_round": sub_round, "base": self._start[edge].model, "model": model,
                "blob": blob, "samples": agg.num_samples, "updates": [self._updates[d] for d in agg.used],
            })])[0]
        return tx, model, blob

    # -- devices -------------------------------------------------------------------------
    def _collect(self, device: str) -> None:
        """Seed 000 §V-A: seal, store at the edge and record (d^E, σ, ptr) for each batch of readings."""
        edge, key = self.work.edge_of[device], self.work.parties.devices[device]
        chain = self.ledger.subs[edge]
        batches = self.work.batches[device]
        with self.clock.stage("encrypt"):
            sealed = [seal_artefact(encode_dataset(b.data), self._readers[device], DATA) for b in batches]
        with self.clock.stage("store"):
            ptrs = [bytes.fromhex(self.ledger.edge_stores[edge].put(stored)) for _, stored in sealed]
        with self.clock.stage("commit"):
            calls: list[Call] = []
            for (data, _), ptr, batch in zip(sealed, ptrs, batches, strict=True):
                n = len(batch.data)
                sig = key.sign(Domain.DATA, data_message(chain.state.chain_id, key.public_key, data, ptr, n))
                calls.append((key, "fl", "record_data",
                              {"device": key.public_key, "data": data, "ptr": ptr, "samples": n, "sig": sig}))
            chain.call(calls)  # only recorded data is trained on

    def _check_start(self, edge: str, round_: int, sub_round: int, model: bytes) -> None:
        if sub_round == 1:
            self._check_global(round_ - 1, model)
            return
        prev = self.ledger.subs[edge].read(f"aggregate/{stage(round_, sub_round - 1)}")
        if prev is None or prev["model"] != model:
            raise VerificationFailed(f"{model.hex()[:16]}… is not the edge's sub-round {sub_round - 1} aggregate")

    def train(self, ins: TrainIns) -> TrainRes:
        """A device's round: check and open its starting model, train in steps, seal, store and record them."""
        device = ins.client
        edge, key = self.work.edge_of[device], self.work.parties.devices[device]
        round_, sub_round = self.work.device_round(ins.round)
        start, store = self._start[edge], self.ledger.edge_stores[edge]
        with self.clock.stage("verify"):
            self._check_start(edge, round_, sub_round, start.model)
        with self.clock.stage("download"):
            stored = store.get(start.blob.hex())
        with self.clock.stage("decrypt"):
            weights = decode_weights(open_artefact(stored, start.model, key, MODEL))
        with self.clock.stage("train"):
            steps = self.work.local_steps(device, weights, ins.round)
        recorded = steps if self.work.config.record_steps else steps[-1:]
        with self.clock.stage("encrypt"):
            sealed = [seal_artefact(encode_weights(s.weights), self._readers[device], MODEL)[1] for s in recorded]
        with self.clock.stage("store"):
            blobs = [bytes.fromhex(store.put(b)) for b in sealed]
        with self.clock.stage("commit"):
            calls: list[Call] = [(key, "fl", "record_step", {
                "round": round_, "sub_round": sub_round, "index": s.index, "prev": s.prev, "model": s.model,
                "global": s.global_model, "data": s.data, "blob": blob, "digest": s.digest,
            }) for s, blob in zip(steps, blobs, strict=True)] if self.work.config.record_steps else []
            batches = self.work.batches[device]
            calls.append((key, "fl", "submit_update", {
                "round": round_, "sub_round": sub_round, "base": start.model, "model": steps[-1].model,
                "blob": blobs[-1], "samples": self.work.samples(device),
                "steps": len(steps) if self.work.config.record_steps else 0,
                "data": tagged_hash("fedledger/data-batches", b"".join(b.data_hash for b in batches)),
            }))
            self._updates[device] = self.ledger.subs[edge].submit(calls)[-1]
        return TrainRes(device, steps[-1].weights, self.work.samples(device))


# -- both arms -----------------------------------------------------------------------------
@dataclass(frozen=True)
class PipelineOutcome:
    """Both arms after the run, their results, and the centralised baseline."""

    work: Workload
    plain: PlainArm
    ledger: LedgeredRun
    plain_result: HierarchyResult
    ledger_result: HierarchyResult
    centralized_accuracy: float
    centralized_s: float
    cpu_share: float  # CPU time / wall time while the arms ran (below 1: the process waited for the CPU)

    @property
    def final_model(self) -> bytes:
        return weights_hash(self.ledger_result.weights)


def run_alternating(arms: Mapping[str, Callable[[], T]], turns: Turns) -> dict[str, T]:
    """Run each arm in its own thread, taking :class:`Turns`; an arm's error (not the other's stop) is raised."""

    def guarded(fn: Callable[[], T]) -> Callable[[], T]:
        def go() -> T:
            try:
                return fn()
            except BaseException:
                turns.abort()
                raise
        return go

    with ThreadPoolExecutor(max_workers=len(arms), thread_name_prefix="fl-arm") as pool:
        try:
            futures = {name: pool.submit(guarded(fn)) for name, fn in arms.items()}
            errors = [e for f in futures.values() if (e := f.exception()) is not None]
        except BaseException:
            turns.abort()
            raise
    first = next((e for e in errors if not isinstance(e, _OtherArmFailed)), errors[0] if errors else None)
    if first is not None:
        raise first
    return {name: f.result() for name, f in futures.items()}


def run_pipeline(config: PipelineConfig, root: Path, note: Callable[[str], None] | None = None) -> PipelineOutcome:
    """Prepare the workload, train the centralised baseline, then run both arms round by round in turn.

    Blob stores live under ``root``. Raises VerificationFailed if the two arms' final
    models differ (or differ from the last published one).
    """
    say = note or (lambda _msg: None)
    say(f"loading {config.settings.dataset} and partitioning it over {config.edges * config.devices_per_edge} devices")
    work = prepare(config)
    say(f"centralised baseline: {config.settings.model} on the pooled data")
    t0 = time.perf_counter()
    centralized = work.centralized_accuracy()
    centralized_s = time.perf_counter() - t0
    turns = Turns("plain", "ledger", config.rounds)
    plain, ledger = PlainArm(work, turns), LedgeredRun(work, root, turns, note)
    say("ledger setup: chains, task, data records, initial model")
    ledger.setup()
    say(f"{config.rounds} rounds, plain and ledgered in turn")
    c0, w0 = time.process_time(), time.perf_counter()
    results = run_alternating({"plain": plain.run, "ledger": ledger.run}, turns)
    cpu_share = (time.process_time() - c0) / (time.perf_counter() - w0)
    plain_hash, ledger_hash = weights_hash(results["plain"].weights), weights_hash(results["ledger"].weights)
    if not plain_hash == ledger_hash == ledger.published[-1][0]:
        raise VerificationFailed(f"the ledger arm's final model {ledger_hash.hex()[:16]}… differs from the plain "
                                 f"arm's {plain_hash.hex()[:16]}… (or from the published one)")
    return PipelineOutcome(work, plain, ledger, results["plain"], results["ledger"], centralized, centralized_s,
                           cpu_share)
