"""Edge node: validator of its sub-chain, aggregator of its devices, blob site.

A round, as data flows (seed 004 §III-A, seed 000 §V):
1. check the global model's authenticator on the main chain, fetch and open
   the blob, and store a copy its devices can open;
2. run ``device_rounds`` (k) device rounds: ask the device pools to train
   (with a deadline: a late or failed pool is reported, not waited for), wait
   for the devices' ``submit_update`` transactions, check every update against
   its record and re-run ``verify_steps`` of its recorded training steps
   (seed 000 §V-B: peers verify M_(i+1) before accepting it), hand the
   accepted updates and the failures to its strategy (FedAvg by sample count,
   at least ``min_results`` updates) — or, with ``aggregation = "secagg"``,
   runs seed 001 with its devices and reconstructs only their weighted sum
   (``secagg_edge.py``) — seal and store the aggregate,
   ``record_aggregate`` listing the updates in the order they were combined; sub-round j+1
   starts from sub-round j's aggregate;
3. wait until a quorum-signed anchor of the sub-chain at or above the last
   aggregate's block reaches the main chain (Type-II, ``interlock.anchor_subchain``;
   this node relays its sub-chain's anchors as they are signed).

It also signs data batches for devices that delegate signing (seed 000 §V-A).
"""

from __future__ import annotations

import asyncio
import logging
import random
from typing import Any

from aiohttp import web

from fedledger.audit.chainview import verify_global_model
from fedledger.contracts.base import read_state
from fedledger.contracts.fl import data_message, stage
from fedledger.crypto.keys import Domain, address_of
from fedledger.errors import ConfigError, FedledgerError, UsageError, VerificationFailed
from fedledger.fl.secagg.protocol import digest
from fedledger.fl.secagg.wire import vector_bytes
from fedledger.fl.strategy import Failure, FedAvg, TrainRes
from fedledger.fl.weights import Weights, decode_weights, encode_weights
from fedledger.logs import log_event
from fedledger.net.api import read_json
from fedledger.node.roles.base import FLSettings, RoleContext, fetch_task, task_readers
from fedledger.node.roles.relay import AnchorRelay
from fedledger.node.roles.secagg_edge import SECURE_SUM, SecureEdge
from fedledger.node.submit import LocalChain, RemoteChain
from fedledger.storage.artefacts import DATA, MODEL, open_artefact, store_artefact

log = logging.getLogger("fedledger.edge")


class EdgeRole:
    def __init__(self, ctx: RoleContext) -> None:
        if ctx.chain is None:
            raise ConfigError(f"{ctx.cfg.name}: an edge node needs a sub-chain")
        self.ctx = ctx
        self.node = ctx.chain
        self.key = ctx.cfg.key
        self.settings = FLSettings.from_config(ctx.cfg.fl)
        self.deadline_s = float(ctx.cfg.fl.get("deadline_s", 120))
        self.strategy = FedAvg(min_results=self.settings.min_results)
        self.secure = SecureEdge(self) if self.settings.secure else None
        self.sub = LocalChain(ctx.chain)
        self.cloud = ctx.client(ctx.peer("cloud"))
        self.pools = [ctx.client(u, timeout_s=self.deadline_s) for u in ctx.peer_list("devices")]
        self.main_chain_id = str(ctx.cfg.fl.get("main_chain_id", "main"))
        self.main = RemoteChain(self.cloud, self.main_chain_id)
        self.relay = AnchorRelay(ctx.chain, self.key, self.main, "anchor_subchain")
        self.devices = [i.public_key for i in ctx.chain.chain.genesis.identities if i.role == "device"]
        ctx.tasks.append(asyncio.create_task(self.relay.run()))
        self._lock = asyncio.Lock()
        ctx.api.app.router.add_post("/v1/fl/round", self.handle_round)
        ctx.api.app.router.add_post("/v1/fl/data", self.handle_delegated_data)

    async def handle_round(self, request: web.Request) -> web.Response:
        body = await read_json(request)
        try:
            round_ = int(body["round"])
            base = bytes.fromhex(body["base"])
            blob = bytes.fromhex(body.get("blob") or body["base"])
        except (KeyError, TypeError, ValueError) as exc:
            raise UsageError(f"bad round request: {exc}") from None
        async with self._lock:
            return web.json_response(await self.run_round(round_, base, blob))

    async def handle_delegated_data(self, request: web.Request) -> web.Response:
        """Seed 000 §V-A: sign (d^E, ptr) for a registered device of this sub-chain and record it."""
        body = await read_json(request)
        try:
            device, data, ptr = (bytes.fromhex(body[k]) for k in ("device", "data", "ptr"))
            samples = int(body["samples"])
        except (KeyError, TypeError, ValueError) as exc:
            raise UsageError(f"bad data record: {exc}") from None
        if device not in self.devices:
            raise UsageError("not a device of this edge")
        sig = self.key.sign(Domain.DATA, data_message(self.sub.chain_id, device, data, ptr, samples))
        tx = await self.sub.submit(self.key, "fl", "record_data",
                                   {"device": device, "data": data, "ptr": ptr, "samples": samples, "sig": sig})
        return web.json_response({"tx": tx.hex()})

    def _readers(self, task: dict[str, Any]) -> list[bytes] | None:
        """The edge's artefacts are for itself, the cloud, its devices and the task's readers."""
        return self.settings.sealed_for(self.key.public_key, bytes.fromhex(task["owner"]), *self.devices,
                                        readers=task_readers(task))

    async def run_round(self, round_: int, base: bytes, blob: bytes) -> dict[str, Any]:
        task = await fetch_task(self.cloud, self.settings)
        await verify_global_model(self.ctx.main_view(), round_ - 1, base, self.settings.program_hash())
        weights = decode_weights(open_artefact(await self.cloud.get_blob(blob.hex()), base, self.key, MODEL))
        readers = self._readers(task)
        _, local = store_artefact(self.ctx.blobs, encode_weights(weights), readers, MODEL)
        failures: list[Any] = []
        result: dict[str, Any] = {}
        for sub_round in range(1, int(task["device_rounds"]) + 1):
            result = await self._device_round(round_, sub_round, base, local, weights, readers, failures)
            base, local = bytes.fromhex(result["model"]), bytes.fromhex(result["blob"])
            weights = decode_weights(open_artefact(self.ctx.blobs.get(local.hex()), base, self.key, MODEL))
        height, _ = self.node.store.tx_location(bytes.fromhex(result["tx"]))
        _, anchor_tx = await self.relay.covering(height, self.deadline_s)
        log_event(log, logging.INFO, "round aggregated", round=round_, updates=result["updates"],
                  failures=len(failures))
        return {**result, "chain": self.sub.chain_id, "anchor_tx": anchor_tx.hex(), "failures": failures}

    async def _device_round(self, round_: int, sub_round: int, base: bytes, blob: bytes, weights: Weights,
                            readers: list[bytes] | None, failures: list[Any]) -> dict[str, Any]:
        before = len(failures)
        updates = await self._collect_updates(round_, sub_round, base, blob, weights, failures)
        if self.secure is not None:
            return await self._secure_round(round_, sub_round, base, weights, readers, updates, failures)
        by_device = {up["device_key"]: up for up, _ in updates}
        agg = self.strategy.aggregate(  # the updates are recorded in the order they were combined
            round_, [TrainRes(up["device_key"], w, int(up["samples"])) for up, w in updates if w is not None],
            [Failure(str(f.get("device") or f.get("pool")), round_, str(f["error"])) for f in failures[before:]])
        model, address = store_artefact(self.ctx.blobs, encode_weights(agg.weights), readers, MODEL)
        agg_tx = await self.sub.call(self.key, "fl", "record_aggregate", {
            "round": round_, "sub_round": sub_round, "base": base, "model": model, "blob": address,
            "samples": agg.num_samples, "updates": [bytes.fromhex(by_device[d]["tx"]) for d in agg.used],
        })
        return {"tx": agg_tx.hex(), "model": model.hex(), "blob": address.hex(), "samples": agg.num_samples,
                "updates": len(agg.used)}

    async def _secure_round(self, round_: int, sub_round: int, base: bytes, weights: Weights,
                            readers: list[bytes] | None, updates: list[tuple[dict[str, Any], Any]],
                            failures: list[Any]) -> dict[str, Any]:
        """Seed 001 steps 2–5 (``secagg_edge.py``), then the aggregate and its H(c_i) on the sub-chain."""
        assert self.secure is not None
        out = await self.secure.aggregate(round_, sub_round, base, weights, [up for up, _ in updates], failures)
        model, address = store_artefact(self.ctx.blobs, encode_weights(out.model), readers, MODEL)
        _, total = store_artefact(self.ctx.blobs, vector_bytes(out.total), readers, SECURE_SUM)
        agg_tx = await self.sub.call(self.key, "fl", "record_aggregate", {
            "round": round_, "sub_round": sub_round, "base": base, "model": model, "blob": address,
            "samples": out.weight, "updates": out.updates,
            "secagg": {"attempt": out.attempt, "sum": digest(out.total)},
        })
        return {"tx": agg_tx.hex(), "model": model.hex(), "blob": address.hex(), "samples": out.weight,
                "updates": len(out.updates),
                "secagg": {"sum": total.hex(), "hash": digest(out.total).hex()}}

    async def _collect_updates(self, round_: int, sub_round: int, base: bytes, blob: bytes, weights: Weights,
                               failures: list[Any]) -> list[tuple[dict[str, Any], Weights | None]]:
        """Ask every pool to train; keep the updates that are committed, match their record and re-run."""
        req: dict[str, Any] = {"round": round_, "sub_round": sub_round, "base": base.hex(), "blob": blob.hex()}
        if self.secure is not None:
            req["secagg"] = self.secure.spec()
        replies = await asyncio.gather(
            *(pool.post_json("/v1/fl/train", req) for pool in self.pools), return_exceptions=True
        )
        updates: list[tuple[dict[str, Any], Weights | None]] = []
        for pool, reply in zip(self.pools, replies, strict=True):
            if isinstance(reply, BaseException):
                failures.append({"pool": pool.base_url, "error": str(reply) or type(reply).__name__})
                continue
            failures.extend(reply.get("failures", []))
            for up in reply.get("updates", []):
                try:
                    updates.append((up, await self._check_update(up, round_, sub_round, base, weights)))
                except (FedledgerError, KeyError, TypeError, ValueError) as exc:
                    failures.append({"device": up.get("device"), "error": str(exc) or type(exc).__name__})
        return updates

    async def committed(self, tx_hash: bytes, what: str) -> None:
        """Wait (up to the deadline) for a transaction on this sub-chain; it must have succeeded."""
        if await self.node.wait_for_tx(tx_hash, self.deadline_s) is None:
            raise VerificationFailed(f"{what} transaction was not committed before the deadline")
        receipt = self.node.store.receipt(tx_hash)
        if not receipt.success:
            raise VerificationFailed(f"{what} rejected on chain: {receipt.error}")

    async def _check_update(self, up: dict[str, Any], round_: int, sub_round: int, base: bytes,
                            weights: Weights) -> Weights | None:
        """The device's update (None under secure aggregation, where the edge never sees it)."""
        tx_hash = bytes.fromhex(up["tx"])
        await self.committed(tx_hash, "update")
        tx = self.node.store.tx(tx_hash)
        args = tx.call().args
        if (args["round"], args.get("sub_round", 1), args["base"]) != (round_, sub_round, base):
            raise VerificationFailed("update transaction is for another round or base")
        up["samples"] = args["samples"]
        up["device_key"] = tx.sender.hex()
        if self.secure is not None:
            return None
        update = decode_weights(self._open(args["blob"], args["model"], MODEL))
        steps = int(args.get("steps", 0))
        if self.settings.verify_steps:
            if steps < 1:
                raise VerificationFailed("update has no recorded training steps")
            rng = random.Random(tx_hash)  # which steps get re-run is not up to the device
            for index in sorted(rng.sample(range(1, steps + 1), min(steps, self.settings.verify_steps))):
                problem = await asyncio.to_thread(self._recompute, tx.sender, round_, sub_round, index, weights)
                if problem:
                    raise VerificationFailed(f"training step {index} does not verify: {problem}")
        return update

    def _open(self, address: bytes, plain_hash: bytes, context: bytes) -> bytes:
        return open_artefact(self.ctx.blobs.get(address.hex()), plain_hash, self.key, context)

    def _recompute(self, device: bytes, round_: int, sub_round: int, index: int, base: Weights) -> str | None:
        """Seed 000 §V-B: fetch M_i and d_(i+1) of a recorded step, re-run T, compare with M_(i+1)."""
        from fedledger.fl.data import decode_dataset
        from fedledger.fl.steps import recompute_step

        where = f"{stage(round_, sub_round)}/{address_of(device).hex()}"
        state = self.node.chain.state
        rec = read_state(state, "fl", f"step/{where}/{index}")
        if rec is None:
            return "the step is not recorded"
        if index == 1:
            prev = base
        else:
            before = read_state(state, "fl", f"step/{where}/{index - 1}")
            prev = decode_weights(self._open(before["blob"], before["model"], MODEL))
        data = read_state(state, "fl", f"data/{device.hex()}/{rec['data'].hex()}")
        batch = decode_dataset(self._open(data["ptr"], rec["data"], DATA))
        return recompute_step(self.settings.program(), rec, prev, batch)
