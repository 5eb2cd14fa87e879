"""Deterministic on-chain programs. Importing this package registers them all."""

from collections.abc import Callable
from typing import Any

from fedledger.contracts import beacon, bft, fl, identity, interlock, microchain, records, secagg
from fedledger.contracts.base import REGISTRY, Context, Contract, lookup
from fedledger.ledger.state import State

# State rules a consensus engine runs at the end of every block, by engine name.
BLOCK_HOOKS: dict[str, Callable[[State, str, int, bytes, bytes, Any], None]] = {
    "microchain": microchain.finish_block,
    "bft": bft.finish_block,
}

__all__ = ["BLOCK_HOOKS", "REGISTRY", "Context", "Contract", "beacon", "bft", "fl", "identity", "interlock", "lookup", "microchain", "records", "secagg"]
