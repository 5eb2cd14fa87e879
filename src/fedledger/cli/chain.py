"""``fedledger chain``: inspect and check a stored chain replica.

``fedledger chain verify --db PATH`` replays the SQLite chain store from its
genesis (:func:`fedledger.storage.verify.verify_chain`) and exits 0 when every
block, receipt and the stored state check out, or raises
:class:`~fedledger.errors.StoreCorrupted` (exit 8) naming the first bad height.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from fedledger.errors import NotFound, StoreCorrupted, UsageError
from fedledger.storage.verify import ChainReport, verify_chain


@click.group()
def chain() -> None:
    """Inspect and check a stored chain."""


@chain.command("verify")
@click.option(
    "--db",
    "db",
    required=True,
    type=click.Path(path_type=Path),
    help="Path of the chain's SQLite database.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object.")
def verify(db: Path, as_json: bool) -> None:
    """Replay the stored chain from genesis and check every block, receipt and the state."""
    _check_db_path(db)
    report = verify_chain(db)
    if as_json:
        click.echo(json.dumps(report.to_json(), sort_keys=True))
    else:
        click.echo(_summary(db, report))
    if not report.ok:
        raise StoreCorrupted(_failure_message(db, report))


def _check_db_path(db: Path) -> None:
    """Refuse a path that is not an existing file before SQLite would create one there."""
    if not db.exists():
        raise NotFound(f"no chain database at {db}")
    if not db.is_file():
        raise UsageError(f"{db} is not a file (expected a chain's SQLite database)")


def _failure_message(db: Path, report: ChainReport) -> str:
    where = "before block 0" if report.bad_height is None else f"at height {report.bad_height}"
    return f"chain in {db} is corrupted {where}: {report.reason}"


def _summary(db: Path, report: ChainReport) -> str:
    """A few aligned lines a person can read at a glance."""
    rows = [
        ("database", str(db)),
        ("chain", report.chain_id or "?"),
        ("head height", str(report.height)),
        ("blocks checked", str(report.blocks_checked)),
        ("txs checked", str(report.txs_checked)),
    ]
    if report.ok:
        rows.append(("result", "OK"))
    else:
        bad = "-" if report.bad_height is None else str(report.bad_height)
        rows += [("result", "CORRUPTED"), ("first bad height", bad), ("reason", report.reason)]
    rows += [("sqlite", d) for d in report.details]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)
