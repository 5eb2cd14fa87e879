"""``fedledger bench ceremony``: the distributed modulus ceremony next to a trusted dealer.

Runs one ceremony (seed 000 §IV-C; :mod:`fedledger.crypto.ceremony`) with ``--parties``
separate processes on loopback TCP, exactly as ``fedledger ceremony modulus`` does, and
times it from the first process start to the agreed result (``ceremony_s``: process
start-up, every network round, sieving, trial division and biprimality tests).

The baseline, measured in the same run on this machine, is what the ceremony replaces:
one trusted dealer generating a modulus of the same size in one process
(:func:`~fedledger.crypto.accumulator.setup_trusted_dealer`: two random primes by
``gmpy2.next_prime``). Prime generation time varies a lot from draw to draw, so the
dealer runs repeatedly (at least :data:`MIN_DEALER_RUNS` times and
:data:`MIN_DEALER_SECONDS` in total) and ``baseline_dealer_s`` is the mean.
``ratio = ceremony_s / baseline_dealer_s`` is the price of nobody knowing the factors.

The ceremony's own cost is just as random (the number of candidates is geometric), so
``candidates`` and ``expected_candidates`` are reported next to the time. Like every
benchmark, the last line of stdout is exactly one JSON object.
"""

from __future__ import annotations

import os
import platform
import time
from typing import Any

from rich.console import Console

from fedledger.crypto.accumulator import setup_trusted_dealer
from fedledger.crypto.ceremony import CeremonyParams, expected_candidates
from fedledger.node.ceremony import CeremonyOptions, run_ceremony

QUICK_BITS = 512
MIN_DEALER_RUNS = 5
MIN_DEALER_SECONDS = 1.0
MAX_DEALER_RUNS = 200


def dealer_baseline(bits: int) -> tuple[float, int]:
    """Mean seconds of :func:`setup_trusted_dealer` at ``bits``, and how many runs it took."""
    runs, total = 0, 0.0
    while runs < MAX_DEALER_RUNS and (runs < MIN_DEALER_RUNS or total < MIN_DEALER_SECONDS):
        start = time.perf_counter()
        setup_trusted_dealer(bits, allow_small=bits < 2048)
        total += time.perf_counter() - start
        runs += 1
    return total / runs, runs


def run(bits: int, parties: int, seed: bytes | None, console: Console) -> dict[str, Any]:
    """One ceremony and the dealer baseline; the JSON record."""
    expected = expected_candidates(CeremonyParams(parties, bits))  # also rejects bad input
    opts = CeremonyOptions(parties=parties, bits=bits, seed=seed)
    console.print(f"[dim]ceremony: {parties} party processes, {bits}-bit modulus…[/dim]")
    with console.status("starting party processes…") as status:
        def on_event(event: Any) -> None:
            status.update(f"batch {event['batches']}: {event['candidates']:,} candidates, "
                          f"{event['biprimality_tests']:,} biprimality tests")

        outcome = run_ceremony(opts, on_event)
    console.print("[dim]baseline: trusted dealer, same size, this process…[/dim]")
    dealer_s, dealer_runs = dealer_baseline(bits)
    r = outcome.as_dict()
    return {
        "bench": "ceremony",
        "bits": bits,
        "parties": parties,
        "threshold": r["threshold"],
        "ceremony_s": round(outcome.seconds, 3),
        "baseline_dealer_s": round(dealer_s, 5),
        "baseline_dealer_runs": dealer_runs,
        "ratio": round(outcome.seconds / dealer_s, 1),
        "candidates": r["candidates"],
        "expected_candidates": round(expected),
        "batches": r["batches"],
        "batch_size": r["batch_size"],
        "trial_division_passed": r["trial_division_passed"],
        "biprimality_tests": r["biprimality_tests"],
        "biprimality_rounds": r["biprimality_rounds"],
        "network_rounds": r["rounds"],
        "sent_bytes": r["sent_bytes"],
        "modulus_bits": outcome.result.modulus.bit_length(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
    }


def table(r: dict[str, Any]) -> str:
    rows = [
        ("ceremony", f"{r['parties']} processes (t = {r['threshold']}), {r['bits']}-bit N: "
                     f"{r['ceremony_s']:.2f} s"),
        ("candidates", f"{r['candidates']:,} (expected about {r['expected_candidates']:,}), "
                       f"{r['batches']} batches of {r['batch_size']}"),
        ("biprimality tests", f"{r['biprimality_tests']:,} after {r['trial_division_passed']:,} "
                              "passed trial division"),
        ("traffic", f"{r['sent_bytes']:,} bytes in {r['network_rounds']} rounds"),
        ("trusted dealer", f"{r['baseline_dealer_s'] * 1000:.1f} ms (mean of "
                           f"{r['baseline_dealer_runs']})"),
        ("ratio", f"{r['ratio']}x (ceremony / dealer)"),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)
