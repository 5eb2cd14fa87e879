"""Cloud node: main-chain validator, FL server and task owner.

It opens the task on the main chain (program, dataset, the hash of its
held-out test set, k, readers). For each round it publishes the global model
blob (sealed for the edges, itself and the task's readers) and its
authenticator on the main chain, asks every edge to run the round, checks the
edge aggregates and combines them with its strategy (FedAvg by sample count;
edges that failed are reported to it), evaluates the result on its
held-out test set, and publishes the next global model naming the edge
aggregates it came from. Under secure aggregation (seed 001) it adds the
edges' field sums instead, commits to H(c) on the main chain and publishes
only once every edge has verified COM(c) = Σ COM(c_i) there; the contract
refuses the model otherwise, and penalises the cloud for a refused sum.

In a decentralised job (``mode = "decentralised"``, seed 002 §5.2.2) it opens
the task and publishes round 0 (sealed for the device pools' registered
devices too), then asks every device pool to run the rounds itself
(``POST /v1/fl/decentralised``): each device validates, votes on and averages
its peers' updates into its own view. The job reports every device's view per
round, whether each sub-chain's devices agreed, the updates they rejected, and
the accuracy of the agreed view on the cloud's held-out test set.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from typing import Any

import numpy as np
from aiohttp import web

from fedledger.audit.crosschain import Trusted, fetch_proof, verify_cross_chain
from fedledger.contracts.base import read_state
from fedledger.contracts.fl import authenticator_message
from fedledger.crypto.keys import Domain, address_of
from fedledger.errors import ConfigError, FedledgerError, NotFound, UsageError, VerificationFailed
from fedledger.fl.secagg import protocol as P
from fedledger.fl.secagg import wire
from fedledger.fl.secagg.field import Q, encode
from fedledger.fl.strategy import Failure, FedAvg, TrainRes
from fedledger.fl.weights import Weights, decode_weights, encode_weights
from fedledger.logs import log_event
from fedledger.net.api import read_json
from fedledger.node.roles.base import FLSettings, RoleContext
from fedledger.node.roles.relay import AnchorRelay
from fedledger.node.roles.secagg_edge import SECURE_SUM, open_vector
from fedledger.node.submit import LocalChain, RemoteChain
from fedledger.storage.artefacts import MODEL, open_artefact, store_artefact

log = logging.getLogger("fedledger.cloud")


class CloudRole:
    def __init__(self, ctx: RoleContext) -> None:
        if ctx.chain is None:
            raise ConfigError(f"{ctx.cfg.name}: the cloud node needs the main chain")
        self.ctx = ctx
        self.key = ctx.cfg.key
        self.settings = FLSettings.from_config(ctx.cfg.fl)
        self.main = LocalChain(ctx.chain)
        self.edges = [ctx.client(u, timeout_s=float(ctx.cfg.fl.get("deadline_s", 300))) for u in ctx.peer_list("edges")]
        self.pools = [ctx.client(u, timeout_s=float(ctx.cfg.fl.get("deadline_s", 300))) for u in ctx.peer_list("pools")]
        self.device_keys: list[bytes] = []  # decentralised jobs: devices that read the round-0 model
        self.strategy = FedAvg(min_results=self.settings.min_results)
        self.job: dict[str, Any] = {"state": "idle"}
        self._task: asyncio.Task[None] | None = None
        self.relays: dict[str, AnchorRelay] = {}
        self.readers: list[bytes] = []
        ctx.tasks.append(asyncio.create_task(self._relay_to_edges()))
        r = ctx.api.app.router
        r.add_post("/v1/fl/job", self.handle_start)
        r.add_get("/v1/fl/job", self.handle_status)
        r.add_post("/v1/crosschain/verify", self.handle_crosschain)

    async def _relay_to_edges(self) -> None:
        """Type-III: send the main chain's quorum-signed anchors to every edge's sub-chain."""
        node = self.ctx.chain
        assert node is not None
        waiting = list(self.edges)
        while waiting:
            for edge in list(waiting):
                try:
                    chain_id = str((await edge.status())["chain_id"])
                except (FedledgerError, KeyError):
                    continue  # not up yet
                waiting.remove(edge)
                relay = self.relays[chain_id] = AnchorRelay(node, self.key, RemoteChain(edge, chain_id),
                                                            "anchor_mainchain")
                self.ctx.tasks.append(asyncio.create_task(relay.run()))
            await asyncio.sleep(0.2)

    async def handle_start(self, request: web.Request) -> web.Response:
        body = await read_json(request)
        rounds = body.get("rounds", 3)
        if not isinstance(rounds, int) or not 1 <= rounds <= 1000:
            raise UsageError("rounds must be an integer from 1 to 1000")
        if self._task is not None and not self._task.done():
            raise UsageError("a job is already running")
        self.job = {"state": "running", "rounds": rounds, "round": 0, "accuracy_per_round": [],
                    "round_seconds": [], "edges": [], "failures": []}
        self._task = asyncio.create_task(self._run_job(rounds))
        return web.json_response(self.job, status=202)

    async def handle_status(self, request: web.Request) -> web.Response:
        return web.json_response(self.job)

    async def handle_crosschain(self, request: web.Request) -> web.Response:
        """Protocol 1 for a thin client: ``{"chain", "tx", "main_height"?}``; trusts this replica's header."""
        body = await read_json(request)
        try:
            chain_id, tx = str(body["chain"]), bytes.fromhex(body["tx"])
        except (KeyError, TypeError, ValueError) as exc:
            raise UsageError(f"bad verification request: {exc}") from None
        relay = self.relays.get(chain_id)
        if relay is None:
            raise NotFound(f"{chain_id!r} is not a sub-chain this cloud node serves")
        node = self.ctx.chain
        assert node is not None
        height = int(body.get("main_height") or node.chain.height)
        trusted = Trusted(node.chain_id, height, node.store.header(height).accumulator, node.chain.acc_params)
        proof = await fetch_proof(relay.target.client, self.ctx.client(self.ctx.cfg.url), chain_id, tx, height)
        return web.json_response(verify_cross_chain(proof, trusted).to_json())

    async def _run_job(self, rounds: int) -> None:
        try:
            await self.run_job(rounds)
            self.job["state"] = "done"
        except FedledgerError as exc:
            self.job.update(state="failed", error=str(exc))
            log_event(log, logging.ERROR, "job failed", error=str(exc))
        except Exception as exc:  # a bug: keep the node up and report it
            self.job.update(state="failed", error=f"internal error: {exc!r}")
            log.exception("job crashed")

    async def run_job(self, rounds: int) -> None:
        from fedledger.fl.datasets import load_dataset
        from fedledger.fl.models import init_weights

        s = self.settings
        _train, test, info = await asyncio.to_thread(load_dataset, s.dataset, data_dir=s.data_path, seed=s.seed)
        if read_state(self.ctx.chain.chain.state, "fl", "task") is not None:  # type: ignore[union-attr]
            raise UsageError("this main chain already holds a job; start from a fresh data directory")
        self.readers = [bytes.fromhex(r) for r in self.ctx.cfg.fl.get("readers", [])]
        await self.main.call(self.key, "fl", "open_task", {
            "program": s.program_hash(), "model": s.model, "dataset": s.dataset, "test_set": info.test_hash,
            "test_samples": info.test_size, "device_rounds": s.device_rounds, "readers": self.readers,
            "config": {"partition": s.partition, "alpha": repr(s.alpha), "readings": s.readings,
                       "seal": s.seal, "verify_steps": s.verify_steps, "program": s.program(), "mode": s.mode,
                       "aggregation": s.aggregation, "secagg_threshold": repr(s.secagg_threshold),
                       "secagg_noise_sigma": repr(s.secagg_noise_sigma), "secagg_frac_bits": s.secagg_frac_bits},
        })
        if s.mode == "decentralised":
            self.device_keys = await self._pool_devices()
        weights = init_weights(s.model, s.seed)
        acc = await self._evaluate(weights, test)
        model = await self._publish(0, weights, [], acc)
        self.job["accuracy_per_round"].append(acc)
        if s.mode == "decentralised":
            await self._decentralised(rounds, model, test)
            return
        for round_ in range(1, rounds + 1):
            t0 = time.perf_counter()
            parents, weights = await self._edge_round(round_, model, weights)
            acc = await self._evaluate(weights, test)
            model = await self._publish(round_, weights, parents, acc)
            self.job["accuracy_per_round"].append(acc)
            self.job["round_seconds"].append(round(time.perf_counter() - t0, 3))
            self.job["round"] = round_
            self.job["final_model"] = model[0].hex()
            log_event(log, logging.INFO, "round done", round=round_, accuracy=acc)

    async def _edge_round(self, round_: int, base: tuple[bytes, bytes], global_weights: Weights
                          ) -> tuple[list[dict[str, Any]], Weights]:
        """Ask every edge for its aggregate; the strategy combines what came back, given the edges that failed.

        The parents are recorded in the order they were combined, so auditors recompute the global model exactly.
        Under secure aggregation the cloud adds the edges' sums instead, and every edge verifies the result
        (seed 001 step 6, :meth:`_secure_sum`).
        """
        req = {"round": round_, "base": base[0].hex(), "blob": base[1].hex()}
        replies = await asyncio.gather(*(e.post_json("/v1/fl/round", req) for e in self.edges),
                                       return_exceptions=True)
        parents: dict[str, dict[str, Any]] = {}
        answered: dict[str, tuple[Any, dict[str, Any]]] = {}  # chain → (edge client, reply)
        results, failures = [], []
        for edge, reply in zip(self.edges, replies, strict=True):
            if isinstance(reply, BaseException):
                self.job["failures"].append({"round": round_, "edge": edge.base_url, "error": str(reply)})
                failures.append(Failure(edge.base_url, round_, str(reply) or type(reply).__name__))
                continue
            self.job["failures"].extend({"round": round_, **f} for f in reply.get("failures", []))
            stored = await edge.get_blob(reply["blob"])
            self.ctx.blobs.put_verified(reply["blob"], stored)
            plain = open_artefact(stored, bytes.fromhex(reply["model"]), self.key, MODEL)
            results.append(TrainRes(reply["chain"], decode_weights(plain), int(reply["samples"])))
            parents[reply["chain"]] = {"chain": reply["chain"], "tx": bytes.fromhex(reply["tx"]),
                                       "model": bytes.fromhex(reply["model"]), "samples": int(reply["samples"]),
                                       "anchor": bytes.fromhex(reply["anchor_tx"])}
            answered[reply["chain"]] = (edge, reply)
        if self.settings.secure:
            if not answered:
                raise VerificationFailed(f"round {round_}: no edge delivered a secure sum")
            return [parents[chain] for chain in answered], await self._secure_sum(round_, global_weights, answered)
        agg = self.strategy.aggregate(round_, results, failures)
        return [parents[chain] for chain in agg.used], agg.weights

    async def _secure_sum(self, round_: int, base: Weights, replies: dict[str, tuple[Any, dict[str, Any]]]
                          ) -> Weights:
        """Seed 001 step 6: c = Σ c_i, H(c) on chain, then every edge's COM check; the model is base + c / Σ n."""
        edges: list[dict[str, Any]] = []
        sums = []
        for chain, (edge, reply) in replies.items():
            c_i = open_vector(await edge.get_blob(reply["secagg"]["sum"]), self.key)
            recorded = await edge.state("fl", f"aggregate/{round_}")
            if recorded is None or recorded.get("secagg", {}).get("sum") != P.digest(c_i).hex():
                raise VerificationFailed(f"{chain}'s c_i is not the H(c_i) its sub-chain recorded")
            edges.append({"chain": chain, "sum": P.digest(c_i), "weight": int(reply["samples"])})
            sums.append(c_i)
        total = P.cloud_sum(sums)
        forge = self.ctx.cfg.fl.get("secagg_faults", {}).get("forge", {})
        if forge.get("round") == round_:  # fault injection for tests only: a cloud that shifts the sum
            shift = np.full(total.shape[0], float(forge.get("by", 1e-3)))
            total = (total + encode(shift, self.settings.secagg_frac_bits)) % Q
        readers = self.settings.sealed_for(self.key.public_key, *self.edge_keys(), readers=self.readers)
        _, blob = store_artefact(self.ctx.blobs, wire.vector_bytes(total), readers, SECURE_SUM)
        await self.main.call(self.key, "secagg", "cloud_sum", {
            "round": round_, "total": P.digest(total), "blob": blob, "edges": edges})
        verdicts = await asyncio.gather(*(edge.post_json("/v1/fl/secagg/verify", {"round": round_})
                                          for edge, _ in replies.values()), return_exceptions=True)
        refused = [f"{e['chain']}: {v if isinstance(v, BaseException) else v.get('reason')}"
                   for e, v in zip(edges, verdicts, strict=True) if isinstance(v, BaseException) or not v.get("ok")]
        if refused:
            raise VerificationFailed(f"round {round_}: edges did not accept the cloud's sum ({'; '.join(refused)})")
        weight = sum(int(e["weight"]) for e in edges)
        return wire.model_from_sum(base, total, weight, self.settings.secagg_frac_bits)

    async def _publish(self, round_: int, weights: Weights, parents: list[dict[str, Any]], acc: float
                       ) -> tuple[bytes, bytes]:
        """Store and publish a global model; ``(model hash, blob address)``."""
        readers = self.settings.sealed_for(self.key.public_key, *self.edge_keys(), *self.device_keys,
                                           readers=self.readers)
        model, blob = store_artefact(self.ctx.blobs, encode_weights(weights), readers, MODEL)
        program = self.settings.program_hash()
        auth = self.key.sign(Domain.AUTHENTICATOR, authenticator_message(model, program, round_))
        await self.main.call(self.key, "fl", "publish_model", {
            "round": round_, "model": model, "blob": blob, "program": program, "authenticator": auth,
            "parents": parents, "metrics": {"accuracy_bp": round(acc * 10_000)},
        })
        return model, blob

    def edge_keys(self) -> list[bytes]:
        node = self.ctx.chain
        assert node is not None
        return [i.public_key for i in node.chain.genesis.identities if i.role == "edge"]

    async def _evaluate(self, weights: Weights, test: Any) -> float:
        from fedledger.fl.train import evaluate

        return float(await asyncio.to_thread(evaluate, self.settings.model, weights, test))

    async def _pool_devices(self) -> list[bytes]:
        """The device pools' devices (seed 002 step 9 has them read the round-0 model), each checked to be
        registered as a device on one of the edges' sub-chains."""
        if not self.pools:
            raise ConfigError(f"{self.ctx.cfg.name}: a decentralised job needs peers.pools")
        keys = []
        for pool in self.pools:
            for hex_key in (await pool.status()).get("device_keys", []):
                pk = bytes.fromhex(hex_key)
                idents = [await e.state("identity", f"id/{address_of(pk).hex()}") for e in self.edges]
                if not any(i is not None and i["role"] == "device" for i in idents):
                    raise VerificationFailed(f"pool {pool.base_url} lists {hex_key[:16]}…, not a registered device")
                keys.append(pk)
        return keys

    async def _decentralised(self, rounds: int, model: tuple[bytes, bytes], test: Any) -> None:
        """Seed 002 §5.2.2 steps 9–18: the pools run every round; collect and score the devices' views."""
        req = {"rounds": rounds, "base": model[0].hex(), "blob": model[1].hex()}
        timeout = float(self.ctx.cfg.fl.get("deadline_s", 300)) * (rounds + 1)
        replies = await asyncio.gather(
            *(p.post_json("/v1/fl/decentralised", req, timeout_s=timeout) for p in self.pools), return_exceptions=True
        )
        by_round: dict[int, list[tuple[str, dict[str, Any]]]] = {}
        for pool, reply in zip(self.pools, replies, strict=True):
            if isinstance(reply, BaseException):
                self.job["failures"].append({"pool": pool.base_url, "error": str(reply) or type(reply).__name__})
                continue
            self.job["failures"].extend(reply.get("failures", []))
            for rnd in reply["rounds"]:
                by_round.setdefault(int(rnd["round"]), []).append((reply["chain"], rnd))
        if not by_round:
            raise VerificationFailed("no device pool completed a decentralised round")
        self.job.update(views=[], agreed=[], rejected=[])
        for round_ in sorted(by_round):
            chains = {chain: rnd["devices"] for chain, rnd in by_round[round_] if rnd["devices"]}
            self.job["views"].append({"round": round_, "chains": {
                chain: {name: d["model"] for name, d in devices.items()} for chain, devices in chains.items()}})
            self.job["agreed"].append(bool(chains) and all(
                len({d["model"] for d in devices.values()}) == 1 for devices in chains.values()))
            self.job["rejected"].extend({"round": round_, "chain": chain, "by": name, **r}
                                        for chain, devices in chains.items()
                                        for name, d in devices.items() for r in d["rejected"])
            accs = [await self._view_accuracy(chain, devices, test) for chain, devices in chains.items()]
            self.job["accuracy_per_round"].append(sum(accs) / len(accs) if accs else 0.0)
            self.job["round"] = round_
            log_event(log, logging.INFO, "decentralised round done", round=round_,
                      agreed=self.job["agreed"][-1], accuracy=self.job["accuracy_per_round"][-1])

    async def _view_accuracy(self, chain: str, devices: dict[str, Any], test: Any) -> float:
        """Accuracy on the held-out test set of a sub-chain's most common view (sealed for the task owner)."""
        model, _ = Counter(d["model"] for d in devices.values()).most_common(1)[0]
        blob = next(d["blob"] for d in devices.values() if d["model"] == model)
        relay = self.relays.get(chain)
        edges = [relay.target.client] if relay is not None else self.edges
        for edge in edges:
            try:
                stored = await edge.get_blob(blob)
            except NotFound:
                continue
            weights = decode_weights(open_artefact(stored, bytes.fromhex(model), self.key, MODEL))
            return await self._evaluate(weights, test)
        raise NotFound(f"no edge holds the {chain} view {model[:16]}…")
