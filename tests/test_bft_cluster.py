"""A real 4-process BFT main chain on loopback (Tendermint, Algorithm 1): decide, crash, catch up.

Four ``fedledger node run`` processes with role ``validator``, a bft genesis and
their own SQLite stores talk over signed TCP frames. Submitted transactions
must be decided with successful receipts; a validator killed with ``kill -9``
must not stop the other three (3 of 4 is more than 2/3), must come back from
its store, catch up on the blocks and commit certificates it missed, and no
block any replica decided may change. The restarted store must replay from
genesis, certificates included (``fedledger chain verify``).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from clusterlib import get, headers, height, submit, verify_store, wait
from fedledger.crypto.keys import SigningKey
from fedledger.node.deployment import Deployment, make_validator_cluster
from fedledger.node.supervisor import Supervisor

pytestmark = pytest.mark.slow

CHAIN = "main"
# Short timeouts so a round whose proposer is down costs little; idle rounds wait 2 s for transactions.
BFT = {"timeout_propose_ms": 600, "timeout_prevote_ms": 300, "timeout_precommit_ms": 300,
       "timeout_delta_ms": 300, "rebroadcast_ms": 500, "empty_block_ms": 2000}


def _submit(dep: Deployment, name: str, client: SigningKey, nonce: int) -> str:
    return submit(dep, name, client, nonce, CHAIN)


def _decided(dep: Deployment, name: str, tx_hash: str) -> None:
    out = get(dep.url(name) + f"/v1/txs/{tx_hash}?wait=30")
    assert out["receipt"]["success"], out


def test_four_validators_decide_and_a_killed_one_catches_up(tmp_path: Path) -> None:
    client = SigningKey.generate()
    dep = make_validator_cluster(tmp_path / "run", 4, clients=[client], chain_id=CHAIN, engine="bft", bft=BFT)
    sup = Supervisor(tmp_path / "logs")
    names = list(dep.configs)
    try:
        for name in names:
            sup.start(name, dep.config_paths[name])
        for name in names:
            sup.wait_ready(name, dep.url(name))
        for i in range(6):  # one at a time: a block each
            _decided(dep, "v4", _submit(dep, "v1", client, i))
        hashes = [_submit(dep, "v1", client, i) for i in range(6, 12)]  # a burst shares blocks
        for h in hashes:  # decided, with a successful call, as seen by another replica
            _decided(dep, "v4", h)
        top = height(dep, "v1")
        assert top >= 7
        wait(lambda: min(height(dep, n) for n in names) >= top, 30, "every replica to decide the same height")
        blocks = headers(dep, "v2", top)
        assert {h.proposer for h in blocks} <= _validators(dep)
        assert all(h.consensus["engine"] == "bft" for h in blocks)
        assert all(h.consensus["last_commit"]["height"] == h.height - 1 for h in blocks[1:])

        victim = "v3"
        burst = [_submit(dep, "v1", client, i) for i in range(12, 16)]
        sup.kill(victim)  # SIGKILL, mid-stream: the burst is being decided
        store = Path(dep.configs[victim].data_dir) / "chain.db"
        before = verify_store(store)
        assert before["ok"], before
        lost_at = int(before["height"])
        wait(lambda: height(dep, "v1") >= lost_at, 30, "v1 to reach the victim's height")
        decided_before = [h.block_hash for h in headers(dep, "v1", lost_at)]

        for h in burst:
            _decided(dep, "v1", h)
        for i in range(16, 22):  # the other three keep deciding: 3 of 4 is more than 2/3
            _decided(dep, "v2", _submit(dep, "v2", client, i))
        assert height(dep, "v1") >= lost_at + 3

        sup.start(victim, dep.config_paths[victim])
        sup.wait_ready(victim, dep.url(victim))
        target = height(dep, "v1")
        wait(lambda: height(dep, victim) >= target, 60, "the restarted replica to catch up")
        _decided(dep, victim, _submit(dep, victim, client, 22))  # and it takes part again
        top = min(height(dep, n) for n in names)
        reference = [h.block_hash for h in headers(dep, "v1", top)]
        for name in names:
            assert [h.block_hash for h in headers(dep, name, top)] == reference, f"{name} decided another chain"
        assert reference[:lost_at] == decided_before, "a block decided before the crash changed"
        after = verify_store(store)  # every block, with its certificate, replays from genesis
        assert after["ok"] and after["height"] >= target, after
        caught_up = get(dep.url(victim) + "/v1/metrics")["engine"]
        assert caught_up["decided_by_certificate"] >= target - lost_at - 1, caught_up  # synced, not re-voted
        assert caught_up["refused_to_sign"] == 0, caught_up
    finally:
        sup.stop_all()


def _validators(dep: Deployment) -> set[bytes]:
    return {bytes.fromhex(pk) for pk in dep.configs["v1"].chain_peers}
