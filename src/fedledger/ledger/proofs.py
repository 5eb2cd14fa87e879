"""Light-client checks: a transaction's inclusion in a block, and a header chain.

These let an auditor who trusts only a genesis document (and so the
validators' keys) check any transaction a node shows it, without replaying the
chain: header signatures and links, then a Merkle audit path (seed 002 §4.2.3
"blockchain receipts", RFC 9162 inclusion proofs).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from fedledger.crypto.keys import Domain, is_valid
from fedledger.crypto.merkle import InclusionProof, MerkleTree, verify_inclusion
from fedledger.errors import DecodeError, VerificationFailed
from fedledger.ledger.block import Block, BlockHeader, Receipt
from fedledger.ledger.genesis import Genesis
from fedledger.ledger.tx import Transaction


@dataclass(frozen=True)
class TxProof:
    """A transaction, its receipt, the header of its block, and two audit paths."""

    tx: bytes
    receipt: bytes
    header: bytes
    tx_proof: InclusionProof
    receipt_proof: InclusionProof

    def to_json(self) -> dict[str, Any]:
        return {
            "tx": self.tx.hex(),
            "receipt": self.receipt.hex(),
            "header": self.header.hex(),
            "tx_proof": self.tx_proof.to_dict(),
            "receipt_proof": self.receipt_proof.to_dict(),
        }

    @classmethod
    def from_json(cls, obj: Any) -> TxProof:
        try:
            return cls(
                tx=bytes.fromhex(obj["tx"]),
                receipt=bytes.fromhex(obj["receipt"]),
                header=bytes.fromhex(obj["header"]),
                tx_proof=InclusionProof.from_dict(obj["tx_proof"]),
                receipt_proof=InclusionProof.from_dict(obj["receipt_proof"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise DecodeError(f"malformed transaction proof: {exc}") from None


def make_tx_proof(block: Block, receipts: Sequence[Receipt], index: int) -> TxProof:
    txs = MerkleTree([tx.encode() for tx in block.txs])
    rcs = MerkleTree([r.encode() for r in receipts])
    return TxProof(
        tx=block.txs[index].encode(),
        receipt=receipts[index].encode(),
        header=block.header.encode(),
        tx_proof=txs.proof(index),
        receipt_proof=rcs.proof(index),
    )


def verify_tx_proof(proof: TxProof, genesis: Genesis) -> tuple[Transaction, Receipt, BlockHeader]:
    """Check the header's signature and both audit paths; return the decoded parts."""
    tx, receipt, header = check_inclusion(proof)
    check_header(header, genesis)
    return tx, receipt, header


def check_inclusion(proof: TxProof) -> tuple[Transaction, Receipt, BlockHeader]:
    """Both audit paths against the proof's own header (whose authenticity the caller checks)."""
    try:
        header = BlockHeader.decode(proof.header)
        tx = Transaction.decode(proof.tx)
        receipt = Receipt.decode(proof.receipt)
    except DecodeError as exc:
        raise VerificationFailed(f"proof does not decode: {exc}") from None
    if proof.tx_proof.tree_size != header.tx_count or proof.receipt_proof.tree_size != header.tx_count:
        raise VerificationFailed(f"proof is for {proof.tx_proof.tree_size} leaves; block {header.height} has {header.tx_count}")
    if not verify_inclusion(proof.tx, proof.tx_proof, header.tx_root):
        raise VerificationFailed(f"transaction is not in block {header.height} (bad Merkle path)")
    if not verify_inclusion(proof.receipt, proof.receipt_proof, header.receipts_root):
        raise VerificationFailed(f"receipt is not in block {header.height} (bad Merkle path)")
    if proof.tx_proof.index != proof.receipt_proof.index or receipt.tx_hash != tx.tx_hash:
        raise VerificationFailed("receipt belongs to another transaction")
    if not is_valid(tx.sender, Domain.TX, tx.signing_bytes(), tx.signature):
        raise VerificationFailed(f"transaction {tx.tx_hash.hex()} has a bad signature")
    return tx, receipt, header


def check_header(header: BlockHeader, genesis: Genesis) -> None:
    if header.chain_id != genesis.chain_id:
        raise VerificationFailed(f"header is for chain {header.chain_id!r}, not {genesis.chain_id!r}")
    if header.height == 0:
        if header != genesis.block().header:
            raise VerificationFailed("genesis header does not match the trusted genesis document")
        return
    if header.proposer not in genesis.validators:
        raise VerificationFailed(f"block {header.height} was proposed by a non-validator")
    if not is_valid(header.proposer, Domain.BLOCK, header.signing_bytes(), header.signature):
        raise VerificationFailed(f"block {header.height} has a bad proposer signature")


def verify_header_chain(headers: Sequence[BlockHeader], genesis: Genesis) -> None:
    """Headers 0..n must be the genesis header followed by signed, linked successors."""
    prev: BlockHeader | None = None
    for i, header in enumerate(headers):
        if header.height != i:
            raise VerificationFailed(f"header {i} has height {header.height}")
        check_header(header, genesis)
        if prev is not None and header.prev_hash != prev.block_hash:
            raise VerificationFailed(f"block {i} does not link to block {i - 1}")
        prev = header
