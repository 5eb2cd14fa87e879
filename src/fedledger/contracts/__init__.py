"""Deterministic on-chain programs. Importing this package registers them all."""

from fedledger.contracts import fl, identity
from fedledger.contracts.base import REGISTRY, Context, Contract, lookup

__all__ = ["REGISTRY", "Context", "Contract", "fl", "identity", "lookup"]
