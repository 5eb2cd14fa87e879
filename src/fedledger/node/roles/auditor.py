"""Auditor node: serves model verification and training audits over HTTP.

It holds the auditor's reader key (a reader of every sealed artefact, named in
the task) and the genesis document of every chain, and trusts the chains' nodes
for nothing but availability: every answer is built from proven transactions
and hash-checked blobs.

- ``POST /v1/verify/model`` (the model file as the body; ``?proofs=1`` attaches
  every record's transaction proof): the model's provenance, as ``fedledger
  verify model FILE`` prints it;
- ``POST /v1/audit/training`` (``{"model": hex, "samples": k, "seed"?: int}``):
  re-run randomly chosen recorded training steps, as ``fedledger audit training``.

Config: ``peers.chains`` maps chain id → node URL, ``fl.geneses`` maps chain id
→ genesis file, and ``main_genesis`` names the main chain's.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from aiohttp import web

from fedledger.audit.chainview import ChainView
from fedledger.audit.network import Network
from fedledger.errors import ConfigError, UsageError
from fedledger.net.api import MAX_BLOB_BYTES, read_json
from fedledger.node.config import load_genesis
from fedledger.node.roles.base import RoleContext


class AuditorRole:
    def __init__(self, ctx: RoleContext) -> None:
        if ctx.cfg.main_genesis is None:
            raise ConfigError(f"{ctx.cfg.name}: an auditor node needs main_genesis")
        self.ctx = ctx
        self.main_genesis = load_genesis(ctx.cfg.main_genesis)
        urls = ctx.cfg.peers.get("chains", {})
        files = ctx.cfg.fl.get("geneses", {})
        if not isinstance(urls, dict) or not isinstance(files, dict):
            raise ConfigError(f"{ctx.cfg.name}: peers.chains and fl.geneses map chain ids to URLs and files")
        self.urls = {str(c): str(u) for c, u in urls.items()}
        self.geneses = {self.main_genesis.chain_id: self.main_genesis}
        for chain, path in files.items():
            self.geneses[str(chain)] = load_genesis(Path(path))
        missing = sorted(set(self.geneses) - set(self.urls))
        if missing:
            raise ConfigError(f"{ctx.cfg.name}: no node URL for chain(s) {', '.join(missing)}")
        r = ctx.api.app.router
        r.add_post("/v1/verify/model", self.handle_verify_model)
        r.add_post("/v1/audit/training", self.handle_audit_training)

    def network(self) -> Network:
        views = {c: ChainView(self.ctx.client(self.urls[c]), g) for c, g in self.geneses.items()}
        main = views.pop(self.main_genesis.chain_id)
        return Network(main, views, self.ctx.cfg.key)

    async def handle_verify_model(self, request: web.Request) -> web.Response:
        """Auditor: the provenance of the model file in the body, checked against the chains (FAIL if altered)."""
        from fedledger.audit.provenance import verify_model

        if request.content_length is not None and request.content_length > MAX_BLOB_BYTES:
            raise UsageError("model file too large")
        data = await request.read()
        if not data:
            raise UsageError("send the model file as the request body")
        proofs = request.query.get("proofs", "") in ("1", "true", "yes")
        return web.json_response((await verify_model(self.network(), data, proofs=proofs)).to_json())

    async def handle_audit_training(self, request: web.Request) -> web.Response:
        """Auditor: re-run randomly chosen recorded training steps behind a model (seed 000 §V-B)."""
        from fedledger.audit.training import TrainingAuditor

        body = await read_json(request)
        try:
            model = bytes.fromhex(body["model"])
            samples = int(body.get("samples", 3))
            seed: Any = body.get("seed")
            rng = None if seed is None else random.Random(int(seed))
        except (KeyError, TypeError, ValueError) as exc:
            raise UsageError(f"bad audit request: {exc}") from None
        if len(model) != 32:
            raise UsageError("model must be a 32-byte hash")
        auditor = TrainingAuditor(self.network(), samples, rng)
        return web.json_response((await auditor.audit(model)).to_json())
