"""HTTP client for a node's API, used by peer nodes, the demo and auditors."""

from __future__ import annotations

from typing import Any

import aiohttp

from fedledger.crypto.hashing import sha256
from fedledger.errors import (
    BlobCorrupted,
    FedledgerError,
    InvalidTransaction,
    NodeUnavailable,
    NotFound,
)
from fedledger.ledger.block import BlockHeader
from fedledger.ledger.proofs import TxProof
from fedledger.ledger.tx import Transaction

CBOR = "application/cbor"
OCTETS = "application/octet-stream"


class NodeClient:
    """Talks to one node. Errors come back as the project's typed exceptions."""

    def __init__(self, base_url: str, session: aiohttp.ClientSession, timeout_s: float = 60.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._session = session
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)

    async def _request(self, method: str, path: str, *, timeout_s: float | None = None, **kw: Any) -> Any:
        timeout = self._timeout if timeout_s is None else aiohttp.ClientTimeout(total=timeout_s)
        url = self.base_url + path
        try:
            async with self._session.request(method, url, timeout=timeout, **kw) as resp:
                body = await resp.read()
                if resp.status >= 400:
                    _raise_for(resp.status, body, url)
                if resp.content_type == "application/json":
                    return await resp.json()
                return body
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise NodeUnavailable(f"{method} {url} failed: {exc or type(exc).__name__}") from None

    async def get_json(self, path: str, **kw: Any) -> Any:
        return await self._request("GET", path, **kw)

    async def post_json(self, path: str, obj: Any, **kw: Any) -> Any:
        return await self._request("POST", path, json=obj, **kw)

    async def post_bytes(self, path: str, data: bytes, **kw: Any) -> Any:
        return await self._request("POST", path, data=data, headers={"Content-Type": "application/octet-stream"},
                                   **kw)

    # -- chain ---------------------------------------------------------------
    async def status(self) -> dict[str, Any]:
        return await self.get_json("/v1/status")

    async def submit_tx(self, tx: Transaction) -> bytes:
        out = await self._request("POST", "/v1/txs", data=tx.encode(), headers={"Content-Type": CBOR})
        return bytes.fromhex(out["tx_hash"])

    async def wait_tx(self, tx_hash: bytes, timeout_s: float = 30.0) -> dict[str, Any]:
        """Block until the transaction is committed; return its location and receipt."""
        return await self.get_json(
            f"/v1/txs/{tx_hash.hex()}?wait={timeout_s}", timeout_s=timeout_s + 10
        )

    async def next_nonce(self, address: bytes) -> int:
        out = await self.get_json(f"/v1/accounts/{address.hex()}")
        return int(out["next_nonce"])

    async def tx_proof(self, tx_hash: bytes) -> TxProof:
        return TxProof.from_json(await self.get_json(f"/v1/txs/{tx_hash.hex()}/proof"))

    async def headers(self, start: int, end: int) -> list[BlockHeader]:
        out: list[BlockHeader] = []
        while start <= end:
            stop = min(end, start + 999)
            got = await self.get_json(f"/v1/headers?start={start}&end={stop}")
            out.extend(BlockHeader.decode(bytes.fromhex(h)) for h in got["headers"])
            start = stop + 1
        return out

    async def state(self, contract: str, key: str) -> Any:
        """A contract's stored value (bytes rendered as hex), or ``None`` if absent."""
        try:
            out = await self.get_json(f"/v1/state/{contract}/{key}")
        except NotFound:
            return None
        return out["value"]

    # -- blobs ---------------------------------------------------------------
    async def put_blob(self, data: bytes) -> str:
        address = sha256(data).hex()
        await self._request("PUT", f"/v1/blobs/{address}", data=data, headers={"Content-Type": OCTETS})
        return address

    async def get_blob(self, address: str) -> bytes:
        """Fetch a blob and check it hashes to its address before returning it."""
        data = await self._request("GET", f"/v1/blobs/{address}")
        if sha256(data).hex() != address:
            raise BlobCorrupted(f"blob {address} served by {self.base_url} does not match its hash")
        return data


def _raise_for(status: int, body: bytes, url: str) -> None:
    import json

    try:
        msg = json.loads(body)["error"]
    except (ValueError, KeyError, TypeError):
        msg = body[:200].decode(errors="replace")
    if status == 404:
        raise NotFound(msg)
    if status == 400:
        raise InvalidTransaction(msg) if "/v1/txs" in url else FedledgerError(msg)
    if status == 422:
        raise FedledgerError(msg)
    raise NodeUnavailable(f"{url} answered {status}: {msg}")
