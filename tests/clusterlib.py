"""Helpers shared by the multi-process cluster tests: HTTP reads, waits, submissions, chain verify."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from fedledger.crypto.keys import SigningKey
from fedledger.ledger.block import BlockHeader
from fedledger.ledger.tx import make_tx
from fedledger.node.deployment import Deployment
from fedledger.node.supervisor import Supervisor


@contextlib.contextmanager
def running(dep: Deployment, names: Iterable[str] | None = None) -> Iterator[Supervisor]:
    """Start the deployment's nodes (all, or ``names``), wait until each answers, stop them all afterwards."""
    sup = Supervisor(dep.workdir / "logs")
    names = list(dep.configs if names is None else names)
    try:
        for name in names:
            sup.start(name, dep.config_paths[name])
        for name in names:
            sup.wait_ready(name, dep.url(name))
        yield sup
    finally:
        sup.stop_all()


def get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


def post(url: str, body: dict[str, Any], timeout_s: float = 120) -> tuple[int, Any]:
    """POST JSON; ``(status, decoded body)`` for success and error answers alike."""
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def wait_job(dep: Deployment, timeout_s: float = 180) -> dict[str, Any]:
    """The cloud's FL job once it is no longer running."""
    deadline = time.monotonic() + timeout_s
    while (job := get(dep.url("cloud") + "/v1/fl/job"))["state"] == "running":
        assert time.monotonic() < deadline, "job did not finish"
        time.sleep(0.2)
    return job


def height(dep: Deployment, name: str) -> int:
    return int(get(dep.url(name) + "/v1/status")["height"])


def headers(dep: Deployment, name: str, upto: int) -> list[BlockHeader]:
    raw = get(dep.url(name) + f"/v1/headers?start=1&end={upto}")["headers"]
    return [BlockHeader.decode(bytes.fromhex(h)) for h in raw]


def wait(cond: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def submit(dep: Deployment, name: str, client: SigningKey, nonce: int, chain: str) -> str:
    """A successful ``identity.register_identity`` call from ``client`` (an edge identity of ``chain``)."""
    tx = make_tx(client, chain, nonce, "identity", "register_identity",
                 {"public_key": SigningKey.generate().public_key, "role": "device", "name": f"d{nonce}",
                  "home_chain": chain}, int(time.time() * 1000))
    req = urllib.request.Request(dep.url(name) + "/v1/txs", data=tx.encode(), method="POST",
                                 headers={"Content-Type": "application/cbor"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return str(json.loads(r.read())["tx_hash"])


def verify_store(store: Path) -> dict[str, Any]:
    """``fedledger chain verify --json`` on a stopped replica's store."""
    run = subprocess.run([sys.executable, "-m", "fedledger.cli.main", "chain", "verify", "--db", str(store),
                          "--json"], capture_output=True, text=True)
    report: dict[str, Any] = json.loads(run.stdout.strip().splitlines()[-1])
    return report
