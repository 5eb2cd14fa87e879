"""``fedledger bench table1`` (seed 000 §VI Table I): the JSON contract, on real validator processes."""

from __future__ import annotations

import json

import pytest

from fedledger.cli.bench_table1 import PAPER, SIZES
from fedledger.cli.main import main

pytestmark = pytest.mark.slow


def test_table1_reports_every_size_next_to_the_paper(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "table1", "--quick", "--clients", "2", "--json"]) == 0
    r = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert r["bench"] == "table1" and r["validators"] == 4 and r["clients"] == 2
    assert [row["tx_size"] for row in r["rows"]] == list(SIZES)
    for row in r["rows"]:
        assert row["txs"] == 20
        assert 0 < row["avg_latency_s"] <= row["max_latency_s"]
        assert row["paper"]["throughput_tps"] == PAPER[row["tx_size"]][2]
        assert row["throughput_vs_paper"] == pytest.approx(row["throughput_tps"] / PAPER[row["tx_size"]][2], rel=0.01)
