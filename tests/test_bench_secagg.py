"""``fedledger bench secagg``: the JSON contract and its same-run baselines."""

from __future__ import annotations

import json

import pytest

from fedledger.cli.main import main


def test_quick_bench_reports_every_contract_key(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["bench", "secagg", "--quick", "--devices", "5", "--json"])
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 0
    for key in ("bench", "round_s", "plain_s", "paillier_s", "speedup_vs_paillier", "vs_flower_secaggplus",
                "bytes_per_device"):
        assert key in out
    assert out["bench"] == "secagg" and out["threshold"] == 3 and out["paillier_scaled"] is True
    assert out["round_s"] > 0 and out["paillier_s"] > out["round_s"]
    assert out["speedup_vs_paillier"] == out["paillier_s"] / out["round_s"]
    assert out["max_abs_error"] <= 5 * 2.0**-17
    if out["flower_secaggplus_s"] is not None:
        assert out["vs_flower_secaggplus"] == out["flower_secaggplus_s"] / out["round_s"]


def test_bad_threshold_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["bench", "secagg", "--quick", "--devices", "4", "--threshold", "9"])
    err = capsys.readouterr().err
    assert code != 0 and "--threshold must be between 1 and --devices (4)" in err
    assert "Traceback" not in err
