"""Blocks (seed 004 §IV-A): ``B = (pre_hash, h, mt_root, tx_list, T_stamp, a_j, σ_j)``.

Extended with the chain id, a state root and a receipts root (so that results,
not only inputs, are provable), and an engine-specific ``consensus`` field that
the microchain and BFT engines fill (credit proofs, votes, certificates), and
the chain's RSA accumulator after the block (seed 000 §IV-A).
The block hash covers every header field except the signature. ``tx_count``
is in the header so a light client can insist that an inclusion proof was made
for the block's real number of transactions (RFC 9162 proofs carry the tree
size, and for some sizes a path also verifies under a different size).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

from fedledger.codec import Record
from fedledger.crypto.hashing import tagged_hash
from fedledger.ledger.tx import Transaction

MAX_BLOCK_TXS = 5000
MAX_BLOCK_BYTES = 8 * 1024 * 1024
ZERO_HASH = bytes(32)


@dataclass(frozen=True)
class BlockHeader(Record):
    chain_id: str
    height: int
    prev_hash: bytes
    tx_count: int
    tx_root: bytes
    receipts_root: bytes
    state_root: bytes
    proposer: bytes
    timestamp: int
    consensus: Any
    accumulator: bytes  # the chain's RSA accumulator after this block (ledger/accumulator.py)
    signature: bytes

    def signing_bytes(self) -> bytes:
        return self.encode(exclude=frozenset({"signature"}))

    @cached_property
    def block_hash(self) -> bytes:
        return tagged_hash("fedledger/block", self.signing_bytes())

    def to_json(self) -> dict[str, Any]:
        out = super().to_json()
        out["block_hash"] = self.block_hash.hex()
        return out


@dataclass(frozen=True)
class Block(Record):
    header: BlockHeader
    txs: tuple[Transaction, ...]

    @property
    def height(self) -> int:
        return self.header.height

    @property
    def block_hash(self) -> bytes:
        return self.header.block_hash


@dataclass(frozen=True)
class Receipt(Record):
    """Outcome of one transaction; a failed call keeps its reason and changes nothing but the nonce."""

    tx_hash: bytes
    success: bool
    error: str
    result: Any
