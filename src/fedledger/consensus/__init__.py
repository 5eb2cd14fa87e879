"""Consensus engines: deterministic state machines behind one interface."""

from fedledger.consensus.dev import DevEngine
from fedledger.consensus.engine import Engine, Ready

__all__ = ["DevEngine", "Engine", "Ready"]
