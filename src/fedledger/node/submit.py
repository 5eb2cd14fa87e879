"""Sign, submit and await contract calls on a local replica or a remote node."""

from __future__ import annotations

import asyncio
import time
from typing import Any, Protocol

from fedledger.crypto.keys import SigningKey
from fedledger.errors import ContractError, NodeUnavailable
from fedledger.ledger.tx import make_tx
from fedledger.net.client import NodeClient
from fedledger.node.chain_node import ChainNode


class ChainEndpoint(Protocol):
    chain_id: str

    async def call(self, key: SigningKey, contract: str, method: str, args: Any, timeout_s: float = 30) -> bytes:
        """Submit the call and wait until it is committed; return the tx hash."""


def _now_ms() -> int:
    return int(time.time() * 1000)


class LocalChain:
    """This process's own chain replica."""

    def __init__(self, node: ChainNode) -> None:
        self.node = node
        self.chain_id = node.chain_id

    async def submit(self, key: SigningKey, contract: str, method: str, args: Any) -> bytes:
        """Admit the call to the mempool without waiting for it to commit."""
        tx = make_tx(key, self.chain_id, self.node.next_nonce(key.address), contract, method, args, _now_ms())
        return self.node.submit(tx)

    async def call(self, key: SigningKey, contract: str, method: str, args: Any, timeout_s: float = 30) -> bytes:
        tx_hash = await self.submit(key, contract, method, args)
        if await self.node.wait_for_tx(tx_hash, timeout_s) is None:
            raise NodeUnavailable(f"{contract}.{method} was not committed within {timeout_s}s")
        receipt = self.node.store.receipt(tx_hash)
        if not receipt.success:
            raise ContractError(f"{contract}.{method} failed: {receipt.error}")
        return tx_hash


class RemoteChain:
    """A chain served by another node's API."""

    def __init__(self, client: NodeClient, chain_id: str) -> None:
        self.client = client
        self.chain_id = chain_id
        self._nonces = asyncio.Lock()  # one key's concurrent submissions must not draw the same nonce

    async def call(self, key: SigningKey, contract: str, method: str, args: Any, timeout_s: float = 30) -> bytes:
        tx_hash = await self.submit(key, contract, method, args)
        await self.wait_success(tx_hash, f"{contract}.{method}", timeout_s)
        return tx_hash

    async def submit(self, key: SigningKey, contract: str, method: str, args: Any) -> bytes:
        """Submit without waiting (the caller batches and awaits later)."""
        async with self._nonces:
            nonce = await self.client.next_nonce(key.address)
            tx = make_tx(key, self.chain_id, nonce, contract, method, args, _now_ms())
            return await self.client.submit_tx(tx)

    async def wait_success(self, tx_hash: bytes, what: str, timeout_s: float = 30) -> None:
        out = await self.client.wait_tx(tx_hash, timeout_s)
        if not out["receipt"]["success"]:
            raise ContractError(f"{what} failed: {out['receipt']['error']}")
