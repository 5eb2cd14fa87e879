"""Re-validate a stored chain from genesis: ``fedledger chain verify --db PATH``.

Every block is re-decoded, its hash recomputed, its link, proposer signature,
transaction root, receipts root and state root re-checked by replaying it on a
fresh state; stored receipts must equal the replayed ones and the stored state
table must equal the replayed state. The first bad height is named.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from fedledger.errors import FedledgerError, NotFound, StoreCorrupted
from fedledger.ledger.chain import ChainState, apply_block
from fedledger.storage.chainstore import ChainStore


@dataclass
class ChainReport:
    ok: bool
    chain_id: str = ""
    height: int = -1
    blocks_checked: int = 0
    txs_checked: int = 0
    bad_height: int | None = None
    reason: str = ""
    details: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        return self.__dict__.copy()


def verify_chain(path: Path | str) -> ChainReport:
    """Replay the chain stored at ``path``; never raises for corruption, it reports it."""
    path = Path(path)
    if not path.exists():
        raise NotFound(f"no chain database at {path}")
    store = ChainStore(path, read_only=True)
    try:
        return _verify(store)
    finally:
        store.close()


def _verify(store: ChainStore) -> ChainReport:
    report = ChainReport(ok=False)
    try:
        problems = store.integrity_check()
        genesis = store.genesis()
        head = store.head_height()
    except FedledgerError as exc:
        report.reason = str(exc)
        return report
    report.chain_id = genesis.chain_id
    report.height = head
    if problems:
        report.details = problems[:10]
    chain = ChainState.from_genesis(genesis)
    height = 0
    try:
        if store.header(0) != genesis.block().header:
            raise StoreCorrupted("stored genesis block does not match the genesis document")
        report.blocks_checked = 1
        for height in range(1, head + 1):
            block = store.block(height)
            receipts = apply_block(chain, block)
            if receipts != store.receipts(height):
                raise StoreCorrupted(f"stored receipts of block {height} differ from replay")
            report.blocks_checked += 1
            report.txs_checked += len(block.txs)
        height = head
        if store.stored_state() != dict(chain.state.items()):
            raise StoreCorrupted("stored state differs from the state replayed from the blocks")
    except FedledgerError as exc:
        report.bad_height = height
        report.reason = str(exc)
        return report
    if problems:
        report.reason = "SQLite integrity check failed: " + "; ".join(problems[:3])
        return report
    report.ok = True
    return report
