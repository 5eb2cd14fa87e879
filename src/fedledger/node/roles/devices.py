"""Device pool: many IoT devices in one process, each with its own key and data.

Each device keeps its data partition to itself. For a round it checks the
global model's authenticator against the main chain (seed 004 §III-A), trains
locally with a deterministic seed, uploads its model blob to its edge and
records ``fl.submit_update`` on the edge's sub-chain, signed with its own key.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from fedledger.crypto.hashing import tagged_hash
from fedledger.crypto.keys import SigningKey
from fedledger.errors import ConfigError, FedledgerError, UsageError
from fedledger.logs import log_event
from fedledger.net.api import read_json
from fedledger.node.roles.base import FLSettings, RoleContext
from fedledger.node.submit import RemoteChain

log = logging.getLogger("fedledger.devices")


@dataclass
class Device:
    name: str
    key: SigningKey
    partition: int


class DevicePoolRole:
    def __init__(self, ctx: RoleContext) -> None:
        from fedledger.fl.data import dataset_hash, load_digits_split, partition_iid, subset

        self.ctx = ctx
        fl = ctx.cfg.fl
        self.settings = FLSettings.from_config(fl)
        try:
            self.devices = [
                Device(d["name"], SigningKey.from_seed(bytes.fromhex(d["key_seed"])), int(d["partition"]))
                for d in fl["devices"]
            ]
            self.chain_id = str(fl["chain_id"])
            partitions = int(fl["partitions"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"{ctx.cfg.name}: bad devices settings: {exc}") from None
        train, _test = load_digits_split(seed=self.settings.seed)
        parts = partition_iid(len(train), partitions, seed=self.settings.seed)
        self.data = {d.name: subset(train, parts[d.partition]) for d in self.devices}
        self.data_hash = {name: dataset_hash(ds) for name, ds in self.data.items()}
        self.edge = ctx.client(ctx.peer("edge"))
        self.sub = RemoteChain(self.edge, self.chain_id)
        ctx.api.app.router.add_post("/v1/fl/train", self.handle_train)
        ctx.api.status_extra = lambda: {"devices": len(self.devices)}

    async def handle_train(self, request: web.Request) -> web.Response:
        body = await read_json(request)
        try:
            round_ = int(body["round"])
            base = bytes.fromhex(body["base"])
        except (KeyError, TypeError, ValueError) as exc:
            raise UsageError(f"bad train request: {exc}") from None
        return web.json_response(await self.train_round(round_, base))

    async def train_round(self, round_: int, base: bytes) -> dict[str, Any]:
        from fedledger.audit.chainview import verify_global_model
        from fedledger.fl.weights import decode_weights

        await verify_global_model(self.ctx.main_view(), round_ - 1, base, self.settings.program_hash())
        weights = decode_weights(await self.edge.get_blob(base.hex()))
        updates, failures = [], []
        for device in self.devices:
            try:
                updates.append(await self._train_device(device, round_, base, weights))
            except FedledgerError as exc:
                failures.append({"device": device.name, "error": str(exc)})
                log_event(log, logging.WARNING, "device failed", device=device.name, error=str(exc))
        return {"updates": updates, "failures": failures}

    async def _train_device(self, device: Device, round_: int, base: bytes, weights: Any) -> dict[str, Any]:
        from fedledger.fl.train import TrainConfig, train_local
        from fedledger.fl.weights import encode_weights

        s = self.settings
        cfg = TrainConfig(epochs=s.epochs, batch_size=s.batch_size, lr=s.lr, momentum=s.momentum)
        seed = int.from_bytes(tagged_hash("fedledger/train-seed", device.key.public_key + round_.to_bytes(8, "big"))[:4], "big")
        data = self.data[device.name]
        new, _loss = await asyncio.to_thread(train_local, s.model, weights, data, cfg, seed)
        blob = encode_weights(new)
        address = await self.edge.put_blob(blob)
        args = {"round": round_, "base": base, "model": bytes.fromhex(address), "samples": len(data),
                "data": self.data_hash[device.name]}
        tx_hash = await self.sub.submit(device.key, "fl", "submit_update", args)
        return {"device": device.name, "tx": tx_hash.hex(), "model": address, "samples": len(data)}
