"""OpenAPI 3.1 description of the node API, generated from the live router.

Each route's summary comes from its handler's docstring or the table below, so
the document cannot drift from the routes a node actually serves.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from fedledger import __version__

SUMMARIES = {
    ("GET", "/openapi.json"): "This document.",
    ("GET", "/v1/status"): "Node name, role, chain id, head height and hash, mempool size.",
    ("PUT", "/v1/blobs/{hash}"): "Store a blob; the body must hash (SHA-256) to {hash}.",
    ("GET", "/v1/blobs/{hash}"): "Fetch a blob by its SHA-256 address (hash-checked on read).",
    ("POST", "/v1/txs"): "Submit a canonical-CBOR transaction; 202 with its hash, 400 with the reason.",
    ("POST", "/v1/txs/batch"): "Submit a CBOR list of encoded transactions; per-transaction hash or error.",
    ("GET", "/v1/metrics"): "Replica metrics: tx counts, stage latencies, traffic by kind, CPU and RSS "
    "(?samples=1 adds per-transaction timestamps).",
    ("GET", "/v1/txs/{hash}"): "A committed transaction with its height, index and receipt (?wait=seconds).",
    ("GET", "/v1/txs/{hash}/proof"): "Header, transaction, receipt and their Merkle audit paths.",
    ("GET", "/v1/blocks/{height}"): "A block as JSON, or canonical CBOR with ?format=cbor.",
    ("GET", "/v1/headers"): "Canonical block headers ?start=&end= (at most 1000), hex-encoded.",
    ("GET", "/v1/accounts/{address}"): "The next nonce an account must use (counting queued transactions).",
    ("GET", "/v1/state/{contract}/{key}"): "A contract's stored value at key.",
    ("GET", "/v1/accumulator/witness"): "Accumulator membership witness of block ?height= in the value of "
    "block ?at= (default: head).",
    ("GET", "/v1/accumulator/batch"): "One aggregate witness with a proof of exponentiation for blocks "
    "?heights=a,b,c in the value of block ?at=.",
    ("GET", "/v1/interlock/latest"): "This chain's latest anchor signed by a quorum of its validators.",
    ("GET", "/v1/interlock/anchors/{chain}"): "First anchor of a chain at or above ?covers= recorded by "
    "main height ?upto=.",
    ("POST", "/v1/crosschain/verify"): "Cloud: verify a transaction on a sub-chain against the main "
    "chain's accumulator (seed 000 Protocol 1), step by step.",
    ("POST", "/v1/fl/job"): "Cloud: start a federated-learning job.",
    ("GET", "/v1/fl/job"): "Cloud: progress of the running or last job.",
    ("POST", "/v1/fl/round"): "Edge: run one round for this edge's devices and aggregate.",
    ("POST", "/v1/fl/train"): "Device pool: train this pool's devices on a verified global model.",
    ("POST", "/v1/fl/decentralised"): "Device pool: run rounds without an aggregator; each device validates, "
    "votes on and averages its peers' updates into its own global model.",
    ("POST", "/v1/fl/data"): "Edge: sign and record a batch of readings for a device that delegates signing.",
    ("POST", "/v1/fl/secagg/sketch"): "Device pool: seed 001 step 2, sketches of this pool's devices' "
    "polynomials under the round's challenge.",
    ("POST", "/v1/fl/secagg/sum"): "Device pool: seed 001 step 4, check the edge's acceptance and the shares, "
    "record H(S_Dj) and return share sums or complaints.",
    ("POST", "/v1/fl/secagg/verify"): "Edge: seed 001 step 6, record COM(c_i) and the verdict on the "
    "cloud's sum.",
}


def openapi_spec(app: web.Application) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for route in app.router.routes():
        method = route.method.upper()
        if method == "HEAD":
            continue
        info = route.resource.get_info() if route.resource else {}
        path = info.get("path") or info.get("formatter") or ""
        path = path.replace("{key:.+}", "{key}")
        summary = SUMMARIES.get((method, path), "")
        params = [
            {"name": p, "in": "path", "required": True, "schema": {"type": "string"}}
            for p in _path_params(path)
        ]
        paths.setdefault(path, {})[method.lower()] = {
            "summary": summary,
            "parameters": params,
            "responses": {
                "200": {"description": "OK"},
                "400": {"description": "Bad input: {error, kind}"},
                "404": {"description": "Not found: {error, kind}"},
            },
        }
    return {
        "openapi": "3.1.0",
        "info": {"title": "fedledger node API", "version": __version__},
        "paths": dict(sorted(paths.items())),
    }


def _path_params(path: str) -> list[str]:
    out, i = [], 0
    while (start := path.find("{", i)) != -1:
        end = path.index("}", start)
        out.append(path[start + 1 : end])
        i = end + 1
    return out
