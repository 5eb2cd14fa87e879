"""``fedledger ceremony``: distributed RSA modulus generation (seed 000 §IV-C).

``fedledger ceremony modulus`` starts ``--parties`` separate party processes that generate
an RSA modulus nobody knows the factors of, checks that they agree, prints a summary and
writes ``{"modulus": hex, "bits", "parties", "candidates", "biprimality_tests",
"seconds", ...}`` to ``--out``. That file is what a genesis document takes as the
accumulator modulus (:meth:`fedledger.crypto.accumulator.AccumulatorParams.from_modulus`).
The protocol is described in :mod:`fedledger.crypto.ceremony`, the processes in
:mod:`fedledger.node.ceremony`. The last line of stdout is the JSON result.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from fedledger.crypto.ceremony import DEFAULT_BITS, DEFAULT_ROUNDS, CeremonyParams
from fedledger.errors import UsageError


@click.group()
def ceremony() -> None:
    """Distributed RSA modulus generation for the accumulator (seed 000 §IV-C)."""


@ceremony.command("modulus")
@click.option("--parties", "-k", default=3, show_default=True, type=int,
              help="Number of party processes (at least 3; threshold t = floor((k-1)/2)).")
@click.option("--bits", default=DEFAULT_BITS, show_default=True, type=int,
              help="Modulus size in bits (even, at least 128; the accumulator needs 2048).")
@click.option("--out", "out_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the JSON result here (for a genesis document).")
@click.option("--seed", default=None,
              help="Seed all party randomness (reproducible runs for testing; NOT secure).")
@click.option("--batch-size", default=0, show_default=True, type=int,
              help="Candidates per network round (0: chosen from the modulus size).")
@click.option("--rounds", default=DEFAULT_ROUNDS, show_default=True, type=int,
              help="Biprimality tests an accepted modulus must pass (error <= 2^-rounds).")
@click.option("--sieve/--no-sieve", default=True, show_default=True,
              help="Distributed sieving of the candidate factors.")
@click.option("--port", "base_port", default=0, show_default=True, type=int,
              help="Party i listens on PORT+i-1 (0: any free port).")
@click.option("--timeout", default=3600.0, show_default=True, type=float,
              help="Give up after this many seconds.")
@click.option("--round-timeout", default=300.0, show_default=True, type=float,
              help="A party gives up when a round takes longer than this.")
@click.option("--json", "json_only", is_flag=True, help="Print only the JSON line.")
@click.option("--crash-party", type=(int, int), default=None, hidden=True,
              help="Fault injection: party P dies at round R.")
def modulus(parties: int, bits: int, out_path: Path | None, seed: str | None, batch_size: int,
            rounds: int, sieve: bool, base_port: int, timeout: float, round_timeout: float,
            json_only: bool, crash_party: tuple[int, int] | None) -> None:
    """Generate an RSA modulus with --parties processes; nobody learns its factors."""
    from fedledger.node.ceremony import CeremonyOptions, run_ceremony

    CeremonyParams(parties, bits, b"", batch_size, rounds, sieve)  # bad input fails here, quietly
    opts = CeremonyOptions(parties=parties, bits=bits, batch_size=batch_size, rounds=rounds,
                           sieve=sieve, seed=None if seed is None else seed.encode(),
                           base_port=base_port, timeout=timeout, round_timeout=round_timeout,
                           crash=crash_party)
    console = Console(stderr=True, quiet=json_only)
    console.print(f"[dim]{parties} parties generating a {bits}-bit modulus…[/dim]")
    with console.status("starting party processes…") as status:
        def on_event(event: Mapping[str, Any]) -> None:
            status.update(f"batch {event['batches']}: {event['candidates']:,} candidates, "
                          f"{event['biprimality_tests']:,} biprimality tests")

        outcome = run_ceremony(opts, on_event)
    record = outcome.as_dict()
    record["accumulator_ok"] = accumulator_accepts(outcome.result.modulus)
    if out_path is not None:
        write_json(out_path, record)
    if not json_only:
        click.echo(summary(record, out_path))
    click.echo(json.dumps(record, sort_keys=True))


def accumulator_accepts(n: int) -> bool:
    """Whether :meth:`AccumulatorParams.from_modulus` takes ``n`` as it is (2048 bits or more)."""
    from fedledger.crypto.accumulator import MIN_MODULUS_BITS, AccumulatorParams

    if n.bit_length() < MIN_MODULUS_BITS:
        return False
    AccumulatorParams.from_modulus(n)
    return True


def write_json(path: Path, record: Mapping[str, Any]) -> None:
    """Write atomically (temporary file, fsync, rename)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        with tmp.open("w") as fh:
            json.dump(record, fh, indent=2, sort_keys=True)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(path)
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror or exc}") from None


def summary(r: Mapping[str, Any], out_path: Path | None) -> str:
    rows = [
        ("modulus", f"{r['bits']} bits, {r['modulus'][:16]}…{r['modulus'][-8:]}"),
        ("parties", f"{r['parties']} (threshold t = {r['threshold']}, semi-honest)"),
        ("candidates", f"{r['candidates']:,} in {r['batches']} batches of {r['batch_size']}"),
        ("trial division", f"{r['trial_division_passed']:,} passed"),
        ("biprimality tests",
         f"{r['biprimality_tests']:,} ({r['biprimality_rounds']} on the accepted N)"),
        ("time", f"{r['seconds']:.2f} s, {r['rounds']} rounds, {r['sent_bytes']:,} bytes sent"),
        ("accumulator", "accepts it" if r["accumulator_ok"] else "needs --bits 2048 or more"),
    ]
    if out_path is not None:
        rows.append(("written to", str(out_path)))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)


@ceremony.command("party", hidden=True)
@click.option("--index", type=int, required=True)
@click.option("--parties", type=int, required=True)
@click.option("--bits", type=int, required=True)
@click.option("--session", required=True, help="Session id, hex.")
@click.option("--batch-size", type=int, default=0)
@click.option("--rounds", type=int, default=DEFAULT_ROUNDS)
@click.option("--sieve/--no-sieve", default=True)
@click.option("--host", default="127.0.0.1")
@click.option("--port", type=int, default=0)
@click.option("--seed", default=None, help="Seed, hex (tests only).")
@click.option("--round-timeout", type=float, default=300.0)
@click.option("--crash-at-round", type=int, default=None)
def party(index: int, parties: int, bits: int, session: str, batch_size: int, rounds: int,
          sieve: bool, host: str, port: int, seed: str | None, round_timeout: float,
          crash_at_round: int | None) -> None:
    """One party of the ceremony (started by ``ceremony modulus``; talks JSON on stdio)."""
    from fedledger.node.ceremony import PartyOptions, party_main

    try:
        session_bytes = bytes.fromhex(session)
        seed_bytes = None if seed is None else bytes.fromhex(seed)
    except ValueError:
        raise UsageError("--session and --seed must be hex") from None
    params = CeremonyParams(parties, bits, session_bytes, batch_size, rounds, sieve)
    party_main(PartyOptions(index=index, params=params, host=host, port=port, seed=seed_bytes,
                            round_timeout=round_timeout, crash_at_round=crash_at_round))
