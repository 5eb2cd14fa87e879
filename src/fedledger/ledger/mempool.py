"""A bounded pool of admitted, not yet included transactions."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable

from fedledger.errors import InvalidTransaction
from fedledger.ledger.chain import account_nonce, check_admission
from fedledger.ledger.state import State
from fedledger.ledger.tx import Transaction


class Mempool:
    """Transactions in arrival order, bounded in count and bytes, deduplicated by hash.

    Admission runs the same checks a block would (signature, chain, known
    method) and requires the sender's next nonce, counting what the pool
    already holds for that sender; so replays and gaps are rejected up front.
    """

    def __init__(self, chain_id: str, max_txs: int = 20_000, max_bytes: int = 64 * 1024 * 1024) -> None:
        self.chain_id = chain_id
        self.max_txs = max_txs
        self.max_bytes = max_bytes
        self._txs: OrderedDict[bytes, Transaction] = OrderedDict()
        self._sizes: dict[bytes, int] = {}
        self._pending: dict[bytes, int] = {}  # address -> count of pool txs
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._txs)

    def __contains__(self, tx_hash: bytes) -> bool:
        return tx_hash in self._txs

    def add(self, tx: Transaction, state: State) -> None:
        """Admit ``tx`` or raise :class:`InvalidTransaction` with the reason."""
        if tx.tx_hash in self._txs:
            raise InvalidTransaction("transaction is already in the pool")
        size = len(tx.encode())
        if len(self._txs) >= self.max_txs or self._bytes + size > self.max_bytes:
            raise InvalidTransaction("mempool is full; retry later")
        queued = self._pending.get(tx.address, 0)
        check_admission(tx, self.chain_id, account_nonce(state, tx.address) + queued)
        self._txs[tx.tx_hash] = tx
        self._sizes[tx.tx_hash] = size
        self._pending[tx.address] = queued + 1
        self._bytes += size

    def pending_count(self, address: bytes) -> int:
        """How many of the account's transactions wait in the pool."""
        return self._pending.get(address, 0)

    def select(self, limit: int, exclude: frozenset[bytes] | set[bytes] = frozenset()) -> list[Transaction]:
        """Up to ``limit`` transactions in arrival order (per-sender nonce order is preserved),
        skipping those in ``exclude`` (e.g. already in an unfinalized block of the branch)."""
        out: list[Transaction] = []
        for tx_hash, tx in self._txs.items():
            if len(out) >= limit:
                break
            if tx_hash not in exclude:
                out.append(tx)
        return out

    def remove(self, txs: Iterable[Transaction]) -> None:
        for tx in txs:
            if tx.tx_hash in self._txs:
                del self._txs[tx.tx_hash]
                self._bytes -= self._sizes.pop(tx.tx_hash)
                left = self._pending[tx.address] - 1
                if left:
                    self._pending[tx.address] = left
                else:
                    del self._pending[tx.address]

    def prune(self, state: State) -> None:
        """Drop transactions whose nonce the chain has already consumed."""
        stale = [tx for tx in self._txs.values() if tx.nonce < account_nonce(state, tx.address)]
        self.remove(stale)
