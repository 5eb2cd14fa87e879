"""A real 4-process microchain on loopback (seed 004 §IV-B, §VI): finality, crash and catch-up.

Four ``fedledger node run`` processes, each with its own SQLite store, talk over
signed TCP frames. They must finalize checkpoints; a validator killed with
``kill -9`` must come back, catch up from its store and its peers, and no
block it had finalized may change.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from fedledger.crypto.keys import SigningKey
from fedledger.ledger.block import BlockHeader
from fedledger.ledger.tx import make_tx
from fedledger.node.deployment import Deployment, make_validator_cluster
from fedledger.node.supervisor import Supervisor

pytestmark = pytest.mark.slow


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


def _height(dep: Deployment, name: str) -> int:
    return int(_get(dep.url(name) + "/v1/status")["height"])


def _hashes(dep: Deployment, name: str, upto: int) -> list[str]:
    headers = _get(dep.url(name) + f"/v1/headers?start=1&end={upto}")["headers"]
    return [BlockHeader.decode(bytes.fromhex(h)).block_hash.hex() for h in headers]


def _wait(cond: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _submit(dep: Deployment, name: str, client: SigningKey, nonce: int) -> str:
    tx = make_tx(client, "sub-1", nonce, "identity", "register_identity",
                 {"public_key": SigningKey.generate().public_key, "role": "device", "name": f"d{nonce}",
                  "home_chain": "sub-1"}, int(time.time() * 1000))
    req = urllib.request.Request(dep.url(name) + "/v1/txs", data=tx.encode(), method="POST",
                                 headers={"Content-Type": "application/cbor"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return str(json.loads(r.read())["tx_hash"])


def test_four_validators_finalize_and_a_killed_one_catches_up(tmp_path: Path) -> None:
    client = SigningKey.generate()
    dep = make_validator_cluster(tmp_path / "run", 4, clients=[client])
    sup = Supervisor(tmp_path / "logs")
    names = list(dep.configs)
    try:
        for name in names:
            sup.start(name, dep.config_paths[name])
        for name in names:
            sup.wait_ready(name, dep.url(name))
        hashes = [_submit(dep, "v1", client, i) for i in range(20)]
        for h in hashes:  # each one is finalized and its call succeeded
            out = _get(dep.url("v1") + f"/v1/txs/{h}?wait=30")
            assert out["receipt"]["success"], out
        _wait(lambda: min(_height(dep, n) for n in names) >= 6, 60, "every replica to finalize 6 blocks")

        victim = "v3"
        sup.kill(victim)  # SIGKILL, mid-stream
        store = Path(dep.configs[victim].data_dir) / "chain.db"
        before = subprocess.run([sys.executable, "-m", "fedledger.cli.main", "chain", "verify", "--db", str(store),
                                 "--json"], capture_output=True, text=True, check=True)
        lost_at = json.loads(before.stdout.strip().splitlines()[-1])["height"]
        finalized_before = _hashes(dep, "v1", lost_at)

        for i in range(20, 30):  # the other three keep finalizing: 3 of 4 is more than 2/3
            _submit(dep, "v2", client, i)
        _wait(lambda: _height(dep, "v1") >= lost_at + 8, 60, "the survivors to keep finalizing")

        sup.start(victim, dep.config_paths[victim])
        sup.wait_ready(victim, dep.url(victim))
        target = _height(dep, "v1")
        _wait(lambda: _height(dep, victim) >= target, 60, "the restarted replica to catch up")
        top = min(_height(dep, n) for n in names)
        reference = _hashes(dep, "v1", top)
        for name in names:
            assert _hashes(dep, name, top) == reference, f"{name} finalized a different chain"
        assert reference[:lost_at] == finalized_before, "a block finalized before the crash changed"
    finally:
        sup.stop_all()
