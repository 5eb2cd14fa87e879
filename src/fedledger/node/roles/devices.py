"""Device pool: many IoT devices in one process, each with its own key and data.

Each device keeps its readings to itself. Before its first round it collects
them as signed batches (seed 000 §V-A): every batch is sealed for the device,
its edge and the task's readers, stored in the edge data centre's blob store,
and recorded on the sub-chain as a pointer transaction (d^E, σ, ptr), signed
by the device or, with ``delegate_signing``, by its edge. Training uses only
batches whose pointer transaction committed.

For a round it checks the starting model against the chain (the global
model's authenticator on the main chain, seed 004 §III-A, or its edge's
previous sub-round aggregate on the sub-chain), trains in recorded steps
(seed 000 §V-B: one ``fl.record_step`` per step, each intermediate model
stored), uploads its sealed update to its edge and records ``fl.submit_update``
naming the last step.

``POST /v1/fl/decentralised`` runs rounds without an aggregator (seed 002
§5.2.2 steps 9–18; ``peers.py``): after each round every device fetches and
validates all of its peers' updates, votes on them, and averages the valid
ones into its own view of the global model, which it trains from next. Its
updates are then sealed for the pool's devices too (its peers).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from fedledger.contracts.fl import data_message, stage
from fedledger.crypto.keys import Domain, SigningKey
from fedledger.errors import ConfigError, FedledgerError, UsageError, VerificationFailed
from fedledger.logs import log_event
from fedledger.net.api import read_json
from fedledger.node.roles.base import FLSettings, RoleContext, fetch_task, task_readers
from fedledger.node.roles.peers import PeerRounds
from fedledger.node.roles.secagg_devices import SecureDevices
from fedledger.node.submit import RemoteChain
from fedledger.storage.artefacts import DATA, MODEL, open_artefact, seal_artefact

log = logging.getLogger("fedledger.devices")


@dataclass
class Device:
    name: str
    key: SigningKey
    partition: int
    batches: list[Any] = field(default_factory=list)  # fl.steps.Batch, once collected


class DevicePoolRole:
    def __init__(self, ctx: RoleContext) -> None:
        from fedledger.fl.data import partition
        from fedledger.fl.datasets import load_dataset

        self.ctx = ctx
        fl = ctx.cfg.fl
        self.settings = FLSettings.from_config(fl)
        try:
            self.devices = [
                Device(d["name"], SigningKey.from_seed(bytes.fromhex(d["key_seed"])), int(d["partition"]))
                for d in fl["devices"]
            ]
            self.chain_id = str(fl["chain_id"])
            self.edge_key = bytes.fromhex(fl["edge_key"]) if "edge_key" in fl else None
            partitions = int(fl["partitions"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"{ctx.cfg.name}: bad devices settings: {exc}") from None
        s = self.settings
        train, _test, _info = load_dataset(s.dataset, data_dir=s.data_path, seed=s.seed)
        parts = partition(train.y, partitions, s.partition, seed=s.seed, alpha=s.alpha)
        self._train, self._parts = train, parts
        self.edge = ctx.client(ctx.peer("edge"))
        self.sub = RemoteChain(self.edge, self.chain_id)
        self._collected = asyncio.Lock()
        self.peers = PeerRounds(self)
        self.secure = SecureDevices(self) if self.settings.secure else None
        ctx.api.app.router.add_post("/v1/fl/train", self.handle_train)
        ctx.api.app.router.add_post("/v1/fl/decentralised", self.handle_decentralised)
        ctx.api.status_extra = lambda: {"devices": len(self.devices),
                                        "device_keys": [d.key.public_key.hex() for d in self.devices]}

    async def handle_train(self, request: web.Request) -> web.Response:
        body = await read_json(request)
        try:
            round_ = int(body["round"])
            base = bytes.fromhex(body["base"])
            sub_round = int(body.get("sub_round", 1))
            blob = bytes.fromhex(body.get("blob") or body["base"])
            spec = body.get("secagg")
        except (KeyError, TypeError, ValueError) as exc:
            raise UsageError(f"bad train request: {exc}") from None
        if (spec is None) != (self.secure is None):
            raise UsageError("the edge and this pool disagree on secure aggregation (fl.aggregation)")
        return web.json_response(await self.train_round(round_, base, blob, sub_round, spec))

    async def handle_decentralised(self, request: web.Request) -> web.Response:
        """Seed 002 §5.2.2: ``{"rounds", "base", "blob"}``, rounds without an aggregator (``peers.py``)."""
        body = await read_json(request)
        try:
            rounds = body["rounds"]
            base = bytes.fromhex(body["base"])
            blob = bytes.fromhex(body.get("blob") or body["base"])
        except (KeyError, TypeError, ValueError) as exc:
            raise UsageError(f"bad decentralised request: {exc}") from None
        if not isinstance(rounds, int) or isinstance(rounds, bool) or not 1 <= rounds <= 1000:
            raise UsageError("rounds must be an integer from 1 to 1000")
        return web.json_response(await self.peers.run(rounds, base, blob))

    def readers(self, task: dict[str, Any], device: Device, *peers: bytes) -> list[bytes] | None:
        """Who may open this device's artefacts: itself, its edge, ``peers`` and the task's readers (None: plain).

        Under secure aggregation the edge is left out: it sees only masked updates.
        """
        edge = [self.edge_key] if self.edge_key and not self.settings.secure else []
        return self.settings.sealed_for(device.key.public_key, *edge, *peers, readers=task_readers(task))

    async def train_round(self, round_: int, base: bytes, blob: bytes, sub_round: int = 1,
                          secagg: dict[str, Any] | None = None) -> dict[str, Any]:
        from fedledger.audit.chainview import verify_global_model
        from fedledger.fl.weights import decode_weights

        task = await fetch_task(self.ctx.main_view().client, self.settings)
        if sub_round == 1:
            await verify_global_model(self.ctx.main_view(), round_ - 1, base, self.settings.program_hash())
        else:
            prev = await self.edge.state("fl", f"aggregate/{stage(round_, sub_round - 1)}")
            if prev is None or prev["model"] != base.hex():
                raise VerificationFailed(f"{base.hex()[:16]}… is not the edge's sub-round {sub_round - 1} aggregate")
        await self._collect(task)
        stored = await self.edge.get_blob(blob.hex())
        updates, failures = [], []
        for device in self.devices:
            try:
                plain = open_artefact(stored, base, device.key, MODEL)
                weights = decode_weights(plain)
                updates.append(await self._train_device(task, device, round_, sub_round, base, weights,
                                                        secagg=secagg))
            except FedledgerError as exc:
                failures.append({"device": device.name, "error": str(exc)})
                log_event(log, logging.WARNING, "device failed", device=device.name, error=str(exc))
        return {"updates": updates, "failures": failures}

    async def _collect(self, task: dict[str, Any]) -> None:
        """Seed 000 §V-A, once per device: sign, seal, store and record each batch of readings."""
        from fedledger.fl.data import encode_dataset, subset
        from fedledger.fl.steps import Batch

        async with self._collected:
            pending = []
            for device in self.devices:
                if device.batches:
                    continue
                idx = self._parts[device.partition]
                size = self.settings.readings
                for start in range(0, len(idx), size):
                    data = subset(self._train, idx[start : start + size])
                    plain = encode_dataset(data)
                    data_hash, stored = seal_artefact(plain, self.readers(task, device), DATA)
                    ptr = bytes.fromhex(await self.edge.put_blob(stored))
                    args = {"device": device.key.public_key, "data": data_hash, "ptr": ptr,
                            "samples": len(data)}
                    if self.settings.delegate_signing:
                        tx = await self._delegated(args)
                    else:
                        msg = data_message(self.chain_id, device.key.public_key, data_hash, ptr, len(data))
                        args["sig"] = device.key.sign(Domain.DATA, msg)
                        tx = await self.sub.submit(device.key, "fl", "record_data", args)
                    pending.append((device, Batch(data_hash, data), tx))
            for device, batch, tx in pending:
                await self.sub.wait_success(tx, "fl.record_data")  # only recorded data is trained on
                device.batches.append(batch)

    async def _delegated(self, args: dict[str, Any]) -> bytes:
        """Ask the edge peer to sign and record a batch for a weak device."""
        body = {k: v.hex() if isinstance(v, bytes) else v for k, v in args.items()}
        out = await self.edge.post_json("/v1/fl/data", body)
        return bytes.fromhex(out["tx"])

    async def _train_device(self, task: dict[str, Any], device: Device, round_: int, sub_round: int,
                            base: bytes, weights: Any, peers: Sequence[bytes] = (),
                            update_blob: bytes | None = None, secagg: dict[str, Any] | None = None
                            ) -> dict[str, Any]:
        """Train in recorded steps and record the update; artefacts are also sealed for ``peers``.

        With ``secagg`` (the edge's round spec) the update is also dealt (seed 001 step 1,
        ``secagg_devices.py``) and its packet bound in ``fl.submit_update``.
        ``update_blob`` (fault injection for tests only) replaces the update's blob address.
        """
        from fedledger.crypto.hashing import tagged_hash
        from fedledger.fl.steps import train_steps
        from fedledger.fl.weights import encode_weights

        program = self.settings.program()
        steps = await asyncio.to_thread(train_steps, program, weights, device.batches,
                                        device=device.key.public_key, round_=round_, sub_round=sub_round)
        readers = self.readers(task, device, *peers)
        for step in steps:
            _, stored = seal_artefact(encode_weights(step.weights), readers, MODEL)
            address = bytes.fromhex(await self.edge.put_blob(stored))
            await self.sub.submit(device.key, "fl", "record_step", {
                "round": round_, "sub_round": sub_round, "index": step.index, "prev": step.prev,
                "model": step.model, "global": step.global_model, "data": step.data, "blob": address,
                "digest": step.digest,
            })
        last = steps[-1]
        samples = sum(len(b.data) for b in device.batches)
        data = tagged_hash("fedledger/data-batches", b"".join(b.data_hash for b in device.batches))
        address = update_blob or address
        args = {"round": round_, "sub_round": sub_round, "base": base, "model": last.model, "blob": address,
                "samples": samples, "data": data, "steps": len(steps)}
        extra = {}
        if secagg is not None and self.secure is not None:
            from fedledger.fl.secagg.wire import update_vector

            args["masked"], extra["secagg"] = await self.secure.deal(
                device, secagg, round_, sub_round, base, update_vector(last.weights, weights), samples)
        tx_hash = await self.sub.submit(device.key, "fl", "submit_update", args)
        return {"device": device.name, "tx": tx_hash.hex(), "model": last.model.hex(), "blob": address.hex(),
                "samples": samples, **extra}
