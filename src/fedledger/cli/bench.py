"""``fedledger bench``: micro-benchmarks measured next to a same-run baseline.

``fedledger bench ledger-core`` measures how many transactions per second one
core can *validate and apply* as a follower does: decode a block from its
bytes, run :func:`~fedledger.ledger.chain.apply_block` (header and proposer
checks, per-transaction signature and nonce checks, contract execution, tx,
receipt and state roots) and take the state root. The baseline, measured in the
same run on the same core, is the raw Ed25519 verification rate of the very
same transaction signatures: each transaction needs one, so it is the ceiling a
Python ledger could reach if everything but signature checking were free.
``ratio = tx_per_s / verify_ceiling_per_s`` is the fraction of that ceiling
reached (seed 000 §VI and seed 004 §VIII report ledger TPS without such a
baseline; this makes the number comparable across machines).

The workload is ``fl.submit_update`` from ``--senders`` registered devices,
each submitting one update per FL round (seed 004 §IV-A transactions, seed 000
§V-B local updates); every call succeeds, so the contract path is exercised in
full. Generating and proposing the blocks is not timed.

Like every benchmark, the last line of stdout is exactly one JSON object.
"""

from __future__ import annotations

import contextlib
import cProfile
import io
import json
import os
import platform
import pstats
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import click
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from rich.console import Console

from fedledger.crypto.hashing import tagged_hash
from fedledger.crypto.keys import Domain, SigningKey
from fedledger.errors import FedledgerError
from fedledger.ledger import (
    Block,
    ChainState,
    Genesis,
    Identity,
    Transaction,
    apply_block,
    make_tx,
    propose_block,
)
from fedledger.ledger.block import MAX_BLOCK_TXS

CHAIN_ID = "bench-sub"
GENESIS_TIME = 1_700_000_000
MIN_VERIFY_SECONDS = 0.2


@click.group()
def bench() -> None:
    """Benchmarks; each prints one JSON object as its last line of stdout."""


@dataclass(frozen=True)
class Workload:
    """A genesis, the proposer's key, the signed transactions and the encoded blocks."""

    genesis: Genesis
    proposer: SigningKey
    txs: list[Transaction]
    blocks: list[bytes]
    failed_receipts: int


@dataclass(frozen=True)
class ReplayTiming:
    seconds: float
    decode_seconds: float
    state_keys: int


@bench.command("ledger-core")
@click.option(
    "--txs",
    "n_txs",
    default=5000,
    show_default=True,
    type=click.IntRange(1),
    help="Transactions to generate, propose and replay.",
)
@click.option(
    "--senders",
    default=50,
    show_default=True,
    type=click.IntRange(1),
    help="Distinct device accounts sending them.",
)
@click.option(
    "--block-size",
    default=500,
    show_default=True,
    type=click.IntRange(1, MAX_BLOCK_TXS),
    help="Transactions per block.",
)
@click.option("--json", "json_only", is_flag=True, help="Print only the JSON line.")
@click.option(
    "--profile",
    "profile_top",
    default=0,
    type=click.IntRange(0),
    metavar="N",
    help="Also replay once under cProfile and print the top N functions to stderr.",
)
def ledger_core(
    n_txs: int, senders: int, block_size: int, json_only: bool, profile_top: int
) -> None:
    """Follower throughput (decode + apply_block + state root) vs raw Ed25519 verification."""
    console = Console(stderr=True, quiet=json_only)
    with pinned_to_one_core() as cpu:
        console.print(f"[dim]generating {n_txs} signed transactions from {senders} devices…[/dim]")
        work = build_workload(n_txs, senders, block_size)
        console.print(f"[dim]replaying {len(work.blocks)} blocks on a fresh chain (timed)…[/dim]")
        replay = time_replay(work.genesis, work.blocks)
        console.print("[dim]measuring raw Ed25519 verification on the same signatures…[/dim]")
        verify_per_s = verify_ceiling(work.txs)
        if profile_top:
            click.echo(profile_replay(work.genesis, work.blocks, profile_top), err=True)
    tx_per_s = n_txs / replay.seconds
    result = {
        "bench": "ledger-core",
        "tx_per_s": round(tx_per_s, 1),
        "verify_ceiling_per_s": round(verify_per_s, 1),
        "ratio": round(tx_per_s / verify_per_s, 4),
        "txs": n_txs,
        "blocks": len(work.blocks),
        "block_size": block_size,
        "senders": senders,
        "seconds": round(replay.seconds, 4),
        "decode_seconds": round(replay.decode_seconds, 4),
        "us_per_tx": round(1e6 * replay.seconds / n_txs, 2),
        "us_per_verify": round(1e6 / verify_per_s, 2),
        "state_keys": replay.state_keys,
        "failed_receipts": work.failed_receipts,
        "cpu": cpu,
        "python": platform.python_version(),
    }
    if not json_only:
        click.echo(_table(result))
    click.echo(json.dumps(result, sort_keys=True))


@bench.command("microchain")
@click.option(
    "--validators",
    "validators",
    multiple=True,
    metavar="K[,K...]",
    help="Committee sizes to run (repeatable or a comma list). Default 4,8,20; 4 with --quick.",
)
@click.option("--quick", is_flag=True, help="K=4 only, two short load steps (about a minute).")
@click.option(
    "--duration",
    type=click.FloatRange(min=1.0),
    default=None,
    help="Seconds per offered-load step (default 10; 4 with --quick).",
)
@click.option(
    "--rates",
    default=None,
    metavar="TPS[,TPS...]",
    help="Offered-load steps in tx/s (default 100,250,500,1000,2000,4000; 100,500 with --quick).",
)
@click.option(
    "--slot-ms",
    type=click.IntRange(10),
    default=None,
    help="Microchain slot length (default: the engine's, 200 ms).",
)
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Keep configs, stores and logs here (default: a temporary directory, removed afterwards).",
)
@click.option(
    "--accounts",
    default=1024,
    show_default=True,
    type=click.IntRange(1),
    help="Client (device) accounts in genesis.",
)
@click.option(
    "--footprint-seconds",
    "footprint_s",
    type=click.FloatRange(min=1.0),
    default=None,
    hidden=True,
    help="Seconds at 1 tx/s for the CPU/RSS footprint (default 10; 3 with --quick).",
)
@click.option("--json", "json_only", is_flag=True, help="Print only the JSON line.")
def microchain(
    validators: tuple[str, ...],
    quick: bool,
    duration: float | None,
    rates: str | None,
    slot_ms: int | None,
    workdir: Path | None,
    accounts: int,
    footprint_s: float | None,
    json_only: bool,
) -> None:
    """K validator processes under offered load: finalized tx/s, stage latencies, bytes, footprint."""
    from fedledger.cli import bench_microchain as bm

    opts = bm.options(validators, quick, duration, slot_ms, workdir, rates, accounts, footprint_s)
    console = Console(stderr=True, quiet=json_only)
    result = bm.run(opts, console)
    if not json_only:
        click.echo(bm.tables(result))
    click.echo(json.dumps(result, sort_keys=True))


# -- workload ----------------------------------------------------------------
def device_key(i: int) -> SigningKey:
    """Deterministic key of bench device ``i`` (runs are reproducible)."""
    return SigningKey.from_seed(tagged_hash("fedledger/bench/device", i.to_bytes(8, "big")))


def bench_genesis(proposer: SigningKey, devices: list[SigningKey]) -> Genesis:
    """A sub-chain with one edge validator and ``devices`` registered as devices."""
    idents = [Identity(proposer.public_key, "edge", "edge-0", CHAIN_ID)]
    idents += [
        Identity(d.public_key, "device", f"device-{i}", CHAIN_ID) for i, d in enumerate(devices)
    ]
    return Genesis(CHAIN_ID, GENESIS_TIME, (proposer.public_key,), tuple(idents), {})


def update_args(device: int, round_: int) -> dict[str, object]:
    """A plausible ``fl.submit_update`` call: hashes of base, model and data, a sample count."""
    tag = device.to_bytes(4, "big") + round_.to_bytes(8, "big")
    return {
        "round": round_,
        "base": tagged_hash("bench/base", round_.to_bytes(8, "big")),
        "model": tagged_hash("bench/model", tag),
        "samples": 1 + (device * 7 + round_) % 200,
        "data": tagged_hash("bench/data", tag),
    }


def make_txs(devices: list[SigningKey], n: int) -> list[Transaction]:
    """Round-robin over devices; a device's k-th tx has nonce k and submits round k."""
    out = []
    for i in range(n):
        d, k = i % len(devices), i // len(devices)
        out.append(
            make_tx(
                devices[d], CHAIN_ID, k, "fl", "submit_update", update_args(d, k), GENESIS_TIME + k
            )
        )
    return out


def build_workload(n_txs: int, senders: int, block_size: int) -> Workload:
    """Sign the transactions and build the chain as its proposer would (not timed)."""
    proposer = SigningKey.from_seed(tagged_hash("fedledger/bench/validator", b""))
    devices = [device_key(i) for i in range(senders)]
    genesis = bench_genesis(proposer, devices)
    txs = make_txs(devices, n_txs)
    chain = ChainState.from_genesis(genesis)
    blocks: list[bytes] = []
    failed = 0
    for start in range(0, n_txs, block_size):
        block, rejected = propose_block(
            chain, txs[start : start + block_size], proposer, GENESIS_TIME + chain.height + 1
        )
        if rejected or len(block.txs) != len(txs[start : start + block_size]):
            raise FedledgerError(
                f"bench workload bug: block {block.height} left out {len(rejected)} txs"
            )
        failed += sum(not r.success for r in apply_block(chain, block))
        blocks.append(block.encode())
    return Workload(genesis, proposer, txs, blocks, failed)


# -- measurements ------------------------------------------------------------
def replay(genesis: Genesis, blocks: list[bytes]) -> tuple[ChainState, float]:
    """What a follower does per block: decode, validate and apply, take the state root."""
    chain = ChainState.from_genesis(genesis)
    decode_s = 0.0
    for raw in blocks:
        t0 = time.perf_counter()
        block = Block.decode(raw)
        decode_s += time.perf_counter() - t0
        apply_block(chain, block)
        if chain.state.root() != block.header.state_root:
            raise FedledgerError(f"bench replay diverged at block {block.height}")
    return chain, decode_s


def time_replay(genesis: Genesis, blocks: list[bytes]) -> ReplayTiming:
    t0 = time.perf_counter()
    chain, decode_s = replay(genesis, blocks)
    seconds = time.perf_counter() - t0
    return ReplayTiming(seconds, decode_s, len(chain.state))


def verify_ceiling(txs: list[Transaction]) -> float:
    """Raw ``cryptography`` Ed25519 verifications per second over the transactions' signatures.

    Keys are loaded and messages built beforehand; the loop is only ``verify``.
    It repeats over the same signatures until at least 0.2 s have passed.
    """
    items = [
        (Ed25519PublicKey.from_public_bytes(tx.sender), tx.signature, _tx_signed_message(tx))
        for tx in txs
    ]
    done, elapsed = 0, 0.0
    while elapsed < MIN_VERIFY_SECONDS:
        t0 = time.perf_counter()
        for pk, sig, msg in items:
            pk.verify(sig, msg)  # raises if the message layout drifted from crypto.keys
        elapsed += time.perf_counter() - t0
        done += len(items)
    return done / elapsed


def _tx_signed_message(tx: Transaction) -> bytes:
    """The exact bytes a transaction signature covers (see :mod:`fedledger.crypto.keys`)."""
    return b"fedledger/" + Domain.TX.encode() + b"\x00" + tx.signing_bytes()


def profile_replay(genesis: Genesis, blocks: list[bytes], top: int) -> str:
    """One more replay under cProfile; the ``top`` functions by own time."""
    profiler = cProfile.Profile()
    profiler.enable()
    replay(genesis, blocks)
    profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(top)
    return out.getvalue()


@contextlib.contextmanager
def pinned_to_one_core() -> Iterator[int | None]:
    """Run on the first allowed CPU only (Linux); restore the old affinity afterwards."""
    if not hasattr(os, "sched_setaffinity"):
        yield None
        return
    before = os.sched_getaffinity(0)
    cpu = min(before)
    os.sched_setaffinity(0, {cpu})
    try:
        yield cpu
    finally:
        os.sched_setaffinity(0, before)


def _table(r: dict[str, object]) -> str:
    rows = [
        (
            "workload",
            f"{r['txs']} fl.submit_update txs, {r['senders']} devices, "
            f"{r['blocks']} blocks of ≤{r['block_size']}",
        ),
        ("pinned cpu", str(r["cpu"])),
        (
            "follower apply",
            f"{r['tx_per_s']:,} tx/s  ({r['us_per_tx']} µs/tx, "
            f"decode {r['decode_seconds']} s of {r['seconds']} s)",
        ),
        ("Ed25519 verify", f"{r['verify_ceiling_per_s']:,} /s  ({r['us_per_verify']} µs each)"),
        ("ratio", f"{r['ratio']}  (apply rate / verify ceiling)"),
        ("state keys", str(r["state_keys"])),
        ("failed receipts", str(r["failed_receipts"])),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)


@bench.command("accumulator")
@click.option(
    "--bits",
    default=2048,
    show_default=True,
    type=click.IntRange(64),
    help="Modulus size. 2048 uses the RSA-2048 challenge number (nobody is known to "
    "hold its factors); other sizes use a trusted dealer with a fixed seed.",
)
@click.option("--dealer", is_flag=True, help="Use the fixed-seed trusted dealer even at 2048 bits.")
@click.option(
    "--prime-bits",
    default=None,
    type=click.IntRange(64, 4096),
    help="Bits of the element primes (default: the accumulator's, 128).",
)
@click.option(
    "--chain-length",
    default=None,
    type=click.IntRange(65),
    help="Accumulated elements (default 1024; 96 with --quick).",
)
@click.option("--quick", is_flag=True, help="Small chain and short timings (a few seconds).")
@click.option("--json", "json_only", is_flag=True, help="Print only the JSON line.")
def accumulator(
    bits: int,
    dealer: bool,
    prime_bits: int | None,
    chain_length: int | None,
    quick: bool,
    json_only: bool,
) -> None:
    """RSA accumulator Update/ProofGen/ProofVerf and batch proofs vs Ed25519 and t single proofs."""
    from fedledger.cli import bench_accumulator as ba

    console = Console(stderr=True, quiet=json_only)
    result = ba.run(ba.options(bits, dealer, prime_bits, chain_length, quick), console)
    console.print(ba.table(result))
    click.echo(json.dumps(result, sort_keys=True))


@bench.command("mainchain")
@click.option("--quick", is_flag=True, help="Two short load steps (about a minute).")
@click.option("--duration", type=click.FloatRange(min=1.0), default=None,
              help="Seconds per offered-load step (default 10; 4 with --quick).")
@click.option("--rates", default=None, metavar="TPS[,TPS...]",
              help="Offered-load steps in tx/s (default 100,250,500,1000,2000,4000; 100,500 with --quick).")
@click.option("--json", "json_only", is_flag=True, help="Print only the JSON line.")
def mainchain(quick: bool, duration: float | None, rates: str | None, json_only: bool) -> None:
    """4 BFT main-chain validator processes under offered load: finalized tx/s and latency."""
    import dataclasses

    from fedledger.cli import bench_microchain as bm

    opts = dataclasses.replace(bm.options(("4",), quick, duration, None, None, rates, 1024, None), engine="bft")
    console = Console(stderr=True, quiet=json_only)
    result = bm.run(opts, console)
    if not json_only:
        click.echo(bm.tables(result))
    click.echo(json.dumps(result, sort_keys=True))


@bench.command("table1")
@click.option("--engine", type=click.Choice(["microchain", "bft"]), default="microchain", show_default=True,
              help="The chain to run seed 000 Table I on: an edge sub-chain or the main chain.")
@click.option("--clients", default=10, show_default=True, type=click.IntRange(1, 64))
@click.option("--txs", "per_client", default=100, show_default=True, type=click.IntRange(1),
              help="Transactions per client.")
@click.option("--quick", is_flag=True, help="10 transactions per client.")
@click.option("--json", "json_only", is_flag=True, help="Print only the JSON line.")
def table1(engine: str, clients: int, per_client: int, quick: bool, json_only: bool) -> None:
    """Seed 000 Table I: max/avg latency and throughput at 32 B, 8 KB, 16 KB, 32 KB, next to the paper."""
    from fedledger.cli import bench_table1 as bt

    console = Console(stderr=True, quiet=json_only)
    result = bt.run(engine, clients, 10 if quick else per_client, console)
    if not json_only:
        click.echo(bt.table(result))
    click.echo(json.dumps(result, sort_keys=True))


@bench.command("ceremony")
@click.option("--bits", default=2048, show_default=True, type=int, help="Modulus size.")
@click.option("--parties", default=3, show_default=True, type=int, help="Party processes.")
@click.option("--quick", is_flag=True, help="512-bit modulus (a few seconds).")
@click.option("--seed", default=None, help="Seed the parties (reproducible, NOT secure).")
@click.option("--json", "json_only", is_flag=True, help="Print only the JSON line.")
def ceremony(bits: int, parties: int, quick: bool, seed: str | None, json_only: bool) -> None:
    """Distributed RSA modulus ceremony (k processes) vs a trusted dealer, same size."""
    from fedledger.cli import bench_ceremony as bc

    console = Console(stderr=True, quiet=json_only)
    result = bc.run(bc.QUICK_BITS if quick else bits, parties, seed.encode() if seed else None, console)
    if not json_only:
        click.echo(bc.table(result))
    click.echo(json.dumps(result, sort_keys=True))


@bench.command("secagg")
@click.option("--params", default=431_080, show_default=True, type=click.IntRange(1),
              help="Update length (431,080: seed 004's CNN).")
@click.option("--devices", default=10, show_default=True, type=click.IntRange(1, 1000))
@click.option("--threshold", default=None, type=click.IntRange(1),
              help="Shares needed to reconstruct (default: 60 % of the devices, rounded up).")
@click.option("--rounds", default=3, show_default=True, type=click.IntRange(1), help="Timed rounds (median).")
@click.option("--paillier-slice", "paillier_slice", default=16, show_default=True, type=click.IntRange(1),
              help="Coordinates timed under Paillier before scaling to --params.")
@click.option("--key-bits", "key_bits", default=2048, show_default=True, type=click.IntRange(512),
              help="Paillier modulus size.")
@click.option("--no-flower", is_flag=True, help="Skip the Flower SecAgg+ baseline.")
@click.option("--quick", is_flag=True, help="20,000 parameters, one round, a 1024-bit Paillier key.")
@click.option("--json", "json_only", is_flag=True, help="Print only the JSON line.")
def secagg_bench(params: int, devices: int, threshold: int | None, rounds: int, paillier_slice: int,
                 key_bits: int, no_flower: bool, quick: bool, json_only: bool) -> None:
    """Seed 001's verifiable secure aggregation vs plain sum, threshold Paillier and Flower SecAgg+."""
    from fedledger.cli import bench_secagg as bs

    console = Console(stderr=True, quiet=json_only)
    try:
        opts = bs.options(params, devices, threshold, rounds, paillier_slice, key_bits, not no_flower, quick)
        result = bs.run(opts, console)
    except FedledgerError as exc:
        raise click.ClickException(str(exc)) from None
    if not json_only:
        bs.table(result, Console())
    click.echo(json.dumps(result))


@bench.command("fl")
@click.option("--model", default="digits-mlp", show_default=True,
              help="Model to train (mudfl-cnn: seed 004's 431,080-parameter CNN, with --dataset digits28).")
@click.option("--dataset", default="digits", show_default=True, help="digits, digits28, mnist1d or mnist.")
@click.option("--data-dir", "data_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where the MNIST files are (--dataset mnist only).")
@click.option("--edges", default=2, show_default=True, type=click.IntRange(1, 64), help="Edges, one sub-chain each.")
@click.option("--devices", default=None, type=click.IntRange(1),
              help="Devices per edge (default 5; 3 with --quick).")
@click.option("--rounds", default=None, type=click.IntRange(1), help="Cloud rounds (default 5; 2 with --quick).")
@click.option("--device-rounds", "device_rounds", default=1, show_default=True, type=click.IntRange(1, 100),
              help="k: edge aggregations per cloud round.")
@click.option("--epochs", default=None, type=click.IntRange(1),
              help="Local epochs per device round (default 2; 1 with --quick).")
@click.option("--partition", type=click.Choice(["iid", "dirichlet", "shards"]), default="iid", show_default=True)
@click.option("--readings", default=32, show_default=True, type=click.IntRange(1),
              help="Samples per recorded data batch: one recorded training step per batch and epoch.")
@click.option("--verify-steps", "verify_steps", default=0, show_default=True, type=click.IntRange(0),
              help="Recorded steps per update the edge re-runs inside the rounds (0: one, outside them).")
@click.option("--no-seal", is_flag=True, help="Store artefacts plain instead of sealed (AES-256-GCM).")
@click.option("--no-record-steps", is_flag=True,
              help="Record only each device's update, not every training step (seed 004's granularity).")
@click.option("--quick", is_flag=True, help="2 rounds, 3 devices per edge, 1 epoch (well under a minute).")
@click.option("--json", "json_only", is_flag=True, help="Print only the JSON line.")
def fl_bench(model: str, dataset: str, data_dir: Path | None, edges: int, devices: int | None, rounds: int | None, device_rounds: int,
             epochs: int | None, partition: str, readings: int, verify_steps: int, no_seal: bool,
             no_record_steps: bool, quick: bool, json_only: bool) -> None:
    """Hierarchical FedAvg with and without the ledger: overhead per stage, accuracy, centralised baseline."""
    from fedledger.cli import bench_fl as bf

    opts = bf.options(model, dataset, data_dir, edges, devices, rounds, device_rounds, epochs, partition,
                      readings, verify_steps, not no_seal, quick, not no_record_steps)
    console = Console(stderr=True, quiet=json_only)
    result = bf.run(opts, console)
    if not json_only:
        click.echo(bf.table(result))
    click.echo(json.dumps(result, sort_keys=True))


@bench.command("robustness")
@click.option("--model", default="digits-mlp", show_default=True, help="Model every device trains.")
@click.option("--dataset", default="digits", show_default=True, help="digits, digits28 or mnist1d.")
@click.option("--devices", default=None, type=click.IntRange(1),
              help="Devices in all (default 20; 10 with --quick); 10/20/30 % of them must be whole numbers.")
@click.option("--edges", default=1, show_default=True, type=click.IntRange(1, 64),
              help="Edges the devices are split over; each edge runs the defence over its devices.")
@click.option("--rounds", default=None, type=click.IntRange(1), help="Cloud rounds (default 10; 3 with --quick).")
@click.option("--epochs", default=None, type=click.IntRange(1), help="Local epochs (default 2; 1 with --quick).")
@click.option("--partition", type=click.Choice(["iid", "dirichlet", "shards"]), default="iid", show_default=True)
@click.option("--seed", default=0, show_default=True, type=click.IntRange(0))
@click.option("--tolerate", default=0.3, show_default=True, type=click.FloatRange(0.0, 0.5, max_open=True),
              help="Attacker fraction the defences are provisioned for: f = floor(tolerate x devices per edge).")
@click.option("--attacks", default=None, metavar="NAME[,NAME...]",
              help="label-flip, boosted-flip, sign-flip, gaussian, alie (default: all).")
@click.option("--defences", default=None, metavar="NAME[,NAME...]",
              help="fedavg, top-n, krum, multi-krum, median, trimmed-mean, reputation (default: all).")
@click.option("--quick", is_flag=True, help="10 devices, 3 rounds, 1 epoch, 30 % attackers only (seconds).")
@click.option("--markdown", is_flag=True, help="Print the table as Markdown.")
@click.option("--json", "json_only", is_flag=True, help="Print only the JSON line.")
def robustness(model: str, dataset: str, devices: int | None, edges: int, rounds: int | None, epochs: int | None,
               partition: str, seed: int, tolerate: float, attacks: str | None, defences: str | None, quick: bool,
               markdown: bool, json_only: bool) -> None:
    """Poisoning attacks x robust aggregation rules x attacker fraction: final accuracy vs clean FedAvg."""
    from fedledger.cli import bench_robustness as br

    opts = br.options(model, dataset, devices, edges, rounds, epochs, partition, seed, tolerate, attacks, defences,
                      quick)
    console = Console(stderr=True, quiet=json_only)
    result = br.run(opts, console)
    if not json_only:
        click.echo(br.markdown(result) if markdown else br.table(result))
    click.echo(json.dumps(result, sort_keys=True))
