"""``fedledger privacy``: the (ε, δ) of a DP training plan, per round and in total.

Each round is a Gaussian mechanism with the given noise multiplier (noise
standard deviation over the L2 clipping bound), Poisson-sampled at
``--sample-rate`` (1.0: every client in every round), composed over
``--rounds``; ε comes from ``dp-accounting`` (see :mod:`fedledger.fl.dp`).
A table goes to stderr (unless ``--json``); the last line on stdout is one
JSON object with ``epsilon_round``, ``epsilon_total``, ``delta``, ``rounds``,
``noise_multiplier``, ``sample_rate`` and ``accountant``.
"""

from __future__ import annotations

import json
import math
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from fedledger.errors import UsageError


def report(
    noise_multiplier: float, rounds: int, sample_rate: float, delta: float, accountant: str
) -> dict[str, Any]:
    """ε of one round and of ``rounds`` rounds; UsageError for bad arguments."""
    from fedledger.fl.dp import PrivacyAccountant

    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise UsageError(f"--rounds must be an int >= 1, got {rounds!r}")
    acct = PrivacyAccountant(noise_multiplier, sample_rate, delta, accountant)
    acct.step(rounds)
    return {
        "epsilon_round": acct.epsilon_round(),
        "epsilon_total": acct.epsilon_total(),
        "delta": acct.delta,
        "rounds": acct.rounds,
        "noise_multiplier": acct.noise_multiplier,
        "sample_rate": acct.sample_rate,
        "accountant": acct.accountant,
    }


def table(result: dict[str, Any]) -> Table:
    """The report as a two-column Rich table."""
    out = Table(title="differential privacy budget")
    out.add_column("quantity")
    out.add_column("value", justify="right")
    out.add_row("accountant", str(result["accountant"]))
    out.add_row("noise multiplier z", f"{result['noise_multiplier']:g}")
    out.add_row("sample rate q", f"{result['sample_rate']:g}")
    out.add_row("delta", f"{result['delta']:g}")
    out.add_row("rounds", str(result["rounds"]))
    out.add_row("epsilon per round", f"{result['epsilon_round']:.4g}")
    out.add_row("epsilon total", f"{result['epsilon_total']:.4g}")
    return out


def _json_number(value: Any) -> Any:
    """Infinite or NaN floats become null, so the line stays valid JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


@click.command("privacy")
@click.option("--noise-multiplier", "-z", type=float, required=True,
              help="Noise standard deviation over the L2 clipping bound.")
@click.option("--rounds", type=int, required=True, help="Number of rounds (>= 1).")
@click.option("--sample-rate", type=float, default=1.0, show_default=True,
              help="Probability that a client takes part in a round (1.0: every round).")
@click.option("--delta", type=float, default=1e-5, show_default=True, help="Target delta in (0, 1).")
@click.option("--accountant", type=click.Choice(["rdp", "pld"]), default="rdp", show_default=True,
              help="Renyi DP or privacy loss distribution accounting.")
@click.option("--json", "as_json", is_flag=True, help="Print only the JSON line.")
def privacy(noise_multiplier: float, rounds: int, sample_rate: float, delta: float,
            accountant: str, as_json: bool) -> None:
    """Print epsilon per round and in total for a Gaussian-noise training plan."""
    result = report(noise_multiplier, rounds, sample_rate, delta, accountant)
    Console(stderr=True, quiet=as_json).print(table(result))
    click.echo(json.dumps({k: _json_number(v) for k, v in result.items()}, sort_keys=True))
