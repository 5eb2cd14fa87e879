"""Seed 001 at the devices of a pool: mask, commit, share; sketch on the challenge; sum the shares.

Steps, as the edge drives them (``node/roles/secagg_edge.py``):

1. after training, :meth:`SecureDevices.deal` turns the device's update into a
   packet (``protocol.deal``): its DP noise is the device's VRF output on the
   round's on-chain base model (``session.vrf_noise_key``), so the device cannot
   choose it and the edge cannot predict it. The masked update and one share
   box per participant (sealed to that device's key, so the edge that relays
   them cannot read them) are stored in the edge's blob store, and the packet
   digest goes on chain in the device's ``fl.submit_update`` (``masked``);
2. ``POST /v1/fl/secagg/sketch``: the pool recomputes the challenge from the
   packet digests the edge lists (its own devices' must be there, at their
   points) and returns the sketches of its devices' polynomials;
3. ``POST /v1/fl/secagg/sum``: each participant checks the edge's signed
   acceptance against the packets and sketches, opens its boxes, checks every
   share against its dealer's digest and sketches, records H(S_Dij) with
   ``secagg.share_sum`` and returns the sum's address — or, for a share that
   fails, a complaint with the share as public evidence.

``fl.secagg_faults`` (fault injection for tests only) makes named devices
misbehave: ``bad_shares`` (dealer → victims), ``wrong_sums`` and
``dropouts``; the cloud reads ``forge`` (``{"round", "by"}``).
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from aiohttp import web

from fedledger.contracts.fl import stage
from fedledger.crypto.keys import address_of
from fedledger.crypto.sealed import open_sealed
from fedledger.errors import ConfigError, FedledgerError, UsageError, VerificationFailed
from fedledger.fl.secagg import protocol as P
from fedledger.fl.secagg import wire
from fedledger.fl.secagg.field import Q
from fedledger.fl.secagg.session import misdeal, vrf_noise_key
from fedledger.fl.secagg.sketch import SketchMatrix, challenge_seed
from fedledger.net.api import read_json
from fedledger.storage.artefacts import seal_artefact

if TYPE_CHECKING:
    from fedledger.node.roles.devices import Device, DevicePoolRole

SHARE = b"fedledger/secagg-share"


@dataclass
class Dealt:
    device: Device
    packet: P.Packet
    dealing: P.Dealing
    params: P.Params
    context: bytes


def _faults(fl: dict[str, Any]) -> dict[str, Any]:
    faults = fl.get("secagg_faults", {})
    if not isinstance(faults, dict):
        raise ConfigError("fl.secagg_faults must be a map")
    return faults


class SecureDevices:
    """The pool's side of seed 001 (see the module docstring)."""

    def __init__(self, pool: DevicePoolRole) -> None:
        self.pool = pool
        self.faults = _faults(pool.ctx.cfg.fl)
        self.rounds: dict[str, dict[str, Dealt]] = {}  # stage → device key (hex) → what it dealt
        self._registered: tuple[str, ...] = ()  # the last participant list checked against the registry
        router = pool.ctx.api.app.router
        router.add_post("/v1/fl/secagg/sketch", self.handle_sketch)
        router.add_post("/v1/fl/secagg/sum", self.handle_sum)

    async def deal(self, device: Device, spec: dict[str, Any], round_: int, sub_round: int, base: bytes,
                   update: np.ndarray, samples: int) -> tuple[bytes, dict[str, Any]]:
        """Step 1 for one device: ``(packet digest for fl.submit_update, the packet's wire form)``."""
        try:
            participants = [str(p) for p in spec["participants"]]
        except (KeyError, TypeError) as exc:
            raise UsageError(f"bad secagg round spec: {exc}") from None
        me = device.key.public_key.hex()
        if me not in participants:
            raise VerificationFailed(f"{device.name} is not a participant of the edge's round")
        await self._check_registered(participants)
        params = self.pool.settings.secagg_params(len(participants))
        points = {p: i + 1 for i, p in enumerate(participants)}
        label = stage(round_, sub_round)
        for old in [k for k in self.rounds if k != label]:  # an earlier round's shares are no longer needed
            del self.rounds[old]
        context = wire.round_context(self.pool.chain_id, label, base)
        noise_key, _proof = vrf_noise_key(device.key, base, context)
        packet, dealing = await asyncio.to_thread(P.deal, me, update, samples, params=params, points=points,
                                                  noise_key=noise_key, share_key=os.urandom(32))
        packet, dealing = self._misdeal(device, packet, dealing, points)
        edge = self.pool.edge
        masked = await edge.put_blob(wire.vector_bytes(packet.masked))
        boxes = {}
        for p in participants:
            _, stored = seal_artefact(wire.vector_bytes(dealing.shares[points[p] - 1]), [bytes.fromhex(p)], SHARE)
            boxes[p] = await edge.put_blob(stored)
        self.rounds.setdefault(label, {})[me] = Dealt(device, packet, dealing, params, context)
        return packet.digest(), {"packet": wire.packet_json(packet, masked), "boxes": boxes}

    async def _check_registered(self, participants: list[str]) -> None:
        """Every participant must be a device the sub-chain's registry homes there: shares go to no one else."""
        if tuple(participants) == self._registered:
            return
        if len(set(participants)) != len(participants):
            raise VerificationFailed("the edge lists a participant twice")
        for p in participants:
            try:
                ident = await self.pool.edge.state("identity", f"id/{address_of(bytes.fromhex(p)).hex()}")
            except ValueError:
                ident = None
            if ident is None or ident["role"] != "device" or ident["home_chain"] != self.pool.chain_id:
                raise VerificationFailed(f"participant {p[:16]}… is not a registered device of {self.pool.chain_id}")
        self._registered = tuple(participants)

    def _misdeal(self, device: Device, packet: P.Packet, dealing: P.Dealing, points: dict[str, int]
                 ) -> tuple[P.Packet, P.Dealing]:
        """Fault injection: bind shares off the dealer's polynomial for the named victims."""
        victims = self.faults.get("bad_shares", {}).get(device.name)
        if not victims:
            return packet, dealing
        names = {d.name: d.key.public_key.hex() for d in self.pool.devices}
        return misdeal(packet, dealing, [points[names[v]] - 1 for v in victims])

    def _round(self, body: dict[str, Any]) -> tuple[str, dict[str, Dealt]]:
        try:
            label = stage(int(body["round"]), int(body.get("sub_round", 1)))
        except (KeyError, TypeError, ValueError) as exc:
            raise UsageError(f"bad secagg request: {exc}") from None
        return label, self.rounds.get(label, {})

    async def handle_sketch(self, request: web.Request) -> web.Response:
        """Step 2: ``{"round", "challenge", "packets": [[point, digest], ...]}`` → our devices' sketches."""
        body = await read_json(request)
        _, dealt = self._round(body)
        try:
            listed = sorted((int(p), bytes.fromhex(d)) for p, d in body["packets"])
            challenge = bytes.fromhex(body["challenge"])
        except (KeyError, TypeError, ValueError) as exc:
            raise UsageError(f"bad sketch request: {exc}") from None
        out = {}
        for name, d in dealt.items():
            if (d.packet.point, d.packet.digest()) not in listed:
                raise VerificationFailed(f"the edge's challenge leaves out {d.device.name}'s packet")
            if challenge != challenge_seed("round", d.context, *(digest for _, digest in listed)):
                raise VerificationFailed("the challenge is not derived from the listed packets")
            matrix = SketchMatrix.from_seed(challenge, d.dealing.secret.shape[0], d.params.rows)
            out[name] = wire.sketches_json(await asyncio.to_thread(P.sketch_dealing, name, d.dealing, matrix))
        return web.json_response({"sketches": out})

    async def handle_sum(self, request: web.Request) -> web.Response:
        """Step 4 for our participants: ``{"round", "attempt", "acceptance", "packets", "sketches", "boxes"}``."""
        body = await read_json(request)
        label, dealt = self._round(body)
        try:
            round_, sub_round, attempt = int(body["round"]), int(body.get("sub_round", 1)), int(body["attempt"])
            acc = wire.acceptance_from(body["acceptance"])
            boxes: dict[str, dict[str, str]] = body["boxes"]
            participants = [str(p) for p in body["participants"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise UsageError(f"bad share-sum request: {exc}") from None
        if not dealt:
            return web.json_response({"sums": [], "complaints": []})
        any_dealt = next(iter(dealt.values()))
        rows = any_dealt.params.rows
        length = any_dealt.dealing.secret.shape[0]
        packets = {}
        for name, obj in body["packets"].items():
            masked = wire.vector_from(await self.pool.edge.get_blob(obj["masked"]), length - rows)
            packets[name] = wire.packet_from(obj, masked)
        sketches = {name: wire.sketches_from(obj, rows) for name, obj in body["sketches"].items()}
        matrix = SketchMatrix.from_seed(acc.challenge, length, rows)
        P.check_acceptance(acc, self.pool.edge_key or acc.edge_key, packets, sketches)
        names = {d.key.public_key.hex(): d for d in self.pool.devices}
        sums, complaints = [], []
        for me in participants:
            device = names.get(me)
            if device is None or device.name in self.faults.get("dropouts", []):
                continue
            point = participants.index(me) + 1
            received = {}
            for dealer in acc.accepted:
                try:
                    plain = open_sealed(await self.pool.edge.get_blob(boxes[dealer][me]), device.key, context=SHARE)
                    received[dealer] = wire.vector_from(plain)
                except (FedledgerError, KeyError):
                    received[dealer] = np.zeros(0, dtype=np.int64)
            total, found = await asyncio.to_thread(P.share_sum, me, point, point - 1, acc, received, packets,
                                                   sketches, matrix)
            for c in found:
                evidence = await self.pool.edge.put_blob(wire.vector_bytes(c.share))
                complaints.append({"accuser": me, "dealer": c.dealer, "reason": c.reason, "share": evidence})
            if total is None:
                continue
            if device.name in self.faults.get("wrong_sums", []):
                total = total.copy()
                total[0] = (total[0] + 1) % Q
            address = await self.pool.edge.put_blob(wire.vector_bytes(total))
            tx = await self.pool.sub.submit(device.key, "secagg", "share_sum", {
                "round": round_, "sub_round": sub_round, "attempt": attempt, "hash": P.digest(total)})
            sums.append({"device": me, "sum": address, "tx": tx.hex()})
        return web.json_response({"sums": sums, "complaints": complaints})
