"""Genesis documents: the agreed starting point of every chain.

A permissioned chain (seed 000 §III) starts from a document that names its
validators and the identities (device, edge, cloud) admitted at launch. Every
node of the chain loads the same document; the genesis block, and so the whole
chain, is a deterministic function of it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from fedledger.codec import Record
from fedledger.crypto.hashing import tagged_hash
from fedledger.crypto.merkle import merkle_root
from fedledger.ledger.block import ZERO_HASH, Block, BlockHeader
from fedledger.ledger.state import State

ROLES = ("cloud", "edge", "device", "auditor")


@dataclass(frozen=True)
class Identity(Record):
    """A participant admitted by the permissioned registry."""

    public_key: bytes
    role: str
    name: str
    home_chain: str


@dataclass(frozen=True)
class Genesis(Record):
    chain_id: str
    timestamp: int
    validators: tuple[bytes, ...]
    identities: tuple[Identity, ...]
    params: dict[str, Any]

    @property
    def genesis_hash(self) -> bytes:
        return tagged_hash("fedledger/genesis", self.encode())

    def initial_state(self) -> State:
        from fedledger.contracts.identity import seed_identities

        state = State()
        seed_identities(state, self.identities)
        if self.params.get("engine") == "microchain":
            from fedledger.consensus.microchain.params import MicrochainParams
            from fedledger.contracts.microchain import seed_microchain

            params = MicrochainParams.from_obj(self.params.get("microchain"))
            seed_microchain(state, params, list(self.validators), self.genesis_hash)
        if self.params.get("interlock"):
            from fedledger.contracts.interlock import seed_interlock
            from fedledger.ledger.accumulator import chain_params
            from fedledger.ledger.interlock import InterlockConfig

            config = InterlockConfig.from_params(self.params)
            seed_interlock(state, config, chain_params(self.params).fingerprint())
        state.take_changes()
        return state

    def block(self) -> Block:
        return self._block

    @cached_property
    def _block(self) -> Block:
        from fedledger.ledger.accumulator import chain_params, next_value, start_value

        header = BlockHeader(
            chain_id=self.chain_id,
            height=0,
            prev_hash=ZERO_HASH,
            tx_count=0,
            tx_root=merkle_root([]),
            receipts_root=merkle_root([]),
            state_root=self.initial_state().root(),
            proposer=b"",
            timestamp=self.timestamp,
            consensus={"genesis": self.genesis_hash},
            accumulator=b"",
            signature=b"",
        )
        acc = chain_params(self.params)
        header = dataclasses.replace(header, accumulator=next_value(acc, start_value(acc), header))
        return Block(header=header, txs=())
