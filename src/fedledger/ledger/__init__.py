"""Transactions, blocks, state and state transitions."""

from fedledger.ledger.block import Block, BlockHeader, Receipt
from fedledger.ledger.chain import ChainState, apply_block, propose_block, validate_tx
from fedledger.ledger.genesis import Genesis, Identity
from fedledger.ledger.mempool import Mempool
from fedledger.ledger.state import State
from fedledger.ledger.tx import Transaction, make_tx

__all__ = [
    "Block",
    "BlockHeader",
    "ChainState",
    "Genesis",
    "Identity",
    "Mempool",
    "Receipt",
    "State",
    "Transaction",
    "apply_block",
    "make_tx",
    "propose_block",
    "validate_tx",
]
