"""A real 4-process microchain on loopback (seed 004 §IV-B, §VI): finality, crash and catch-up.

Four ``fedledger node run`` processes, each with its own SQLite store, talk over
signed TCP frames. They must finalize checkpoints; a validator killed with
``kill -9`` must come back, catch up from its store and its peers, and no
block it had finalized may change.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from clusterlib import get, headers, height, submit, verify_store, wait
from fedledger.crypto.keys import SigningKey
from fedledger.node.deployment import Deployment, make_validator_cluster
from fedledger.node.supervisor import Supervisor

pytestmark = pytest.mark.slow


def _submit(dep: Deployment, name: str, client: SigningKey, nonce: int) -> str:
    return submit(dep, name, client, nonce, "sub-1")


def _hashes(dep: Deployment, name: str, upto: int) -> list[str]:
    return [h.block_hash.hex() for h in headers(dep, name, upto)]


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
            out = get(dep.url("v1") + f"/v1/txs/{h}?wait=30")
            assert out["receipt"]["success"], out
        wait(lambda: min(height(dep, n) for n in names) >= 6, 60, "every replica to finalize 6 blocks")

        victim = "v3"
        sup.kill(victim)  # SIGKILL, mid-stream
        store = Path(dep.configs[victim].data_dir) / "chain.db"
        lost_at = verify_store(store)["height"]
        finalized_before = _hashes(dep, "v1", lost_at)

        for i in range(20, 30):  # the other three keep finalizing: 3 of 4 is more than 2/3
            _submit(dep, "v2", client, i)
        wait(lambda: height(dep, "v1") >= lost_at + 8, 60, "the survivors to keep finalizing")

        sup.start(victim, dep.config_paths[victim])
        sup.wait_ready(victim, dep.url(victim))
        target = height(dep, "v1")
        wait(lambda: height(dep, victim) >= target, 60, "the restarted replica to catch up")
        top = min(height(dep, n) for n in names)
        reference = _hashes(dep, "v1", top)
        for name in names:
            assert _hashes(dep, name, top) == reference, f"{name} finalized a different chain"
        assert reference[:lost_at] == finalized_before, "a block finalized before the crash changed"
    finally:
        sup.stop_all()
