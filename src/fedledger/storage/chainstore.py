"""SQLite chain store: blocks, transactions, receipts and state, durable at commit.

One SQLite file per chain replica, in WAL mode with ``synchronous=FULL``: a
block, its transactions, its receipts and the state changes it caused are
written in one SQLite transaction, so after a crash (even ``kill -9``) the
store reopens at the last committed block with the matching state. Records are
stored as their canonical encodings next to a SHA-256 digest of the bytes;
every read re-hashes them (and checks the record's own hash, where it has one),
so silent corruption of any byte, signatures included, surfaces as
:class:`StoreCorrupted` for the price of one SHA-256.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from fedledger.crypto.hashing import sha256
from fedledger.errors import DecodeError, NotFound, StoreCorrupted
from fedledger.ledger.block import Block, BlockHeader, Receipt
from fedledger.ledger.chain import ChainState
from fedledger.ledger.genesis import Genesis
from fedledger.ledger.state import State
from fedledger.ledger.tx import Transaction

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS blocks (
    height INTEGER PRIMARY KEY, hash BLOB NOT NULL UNIQUE, header BLOB NOT NULL, digest BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS txs (
    hash BLOB PRIMARY KEY, height INTEGER NOT NULL, idx INTEGER NOT NULL, body BLOB NOT NULL,
    digest BLOB NOT NULL);
CREATE UNIQUE INDEX IF NOT EXISTS txs_by_position ON txs (height, idx);
CREATE TABLE IF NOT EXISTS receipts (
    tx_hash BLOB PRIMARY KEY, height INTEGER NOT NULL, idx INTEGER NOT NULL, body BLOB NOT NULL,
    digest BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS state (key BLOB PRIMARY KEY, value BLOB NOT NULL);
"""


def _damaged(path: Path, exc: sqlite3.DatabaseError) -> StoreCorrupted:
    return StoreCorrupted(f"SQLite reports {path} is damaged: {exc}")


class ChainStore:
    """Persistent replica of one chain."""

    def __init__(self, path: Path | str, *, read_only: bool = False, durable: bool = True) -> None:
        self.path = Path(path)
        try:
            if read_only:
                uri = f"file:{self.path.resolve()}?mode=ro"
                self._db = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
                return
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL" if durable else "PRAGMA synchronous=OFF")
            self._db.executescript(SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise _damaged(self.path, exc) from None

    def close(self) -> None:
        self._db.close()

    # -- lifecycle ---------------------------------------------------------
    def initialize(self, genesis: Genesis) -> ChainState:
        """Open the chain: write genesis on first use, else check it matches and load the head."""
        stored = self._meta("genesis")
        if stored is None:
            chain = ChainState.from_genesis(genesis)
            block = genesis.block()
            with self._tx():
                self._db.execute("INSERT INTO meta VALUES ('genesis', ?)", (genesis.encode(),))
                self._insert_block(block, [])
                self._write_state(dict(chain.state.items()))
            return chain
        if stored != genesis.encode():
            raise StoreCorrupted(f"{self.path} holds a different chain (genesis mismatch)")
        return self.load()

    def load(self) -> ChainState:
        """Rebuild the chain state from disk: genesis, head header and state table."""
        raw = self._meta("genesis")
        if raw is None:
            raise NotFound(f"{self.path} holds no chain")
        genesis = self._decode(Genesis, raw, "genesis")
        head = self.header(self.head_height())
        state = State(dict(self._rows("SELECT key, value FROM state")))
        return ChainState(genesis=genesis, head=head, state=state)

    # -- writes ------------------------------------------------------------
    def commit_block(self, block: Block, receipts: list[Receipt], changes: Mapping[bytes, bytes | None]) -> None:
        """Persist a block with its receipts and state changes atomically."""
        with self._tx():
            self._insert_block(block, receipts)
            self._write_state(changes)

    def _insert_block(self, block: Block, receipts: list[Receipt]) -> None:
        h = block.header.height
        header = block.header.encode()
        self._db.execute(
            "INSERT INTO blocks VALUES (?, ?, ?, ?)", (h, block.block_hash, header, sha256(header))
        )
        self._db.executemany(
            "INSERT INTO txs VALUES (?, ?, ?, ?, ?)",
            [(tx.tx_hash, h, i, tx.encode(), sha256(tx.encode())) for i, tx in enumerate(block.txs)],
        )
        self._db.executemany(
            "INSERT INTO receipts VALUES (?, ?, ?, ?, ?)",
            [(r.tx_hash, h, i, r.encode(), sha256(r.encode())) for i, r in enumerate(receipts)],
        )

    def put_meta(self, key: str, value: bytes) -> None:
        """Durably record a node-local value (e.g. a validator's own votes) before acting on it."""
        if key == "genesis":
            raise ValueError("the genesis record is written once, by initialize")
        with self._tx():
            self._db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def meta_with_prefix(self, prefix: str) -> dict[str, bytes]:
        rows = self._rows("SELECT key, value FROM meta WHERE key >= ? AND key < ?", (prefix, prefix + "\uffff"))
        return {k: bytes(v) for k, v in rows}

    def _write_state(self, changes: Mapping[bytes, bytes | None]) -> None:
        upserts = [(k, v) for k, v in changes.items() if v is not None]
        deletes = [(k,) for k, v in changes.items() if v is None]
        self._db.executemany("INSERT OR REPLACE INTO state VALUES (?, ?)", upserts)
        self._db.executemany("DELETE FROM state WHERE key = ?", deletes)

    # -- reads -------------------------------------------------------------
    def head_height(self) -> int:
        row = self._one("SELECT MAX(height) FROM blocks")
        if row is None or row[0] is None:
            raise NotFound(f"{self.path} holds no blocks")
        return int(row[0])

    def genesis(self) -> Genesis:
        raw = self._meta("genesis")
        if raw is None:
            raise NotFound(f"{self.path} holds no chain")
        return self._decode(Genesis, raw, "genesis")

    def header(self, height: int) -> BlockHeader:
        row = self._one("SELECT hash, header, digest FROM blocks WHERE height = ?", (height,))
        if row is None:
            raise NotFound(f"no block at height {height}")
        header = self._decode(BlockHeader, row[1], f"block {height} header", row[2])
        if header.block_hash != row[0] or header.height != height:
            raise StoreCorrupted(f"block {height} header does not match its stored hash")
        return header

    def height_of_block(self, block_hash: bytes) -> int:
        row = self._one("SELECT height FROM blocks WHERE hash = ?", (block_hash,))
        if row is None:
            raise NotFound(f"no block with hash {block_hash.hex()}")
        return int(row[0])

    def block_txs(self, height: int) -> tuple[Transaction, ...]:
        rows = self._rows("SELECT hash, body, digest FROM txs WHERE height = ? ORDER BY idx", (height,))
        return tuple(self._checked_tx(h, body, digest, height) for h, body, digest in rows)

    def block(self, height: int) -> Block:
        return Block(header=self.header(height), txs=self.block_txs(height))

    def receipts(self, height: int) -> list[Receipt]:
        rows = self._rows("SELECT body, digest FROM receipts WHERE height = ? ORDER BY idx", (height,))
        return [self._decode(Receipt, body, f"receipt at height {height}", digest) for body, digest in rows]

    def tx_location(self, tx_hash: bytes) -> tuple[int, int]:
        row = self._one("SELECT height, idx FROM txs WHERE hash = ?", (tx_hash,))
        if row is None:
            raise NotFound(f"no transaction {tx_hash.hex()}")
        return int(row[0]), int(row[1])

    def tx(self, tx_hash: bytes) -> Transaction:
        row = self._one("SELECT body, digest, height FROM txs WHERE hash = ?", (tx_hash,))
        if row is None:
            raise NotFound(f"no transaction {tx_hash.hex()}")
        return self._checked_tx(tx_hash, row[0], row[1], row[2])

    def receipt(self, tx_hash: bytes) -> Receipt:
        row = self._one("SELECT body, digest, height FROM receipts WHERE tx_hash = ?", (tx_hash,))
        if row is None:
            raise NotFound(f"no receipt for {tx_hash.hex()}")
        receipt = self._decode(Receipt, row[0], f"receipt at height {row[2]}", row[1])
        if receipt.tx_hash != tx_hash:
            raise StoreCorrupted(f"receipt at height {row[2]} does not belong to {tx_hash.hex()}")
        return receipt

    def stored_state(self) -> dict[bytes, bytes]:
        return dict(self._rows("SELECT key, value FROM state"))

    def heights(self) -> Iterator[int]:
        for (h,) in self._rows("SELECT height FROM blocks ORDER BY height"):
            yield int(h)

    def integrity_check(self) -> list[str]:
        """SQLite's own page-level check; an empty list means the file is sound."""
        rows = [r[0] for r in self._rows("PRAGMA integrity_check")]
        return [] if rows == ["ok"] else rows

    # -- helpers -----------------------------------------------------------
    def _checked_tx(self, tx_hash: bytes, body: bytes, digest: bytes, height: int) -> Transaction:
        tx = self._decode(Transaction, body, f"transaction at height {height}", digest)
        if tx.tx_hash != tx_hash:
            raise StoreCorrupted(f"transaction at height {height} does not match its stored hash")
        return tx

    def _decode(self, cls, raw: bytes, what: str, digest: bytes | None = None):
        """Decode a stored record, first checking its bytes against their stored digest."""
        if digest is not None and sha256(raw) != digest:
            raise StoreCorrupted(f"{what} in {self.path} is corrupted: its bytes no longer match their stored digest")
        try:
            return cls.decode(raw)
        except DecodeError as exc:
            raise StoreCorrupted(f"{what} in {self.path} is corrupted: {exc}") from None

    def _meta(self, key: str) -> bytes | None:
        row = self._one("SELECT value FROM meta WHERE key = ?", (key,))
        return None if row is None else bytes(row[0])

    def _one(self, sql: str, params: tuple[object, ...] = ()) -> tuple[Any, ...] | None:
        try:
            row: tuple[Any, ...] | None = self._db.execute(sql, params).fetchone()
            return row
        except sqlite3.DatabaseError as exc:
            raise _damaged(self.path, exc) from None

    def _rows(self, sql: str, params: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
        try:
            return self._db.execute(sql, params).fetchall()
        except sqlite3.DatabaseError as exc:
            raise _damaged(self.path, exc) from None

    def _tx(self) -> _Transaction:
        return _Transaction(self._db, self.path)


class _Transaction:
    """``BEGIN IMMEDIATE`` … ``COMMIT`` (or ``ROLLBACK`` on error)."""

    def __init__(self, db: sqlite3.Connection, path: Path) -> None:
        self._db = db
        self._path = path

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            try:
                self._db.execute("COMMIT")
            except sqlite3.DatabaseError as err:
                raise _damaged(self._path, err) from None
        else:
            self._db.execute("ROLLBACK")
