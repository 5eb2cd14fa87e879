"""Shared fixtures: deterministic keys, a small permissioned genesis, a chain at genesis."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from fedledger.crypto.keys import SigningKey
from fedledger.ledger import ChainState, Genesis, Identity

CHAIN_ID = "sub-1"
GENESIS_TIME = 1_700_000_000


def seeded_key(n: int) -> SigningKey:
    """Deterministic key number ``n`` (seed = 32 copies of byte ``n``)."""
    return SigningKey.from_seed(bytes([n]) * 32)


@dataclass(frozen=True)
class Keys:
    """The participants of the test chain (seed 000 §III roles)."""

    validator: SigningKey  # the edge node: the sub-chain's only validator
    cloud: SigningKey  # task owner; publishes global models
    devices: tuple[SigningKey, ...]  # FL clients
    outsider: SigningKey  # neither registered nor a validator


@pytest.fixture(scope="session")
def keys() -> Keys:
    return Keys(
        validator=seeded_key(0),
        cloud=seeded_key(100),
        devices=tuple(seeded_key(n) for n in (1, 2, 3)),
        outsider=seeded_key(200),
    )


@pytest.fixture(scope="session")
def genesis(keys: Keys) -> Genesis:
    """A sub-chain whose genesis admits one edge, one cloud and three devices."""
    identities = (
        Identity(keys.validator.public_key, "edge", "edge-1", CHAIN_ID),
        Identity(keys.cloud.public_key, "cloud", "cloud", "main"),
        *(
            Identity(d.public_key, "device", f"device-{i}", CHAIN_ID)
            for i, d in enumerate(keys.devices)
        ),
    )
    return Genesis(CHAIN_ID, GENESIS_TIME, (keys.validator.public_key,), identities, {})


@pytest.fixture
def chain(genesis: Genesis) -> ChainState:
    """A fresh chain at height 0 (a new object per test: tests may mutate it)."""
    return ChainState.from_genesis(genesis)
