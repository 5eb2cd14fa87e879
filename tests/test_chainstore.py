"""Tests for fedledger.storage.chainstore and storage.verify, and the ``fedledger chain verify`` command.

The store must survive a crash at any instant (the node runtime persists, then
sends, then applies: STYLE principle 1) and must surface silent corruption of
a stored record ("that no stored record was changed later", BRIEF; seed 002
§4.2.3 continued integrity).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from conftest import CHAIN_ID, Keys
from fedledger.cli import main as cli_main
from fedledger.cli.chain import chain as chain_cli
from fedledger.crypto.hashing import tagged_hash
from fedledger.crypto.keys import SigningKey
from fedledger.errors import NotFound, StoreCorrupted
from fedledger.ledger import ChainState, Genesis, Transaction, apply_block, make_tx, propose_block
from fedledger.storage.chainstore import ChainStore
from fedledger.storage.verify import verify_chain

SRC = Path(__file__).resolve().parents[1] / "src"


def model_hash(device: int, round_: int) -> bytes:
    return tagged_hash("test/model", bytes([device]) + round_.to_bytes(8, "big"))


def update(key: SigningKey, device: int, nonce: int) -> Transaction:
    args = {
        "round": nonce,
        "base": bytes(32),
        "model": model_hash(device, nonce),
        "samples": 3,
        "data": tagged_hash("test/data", bytes([device])),
    }
    return make_tx(key, CHAIN_ID, nonce, "fl", "submit_update", args, 1_700_000_000 + nonce)


def grow(store: ChainStore, chain: ChainState, keys: Keys, blocks: int) -> list[Transaction]:
    """Append ``blocks`` blocks, each with one update per device, committing each to ``store``."""
    sent: list[Transaction] = []
    for _ in range(blocks):
        nonce = chain.height
        txs = [update(d, i, nonce) for i, d in enumerate(keys.devices)]
        block, rejected = propose_block(chain, txs, keys.validator, chain.head.timestamp + 1)
        assert not rejected
        receipts = apply_block(chain, block)
        store.commit_block(block, receipts, chain.state.take_changes())
        sent += txs
    return sent


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "sub-1.db"


@pytest.fixture
def stored_chain(db: Path, genesis: Genesis, keys: Keys) -> tuple[ChainState, list[Transaction]]:
    """A store holding genesis and blocks 1-3 (three txs each), closed again."""
    store = ChainStore(db)
    chain = store.initialize(genesis)
    txs = grow(store, chain, keys, 3)
    store.close()
    return chain, txs


# -- commit and reload ---------------------------------------------------------------
def test_commit_and_reload(
    db: Path, genesis: Genesis, stored_chain: tuple[ChainState, list[Transaction]]
) -> None:
    chain, txs = stored_chain
    store = ChainStore(db)
    loaded = store.load()
    assert loaded.head == chain.head and loaded.height == 3
    assert loaded.state.root() == chain.state.root() == chain.head.state_root
    assert dict(loaded.state.items()) == dict(chain.state.items())
    assert store.tx(txs[4].tx_hash) == txs[4]
    assert store.tx_location(txs[4].tx_hash) == (2, 1)
    assert store.receipt(txs[4].tx_hash).success
    assert store.block(2).txs == tuple(txs[3:6])
    assert list(store.heights()) == [0, 1, 2, 3]
    assert store.integrity_check() == []
    again = store.initialize(genesis)  # reopening with the same genesis loads the head
    assert again.head == chain.head
    store.close()


def test_reloaded_chain_keeps_growing(
    db: Path, genesis: Genesis, keys: Keys, stored_chain: tuple[ChainState, list[Transaction]]
) -> None:
    store = ChainStore(db)
    chain = store.initialize(genesis)
    grow(store, chain, keys, 2)
    store.close()
    report = verify_chain(db)
    assert report.ok, report.reason
    assert (report.height, report.blocks_checked, report.txs_checked) == (5, 6, 15)


def test_missing_records_are_not_found(
    db: Path, stored_chain: tuple[ChainState, list[Transaction]]
) -> None:
    store = ChainStore(db)
    with pytest.raises(NotFound):
        store.tx(bytes(32))
    with pytest.raises(NotFound):
        store.header(99)
    store.close()


def test_genesis_mismatch_is_refused(
    db: Path, genesis: Genesis, keys: Keys, stored_chain: tuple[ChainState, list[Transaction]]
) -> None:
    other = Genesis(
        genesis.chain_id, genesis.timestamp + 1, genesis.validators, genesis.identities, {}
    )
    store = ChainStore(db)
    with pytest.raises(StoreCorrupted, match="genesis mismatch"):
        store.initialize(other)
    assert store.head_height() == 3  # refused without touching anything
    store.close()


# -- crash safety ------------------------------------------------------------------------
WRITER = r"""
import sys
from fedledger.crypto.keys import SigningKey
from fedledger.ledger import Genesis, Identity, apply_block, make_tx, propose_block
from fedledger.storage.chainstore import ChainStore

v, d = SigningKey.from_seed(bytes(32)), SigningKey.from_seed(b"\x01" * 32)
genesis = Genesis("crash", 0, (v.public_key,), (Identity(v.public_key, "edge", "e", "crash"),
                                                Identity(d.public_key, "device", "d", "crash")), {})
store = ChainStore(sys.argv[1])
chain = store.initialize(genesis)
nonce = 0
while True:
    txs = []
    for _ in range(4):
        args = {"round": nonce, "base": bytes(32), "model": nonce.to_bytes(32, "big"), "samples": 1,
                "data": bytes(32)}
        txs.append(make_tx(d, "crash", nonce, "fl", "submit_update", args, nonce))
        nonce += 1
    block, _ = propose_block(chain, txs, v, chain.height)
    receipts = apply_block(chain, block)
    store.commit_block(block, receipts, chain.state.take_changes())
    print(block.height, flush=True)
"""


@pytest.mark.parametrize("after", [1, 25])
def test_kill_9_while_committing_leaves_a_valid_head(tmp_path: Path, after: int) -> None:
    """Kill -9 a writer mid-loop; the reopened store is at (or past) the last reported commit, intact."""
    db = tmp_path / "crash.db"
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(db)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(SRC)},
    )
    last = -1
    try:
        assert proc.stdout is not None
        while last < after:
            line = proc.stdout.readline()
            assert line, f"writer died: {proc.stderr.read() if proc.stderr else ''}"
            last = int(line)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    store = ChainStore(db)
    head = store.head_height()
    assert head >= last
    loaded = store.load()
    assert loaded.state.root() == loaded.head.state_root
    assert [store.block(h).height for h in range(head + 1)] == list(range(head + 1))
    assert store.integrity_check() == []
    store.close()
    report = verify_chain(db)
    assert report.ok, report.reason
    assert report.blocks_checked == head + 1 and report.txs_checked == 4 * head


# -- corruption on disk ------------------------------------------------------------------
def flip_byte_in_file(db: Path, record: bytes, inner: bytes, copies: int = 1) -> None:
    """Flip one bit of ``inner`` inside the first stored copy of ``record`` in the SQLite file.

    ``copies`` is how many times the record must occur in the file (a guard
    against flipping some unrelated copy, e.g. in a free page).
    """
    wal = Path(f"{db}-wal")
    assert not wal.exists() or wal.stat().st_size == 0, "the WAL must be checkpointed into the main file"
    data = bytearray(db.read_bytes())
    at = data.find(record)
    assert at >= 0 and data.count(record) == copies
    offset = at + record.find(inner) + len(inner) // 2
    assert record.find(inner) >= 0
    data[offset] ^= 0x01
    db.write_bytes(bytes(data))


def test_flipped_byte_in_a_stored_tx_is_detected(
    db: Path, stored_chain: tuple[ChainState, list[Transaction]]
) -> None:
    _, txs = stored_chain
    target = txs[4]  # block 2, index 1
    flip_byte_in_file(db, target.encode(), model_hash(1, 1))
    report = verify_chain(db)
    assert not report.ok
    assert report.bad_height == 2
    assert "transaction at height 2" in report.reason
    assert report.blocks_checked == 2  # genesis and block 1 were fine
    store = ChainStore(db)
    with pytest.raises(StoreCorrupted, match="height 2"):
        store.tx(target.tx_hash)
    with pytest.raises(StoreCorrupted):
        store.block(2)
    assert store.block(1).txs == tuple(txs[:3])  # the rest stays readable
    store.close()


def test_flipped_signature_byte_is_caught_by_verify(
    db: Path, stored_chain: tuple[ChainState, list[Transaction]]
) -> None:
    """The signature is outside tx_hash (seed 004 §IV-A), but inside the block's tx_root."""
    _, txs = stored_chain
    target = txs[7]  # block 3
    flip_byte_in_file(db, target.encode(), target.signature)
    report = verify_chain(db)
    assert not report.ok and report.bad_height == 3
    assert "transaction at height 3" in report.reason and "corrupted" in report.reason


def test_flipped_signature_byte_is_caught_on_read(
    db: Path, stored_chain: tuple[ChainState, list[Transaction]]
) -> None:
    _, txs = stored_chain
    target = txs[7]
    flip_byte_in_file(db, target.encode(), target.signature)
    store = ChainStore(db)
    try:
        with pytest.raises(StoreCorrupted):
            store.tx(target.tx_hash)
    finally:
        store.close()


def test_flipped_state_byte_is_detected(
    db: Path, keys: Keys, stored_chain: tuple[ChainState, list[Transaction]]
) -> None:
    """The stored state table must equal the state replayed from the blocks."""
    chain, _ = stored_chain
    key = f"c/fl/update/2/{keys.devices[0].address.hex()}".encode()
    value = chain.state.get(key)
    assert value is not None
    flip_byte_in_file(db, value, model_hash(0, 2), copies=2)  # update/… and update_tx/… rows
    report = verify_chain(db)
    assert not report.ok and report.bad_height == 3 and "stored state differs" in report.reason


# -- the CLI ---------------------------------------------------------------------------
def corrupt_block_2(db: Path, txs: list[Transaction]) -> None:
    flip_byte_in_file(db, txs[4].encode(), model_hash(1, 1))


def test_cli_verify_ok(db: Path, stored_chain: tuple[ChainState, list[Transaction]]) -> None:
    result = CliRunner().invoke(chain_cli, ["verify", "--db", str(db)])
    assert result.exit_code == 0, result.output
    assert "OK" in result.output and "sub-1" in result.output
    result = CliRunner().invoke(chain_cli, ["verify", "--db", str(db), "--json"])
    assert result.exit_code == 0
    report = json.loads(result.output.strip().splitlines()[-1])
    assert report["ok"] is True and report["height"] == 3 and report["txs_checked"] == 9


def test_cli_verify_corrupted(db: Path, stored_chain: tuple[ChainState, list[Transaction]]) -> None:
    corrupt_block_2(db, stored_chain[1])
    result = CliRunner().invoke(chain_cli, ["verify", "--db", str(db)])
    assert isinstance(result.exception, StoreCorrupted)
    assert result.exception.exit_code == 8
    assert "at height 2" in str(result.exception)
    assert "CORRUPTED" in result.output
    result = CliRunner().invoke(chain_cli, ["verify", "--db", str(db), "--json"])
    assert isinstance(result.exception, StoreCorrupted)
    report = json.loads(result.output.strip().splitlines()[-1])
    assert report["ok"] is False and report["bad_height"] == 2


def test_cli_verify_missing_database(tmp_path: Path) -> None:
    missing = tmp_path / "nope.db"
    result = CliRunner().invoke(chain_cli, ["verify", "--db", str(missing)])
    assert isinstance(result.exception, NotFound) and "no chain database" in str(result.exception)
    assert not missing.exists()  # verifying must not create a database


def test_cli_verify_not_a_database(tmp_path: Path) -> None:
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not an SQLite file" * 100)
    result = CliRunner().invoke(chain_cli, ["verify", "--db", str(junk)])
    assert isinstance(result.exception, StoreCorrupted)


def _main_with_only_chain(monkeypatch: pytest.MonkeyPatch) -> None:
    """main() without the other subcommands, so the exit-code mapping is tested in-process."""
    monkeypatch.setattr(cli_main, "_register_commands", lambda: cli_main.cli.add_command(chain_cli))


@pytest.mark.parametrize("corrupt, code", [(False, 0), (True, 8)], ids=["ok", "corrupted"])
def test_main_exit_codes(
    db: Path,
    stored_chain: tuple[ChainState, list[Transaction]],
    corrupt: bool,
    code: int,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """errors.EXIT_CODES: 8 = stored data is corrupted; the message names the height, no traceback."""
    _main_with_only_chain(monkeypatch)
    if corrupt:
        corrupt_block_2(db, stored_chain[1])
    assert cli_main.main(["chain", "verify", "--db", str(db)]) == code
    err = capsys.readouterr().err
    assert "Traceback" not in err
    if corrupt:
        assert err.startswith("error: ") and "at height 2" in err


def test_main_missing_database_exit_code(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _main_with_only_chain(monkeypatch)
    assert (
        cli_main.main(["chain", "verify", "--db", str(tmp_path / "nope.db")]) == NotFound.exit_code
    )
    assert "Traceback" not in capsys.readouterr().err


def run_fedledger(*args: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fedledger.cli.main", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(SRC)},
    )


def test_fedledger_chain_verify_subprocess(
    db: Path, stored_chain: tuple[ChainState, list[Transaction]]
) -> None:
    """The real entry point: exit 0, then 8 after corruption, with the height and no traceback."""
    ok = run_fedledger("chain", "verify", "--db", db)
    assert ok.returncode == 0, ok.stderr
    corrupt_block_2(db, stored_chain[1])
    bad = run_fedledger("chain", "verify", "--db", db)
    assert bad.returncode == 8, bad.stderr
    assert "at height 2" in bad.stderr and "Traceback" not in bad.stderr
