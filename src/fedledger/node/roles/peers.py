"""Decentralised rounds of a device pool: no aggregator (seed 002 §5.2.2 steps 9–18).

``POST /v1/fl/decentralised`` on a device pool runs ``rounds`` rounds. Every
device of the pool, each on its own:

1. (round 1) opens the round-0 global model, whose authenticator the pool
   first checks on the main chain (seed 004 §III-A, as in hierarchical
   rounds); later rounds start from the device's own view of the previous
   round;
2. trains in recorded steps and records ``fl.submit_update`` naming the model
   it trained from (step 10–13); its update is sealed for every device of the
   pool (its peers), its edge and the task's readers;
3. once all of the pool's devices submitted, the pool asks the sub-chain to
   ``fl.close_round`` (an "already closed" answer is fine; with devices
   missing it retries until the contract's deadline lets it close) and waits
   for ``closed/<round>``, the set every device must aggregate (step 14);
4. reads every closed update's record, fetches its blob from the edge blob
   store and validates it (``fl/peer.py``; step 15–16), votes on each peer's
   update with ``fl.vote`` (0 when rejected, otherwise the accuracy of the
   peer's model on the device's own readings), averages the valid updates by
   sample count into its own view (step 17), stores the view sealed for
   itself, the task owner and the task's readers, and records its hash with
   ``fl.record_view``.

Each device keeps its own view (device → weights); no computed view is ever
shared between devices, so honest devices agreeing is a result, checkable on
chain (``view/<round>/<address>``), not an assumption.

Fault injection for tests: the pool's fl setting ``"faulty": {"<device
name>": "bad-blob"}`` makes that device record ``fl.submit_update`` with a
``blob`` that is another model's stored blob (its starting model), so the blob
does not open to the recorded model hash. Names of devices of other pools are
ignored.

Updates are sealed for the devices of this pool only: a sub-chain's devices
are expected to be served by one pool (as ``make_deployment`` lays them out).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from fedledger.crypto.keys import address_of
from fedledger.errors import (
    BlobCorrupted,
    ConfigError,
    ContractError,
    DecodeError,
    FedledgerError,
    NotFound,
    UsageError,
    VerificationFailed,
)
from fedledger.logs import log_event
from fedledger.node.roles.base import fetch_task, task_readers
from fedledger.storage.artefacts import MODEL, open_artefact, seal_artefact

if TYPE_CHECKING:
    from fedledger.fl.peer import Opened, UpdateRecord
    from fedledger.fl.weights import Weights
    from fedledger.node.roles.devices import Device, DevicePoolRole

log = logging.getLogger("fedledger.peers")

FAULTS = ("bad-blob",)
CLOSE_RETRY_S = 1.0
# Refusals of ``fl.close_round`` that only mean "not yet" or "someone else closed it".
_CLOSE_WAIT = ("already closed", "have not submitted")


class PeerRounds:
    """Runs decentralised rounds for the devices of one pool."""

    def __init__(self, pool: DevicePoolRole) -> None:
        self.pool = pool
        fl = pool.ctx.cfg.fl
        self.close_timeout_s = float(fl.get("deadline_s", 120))
        faulty = fl.get("faulty", {})
        if not isinstance(faulty, dict) or not all(v in FAULTS for v in faulty.values()):
            raise ConfigError(f"{pool.ctx.cfg.name}: fl.faulty maps device names to one of {FAULTS}")
        names = {d.name for d in pool.devices}
        self.faults: dict[str, str] = {k: v for k, v in faulty.items() if k in names}
        self._lock = asyncio.Lock()
        self._local: dict[str, Any] = {}  # device name -> its readings as one Dataset, for scoring

    async def run(self, rounds: int, base: bytes, blob: bytes) -> dict[str, Any]:
        """Rounds 1..``rounds`` from the round-0 global model ``base`` (stored at ``blob`` by the cloud)."""
        from fedledger.audit.chainview import verify_global_model
        from fedledger.fl.weights import decode_weights

        pool = self.pool
        async with self._lock:
            main = pool.ctx.main_view()
            task = await fetch_task(main.client, pool.settings)
            if task["config"].get("mode") != "decentralised":
                raise UsageError("the main chain's task is not a decentralised job (fl mode)")
            await verify_global_model(main, 0, base, pool.settings.program_hash())
            await pool._collect(task)
            stored = await pool.ctx.client(pool.ctx.peer("cloud")).get_blob(blob.hex())
            views: dict[str, tuple[bytes, Weights]] = {}
            failures: list[dict[str, Any]] = []
            for device in pool.devices:
                try:
                    views[device.name] = (base, decode_weights(open_artefact(stored, base, device.key, MODEL)))
                except FedledgerError as exc:
                    failures.append({"round": 0, "device": device.name, "error": str(exc)})
            out = [await self._round(task, r, views, failures) for r in range(1, rounds + 1)]
            return {"chain": pool.chain_id, "rounds": out, "failures": failures}

    async def _round(self, task: dict[str, Any], round_: int, views: dict[str, tuple[bytes, Weights]],
                     failures: list[dict[str, Any]]) -> dict[str, Any]:
        pool = self.pool
        peers = [d.key.public_key for d in pool.devices]
        submitted: list[tuple[Device, bytes]] = []
        for device in pool.devices:
            if device.name not in views:
                continue
            base, weights = views[device.name]
            try:
                bad = await self._bad_blob(task, device, weights, peers) \
                    if self.faults.get(device.name) == "bad-blob" else None
                up = await pool._train_device(task, device, round_, 1, base, weights, peers=peers, update_blob=bad)
                submitted.append((device, bytes.fromhex(up["tx"])))
            except FedledgerError as exc:
                failures.append({"round": round_, "device": device.name, "error": str(exc)})
        committed = []
        for device, tx in submitted:
            try:
                await pool.sub.wait_success(tx, "fl.submit_update", self.close_timeout_s)
                committed.append(device)
            except FedledgerError as exc:
                failures.append({"round": round_, "device": device.name, "error": str(exc)})
        closed = await self._close(round_, committed)
        results: dict[str, Any] = {}
        for device in pool.devices:
            if device.name not in views:
                continue
            try:
                results[device.name] = await self._own_view(task, device, round_, closed, views)
            except FedledgerError as exc:
                views.pop(device.name)
                failures.append({"round": round_, "device": device.name, "error": str(exc)})
                log_event(log, logging.WARNING, "device left the training", device=device.name, error=str(exc))
        log_event(log, logging.INFO, "decentralised round done", round=round_, closed=len(closed),
                  views=len({v["model"] for v in results.values()}))
        return {"round": round_, "closed": [tx.hex() for tx in closed], "devices": results}

    async def _bad_blob(self, task: dict[str, Any], device: Device, start: Weights, peers: list[bytes]) -> bytes:
        """Fault injection for tests: a stored blob of another model (the device's starting model)."""
        from fedledger.fl.weights import encode_weights

        _, stored = seal_artefact(encode_weights(start), self.pool.readers(task, device, *peers), MODEL)
        return bytes.fromhex(await self.pool.edge.put_blob(stored))

    async def _close(self, round_: int, closers: list[Device]) -> list[bytes]:
        """Step 14: close the round (or wait for a peer or the deadline to) and return ``closed/<round>``.

        With devices of other pools still missing, the next attempt waits until the sub-chain reaches the
        round's deadline height (first update + ``DEADLINE_BLOCKS``).
        """
        from fedledger.contracts.fl import DEADLINE_BLOCKS

        pool = self.pool
        loop = asyncio.get_running_loop()
        give_up = loop.time() + self.close_timeout_s
        next_try = 0
        while True:
            closed = await pool.edge.state("fl", f"closed/{round_}")
            if closed is not None:
                return [bytes.fromhex(tx) for tx in closed["updates"]]
            if loop.time() > give_up:
                raise VerificationFailed(f"round {round_} did not close within {self.close_timeout_s:g}s")
            if closers and int((await pool.edge.status())["height"]) >= next_try:
                try:
                    await pool.sub.call(closers[0].key, "fl", "close_round", {"round": round_})
                    continue
                except ContractError as exc:
                    if not any(m in str(exc) for m in _CLOSE_WAIT):
                        raise
                    start = await pool.edge.state("fl", f"round_start/{round_}")
                    next_try = (int(start) if start is not None else 0) + DEADLINE_BLOCKS
            await asyncio.sleep(CLOSE_RETRY_S)

    async def _own_view(self, task: dict[str, Any], device: Device, round_: int, closed: list[bytes],
                        views: dict[str, tuple[bytes, Weights]]) -> dict[str, Any]:
        """Steps 15–17 for one device: fetch, validate, vote, average, store and record its own view."""
        from fedledger.fl.peer import UpdateRecord, accuracy_score, build_view, vote_scores
        from fedledger.fl.weights import encode_weights

        pool = self.pool
        base, start = views[device.name]
        records = []
        for tx in closed:
            obj = await pool.edge.state("fl", f"update_tx/{tx.hex()}")
            if obj is not None:
                records.append(UpdateRecord.from_state(obj))
        devices = await self._registered_devices({rec.device for rec in records})
        opened = {rec.tx: await self._open(device, rec) for rec in records}
        view = await asyncio.to_thread(build_view, round_, closed, records, lambda rec: opened[rec.tx],
                                       devices=devices, base=base, like=start)
        score = accuracy_score(pool.settings.model, self._readings(device))
        owners = {rec.tx: rec.device for rec in records}
        scores = await asyncio.to_thread(vote_scores, view, closed, device.key.public_key, score, owners)
        txs = [await pool.sub.submit(device.key, "fl", "vote", {"round": round_, "update_tx": tx, "score": s})
               for tx, s in scores.items()]
        readers = pool.settings.sealed_for(device.key.public_key, bytes.fromhex(task["owner"]),
                                           readers=task_readers(task))
        _, stored = seal_artefact(encode_weights(view.weights), readers, MODEL)
        address = bytes.fromhex(await pool.edge.put_blob(stored))
        txs.append(await pool.sub.submit(device.key, "fl", "record_view", {
            "round": round_, "model": view.model, "blob": address, "updates": [rec.tx for rec in view.accepted],
        }))
        for tx in txs:
            await pool.sub.wait_success(tx, "fl.vote/record_view")
        views[device.name] = (view.model, view.weights)
        return {"address": device.key.address.hex(), "model": view.model.hex(), "blob": address.hex(),
                "samples": view.samples, "accepted": [rec.tx.hex() for rec in view.accepted],
                "rejected": [r.to_json() for r in view.rejected], "votes": {tx.hex(): s for tx, s in scores.items()}}

    async def _registered_devices(self, keys: set[bytes]) -> set[bytes]:
        """Which of ``keys`` the sub-chain's identity registry holds as devices of this chain."""
        out = set()
        for pk in keys:
            ident = await self.pool.edge.state("identity", f"id/{address_of(pk).hex()}")
            if ident is not None and ident["role"] == "device" and ident["home_chain"] == self.pool.chain_id:
                out.add(pk)
        return out

    async def _open(self, device: Device, rec: UpdateRecord) -> Opened:
        """An update's weights from the edge blob store, or why the blob does not hold its recorded model.

        Reasons name only the record, never the reader, so every honest device gives the same one.
        """
        from fedledger.fl.weights import decode_weights

        try:
            stored = await self.pool.edge.get_blob(rec.blob.hex())
        except NotFound:
            return "the update's blob is not in the blob store"
        except BlobCorrupted:
            return "the update's blob does not match its address"
        try:
            plain = open_artefact(stored, rec.model, device.key, MODEL)
        except (VerificationFailed, DecodeError) as exc:
            log_event(log, logging.WARNING, "update blob refused", device=device.name, tx=rec.tx.hex(),
                      error=str(exc))
            return "the update's blob does not open to its recorded model hash"
        try:
            return decode_weights(plain)
        except DecodeError:
            return "the update's blob is not an encoded model"

    def _readings(self, device: Device) -> Any:
        """The device's own recorded readings as one dataset (what it scores peers' models on)."""
        import numpy as np

        from fedledger.fl.data import Dataset

        if device.name not in self._local:
            self._local[device.name] = Dataset(np.concatenate([b.data.x for b in device.batches]),
                                               np.concatenate([b.data.y for b in device.batches]))
        return self._local[device.name]
