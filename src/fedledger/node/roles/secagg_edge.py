"""Seed 001 at an edge: check, filter and sign the packets, drive the sharing, reconstruct c_i, verify c.

One device round (after the pools trained and dealt, ``secagg_devices.py``):

1. every update's packet is fetched and checked against the digest its device
   bound in ``fl.submit_update``; the challenge binds all of them;
2. the pools return their devices' sketches; the edge checks
   COM(g + η) = COM(g) · COM(η), applies the top-n filter, signs the
   acceptance and records it with ``secagg.accept``;
3. the pools' participants return share sums (H(S_Dij) recorded on chain) or
   complaints. A complaint that proves its dealer wrong (``check_complaint``)
   penalises the dealer on chain (``secagg.penalise``) and the sharing is
   repeated without it;
4. the edge checks each share sum against its recorded hash and the accepted
   sketches (a wrong one penalises its sender), and reconstructs c_i from any
   t of them: up to n − t participants may drop out.

Step 6, ``POST /v1/fl/secagg/verify``: once the cloud has recorded H(c) on the
main chain, the edge records COM(c_i) under the challenge H(c) fixes, waits
for every listed edge's commitment, and records its verdict on
COM(c) = Σ COM(c_i). A refusal penalises the cloud.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from aiohttp import web

from fedledger.contracts.base import read_state
from fedledger.contracts.fl import stage
from fedledger.crypto.keys import SigningKey, address_of
from fedledger.crypto.sealed import is_sealed, open_sealed
from fedledger.errors import FedledgerError, UsageError, VerificationFailed
from fedledger.fl.secagg import protocol as P
from fedledger.fl.secagg import wire
from fedledger.fl.secagg.sketch import SketchMatrix
from fedledger.fl.weights import Weights
from fedledger.logs import log_event
from fedledger.net.api import read_json

if TYPE_CHECKING:
    from fedledger.node.roles.edge import EdgeRole

log = logging.getLogger("fedledger.edge")
SECURE_SUM = b"fedledger/secagg-sum"  # sealing context of c_i and c


def open_vector(stored: bytes, key: SigningKey, length: int | None = None) -> np.ndarray:
    """A stored field vector (c_i or c), sealed or plain; its digest is checked against the chain by the caller."""
    return wire.vector_from(open_sealed(stored, key, context=SECURE_SUM) if is_sealed(stored) else stored, length)


@dataclass
class EdgeSum:
    """What a secure device round leaves the edge with."""

    model: Weights
    total: np.ndarray
    weight: int
    updates: list[bytes]  # the accepted updates' tx hashes, in the acceptance's order
    attempt: int


class SecureEdge:
    """The edge's side of seed 001 (see the module docstring)."""

    def __init__(self, edge: EdgeRole) -> None:
        self.edge = edge
        self.sums: dict[int, np.ndarray] = {}  # round → c_i, kept for step 6
        edge.ctx.api.app.router.add_post("/v1/fl/secagg/verify", self.handle_verify)

    @property
    def participants(self) -> list[str]:
        return [k.hex() for k in self.edge.devices]

    def spec(self) -> dict[str, Any]:
        """What the pools need to deal: the participants, in point order."""
        return {"participants": self.participants}

    async def aggregate(self, round_: int, sub_round: int, base: bytes, weights: Weights,
                        updates: list[dict[str, Any]], failures: list[Any]) -> EdgeSum:
        """Steps 1–5 over the pools' replies ``updates`` (already checked to be committed updates)."""
        edge = self.edge
        label = stage(round_, sub_round)
        params = edge.settings.secagg_params(len(self.participants))
        context = wire.round_context(edge.sub.chain_id, label, base)
        points = {p: i + 1 for i, p in enumerate(self.participants)}
        packets, blobs, boxes, txs = {}, {}, {}, {}
        for up in updates:
            try:
                packet = await self._packet(up, points)
            except (FedledgerError, KeyError, TypeError, ValueError) as exc:
                failures.append({"device": up.get("device"), "error": f"packet refused: {exc}"})
                continue
            packets[packet.device], blobs[packet.device] = packet, up["secagg"]["packet"]["masked"]
            boxes[packet.device], txs[packet.device] = up["secagg"]["boxes"], bytes.fromhex(up["tx"])
        if not packets:
            raise VerificationFailed(f"round {label}: no device sent a valid packet")
        challenge = P.round_challenge(context, list(packets.values()))
        length = next(iter(packets.values())).masked.shape[0] + params.rows
        matrix = SketchMatrix.from_seed(challenge, length, params.rows)
        sketches = await self._sketches(round_, sub_round, challenge, packets, params.rows)
        acc = P.accept(edge.key, context, challenge, list(packets.values()), sketches, matrix, params,
                       len(self.participants))
        for name, why in acc.rejected:
            failures.append({"device": name, "error": f"rejected by the edge: {why}"})
        attempt = 0
        while True:
            if not acc.accepted:
                raise VerificationFailed(f"round {label}: no device update was accepted")
            attempt += 1
            await edge.sub.call(edge.key, "secagg", "accept", {
                "round": round_, "sub_round": sub_round, "attempt": attempt, "challenge": challenge,
                "updates": [txs[n] for n in acc.accepted], "commitments": list(acc.commitments)})
            sums, complaints = await self._share_sums(round_, sub_round, attempt, acc, packets, blobs, sketches,
                                                      boxes)
            guilty = await self._judge(round_, sub_round, complaints, packets, sketches, matrix, points)
            if not guilty:
                break
            for name in guilty:
                failures.append({"device": name, "error": "penalised: a share it dealt is provably wrong"})
            acc = P.exclude(acc, edge.key, {n: "penalised for a bad share" for n in sorted(guilty)})
        total = await self._reconstruct(round_, sub_round, attempt, acc, sums, sketches, matrix, params, points)
        weight = sum(acc.weights)
        self.sums = {r: c for r, c in self.sums.items() if r >= round_ - 1}  # step 6 of older rounds is over
        self.sums[round_] = total
        return EdgeSum(wire.model_from_sum(weights, total, weight, params.frac_bits), total, weight,
                       [txs[n] for n in acc.accepted], attempt)

    async def _packet(self, up: dict[str, Any], points: dict[str, int]) -> P.Packet:
        """A device's packet, checked against what the device bound on chain."""
        obj = up["secagg"]["packet"]
        tx = self.edge.node.store.tx(bytes.fromhex(up["tx"]))
        record, device = tx.call().args, tx.sender.hex()
        if obj["device"] != device or points.get(device) != int(obj["point"]):
            raise VerificationFailed("the packet is not its device's, or not at its point")
        if int(obj["weight"]) != int(record["samples"]):
            raise VerificationFailed("the packet's weight is not the recorded sample count")
        masked = wire.vector_from(await asyncio.to_thread(self.edge.ctx.blobs.get, obj["masked"]))
        packet = wire.packet_from(obj, masked)
        if packet.digest() != record.get("masked"):
            raise VerificationFailed("the packet differs from the one its device bound in fl.submit_update")
        return packet

    async def _sketches(self, round_: int, sub_round: int, challenge: bytes, packets: dict[str, P.Packet],
                        rows: int) -> dict[str, P.Sketches]:
        req = {"round": round_, "sub_round": sub_round, "challenge": challenge.hex(),
               "packets": [[p.point, p.digest().hex()] for p in packets.values()]}
        replies = await asyncio.gather(*(pool.post_json("/v1/fl/secagg/sketch", req) for pool in self.edge.pools),
                                       return_exceptions=True)
        out: dict[str, P.Sketches] = {}
        for reply in replies:
            if isinstance(reply, BaseException):
                continue  # that pool's devices send no sketches: accept() discards their packets
            for name, obj in reply.get("sketches", {}).items():
                if name in packets:
                    out[name] = wire.sketches_from(obj, rows)
        return out

    async def _share_sums(self, round_: int, sub_round: int, attempt: int, acc: P.Acceptance,
                          packets: dict[str, P.Packet], blobs: dict[str, str], sketches: dict[str, P.Sketches],
                          boxes: dict[str, dict[str, str]]) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]]]:
        req = {"round": round_, "sub_round": sub_round, "attempt": attempt, "participants": self.participants,
               "acceptance": wire.acceptance_json(acc),
               "packets": {n: wire.packet_json(packets[n], blobs[n]) for n in acc.accepted},
               "sketches": {n: wire.sketches_json(sketches[n]) for n in acc.accepted},
               "boxes": {n: boxes[n] for n in acc.accepted}}
        replies = await asyncio.gather(*(pool.post_json("/v1/fl/secagg/sum", req) for pool in self.edge.pools),
                                       return_exceptions=True)
        sums: dict[str, dict[str, Any]] = {}
        complaints: list[dict[str, Any]] = []
        for reply in replies:
            if isinstance(reply, BaseException):
                continue  # its participants dropped out
            sums.update({s["device"]: s for s in reply.get("sums", []) if s.get("device") in self.participants})
            complaints.extend(reply.get("complaints", []))
        return sums, complaints

    async def _judge(self, round_: int, sub_round: int, complaints: list[dict[str, Any]],
                     packets: dict[str, P.Packet], sketches: dict[str, P.Sketches], matrix: SketchMatrix,
                     points: dict[str, int]) -> set[str]:
        """Dealers that a complaint proves wrong, each penalised on chain once."""
        guilty: set[str] = set()
        for c in complaints:
            dealer, accuser = c.get("dealer"), c.get("accuser")
            if dealer in guilty or dealer not in packets or accuser not in points:
                continue
            try:
                share = wire.vector_from(self.edge.ctx.blobs.get(c["share"]))
            except (FedledgerError, KeyError, TypeError):
                continue
            complaint = P.Complaint(accuser, dealer, points[accuser], share, str(c.get("reason", "")))
            if P.check_complaint(complaint, packets[dealer], sketches[dealer], points[accuser] - 1, matrix):
                guilty.add(dealer)
                await self.edge.sub.call(self.edge.key, "secagg", "penalise", {
                    "round": round_, "sub_round": sub_round, "offender": bytes.fromhex(dealer),
                    "reason": f"bad share to {accuser[:16]}: {complaint.reason}"[:256],
                    "evidence": bytes.fromhex(c["share"])})
        return guilty

    async def _reconstruct(self, round_: int, sub_round: int, attempt: int, acc: P.Acceptance,
                           sums: dict[str, dict[str, Any]], sketches: dict[str, P.Sketches], matrix: SketchMatrix,
                           params: P.Params, points: dict[str, int]) -> np.ndarray:
        """Step 5: share sums checked against their on-chain hashes; c_i from any t; wrong senders penalised."""
        label = stage(round_, sub_round)
        vectors: dict[int, np.ndarray] = {}
        recorded: dict[int, bytes] = {}
        for device, s in sums.items():
            try:
                await self.edge.committed(bytes.fromhex(s["tx"]), "secagg.share_sum")
                vectors[points[device]] = wire.vector_from(self.edge.ctx.blobs.get(s["sum"]), matrix.length)
            except (FedledgerError, KeyError, TypeError, ValueError):
                continue  # not recorded or unreadable: a dropout
            rec = read_state(self.edge.node.chain.state, "secagg",
                             f"sum/{label}/{attempt}/{address_of(bytes.fromhex(device)).hex()}")
            if rec is not None:
                recorded[points[device]] = rec["hash"]
        total, refused = P.reconstruct(acc, vectors, recorded, sketches, matrix, params)
        by_point = {v: k for k, v in points.items()}
        for point, why in refused:
            await self.edge.sub.call(self.edge.key, "secagg", "penalise", {
                "round": round_, "sub_round": sub_round, "offender": bytes.fromhex(by_point[point]),
                "reason": why, "evidence": bytes.fromhex(sums[by_point[point]]["sum"])})
        return total

    # -- step 6 ------------------------------------------------------------------------------------

    async def handle_verify(self, request: web.Request) -> web.Response:
        """``{"round"}``: commit COM(c_i), then check the cloud's c; returns ``{"ok", "reason"}``."""
        body = await read_json(request)
        try:
            round_ = int(body["round"])
        except (KeyError, TypeError, ValueError) as exc:
            raise UsageError(f"bad verify request: {exc}") from None
        return web.json_response(await self.verify(round_))

    async def verify(self, round_: int) -> dict[str, Any]:
        edge = self.edge
        mine = self.sums.get(round_)
        if mine is None:
            raise UsageError(f"this edge holds no secure sum of round {round_}")
        rec = await edge.cloud.state("secagg", f"cloud_sum/{round_}")  # bytes arrive as hex
        if rec is None:
            raise VerificationFailed(f"the main chain holds no cloud sum of round {round_}")
        listed = [e for e in rec["edges"] if e["chain"] == edge.sub.chain_id]
        if not listed:
            return {"ok": False, "reason": "the cloud's sum leaves this edge out"}
        reason = None if listed[0]["sum"] == P.digest(mine).hex() else "the cloud's sum lists another c_i here"
        rows = edge.settings.secagg_params(1).rows
        total_hash = bytes.fromhex(rec["total"])
        seed = P.result_challenge(wire.result_context(edge.main_chain_id, round_),
                                  [bytes.fromhex(e["sum"]) for e in rec["edges"]], total_hash)
        matrix = SketchMatrix.from_seed(seed, mine.shape[0], rows)
        await edge.main.call(edge.key, "secagg", "commit", {"round": round_,
                                                            "com": wire.vector_bytes(matrix.apply(mine))})
        coms = await self._commitments(round_, [e["chain"] for e in rec["edges"]], rows)
        if reason is None:
            try:
                total = open_vector(await edge.cloud.get_blob(rec["blob"]), edge.key, mine.shape[0])
                reason = P.verify_cloud_sum(total, total_hash, coms, matrix)
            except FedledgerError as exc:
                reason = f"the cloud's sum cannot be read: {exc}"
        await edge.main.call(edge.key, "secagg", "verdict", {"round": round_, "ok": reason is None,
                                                             "reason": (reason or "")[:256]})
        log_event(log, logging.INFO if reason is None else logging.WARNING, "secure sum verified",
                  round=round_, ok=reason is None, reason=reason or "")
        return {"ok": reason is None, "reason": reason or ""}

    async def _commitments(self, round_: int, chains: list[str], rows: int) -> list[np.ndarray]:
        """Every listed edge's COM(c_i) from the main chain, once all are there."""
        deadline = time.monotonic() + self.edge.deadline_s
        while True:
            recs = [await self.edge.cloud.state("secagg", f"commit/{round_}/{c}") for c in chains]
            if all(r is not None for r in recs):
                return [wire.vector_from(bytes.fromhex(r["com"]), rows) for r in recs]
            if time.monotonic() > deadline:
                raise VerificationFailed(f"not every edge committed COM(c_i) for round {round_} in time")
            await asyncio.sleep(0.2)
