"""``fedledger demo``: a real hierarchical FL job over loopback, recorded on chains.

Starts a cloud node (main chain), edge nodes (one sub-chain each) and one device
pool per edge as separate processes, runs FedAvg rounds on the scikit-learn
digits, verifies the final model's lineage from the chains and writes a report.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from pathlib import Path
from typing import Any

import aiohttp
import click
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from fedledger.errors import ConfigError, UsageError, VerificationFailed

MARKER = ".fedledger-demo"


@click.command()
@click.option("--workdir", type=click.Path(path_type=Path), default=Path("demo-run"), show_default=True,
              help="Scratch directory for keys, chains and logs (recreated on every run).")
@click.option("--edges", type=click.IntRange(1, 8), default=2, show_default=True)
@click.option("--devices", "devices_per_edge", type=click.IntRange(1, 100), default=10, show_default=True,
              help="Devices per edge.")
@click.option("--rounds", type=click.IntRange(1, 100), default=5, show_default=True)
@click.option("--model", default="digits-mlp", show_default=True, help="digits-mlp or digits-cnn.")
@click.option("--report", "report_path", type=click.Path(path_type=Path), default=Path("report.json"),
              show_default=True)
@click.option("--modulus", "modulus_file", type=click.Path(path_type=Path), default=None,
              help="Accumulator modulus from `fedledger ceremony modulus --out FILE` (default: RSA-2048).")
def demo(workdir: Path, edges: int, devices_per_edge: int, rounds: int, model: str, report_path: Path,
         modulus_file: Path | None) -> None:
    """Run a small hierarchical federated-learning job end to end and verify it."""
    from fedledger.node.deployment import MAIN_CHAIN, make_deployment
    from fedledger.node.supervisor import Supervisor

    console = Console()
    accumulator = _ceremony_modulus(modulus_file) if modulus_file else None
    _prepare_workdir(workdir)
    dep = make_deployment(workdir, edges=edges, devices_per_edge=devices_per_edge, fl={"model": model},
                          accumulator=accumulator)
    sup = Supervisor(workdir / "logs")
    t0 = time.perf_counter()
    try:
        with console.status("starting nodes…"):
            for name, path in dep.config_paths.items():
                sup.start(name, path)
            for name in dep.configs:
                sup.wait_ready(name, dep.url(name))
        main = sum(1 for c in dep.configs.values() if c.genesis == dep.geneses[MAIN_CHAIN])
        console.print(f"[green]✓[/] {len(dep.configs)} node processes up: main chain ({main} BFT validators), "
                      f"{edges} edges with their sub-chain validators, {edges} device pools "
                      f"({edges * devices_per_edge} devices)")
        report = asyncio.run(_run(dep, rounds, console))
    finally:
        sup.stop_all()
    report["elapsed_s"] = round(time.perf_counter() - t0, 2)
    report_path.write_text(json.dumps(report, indent=2))
    _print_summary(console, report, report_path)
    if not report["lineage_verified"]:
        raise VerificationFailed(f"lineage verification failed: {report['lineage']['reason']}")


def _ceremony_modulus(path: Path) -> dict[str, bytes]:
    """The ``accumulator`` genesis parameter from a ceremony's output file."""
    from fedledger.crypto.accumulator import AccumulatorParams

    try:
        n = int(json.loads(path.read_text())["modulus"], 16)
        AccumulatorParams.from_modulus(n)
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"{path} is not a ceremony output with a 2048-bit modulus: {exc}") from None
    return {"modulus": n.to_bytes((n.bit_length() + 7) // 8, "big")}


def _prepare_workdir(workdir: Path) -> None:
    if workdir.exists():
        if not (workdir / MARKER).exists():
            raise UsageError(f"{workdir} exists and is not a demo directory; choose another --workdir")
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    (workdir / MARKER).write_text("scratch directory of `fedledger demo`; recreated on every run\n")


async def _run(dep: Any, rounds: int, console: Console) -> dict[str, Any]:
    from fedledger.audit.chainview import ChainView
    from fedledger.audit.lineage import LineageVerifier
    from fedledger.net.client import NodeClient
    from fedledger.node.config import load_genesis

    async with aiohttp.ClientSession() as session:
        cloud = NodeClient(dep.url("cloud"), session)
        await cloud.post_json("/v1/fl/job", {"rounds": rounds})
        job = await _follow_job(cloud, rounds, console)
        if job["state"] != "done":
            raise VerificationFailed(f"the FL job failed: {job.get('error', job['state'])}")
        main = ChainView(cloud, load_genesis(dep.geneses["main"]))
        subs = {dep.chain_of(e): ChainView(NodeClient(dep.url(e), session), load_genesis(dep.geneses[dep.chain_of(e)]))
                for e in dep.edges}
        with console.status("verifying the final model's lineage from the chains…"):
            lineage = await LineageVerifier(main, subs, dep.auditor()).verify()
        heights, tx_counts = {}, {}
        for view in [main, *subs.values()]:
            headers = await view.sync_headers()
            heights[view.chain_id] = headers[-1].height
            tx_counts[view.chain_id] = sum(h.tx_count for h in headers)
    return {
        "rounds": rounds,
        "accuracy_per_round": job["accuracy_per_round"],
        "round_seconds": job["round_seconds"],
        "final_model": job.get("final_model"),
        "chain_heights": heights,
        "tx_counts": tx_counts,
        "failures": job["failures"],
        "lineage_verified": lineage.ok,
        "lineage": lineage.to_json(),
    }


async def _follow_job(cloud: Any, rounds: int, console: Console) -> dict[str, Any]:
    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
               TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task("federated rounds", total=rounds)
        while True:
            job = await cloud.get_json("/v1/fl/job")
            acc = job.get("accuracy_per_round") or [0.0]
            progress.update(task, completed=job.get("round", 0),
                            description=f"federated rounds (accuracy {acc[-1]:.3f})")
            if job["state"] != "running":
                return job
            await asyncio.sleep(0.2)


def _print_summary(console: Console, report: dict[str, Any], path: Path) -> None:
    table = Table(title="fedledger demo")
    table.add_column("round", justify="right")
    table.add_column("test accuracy", justify="right")
    for r, acc in enumerate(report["accuracy_per_round"]):
        table.add_row(str(r), f"{acc:.3f}")
    console.print(table)
    chains = ", ".join(f"{c}: height {h}, {report['tx_counts'][c]} txs" for c, h in report["chain_heights"].items())
    console.print(f"chains: {chains}")
    lin = report["lineage"]
    if report["lineage_verified"]:
        console.print(
            f"[bold green]lineage verified[/]: final model {lin['final_model'][:16]}… ← {lin['rounds_checked']} rounds, "
            f"{lin['edge_aggregates_checked']} edge aggregates, {lin['device_updates_checked']} device updates, "
            f"{lin['txs_checked']} proofs, {lin['blobs_checked']} blobs re-hashed"
        )
    else:
        console.print(f"[bold red]lineage NOT verified[/]: {lin['reason']}")
    console.print(f"report written to {path} ({report['elapsed_s']} s)")
