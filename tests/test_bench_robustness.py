"""``fedledger bench robustness``: the JSON contract, the table, and clean errors for bad options."""

from __future__ import annotations

import io
import json
import sys
from typing import Any

import pytest

from fedledger.cli import bench_robustness
from fedledger.cli.main import main

KEYS = ("bench", "clean_accuracy", "clean_by_defence", "results", "best_defence_at_30", "fedavg_at_30",
        "devices", "edges", "rounds", "epochs", "seed", "model", "dataset", "partition", "f", "fractions",
        "attacks", "defences", "attack_params", "quick", "seconds")
QUICK = ["bench", "robustness", "--quick", "--attacks", "sign-flip,gaussian", "--defences",
         "fedavg,multi-krum,median"]


@pytest.fixture(scope="module")
def quick_run() -> tuple[int, str]:
    """One quick run for the module (stdout captured by hand: capsys is per test)."""
    capture = pytest.MonkeyPatch()
    out = io.StringIO()
    capture.setattr(sys, "stdout", out)
    try:
        code = main(QUICK)
    finally:
        capture.undo()
    return code, out.getvalue()


def _result(stdout: str) -> dict[str, Any]:
    result = json.loads(stdout.strip().splitlines()[-1])
    assert isinstance(result, dict)
    return result


def test_quick_run_prints_the_table_then_the_json_contract_last(quick_run: tuple[int, str]) -> None:
    code, stdout = quick_run
    assert code == 0
    assert "bench robustness" in stdout and "multi-krum" in stdout and "30% attackers" in stdout
    r = _result(stdout)
    for key in KEYS:
        assert key in r, key
    assert (r["bench"], r["model"], r["dataset"], r["quick"]) == ("robustness", "digits-mlp", "digits", True)
    assert (r["devices"], r["edges"], r["rounds"], r["epochs"], r["f"], r["fractions"]) == (10, 1, 3, 1, 3, [0.3])
    assert r["attacks"] == ["sign-flip", "gaussian"] and r["defences"] == ["fedavg", "multi-krum", "median"]


def test_quick_run_values_are_sane(quick_run: tuple[int, str]) -> None:
    r = _result(quick_run[1])
    assert 0.3 < r["clean_accuracy"] <= 1.0  # chance is 0.1
    assert len(r["results"]) == 2 * 3
    for x in r["results"]:
        assert 0.0 <= x["accuracy"] <= 1.0
        assert x["delta"] == pytest.approx(x["accuracy"] - r["clean_accuracy"], abs=1e-4)
        assert (x["fraction"], x["attackers"]) == (0.3, 3)
    assert set(r["clean_by_defence"]) == {"fedavg", "multi-krum", "median"}
    for attack in ("sign-flip", "gaussian"):
        best, plain = r["best_defence_at_30"][attack], r["fedavg_at_30"][attack]
        assert best["defence"] in ("multi-krum", "median")
        assert best["accuracy"] > plain["accuracy"]  # both attacks wreck plain FedAvg
    assert r["attack_params"]["sign_flip_scale"] == 4.0


def test_table_and_markdown_render_every_cell(quick_run: tuple[int, str]) -> None:
    r = _result(quick_run[1])
    md = bench_robustness.markdown(r).splitlines()
    assert md[0] == "| attack | defence | 30% attackers |"
    assert len([line for line in md if line.startswith("| sign-flip") or line.startswith("| gaussian")]) == 2 * 3
    assert sum(line.count("**") // 2 for line in md) >= 2  # a best cell per attack
    assert "gaussian" in bench_robustness.table(r)


def test_json_flag_prints_only_the_json_line(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["bench", "robustness", "--quick", "--json", "--rounds", "1", "--attacks", "gaussian",
                 "--defences", "fedavg,median"])
    out = capsys.readouterr().out
    assert code == 0
    assert len(out.strip().splitlines()) == 1
    assert _result(out)["rounds"] == 1


@pytest.mark.parametrize("argv", [
    ["--attacks", "bogus"],
    ["--defences", "krum,nothing"],
    ["--devices", "7"],  # 30 % of 7 is not a whole number of devices
    ["--tolerate", "0.45", "--defences", "krum"],  # f = 4 of 10: Krum needs n > 2f + 2
    ["--devices", "10", "--edges", "3"],
    ["--model", "mudfl-cnn"],  # takes 28x28 samples, not digits
])
def test_bad_options_exit_cleanly(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "robustness", "--quick", "--json", *argv]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "Traceback" not in captured.err
    assert "error" in captured.err.lower()
