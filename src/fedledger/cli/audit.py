"""``fedledger audit training --model HASH --samples k``: re-run randomly chosen recorded training steps.

Seed 000 §V-B. The model may be a global model, an edge aggregate or a device
update; see :mod:`fedledger.audit.training` for what is proven and re-run.
Exit 0 when every sampled step reproduces, 11 (verification failed) with the
reason otherwise.
"""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path
from typing import Any

import aiohttp
import click
from rich.console import Console

from fedledger.cli.locate import locate, reader_key
from fedledger.errors import UsageError, VerificationFailed


@click.group()
def audit() -> None:
    """Audit recorded training against the chains."""


@audit.command("training")
@click.option("--model", "model_hex", required=True, help="Hash of a global model, edge aggregate or device update.")
@click.option("--samples", type=click.IntRange(1), default=3, show_default=True,
              help="Recorded steps to re-run per device update.")
@click.option("--workdir", type=click.Path(path_type=Path), default=Path("demo-run"), show_default=True,
              help="Deployment directory to find nodes and genesis files in.")
@click.option("--key", "key_file", type=click.Path(path_type=Path), default=None,
              help="Reader key (hex seed) that opens sealed artefacts (default: WORKDIR/auditor.key).")
@click.option("--seed", type=int, default=None,
              help="Seed the step sampling (reproducible audits; by default it is unpredictable).")
@click.option("--json", "as_json", is_flag=True, help="Print the verdict as one JSON object.")
def audit_training(model_hex: str, samples: int, workdir: Path, key_file: Path | None, seed: int | None,
                   as_json: bool) -> None:
    """Pick random recorded steps behind --model, fetch M_i, M_O and d_(i+1), check them on chain and re-run."""
    from fedledger.audit.training import TrainingAuditor

    try:
        model = bytes.fromhex(model_hex)
    except ValueError:
        raise UsageError("--model must be hex") from None
    if len(model) != 32:
        raise UsageError("--model must be a 32-byte hash (64 hex digits)")
    found = locate(workdir)
    key = reader_key(key_file, workdir)
    rng = random.Random(seed) if seed is not None else None
    console = Console(stderr=True, quiet=as_json)

    async def run() -> dict[str, Any]:
        async with aiohttp.ClientSession() as session:
            auditor = TrainingAuditor(found.network(session, key), samples, rng)
            with console.status("proving records and re-running sampled training steps…"):
                return (await auditor.audit(model)).to_json()

    result = asyncio.run(run())
    if as_json:
        click.echo(json.dumps(result, sort_keys=True))
    else:
        for s in result["steps"]:
            click.echo(f"{'ok  ' if s['ok'] else 'FAIL'}  {s['chain']} {s['device']} round {s['round']}"
                       f"{'.' + str(s['sub_round']) if s['sub_round'] > 1 else ''} step {s['index']}/{s['of']}"
                       + (f": {s['reason']}" if s["reason"] else ""))
        click.echo(f"{result['updates_checked']} updates, {result['steps_checked']} steps re-run, "
                   f"{result['txs_checked']} transactions proven")
        click.echo("verdict: " + ("PASS" if result["ok"] else f"FAIL: {result['reason']}"))
    if not result["ok"]:
        raise VerificationFailed(f"training audit of {model_hex}: {result['reason']}")
