"""Edge node: validator of its sub-chain, aggregator of its devices, blob site.

A round, as data flows (seed 004 §III-A, seed 000 §V):
1. check the global model's authenticator on the main chain, fetch the blob;
2. ask the device pools to train (with a deadline: a late or failed pool is
   reported, not waited for);
3. wait for the devices' ``submit_update`` transactions on the sub-chain and
   check every uploaded blob against its recorded hash;
4. FedAvg by sample count, store the aggregate blob, ``record_aggregate``;
5. wait until a quorum-signed anchor of the sub-chain at or above the
   aggregate's block reaches the main chain (Type-II, ``interlock.anchor_subchain``;
   this node relays its sub-chain's anchors as they are signed).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiohttp import web

from fedledger.audit.chainview import verify_global_model
from fedledger.errors import ConfigError, FedledgerError, UsageError, VerificationFailed
from fedledger.fl.aggregate import fedavg
from fedledger.fl.weights import decode_weights, encode_weights
from fedledger.logs import log_event
from fedledger.net.api import read_json
from fedledger.node.roles.base import FLSettings, RoleContext
from fedledger.node.roles.relay import AnchorRelay
from fedledger.node.submit import LocalChain, RemoteChain

log = logging.getLogger("fedledger.edge")


class EdgeRole:
    def __init__(self, ctx: RoleContext) -> None:
        if ctx.chain is None:
            raise ConfigError(f"{ctx.cfg.name}: an edge node needs a sub-chain")
        self.ctx = ctx
        self.key = ctx.cfg.key
        self.settings = FLSettings.from_config(ctx.cfg.fl)
        self.deadline_s = float(ctx.cfg.fl.get("deadline_s", 120))
        self.sub = LocalChain(ctx.chain)
        self.cloud = ctx.client(ctx.peer("cloud"))
        self.pools = [ctx.client(u, timeout_s=self.deadline_s) for u in ctx.peer_list("devices")]
        self.main_chain_id = str(ctx.cfg.fl.get("main_chain_id", "main"))
        self.main = RemoteChain(self.cloud, self.main_chain_id)
        self.relay = AnchorRelay(ctx.chain, self.key, self.main, "anchor_subchain")
        ctx.tasks.append(asyncio.create_task(self.relay.run()))
        self._lock = asyncio.Lock()
        ctx.api.app.router.add_post("/v1/fl/round", self.handle_round)

    async def handle_round(self, request: web.Request) -> web.Response:
        body = await read_json(request)
        try:
            round_ = int(body["round"])
            base = bytes.fromhex(body["base"])
        except (KeyError, TypeError, ValueError) as exc:
            raise UsageError(f"bad round request: {exc}") from None
        async with self._lock:
            return web.json_response(await self.run_round(round_, base))

    async def run_round(self, round_: int, base: bytes) -> dict[str, Any]:
        await verify_global_model(self.ctx.main_view(), round_ - 1, base, self.settings.program_hash())
        self.ctx.blobs.put_verified(base.hex(), await self.cloud.get_blob(base.hex()))
        updates, failures = await self._collect_updates(round_, base)
        if not updates:
            raise VerificationFailed(f"round {round_}: no device update arrived in time")
        results = []
        for up in updates:
            results.append((decode_weights(self.ctx.blobs.get(up["model"])), int(up["samples"])))
        aggregate = encode_weights(fedavg(results))
        address = self.ctx.blobs.put(aggregate)
        samples = sum(n for _, n in results)
        agg_tx = await self.sub.call(self.key, "fl", "record_aggregate", {
            "round": round_, "base": base, "model": bytes.fromhex(address), "samples": samples,
            "updates": [bytes.fromhex(up["tx"]) for up in updates],
        })
        height, _ = self.ctx.chain.store.tx_location(agg_tx)  # type: ignore[union-attr]
        _, anchor_tx = await self.relay.covering(height, self.deadline_s)
        log_event(log, logging.INFO, "round aggregated", round=round_, updates=len(updates),
                  failures=len(failures))
        return {"chain": self.sub.chain_id, "tx": agg_tx.hex(), "model": address, "samples": samples,
                "anchor_tx": anchor_tx.hex(), "updates": len(updates), "failures": failures}

    async def _collect_updates(self, round_: int, base: bytes) -> tuple[list[dict[str, Any]], list[Any]]:
        """Ask every pool to train; keep the updates that are committed, succeeded and match their blob."""
        req = {"round": round_, "base": base.hex()}
        replies = await asyncio.gather(
            *(pool.post_json("/v1/fl/train", req) for pool in self.pools), return_exceptions=True
        )
        updates: list[dict[str, Any]] = []
        failures: list[Any] = []
        for pool, reply in zip(self.pools, replies, strict=True):
            if isinstance(reply, BaseException):
                failures.append({"pool": pool.base_url, "error": str(reply) or type(reply).__name__})
                continue
            failures.extend(reply.get("failures", []))
            for up in reply.get("updates", []):
                problem = await self._check_update(up, round_, base)
                if problem:
                    failures.append({"device": up.get("device"), "error": problem})
                else:
                    updates.append(up)
        return updates, failures

    async def _check_update(self, up: dict[str, Any], round_: int, base: bytes) -> str | None:
        node = self.ctx.chain
        assert node is not None
        try:
            tx_hash = bytes.fromhex(up["tx"])
            if await node.wait_for_tx(tx_hash, self.deadline_s) is None:
                return "update transaction was not committed before the deadline"
            receipt = node.store.receipt(tx_hash)
            if not receipt.success:
                return f"update rejected on chain: {receipt.error}"
            args = node.store.tx(tx_hash).call().args
            if args["round"] != round_ or args["base"] != base or args["model"].hex() != up["model"]:
                return "update transaction does not match the reported model"
            self.ctx.blobs.get(up["model"])  # present and intact
        except (FedledgerError, KeyError, TypeError, ValueError) as exc:
            return str(exc) or type(exc).__name__
        up["samples"] = args["samples"]
        return None
