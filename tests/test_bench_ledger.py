"""Tests for ``fedledger bench ledger-core``: the output contract, never the speed.

BRIEF: every benchmark prints one JSON object as its last line of stdout, and
every timing is reported next to a baseline measured in the same run, as a ratio.
"""

from __future__ import annotations

import json
import os
from typing import Any

import pytest
from click.testing import CliRunner

from fedledger.cli.bench import bench

TINY = ["ledger-core", "--txs", "23", "--senders", "4", "--block-size", "5"]


def last_json_line(output: str) -> dict[str, Any]:
    lines = output.strip().splitlines()
    result = json.loads(lines[-1])
    assert isinstance(result, dict)
    return result


def test_last_line_is_the_json_contract() -> None:
    result = CliRunner().invoke(bench, TINY)
    assert result.exit_code == 0, result.output
    assert len(result.stdout.strip().splitlines()) > 1  # a human table first
    r = last_json_line(result.stdout)
    assert r["bench"] == "ledger-core"
    assert (r["txs"], r["blocks"], r["block_size"], r["senders"]) == (23, 5, 5, 4)
    for key in ("tx_per_s", "verify_ceiling_per_s", "ratio"):
        assert isinstance(r[key], int | float) and r[key] > 0, key
    assert r["ratio"] == pytest.approx(r["tx_per_s"] / r["verify_ceiling_per_s"], rel=1e-2)
    assert r["failed_receipts"] == 0  # every fl.submit_update of the workload succeeds


def test_json_flag_prints_only_the_json_line() -> None:
    result = CliRunner().invoke(bench, [*TINY, "--json"])
    assert result.exit_code == 0, result.output
    assert len(result.stdout.strip().splitlines()) == 1
    assert last_json_line(result.stdout)["bench"] == "ledger-core"


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="CPU affinity is Linux-only")
def test_pins_to_one_core_and_restores_affinity() -> None:
    before = os.sched_getaffinity(0)
    result = CliRunner().invoke(bench, [*TINY, "--json"])
    assert result.exit_code == 0, result.output
    assert last_json_line(result.stdout)["cpu"] == min(before)
    assert os.sched_getaffinity(0) == before


def test_profile_goes_to_stderr() -> None:
    result = CliRunner().invoke(bench, [*TINY, "--json", "--profile", "5"])
    assert result.exit_code == 0, result.output
    assert "function calls" in result.stderr and "apply_block" not in result.stdout
    assert last_json_line(result.stdout)["bench"] == "ledger-core"


def test_rejects_bad_sizes() -> None:
    result = CliRunner().invoke(bench, ["ledger-core", "--txs", "0"])
    assert result.exit_code == 2
