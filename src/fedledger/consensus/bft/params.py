"""BFT parameters, read from the genesis document (``params["bft"]``).

Every validator of the chain reads the same document, so all of them run with
the same timeouts and block limits. Timeouts grow linearly with the round
(Algorithm 1: ``timeoutX(r) = timeoutX + r * timeout_delta``), so that after
the network becomes synchronous some round lasts long enough for every honest
validator to hear the proposal and the votes.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from fedledger.errors import ConfigError


@dataclass(frozen=True)
class BftParams:
    timeout_propose_ms: int = 1000  # OnTimeoutPropose (lines 21, 57)
    timeout_prevote_ms: int = 500  # OnTimeoutPrevote (lines 35, 61)
    timeout_precommit_ms: int = 500  # OnTimeoutPrecommit (lines 48, 65)
    timeout_delta_ms: int = 500  # added to each timeout per round
    commit_ms: int = 0  # pause after a decision before round 0 of the next height starts counting
    empty_block_ms: int = 5000  # round 0 waits this long for transactions before an empty block
    rebroadcast_ms: int = 1000  # own messages of the current round are sent again (they may be lost)
    max_future_ms: int = 5000  # a proposal whose timestamp is further ahead of our clock gets a nil prevote
    evidence_retry_ms: int = 5000  # double-sign evidence is submitted again until the chain records it
    max_block_txs: int = 2000

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ConfigError(f"bft parameter {f.name} must be a non-negative integer, not {value!r}")
        for name in ("timeout_propose_ms", "timeout_prevote_ms", "timeout_precommit_ms", "rebroadcast_ms",
                     "evidence_retry_ms", "max_block_txs"):
            if getattr(self, name) < 1:
                raise ConfigError(f"bft parameter {name} must be positive")

    def timeout_propose(self, round_: int) -> int:
        return self.timeout_propose_ms + round_ * self.timeout_delta_ms

    def timeout_prevote(self, round_: int) -> int:
        return self.timeout_prevote_ms + round_ * self.timeout_delta_ms

    def timeout_precommit(self, round_: int) -> int:
        return self.timeout_precommit_ms + round_ * self.timeout_delta_ms

    @classmethod
    def from_obj(cls, raw: Any) -> BftParams:
        if raw is None:
            return cls()
        if not isinstance(raw, dict):
            raise ConfigError("genesis params.bft must be a map")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ConfigError(f"unknown bft parameter(s): {', '.join(unknown)}")
        return cls(**raw)

    def to_obj(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}
