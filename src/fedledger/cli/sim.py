"""``fedledger sim``: run the deterministic consensus simulator over many seeds.

Each seed is one reproducible run (see :mod:`fedledger.sim.scenario`): random
delays, loss, partitions, an honest crash and restart, and f < K/3 Byzantine
validators, followed by a synchronous period. Safety, liveness and
accountability (and, for ``--engine bft``, validity) are checked on every run;
any violation exits with code 11 and names the seeds, so
``fedledger sim --start S --seeds 1`` replays it.
"""

from __future__ import annotations

import json
from concurrent.futures import ProcessPoolExecutor

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from fedledger.errors import VerificationFailed
from fedledger.sim.scenario import ENGINES, SimConfig, SimResult, run_seed

# Period lengths (100 ms slots) per engine: microchain finality needs epochs of blocks, BFT
# decides every block, so its runs can be shorter.
PERIODS = {"microchain": (40, 50), "bft": (20, 20)}


def _run(args: tuple[int, int, str]) -> SimResult:
    seed, validators, engine = args
    async_slots, sync_slots = PERIODS[engine]
    return run_seed(seed, SimConfig(validators=validators, async_slots=async_slots, sync_slots=sync_slots,
                                    engine=engine))


@click.command("sim")
@click.option("--seeds", type=click.IntRange(1), default=200, show_default=True, help="How many seeds to run.")
@click.option("--start", type=click.IntRange(0), default=0, show_default=True, help="First seed.")
@click.option("--validators", type=click.IntRange(4, 31), default=4, show_default=True,
              help="Committee size K (f = (K-1)//3 of them Byzantine).")
@click.option("--workers", type=click.IntRange(1, 64), default=2, show_default=True, help="Worker processes.")
@click.option("--engine", type=click.Choice(ENGINES), default="microchain", show_default=True,
              help="Consensus engine: the edge microchain or the main chain's BFT (Tendermint).")
@click.option("--json", "as_json", is_flag=True, help="Print only the summary JSON line.")
def sim(seeds: int, start: int, validators: int, workers: int, engine: str, as_json: bool) -> None:
    """Check consensus safety, liveness and slashing under faults, over many seeds."""
    console = Console(stderr=True, quiet=as_json)
    results: list[SimResult] = []
    jobs = [(s, validators, engine) for s in range(start, start + seeds)]
    columns = (TextColumn("simulating"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress, ProcessPoolExecutor(workers) as pool:
        task = progress.add_task("sim", total=len(jobs))
        for result in pool.map(_run, jobs):
            results.append(result)
            progress.advance(task)
    failed = [r for r in results if not r.ok]
    summary = {
        "bench": "sim",
        "seeds": len(results),
        "validators": validators,
        "engine": engine,
        "failed_seeds": [r.seed for r in failed],
        "byzantine_runs": sum(1 for r in results if r.byzantine),
        "slashed": sum(len(r.slashed) for r in results),
        "arbitrator_decisions": sum(r.decisions for r in results),
        "extra_rounds": sum(r.rounds for r in results),
        "crash_runs": sum(1 for r in results if r.crashed),
        "partition_runs": sum(1 for r in results if r.partitioned),
    }
    for r in failed:
        console.print(f"[red]seed {r.seed}[/]: " + "; ".join(r.violations))
    click.echo(json.dumps(summary, sort_keys=True))
    if failed:
        raise VerificationFailed(f"{len(failed)} of {len(results)} seeds violated an invariant: "
                                 f"{', '.join(str(r.seed) for r in failed[:20])}")
