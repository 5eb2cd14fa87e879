"""The HTTP API every node serves (aiohttp). ``/openapi.json`` describes it.

Chain routes exist on nodes that hold a chain replica; blob routes on every
node; role modules (cloud, edge, device pool) add their ``/v1/fl/...`` routes.
Errors are JSON ``{"error": message, "kind": exception class}`` with 400 for
bad input, 404 for unknown objects and 500 only for bugs.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from fedledger.codec import cbor
from fedledger.contracts.base import read_state
from fedledger.errors import (
    DecodeError,
    FedledgerError,
    InvalidTransaction,
    NotFound,
    UsageError,
    VerificationFailed,
)
from fedledger.ledger.tx import MAX_TX_BYTES, decode_tx
from fedledger.net.openapi import openapi_spec
from fedledger.node.chain_node import ChainNode
from fedledger.node.interlock import anchor_covering, batch_from_store, witness_from_store
from fedledger.storage.blobs import BlobStore

log = logging.getLogger("fedledger.api")
MAX_BLOB_BYTES = 256 * 1024 * 1024
MAX_BATCH_TXS = 10_000
MAX_BATCH_BYTES = 32 * 1024 * 1024
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_STATUS = {
    DecodeError: 400,
    InvalidTransaction: 400,
    UsageError: 400,
    VerificationFailed: 422,
    NotFound: 404,
}


def jsonable(value: Any) -> Any:
    """Render a CBOR-model value as JSON: bytes become hex."""
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    return value


def error_response(exc: FedledgerError) -> web.Response:
    status = next((code for cls, code in _STATUS.items() if isinstance(exc, cls)), 500)
    return web.json_response({"error": str(exc), "kind": type(exc).__name__}, status=status)


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except FedledgerError as exc:
        return error_response(exc)


def _hash_param(request: web.Request, name: str = "hash") -> bytes:
    raw = request.match_info[name]
    try:
        value = bytes.fromhex(raw)
    except ValueError:
        raise DecodeError(f"{name} must be hex") from None
    if len(value) != 32:
        raise DecodeError(f"{name} must be 32 bytes")
    return value


def _int_param(request: web.Request, name: str, default: int | None = None) -> int:
    raw = request.query.get(name) if name in request.query else request.match_info.get(name)
    if raw is None:
        if default is None:
            raise UsageError(f"missing parameter {name}")
        return default
    try:
        return int(raw)
    except ValueError:
        raise UsageError(f"parameter {name} must be an integer") from None


class NodeAPI:
    """Builds the aiohttp application for a node."""

    def __init__(self, name: str, role: str, blobs: BlobStore, chain: ChainNode | None = None) -> None:
        self.name = name
        self.role = role
        self.blobs = blobs
        self.chain = chain
        self.app = web.Application(middlewares=[errors_middleware], client_max_size=MAX_BLOB_BYTES)
        self.status_extra: Callable[[], dict[str, Any]] = dict
        r = self.app.router
        r.add_get("/openapi.json", self.openapi)
        r.add_get("/v1/status", self.status)
        r.add_put("/v1/blobs/{hash}", self.put_blob)
        r.add_get("/v1/blobs/{hash}", self.get_blob)
        if chain is not None:
            r.add_post("/v1/txs", self.submit_tx)
            r.add_post("/v1/txs/batch", self.submit_txs)
            r.add_get("/v1/metrics", self.metrics)
            r.add_get("/v1/txs/{hash}", self.get_tx)
            r.add_get("/v1/txs/{hash}/proof", self.get_tx_proof)
            r.add_get("/v1/blocks/{height}", self.get_block)
            r.add_get("/v1/headers", self.get_headers)
            r.add_get("/v1/accounts/{address}", self.get_account)
            r.add_get("/v1/state/{contract}/{key:.+}", self.get_state)
            r.add_get("/v1/accumulator/witness", self.get_witness)
            r.add_get("/v1/accumulator/batch", self.get_batch_witness)
            r.add_get("/v1/interlock/latest", self.get_interlock_latest)
            r.add_get("/v1/interlock/anchors/{chain}", self.get_anchor_covering)

    def _chain(self) -> ChainNode:
        assert self.chain is not None
        return self.chain

    async def openapi(self, request: web.Request) -> web.Response:
        return web.json_response(openapi_spec(self.app))

    async def status(self, request: web.Request) -> web.Response:
        out: dict[str, Any] = {"name": self.name, "role": self.role}
        if self.chain is not None:
            head = self.chain.chain.head
            out.update(
                chain_id=self.chain.chain_id,
                height=head.height,
                head=head.block_hash.hex(),
                mempool=len(self.chain.mempool),
            )
        out.update(self.status_extra())
        return web.json_response(out)

    # -- transactions -------------------------------------------------------
    async def submit_tx(self, request: web.Request) -> web.Response:
        body = await read_body(request, MAX_TX_BYTES, InvalidTransaction)
        tx = decode_tx(body)
        tx_hash = self._chain().submit(tx)
        return web.json_response({"tx_hash": tx_hash.hex()}, status=202)

    async def submit_txs(self, request: web.Request) -> web.Response:
        """Admit a CBOR list of encoded transactions in order; one result per transaction.

        Each result is ``{"tx_hash": hex}`` or ``{"error": reason}``; a rejected
        transaction does not stop the ones after it (which may then fail on
        their nonce). Always 200 once the body decodes as a list of byte strings.
        """
        body = await read_body(request, MAX_BATCH_BYTES)
        raws = cbor.decode(body)
        if not isinstance(raws, list) or not all(isinstance(r, bytes) for r in raws):
            raise DecodeError("a batch is a CBOR list of encoded transactions (byte strings)")
        if len(raws) > MAX_BATCH_TXS:
            raise UsageError(f"a batch holds at most {MAX_BATCH_TXS} transactions, not {len(raws)}")
        chain = self._chain()
        results: list[dict[str, str]] = []
        accepted = 0
        for raw in raws:
            try:
                results.append({"tx_hash": chain.submit(decode_tx(raw)).hex()})
                accepted += 1
            except FedledgerError as exc:
                results.append({"error": str(exc)})
        return web.json_response({"accepted": accepted, "rejected": len(raws) - accepted, "results": results})

    async def metrics(self, request: web.Request) -> web.Response:
        samples = request.query.get("samples", "0") not in ("", "0", "false")
        return web.json_response(self._chain().metrics_snapshot(samples=samples))

    async def get_tx(self, request: web.Request) -> web.Response:
        chain = self._chain()
        tx_hash = _hash_param(request)
        wait = float(request.query.get("wait", "0") or 0)
        loc = await chain.wait_for_tx(tx_hash, min(max(wait, 0.0), 120.0))
        if loc is None:
            state = "pending" if tx_hash in chain.mempool else "unknown"
            raise NotFound(f"transaction {tx_hash.hex()} is not committed ({state})")
        height, index = loc
        tx = chain.store.tx(tx_hash)
        receipt = chain.store.receipt(tx_hash)
        return web.json_response(
            {"height": height, "index": index, "tx": tx.to_json(), "receipt": receipt.to_json()}
        )

    async def get_tx_proof(self, request: web.Request) -> web.Response:
        return web.json_response(self._chain().tx_proof(_hash_param(request)).to_json())

    async def get_block(self, request: web.Request) -> web.Response:
        block = self._chain().store.block(_int_param(request, "height"))
        if request.query.get("format") == "cbor":
            return web.Response(body=block.encode(), content_type="application/cbor")
        return web.json_response(
            {"header": block.header.to_json(), "txs": [tx.to_json() for tx in block.txs]}
        )

    async def get_headers(self, request: web.Request) -> web.Response:
        store = self._chain().store
        start = _int_param(request, "start", 0)
        end = min(_int_param(request, "end", start), start + 999, store.head_height())
        headers = [store.header(h).encode().hex() for h in range(max(start, 0), end + 1)]
        return web.json_response({"headers": headers})

    async def get_account(self, request: web.Request) -> web.Response:
        try:
            address = bytes.fromhex(request.match_info["address"])
        except ValueError:
            raise DecodeError("address must be hex") from None
        return web.json_response({"next_nonce": self._chain().next_nonce(address)})

    async def get_state(self, request: web.Request) -> web.Response:
        contract, key = request.match_info["contract"], request.match_info["key"]
        value = read_state(self._chain().chain.state, contract, key)
        if value is None:
            raise NotFound(f"no state at {contract}/{key}")
        return web.json_response({"value": jsonable(value)})

    # -- inter-locking and accumulator proofs (seed 000 §IV) ------------------
    async def get_witness(self, request: web.Request) -> web.Response:
        """Membership witness of block ``height`` in the accumulator of block ``at`` (default: the head)."""
        chain = self._chain()
        height = _int_param(request, "height")
        at = _int_param(request, "at", chain.chain.height)
        witness = witness_from_store(chain.store, chain.chain.acc_params, height, at)
        return web.json_response({"height": height, "at": at, "witness": witness.hex(),
                                  "accumulator": chain.store.header(at).accumulator.hex()})

    async def get_batch_witness(self, request: web.Request) -> web.Response:
        """One aggregate witness and PoE for blocks ``heights`` (comma-separated) in the value of ``at``."""
        chain = self._chain()
        at = _int_param(request, "at", chain.chain.height)
        try:
            heights = sorted({int(h) for h in request.query.get("heights", "").split(",")})
        except ValueError:
            raise UsageError("heights must be comma-separated integers") from None
        witness, poe = batch_from_store(chain.store, chain.chain.acc_params, heights, at)
        return web.json_response({"heights": heights, "at": at, "witness": witness.hex(), "poe": poe.hex(),
                                  "accumulator": chain.store.header(at).accumulator.hex()})

    async def get_interlock_latest(self, request: web.Request) -> web.Response:
        """The latest anchor of this chain that a quorum of its validators signed (for relayers)."""
        cert = self._chain().interlock.latest()
        if cert is None:
            raise NotFound("no anchor of this chain has a quorum of signatures yet")
        anchor, sigs = cert
        return web.json_response({"anchor": jsonable(anchor.to_obj()), "signatures": jsonable(sigs)})

    async def get_anchor_covering(self, request: web.Request) -> web.Response:
        """The first anchor of ``chain`` at or above height ``covers``, recorded by main height ``upto``."""
        chain = self._chain()
        entry = anchor_covering(chain.chain.state, request.match_info["chain"], _int_param(request, "covers"),
                                _int_param(request, "upto", chain.chain.height))
        return web.json_response(jsonable(entry))

    # -- blobs ----------------------------------------------------------------
    async def put_blob(self, request: web.Request) -> web.Response:
        address = request.match_info["hash"]
        self.blobs.put_verified(address, await request.read())
        return web.json_response({"hash": address}, status=201)

    async def get_blob(self, request: web.Request) -> web.Response:
        return web.Response(body=self.blobs.get(request.match_info["hash"]),
                            content_type="application/octet-stream")


async def read_body(request: web.Request, limit: int,
                    error: type[FedledgerError] = UsageError) -> bytes:
    """The whole request body, or a 400-mapped error once it exceeds ``limit`` bytes.

    (``request.content.read(n)`` returns what is buffered, which may be only
    part of the body.) ``error`` is the exception class for an oversized body.
    """
    if request.content_length is not None and request.content_length > limit:
        raise error(f"request body of {request.content_length} bytes is over the {limit}-byte limit")
    chunks: list[bytes] = []
    size = 0
    while chunk := await request.content.read(min(limit + 1 - size, 1 << 20)):
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            raise error(f"request body is over the {limit}-byte limit")
    return b"".join(chunks)


async def read_json(request: web.Request) -> dict[str, Any]:
    """Parse a JSON object body or raise a 400-mapped error."""
    try:
        body = await request.json()
    except (ValueError, json.JSONDecodeError) as exc:
        raise UsageError(f"request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise UsageError("request body must be a JSON object")
    return body
