"""One seeded simulator run of a microchain committee or a BFT main chain, with its invariants.

A run has an asynchronous period (random delay up to 1.5 slots, loss,
partitions, an honest crash and restart) followed by a synchronous one. With
at most f < K/3 Byzantine validators, every run must satisfy:

* **safety** (agreement): no two honest replicas finalize different blocks at
  any height;
* **liveness**: once the network is synchronous again, every honest replica's
  finalized height keeps advancing;
* **accountability**: every validator that double-voted or equivocated ends up
  slashed (jailed, stake forfeited) in every honest replica's finalized state;
  for BFT, recorded faulty (``bft.report_double_sign``), and no honest
  validator ever is.

BFT runs (``SimConfig(engine="bft")``) also check **validity**: every honest
replica's store replays from genesis (``storage.verify_chain``: every block
passes ``apply_block``, block hook and certificates included, and the stored
state matches), and every committed transaction is one the client submitted
or a validator's double-sign report.
"""

from __future__ import annotations

import random
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedledger.codec import cbor
from fedledger.consensus.bft.engine import RECORD_PREFIX as BFT_RECORDS
from fedledger.consensus.bft.engine import BftEngine
from fedledger.consensus.microchain.engine import MicrochainEngine
from fedledger.crypto.keys import SigningKey
from fedledger.ledger.genesis import Genesis, Identity
from fedledger.ledger.tx import make_tx
from fedledger.node.chain_node import ChainNode
from fedledger.sim.byzantine import BEHAVIOURS, BFT_BEHAVIOURS
from fedledger.sim.network import Conditions, VirtualNetwork
from fedledger.storage.verify import verify_chain

SLOT_MS = 100
TICK_MS = 25
GENESIS_TS = 1_700_000_000_000
ENGINES = ("microchain", "bft")
# Tendermint timeouts for the simulator: above the synchronous delay (5 ms), growing per round
# past the asynchronous one (up to 150 ms), with a pause after each decision to pace the chain.
# A proposer whose mempool is empty (a restarted replica misses earlier gossip) proposes an empty
# block after empty_block_ms, before the others' timeoutPropose ends the round.
BFT_PARAMS = {"timeout_propose_ms": 200, "timeout_prevote_ms": 100, "timeout_precommit_ms": 100,
              "timeout_delta_ms": 100, "commit_ms": 60, "empty_block_ms": 100, "rebroadcast_ms": 200,
              "evidence_retry_ms": 1000, "max_block_txs": 200}
REPORT_GRACE_MS = 1000  # double signs first reported this close to the end need not be recorded yet


@dataclass
class SimConfig:
    validators: int = 4
    async_slots: int = 60
    sync_slots: int = 80
    byzantine: int | None = None  # default: f = (K - 1) // 3
    behaviours: tuple[str, ...] = ()  # force these Byzantine behaviours (default: drawn from the seed)
    min_progress: int = 4  # blocks every honest replica must finalize in the synchronous period
    txs_per_slot: int = 3
    arbitrator: bool = True  # configure a Rule 3 arbitrator (held by the last, honest validator; microchain)
    engine: str = "microchain"  # or "bft": the main chain's Tendermint engine


@dataclass
class SimResult:
    seed: int
    validators: int
    byzantine: dict[int, str]
    crashed: list[int]
    partitioned: bool
    max_delay_ms: int
    loss: float
    finalized: dict[int, int]
    violations: list[str] = field(default_factory=list)
    decisions: int = 0
    slashed: list[int] = field(default_factory=list)
    engine: str = "microchain"
    rounds: int = 0  # BFT: rounds beyond round 0, summed over honest replicas

    @property
    def ok(self) -> bool:
        return not self.violations

    def to_json(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        out["ok"] = self.ok
        return out


def _genesis(keys: list[SigningKey], arbitrator: SigningKey | None, client: SigningKey,
             engine: str = "microchain") -> Genesis:
    if engine == "bft":
        ids = tuple(Identity(k.public_key, "cloud", f"v{i}", "sim") for i, k in enumerate(keys))
        ids += (Identity(client.public_key, "device", "client", "sim"),)
        return Genesis("sim", GENESIS_TS, tuple(k.public_key for k in keys), ids,
                       {"engine": "bft", "bft": dict(BFT_PARAMS)})
    params = {"committee_size": len(keys), "epoch_blocks": 2, "slot_ms": SLOT_MS, "dynasty_epochs": 12,
              "arbitrator": arbitrator.public_key if arbitrator else b"", "arbitration_slots": 8,
              "max_block_txs": 200}
    identities = tuple(Identity(k.public_key, "edge", f"v{i}", "sim") for i, k in enumerate(keys))
    identities += (Identity(client.public_key, "device", "client", "sim"),)
    return Genesis("sim", GENESIS_TS, tuple(k.public_key for k in keys), identities,
                   {"engine": "microchain", "microchain": params})


def run_seed(seed: int, cfg: SimConfig | None = None) -> SimResult:
    cfg = cfg or SimConfig()
    rng = random.Random(seed)
    n = cfg.validators
    keys = [SigningKey.from_seed(cbor.encode([seed, i]).ljust(32, b"\0")[:32]) for i in range(n)]
    arbitrator = SigningKey.from_seed(b"arbitrator".ljust(32, b"\0"))
    client = SigningKey.from_seed(b"client".ljust(32, b"\0"))
    if cfg.engine not in ENGINES:
        raise ValueError(f"unknown engine {cfg.engine!r}; expected one of {', '.join(ENGINES)}")
    bft = cfg.engine == "bft"
    genesis = _genesis(keys, arbitrator if cfg.arbitrator and not bft else None, client, cfg.engine)
    behaviours = BFT_BEHAVIOURS if bft else BEHAVIOURS
    f = (n - 1) // 3 if cfg.byzantine is None else cfg.byzantine
    byz_nodes = rng.sample(range(n - 1), f)  # the last validator is honest and holds the arbitrator key
    byzantine = {i: cfg.behaviours[k % len(cfg.behaviours)] if cfg.behaviours else rng.choice(sorted(behaviours))
                 for k, i in enumerate(byz_nodes)}
    honest = [i for i in range(n) if i not in byzantine]
    crash = rng.choice([i for i in honest if i != n - 1]) if rng.random() < 0.4 and len(honest) > 1 else None
    partitioned = rng.random() < 0.3
    max_delay = rng.choice([5, 30, 80, 150])
    loss = rng.choice([0.0, 0.05, 0.15])

    def factory(i: int, db: Path) -> ChainNode:
        holder = cfg.arbitrator and i == n - 1 and not bft
        node = ChainNode(db, genesis, keys[i], arbitrator=arbitrator if holder else None, durable=False)
        if i in byzantine and bft:
            records = node.store.meta_with_prefix(BFT_RECORDS)
            node.engine = BFT_BEHAVIOURS[byzantine[i]](node.chain, keys[i], node.mempool, records=records)
        elif i in byzantine:
            assert isinstance(node.engine, MicrochainEngine)
            votes = list(node.engine.my_votes.values())
            node.engine = BEHAVIOURS[byzantine[i]](node.chain, keys[i], node.mempool, my_votes=votes)
        return node

    with tempfile.TemporaryDirectory(prefix="fedledger-sim-") as tmp:
        net = VirtualNetwork(seed, genesis, keys, Path(tmp), factory, TICK_MS)
        try:
            return _play(net, cfg, rng, seed, keys, client, byzantine, honest, crash, partitioned, max_delay, loss)
        finally:
            net.close()


def _play(net: VirtualNetwork, cfg: SimConfig, rng: random.Random, seed: int, keys: list[SigningKey],
          client: SigningKey, byzantine: dict[int, str], honest: list[int], crash: int | None,
          partitioned: bool, max_delay: int, loss: float) -> SimResult:
    n = len(keys)
    t0 = net.genesis.timestamp
    net.conditions = Conditions(max_delay_ms=max_delay, loss=loss)
    nonce = 0
    half = max(2, cfg.async_slots // 2)
    crash_at = rng.randrange(1, half) if crash is not None else -1
    restart_at = rng.randrange(crash_at + 1, max(crash_at + 2, cfg.async_slots)) if crash is not None else -1
    part_from = rng.randrange(0, half) if partitioned else -1
    part_to = part_from + rng.randrange(1, half) if partitioned else -1
    side = set(rng.sample(range(n), n // 2))
    progress_base: dict[int, int] = {}
    submitted: set[bytes] = set()
    for slot in range(cfg.async_slots + cfg.sync_slots):
        if slot == crash_at and crash is not None:
            net.crash(crash)
        if slot == restart_at and crash is not None:
            net.restart(crash)
        if slot == part_from:
            net.conditions.partition = [side, set(range(n)) - side]
        if slot == part_to:
            net.conditions.partition = None
        if slot == cfg.async_slots:
            net.conditions = Conditions(max_delay_ms=5)
        if slot == cfg.async_slots + cfg.sync_slots // 4:
            progress_base = {i: _finalized(net, i) for i in honest}
        for _ in range(cfg.txs_per_slot):  # a client sends transactions to a random replica
            node = net.nodes[rng.randrange(n)]
            if node is not None:
                tx = make_tx(client, net.genesis.chain_id, nonce, "identity", "register_identity",
                             {"public_key": bytes(32), "role": "device", "name": "x", "home_chain": "sim"},
                             net.now)
                try:
                    node.submit(tx)
                    submitted.add(tx.tx_hash)
                    nonce += 1
                except Exception:  # noqa: BLE001 - a stale nonce after a crash: retry next slot
                    if cfg.engine == "bft":  # the client asks the replica which nonce it expects
                        nonce = node.next_nonce(client.address)
        net.run_until(t0 + (slot + 1) * SLOT_MS)
    result = SimResult(seed, n, byzantine, [crash] if crash is not None else [], partitioned, max_delay, loss,
                       {i: _finalized(net, i) for i in honest}, engine=cfg.engine)
    _check(net, result, honest, progress_base, cfg)
    if cfg.engine == "bft":
        _check_bft(net, result, honest, submitted)
    return result


def _finalized(net: VirtualNetwork, i: int) -> int:
    node = net.nodes[i]
    return -1 if node is None else node.chain.height


def _check(net: VirtualNetwork, result: SimResult, honest: list[int], base: dict[int, int],
           cfg: SimConfig) -> None:
    nodes = {i: net.nodes[i] for i in honest if net.nodes[i] is not None}
    # safety: finalized chains are prefixes of one another
    reference: dict[int, bytes] = {}
    for node in nodes.values():
        assert node is not None
        for h in range(1, node.chain.height + 1):
            bh = node.store.header(h).block_hash
            if reference.setdefault(h, bh) != bh:
                result.violations.append(f"safety: replicas disagree on the finalized block at height {h}")
                break
    # liveness after the network is synchronous again
    for i, node in nodes.items():
        assert node is not None
        if node.chain.height < base.get(i, 0) + cfg.min_progress:
            result.violations.append(
                f"liveness: replica {i} finalized {node.chain.height - base.get(i, 0)} blocks once synchronous")
        if isinstance(node.engine, MicrochainEngine):
            result.decisions = max(result.decisions, node.engine.stats.decisions)
    if cfg.engine != "microchain":
        return  # BFT accountability: see _check_bft
    # accountability: every double voter / equivocator is slashed on every honest replica
    for i, behaviour in result.byzantine.items():
        byz = net.nodes[i]
        engine = byz.engine if byz is not None else None
        if behaviour not in ("double_vote", "equivocate") or not getattr(engine, "misbehaved", False):
            continue
        pk = net.keys[i].public_key.hex()
        jailed = [j for j, node in nodes.items()
                  if node is not None and node.chain.state.get(f"c/microchain/jailed/{pk}".encode())]
        if len(jailed) == len(nodes):
            result.slashed.append(i)
        else:
            result.violations.append(f"accountability: {behaviour} validator {i} is not slashed on every replica")


def _check_bft(net: VirtualNetwork, result: SimResult, honest: list[int], submitted: set[bytes]) -> None:
    """Validity and accountability of a BFT run (agreement and liveness are checked by :func:`_check`)."""
    from fedledger.contracts.bft import is_faulty

    nodes = {i: node for i in honest if (node := net.nodes[i]) is not None}
    validators = set(net.genesis.validators)
    for i, node in nodes.items():
        assert isinstance(node.engine, BftEngine)
        result.rounds += node.engine.stats.rounds
        report = verify_chain(node.store.path)  # every block passes apply_block on replay from genesis
        if not report.ok:
            result.violations.append(f"validity: replica {i} fails replay at height {report.bad_height}: "
                                     f"{report.reason}")
        for h in range(1, node.chain.height + 1):
            for tx in node.store.block_txs(h):
                call = tx.payload if isinstance(tx.payload, dict) else {}
                report_call = call.get("contract") == "bft" and call.get("method") == "report_double_sign"
                if tx.tx_hash not in submitted and not (report_call and tx.sender in validators):
                    result.violations.append(f"validity: replica {i} committed a transaction at height {h} "
                                             "that no client submitted")
                    break
    honest_keys = [net.keys[i].public_key for i in honest]
    for i, node in nodes.items():
        if any(is_faulty(node.chain.state, pk) for pk in honest_keys):
            result.violations.append(f"accountability: replica {i} records an honest validator as faulty")
    # every double signer that misbehaved in time is reported and recorded on every honest replica
    for i, behaviour in result.byzantine.items():
        byz = net.nodes[i]
        when = getattr(byz.engine, "misbehaved_at", None) if byz is not None else None
        if behaviour not in ("double_vote", "equivocate") or when is None or when > net.now - REPORT_GRACE_MS:
            continue
        pk = net.keys[i].public_key
        if all(is_faulty(node.chain.state, pk) for node in nodes.values()):
            result.slashed.append(i)
        else:
            result.violations.append(f"accountability: {behaviour} validator {i} is not recorded faulty "
                                     "on every honest replica")
