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
@click.option("--model", default="digits-mlp", show_default=True,
              help="A registered model that takes --dataset's samples (e.g. digits-mlp, digits-cnn, mudfl-cnn).")
@click.option("--dataset", default="digits", show_default=True, help="digits, digits28, mnist1d or mnist.")
@click.option("--data-dir", type=click.Path(path_type=Path), default=None,
              help="Directory with the MNIST IDX or npz files (--dataset mnist).")
@click.option("--partition", type=click.Choice(["iid", "dirichlet", "shards"]), default="iid", show_default=True,
              help="How the training data is split across devices.")
@click.option("--alpha", type=click.FloatRange(min=0.0, min_open=True), default=0.5, show_default=True,
              help="Dirichlet concentration (--partition dirichlet); smaller is more skewed.")
@click.option("--device-rounds", type=click.IntRange(1, 100), default=1, show_default=True,
              help="k: device rounds each edge aggregates per cloud round.")
@click.option("--epochs", type=click.IntRange(1, 100), default=2, show_default=True, help="Local epochs per device round.")
@click.option("--delegate-signing", is_flag=True, help="Edges sign the devices' data batches (weak devices).")
@click.option("--mode", type=click.Choice(["hierarchical", "decentralised"]), default="hierarchical",
              show_default=True, help="decentralised: no aggregator; every device averages its peers' updates "
              "into its own view (seed 002 §5.2.2).")
@click.option("--aggregation", type=click.Choice(["fedavg", "secagg"]), default="fedavg", show_default=True,
              help="secagg: seed 001's verifiable secure aggregation between the processes; edges see only "
              "masked updates and reconstruct their weighted sum (needs --device-rounds 1).")
@click.option("--serve", is_flag=True,
              help="Keep the nodes running after the job (for `fedledger verify`/`audit`) until Ctrl-C.")
@click.option("--report", "report_path", type=click.Path(path_type=Path), default=Path("report.json"),
              show_default=True)
@click.option("--modulus", "modulus_file", type=click.Path(path_type=Path), default=None,
              help="Accumulator modulus from `fedledger ceremony modulus --out FILE` (default: RSA-2048).")
def demo(workdir: Path, edges: int, devices_per_edge: int, rounds: int, model: str, dataset: str,
         data_dir: Path | None, partition: str, alpha: float, device_rounds: int, epochs: int,
         delegate_signing: bool, mode: str, aggregation: str, serve: bool, report_path: Path,
         modulus_file: Path | None) -> None:
    """Run a small hierarchical federated-learning job end to end and verify it."""
    from fedledger.fl.datasets import load_dataset
    from fedledger.fl.specs import check_model_dataset
    from fedledger.node.deployment import MAIN_CHAIN, make_deployment
    from fedledger.node.supervisor import Supervisor

    check_model_dataset(model, dataset)
    info = load_dataset(dataset, data_dir=data_dir)[2]  # missing files fail here, before any process starts
    if info.train_size < edges * devices_per_edge:
        raise UsageError(f"{dataset} has {info.train_size} training samples, fewer than the "
                         f"{edges * devices_per_edge} devices")
    fl = {"model": model, "dataset": dataset, "partition": partition, "alpha": alpha, "device_rounds": device_rounds,
          "epochs": epochs, "delegate_signing": delegate_signing, "mode": mode, "aggregation": aggregation,
          **({"verify_steps": 0} if aggregation == "secagg" else {}),
          **({"data_dir": str(data_dir.resolve())} if data_dir else {})}
    from fedledger.node.roles.base import FLSettings

    FLSettings.from_config(fl)  # a combination the nodes would refuse fails here, before any process starts
    console = Console()
    accumulator = _ceremony_modulus(modulus_file) if modulus_file else None
    _prepare_workdir(workdir)
    dep = make_deployment(workdir, edges=edges, devices_per_edge=devices_per_edge, fl=fl, accumulator=accumulator)
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
        report = asyncio.run(_run(dep, rounds, console) if mode == "hierarchical" else
                             _run_decentralised(dep, rounds, console))
        report["elapsed_s"] = round(time.perf_counter() - t0, 2)
        report_path.write_text(json.dumps(report, indent=2))
        _print_summary(console, report, report_path)
        if serve:
            _serve(console, dep, report)
    finally:
        sup.stop_all()
    if mode == "decentralised":
        if not all(report["views_agree"]):
            raise VerificationFailed("honest devices' views of the global model differ")
        return
    if not report["lineage_verified"]:
        raise VerificationFailed(f"lineage verification failed: {report['lineage']['reason']}")
    if not report["training_audit"]["ok"]:
        raise VerificationFailed(f"training audit failed: {report['training_audit']['reason']}")


def _serve(console: Console, dep: Any, report: dict[str, Any]) -> None:
    """Keep every node up for the verify and audit commands until Ctrl-C."""
    console.print(f"nodes keep running (auditor node at {dep.url('auditor')}); try, in another terminal:\n"
                  f"  fedledger verify model {report['final_model_file']} --workdir {dep.workdir}\n"
                  f"  fedledger audit training --model {report['final_model']} --samples 3 --workdir {dep.workdir}\n"
                  "Ctrl-C stops them.")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        console.print("stopping…")


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


async def _run_decentralised(dep: Any, rounds: int, console: Console) -> dict[str, Any]:
    """Seed 002 §5.2.2: the pools run the rounds; every device keeps and records its own view."""
    from fedledger.net.client import NodeClient

    async with aiohttp.ClientSession() as session:
        cloud = NodeClient(dep.url("cloud"), session)
        await cloud.post_json("/v1/fl/job", {"rounds": rounds})
        job = await _follow_job(cloud, rounds, console)
    if job["state"] != "done":
        raise VerificationFailed(f"the FL job failed: {job.get('error', job['state'])}")
    return {"mode": "decentralised", "rounds": rounds, "accuracy_per_round": job["accuracy_per_round"],
            "views": job["views"], "views_agree": job["agreed"], "rejected": job["rejected"],
            "failures": job["failures"]}


async def _run(dep: Any, rounds: int, console: Console) -> dict[str, Any]:
    from fedledger.audit.chainview import ChainView
    from fedledger.net.client import NodeClient
    from fedledger.node.config import load_genesis
    from fedledger.storage.artefacts import MODEL, open_artefact

    async with aiohttp.ClientSession() as session:
        cloud = NodeClient(dep.url("cloud"), session)
        auditor = NodeClient(dep.url("auditor"), session, timeout_s=600)
        await cloud.post_json("/v1/fl/job", {"rounds": rounds})
        job = await _follow_job(cloud, rounds, console)
        if job["state"] != "done":
            raise VerificationFailed(f"the FL job failed: {job.get('error', job['state'])}")
        final = await cloud.state("fl", f"model/{rounds}")
        model_file = dep.workdir / "final-model.bin"
        stored = await cloud.get_blob(final["blob"])
        model_file.write_bytes(open_artefact(stored, bytes.fromhex(final["model"]), dep.auditor(), MODEL))
        with console.status("auditor node: verifying the final model's provenance from the chains…"):
            provenance = await auditor.post_bytes("/v1/verify/model", model_file.read_bytes())
        with console.status("auditor node: re-running a random recorded training step of every update…"):
            audit = await auditor.post_json("/v1/audit/training", {"model": final["model"], "samples": 1})
        heights, tx_counts = {}, {}
        views = [ChainView(cloud, load_genesis(dep.geneses["main"]))]
        views += [ChainView(NodeClient(dep.url(e), session), load_genesis(dep.geneses[dep.chain_of(e)]))
                  for e in dep.edges]
        for view in views:
            headers = await view.sync_headers()
            heights[view.chain_id] = headers[-1].height
            tx_counts[view.chain_id] = sum(h.tx_count for h in headers)
    return {
        "rounds": rounds,
        "accuracy_per_round": job["accuracy_per_round"],
        "round_seconds": job["round_seconds"],
        "final_model": job.get("final_model"),
        "final_model_file": str(model_file),
        "chain_heights": heights,
        "tx_counts": tx_counts,
        "failures": job["failures"],
        "lineage_verified": provenance["ok"],
        "lineage": {**provenance["lineage"], "reason": provenance["reason"]},
        "artefacts_on_chain": len(provenance["lineage"].get("artefacts", [])),
        "training_audit": {k: audit[k] for k in ("ok", "reason", "updates_checked", "steps_checked", "txs_checked")},
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
    if report.get("mode") == "decentralised":
        for r, (agree, views) in enumerate(zip(report["views_agree"], report["views"], strict=True), start=1):
            per_chain = {c: len(set(v.values())) for c, v in views["chains"].items()}
            devices = sum(len(v) for v in views["chains"].values())
            verdict = "[bold green]agree[/]" if agree else "[bold red]DIFFER[/]"
            console.print(f"round {r}: the views of {devices} devices {verdict} "
                          f"(distinct views per sub-chain: {per_chain})")
        console.print(f"updates rejected by peers: {len(report['rejected'])}")
        console.print(f"report written to {path} ({report['elapsed_s']} s)")
        return
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
    audit = report["training_audit"]
    if audit["ok"]:
        console.print(f"[bold green]training audited[/]: {audit['steps_checked']} randomly chosen recorded steps of "
                      f"{audit['updates_checked']} device updates re-run bit for bit (seed 000 §V-B)")
    else:
        console.print(f"[bold red]training audit FAILED[/]: {audit['reason']}")
    console.print(f"final model: {report['final_model_file']} (check it: fedledger verify model FILE)")
    console.print(f"report written to {path} ({report['elapsed_s']} s)")
