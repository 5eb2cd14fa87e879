"""The `fedledger demo` command as a user runs it: Ctrl-C leaves no node process behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def _children_alive(workdir: Path) -> list[str]:
    out = subprocess.run(["pgrep", "-af", f"config {workdir}/"], capture_output=True, text=True)
    return [line for line in out.stdout.splitlines() if "node run" in line]


def test_ctrl_c_stops_every_child_cleanly(tmp_path: Path) -> None:
    workdir = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "fedledger.cli.main", "demo", "--workdir", str(workdir), "--edges", "1",
         "--devices", "2", "--rounds", "50", "--report", str(tmp_path / "report.json")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, "COLUMNS": "120"},
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 120
    for line in proc.stdout:
        if "node processes up" in line or time.monotonic() > deadline:
            break
    time.sleep(1.5)  # mid-job
    assert len(_children_alive(workdir)) == 10  # cloud + 3 main validators, edge + 3 sub-chain validators, pool, auditor
    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=30)
    assert proc.returncode == 130, rest
    assert "interrupted" in rest and "Traceback" not in rest
    assert _children_alive(workdir) == []
    for log in (workdir / "logs").glob("*.log"):
        assert "node stopped" in log.read_text(), f"{log.name} did not shut down gracefully"


def test_demo_refuses_a_workdir_it_did_not_create(tmp_path: Path) -> None:
    (tmp_path / "precious.txt").write_text("keep me")
    out = subprocess.run(
        [sys.executable, "-m", "fedledger.cli.main", "demo", "--workdir", str(tmp_path)],
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 2
    assert "not a demo directory" in out.stderr
    assert (tmp_path / "precious.txt").read_text() == "keep me"


@pytest.mark.parametrize(("args", "message"), [
    (["--model", "digits-mlp", "--dataset", "digits28"], "does not take 'digits28' samples"),
    (["--model", "mudfl-cnn", "--dataset", "mnist"], "--data-dir"),
    (["--aggregation", "secagg", "--device-rounds", "2"], "one device round per cloud round"),
    (["--aggregation", "secagg", "--mode", "decentralised"], "needs the hierarchical mode"),
])
def test_demo_refuses_bad_data_settings_before_starting_anything(tmp_path: Path, args: list[str],
                                                                 message: str) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "fedledger.cli.main", "demo", "--workdir", str(tmp_path / "run"), *args],
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 2, out.stderr
    assert message in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "run").exists()
