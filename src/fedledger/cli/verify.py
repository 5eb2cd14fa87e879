"""``fedledger verify tx HASH --chain B``: cross-chain verification (seed 000 §IV-B Protocol 1).

The verifier trusts the main chain's genesis (its validators and accumulator
modulus) and *one* main-chain accumulator value, taken by ``--trust``:

* ``head`` (default): the main chain's head header, checked against the
  genesis as a light client does;
* ``sub:CHAIN``: the latest Type-III anchor recorded on sub-chain ``CHAIN``
  (Protocol 1 line 1, a verifier that is a peer of that sub-chain), with the
  main-chain quorum re-checked here;
* ``HEIGHT:HEX``: a value the verifier already holds.

Nodes are found in a deployment directory (``--workdir``, as ``fedledger demo``
writes it) or given with ``--node`` (a node of chain B) and ``--main`` (a
main-chain node) plus ``--main-genesis``. Exit 0 when every step passes, 11
(verification failed) with the failing step otherwise.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
import click

from fedledger.audit.crosschain import (
    CrossChainResult,
    Trusted,
    fetch_proof,
    trusted_from_node,
    trusted_from_subchain,
    verify_cross_chain,
)
from fedledger.cli.locate import locate, reader_key
from fedledger.errors import ConfigError, UsageError, VerificationFailed
from fedledger.ledger.accumulator import chain_params
from fedledger.ledger.genesis import Genesis
from fedledger.net.client import NodeClient
from fedledger.node.config import load_genesis


@click.group()
def verify() -> None:
    """Verify records across chains."""


@verify.command("tx")
@click.argument("tx_hash")
@click.option("--chain", "chain_id", required=True, help="The sub-chain holding the transaction.")
@click.option("--workdir", type=click.Path(path_type=Path), default=Path("demo-run"), show_default=True,
              help="Deployment directory to find nodes and genesis files in.")
@click.option("--node", "node_url", help="URL of a node of --chain (instead of --workdir).")
@click.option("--main", "main_url", help="URL of a main-chain node (instead of --workdir).")
@click.option("--main-genesis", type=click.Path(path_type=Path), help="The main chain's genesis file.")
@click.option("--trust", default="head", show_default=True,
              help="Trusted main-chain accumulator: head, sub:CHAIN or HEIGHT:HEX.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object.")
def verify_tx(tx_hash: str, chain_id: str, workdir: Path, node_url: str | None, main_url: str | None,
              main_genesis: Path | None, trust: str, as_json: bool) -> None:
    """Check that transaction TX_HASH is on sub-chain --chain, trusting one main-chain accumulator."""
    try:
        tx = bytes.fromhex(tx_hash)
    except ValueError:
        raise UsageError("TX_HASH must be hex") from None
    if len(tx) != 32:
        raise UsageError("TX_HASH must be 32 bytes (64 hex digits)")
    urls, genesis = _locate(workdir, chain_id, node_url, main_url, main_genesis)
    result = asyncio.run(_run(tx, chain_id, urls, genesis, trust))
    if as_json:
        click.echo(json.dumps(result.to_json(), sort_keys=True))
    else:
        for step in result.steps:
            click.echo(f"{'ok  ' if step['ok'] else 'FAIL'}  {step['step']}: {step['detail']}")
        click.echo("result: " + ("VALID" if result.valid else "INVALID"))
    if not result.valid:
        raise VerificationFailed(f"transaction {tx_hash} on {chain_id}: {result.failure}")


def _locate(workdir: Path, chain_id: str, node_url: str | None, main_url: str | None,
            main_genesis: Path | None) -> tuple[dict[str, str], Genesis]:
    urls: dict[str, str] = {}
    genesis = load_genesis(main_genesis) if main_genesis else None
    if node_url is None or main_url is None or genesis is None:
        found = locate(workdir)
        urls.update(found.urls)
        genesis = genesis or found.geneses[found.main_chain]
    if node_url:
        urls[chain_id] = node_url
    if main_url:
        urls[genesis.chain_id] = main_url
    for chain in (chain_id, genesis.chain_id):
        if chain not in urls:
            raise ConfigError(f"no node of chain {chain!r} in {workdir}; pass --node/--main")
    urls["main"] = urls[genesis.chain_id]
    return urls, genesis


async def _run(tx: bytes, chain_id: str, urls: dict[str, str], genesis: Genesis, trust: str) -> CrossChainResult:
    async with aiohttp.ClientSession() as session:
        sub = NodeClient(urls[chain_id], session)
        main = NodeClient(urls["main"], session)
        trusted = await _trusted(trust, main, genesis, urls, session)
        proof = await fetch_proof(sub, main, chain_id, tx, trusted.height)
        return verify_cross_chain(proof, trusted)


async def _trusted(trust: str, main: NodeClient, genesis: Genesis, urls: dict[str, str],
                   session: aiohttp.ClientSession) -> Trusted:
    if trust == "head":
        return await trusted_from_node(main, genesis)
    if trust.startswith("sub:"):
        chain = trust[4:]
        if chain not in urls:
            raise ConfigError(f"no node of chain {chain!r} to take the Type-III anchor from")
        return await trusted_from_subchain(NodeClient(urls[chain], session), genesis)
    height, _, value = trust.partition(":")
    try:
        return Trusted(genesis.chain_id, int(height), bytes.fromhex(value), chain_params(genesis.params))
    except ValueError:
        raise UsageError("--trust must be head, sub:CHAIN or HEIGHT:HEX") from None


@verify.command("model")
@click.argument("model_file", type=click.Path(path_type=Path))
@click.option("--workdir", type=click.Path(path_type=Path), default=Path("demo-run"), show_default=True,
              help="Deployment directory to find nodes and genesis files in.")
@click.option("--key", "key_file", type=click.Path(path_type=Path), default=None,
              help="Reader key (hex seed) that opens sealed artefacts (default: WORKDIR/auditor.key).")
@click.option("--proofs", is_flag=True, help="Include every record's transaction proof in the JSON.")
@click.option("--json", "as_json", is_flag=True, help="Print the provenance as one JSON object.")
def verify_model_cmd(model_file: Path, workdir: Path, key_file: Path | None, proofs: bool, as_json: bool) -> None:
    """Show where the model in MODEL_FILE came from, checked against the chains; FAIL if any byte differs."""
    from fedledger.audit.provenance import verify_model

    try:
        data = model_file.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {model_file}: {exc}") from None
    found = locate(workdir)
    key = reader_key(key_file, workdir)

    async def run() -> dict[str, Any]:
        async with aiohttp.ClientSession() as session:
            return (await verify_model(found.network(session, key), data, proofs=proofs)).to_json()

    result = asyncio.run(run())
    if as_json:
        click.echo(json.dumps(result, sort_keys=True))
    else:
        click.echo(provenance_text(result))
    if not result["ok"]:
        raise VerificationFailed(f"model {result['model']}: {result['reason']}")


def provenance_text(p: dict[str, Any]) -> str:
    """A human-readable provenance: the verdict, then each round's edges, devices and artefacts."""
    lines = [f"model   {p['model']}"]
    if p["kind"]:
        lines.append(f"record  {p['kind'].replace('_', ' ')} of round {p['round']} on {p['record']['chain']}, "
                     f"block {p['record']['height']}, tx {p['record']['tx']}")
    lineage = p.get("lineage") or {}
    for rnd in sorted(lineage.get("rounds", []), key=lambda x: x["round"]):
        acc = rnd.get("accuracy_bp")
        lines.append(f"round {rnd['round']}: global {rnd['model'][:16]}…"
                     + (f"  accuracy {acc / 100:.2f} %" if acc is not None else "")
                     + f"  edges {', '.join(rnd['edges'])}  devices {', '.join(rnd['devices'])}")
    arts = lineage.get("artefacts", [])
    if arts:
        kinds = sorted({a["kind"] for a in arts})
        lines.append("artefacts on chain: " + ", ".join(f"{sum(a['kind'] == k for a in arts)} {k}" for k in kinds)
                     + "  (each proven: Merkle path into a validator-signed header)")
    lines.append("result: " + ("VALID" if p["ok"] else f"FAIL: {p['reason']}"))
    return "\n".join(lines)
