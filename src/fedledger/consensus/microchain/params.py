"""Microchain parameters (seed 004 §IV–§VII), read from the genesis document.

``genesis.params["microchain"]`` holds the overrides; every validator of the
chain reads the same document, so they all run with the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from fedledger.errors import ConfigError


@dataclass(frozen=True)
class MicrochainParams:
    committee_size: int = 4  # K = |D|
    epoch_blocks: int = 2  # R: a checkpoint every R blocks (height mod R = 0)
    slot_ms: int = 200  # length of one block-proposal round sl_t
    xi: int = 32  # ξ: bits of the PoC hash compared with d_cond
    c_init: int = 1  # C_init (§IV-A)
    c_max: int = 10  # C_max (§IV-A, §VII)
    dynasty_epochs: int = 16  # epochs per dynasty (committee lifetime)
    stake: int = 100  # security stake sc_i each committee member deposits (§VII)
    initial_balance: int = 1000  # balance genesis validators start with
    arbitrator: bytes = b""  # Rule 3 trusted arbitrator key (empty: no arbitrator)
    arbitration_slots: int = 10  # slots without a commit before the arbitrator may decide
    max_block_txs: int = 2000

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name != "arbitrator" and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise ConfigError(f"microchain parameter {f.name} must be a positive integer, not {value!r}")
        if self.xi > 64:
            raise ConfigError("microchain parameter xi must be at most 64")
        if self.c_init > self.c_max:
            raise ConfigError("microchain parameter c_init must not exceed c_max")
        if not isinstance(self.arbitrator, bytes) or len(self.arbitrator) not in (0, 32):
            raise ConfigError("microchain arbitrator must be a 32-byte public key or empty")

    @property
    def dynasty_blocks(self) -> int:
        return self.dynasty_epochs * self.epoch_blocks

    @classmethod
    def from_obj(cls, raw: Any) -> MicrochainParams:
        if raw is None:
            return cls()
        if not isinstance(raw, dict):
            raise ConfigError("genesis params.microchain must be a map")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ConfigError(f"unknown microchain parameter(s): {', '.join(unknown)}")
        return cls(**raw)

    def to_obj(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}
