"""Verify a global model's lineage from the chains alone.

Starting from the final round's ``publish_model`` on the main chain, the
auditor walks back round by round and checks, trusting only the genesis
documents:
- every record is a transaction proven (Merkle path + validator-signed header
  on a verified header chain) to be on its chain, with a successful receipt,
  sent by a key of the right role;
- the authenticator of every global model verifies (seed 004 §III-A);
- every edge aggregate is on its sub-chain, and a Type-II anchor of that
  sub-chain, signed by a quorum of its validators, was recorded on the main
  chain at or above the aggregate's block (seed 000 §III inter-locking), before
  the global model that uses it, and matches the sub-chain's header there
  (hash and accumulator);
- every blob hashes to its recorded address (and, when sealed, opens with the
  auditor's reader key to the recorded model hash), and re-running FedAvg over
  the recorded device updates gives the recorded edge aggregate of every
  sub-round, each sub-round starting from the previous one's aggregate, and
  over the edge aggregates gives the recorded global model, bit for bit.

For a task run with secure aggregation (seed 001), the auditor — a task
reader, so it can open the devices' sealed updates that the edge never saw —
recomputes each edge's field sum c_i = Σ n_j · encode(g_j) from the updates
the edge's last acceptance lists, checks it against H(c_i) on the sub-chain,
and rebuilds every model from the sums exactly as the edge and the cloud did;
it also checks that the cloud's H(c) is Σ c_i and that every edge accepted it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fedledger.audit.chainview import ChainView, VerifiedTx
from fedledger.audit.network import open_blob
from fedledger.contracts.fl import stage
from fedledger.crypto.keys import SigningKey
from fedledger.errors import FedledgerError, VerificationFailed
from fedledger.fl.aggregate import fedavg
from fedledger.fl.weights import Weights, decode_weights, weights_hash
from fedledger.ledger.interlock import Anchor, quorum_problem
from fedledger.storage.artefacts import MODEL


@dataclass
class LineageReport:
    ok: bool = False
    final_round: int = -1
    final_model: str = ""
    rounds_checked: int = 0
    edge_aggregates_checked: int = 0
    device_updates_checked: int = 0
    blobs_checked: int = 0
    txs_checked: int = 0
    reason: str = ""
    rounds: list[dict[str, Any]] = field(default_factory=list)
    artefacts: list[dict[str, Any]] = field(default_factory=list)  # provenance: every record and where it is

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


class LineageVerifier:
    def __init__(self, main: ChainView, subs: dict[str, ChainView], key: SigningKey | None = None,
                 *, proofs: bool = False) -> None:
        self.main = main
        self.subs = subs
        self.key = key  # a reader of sealed artefacts
        self.proofs = proofs  # attach every record's transaction proof to the provenance
        self.report = LineageReport()
        self.secure: Any = None  # seed 001's Params when the task ran secure aggregation
        self._base: Weights = []  # the global model the round being checked started from

    def _artefact(self, kind: str, view: ChainView, rec: VerifiedTx, **extra: Any) -> None:
        """Add a checked record to the provenance: what it is, who recorded it, and where it is on chain."""
        a = rec.args
        entry: dict[str, Any] = {"kind": kind, "round": a.get("round"), "party": view.identity_name(rec.tx.sender),
                 **{k: a[k].hex() for k in ("model", "blob") if k in a}, **extra, **rec.where(view.chain_id)}
        if self.proofs:
            entry["proof"] = rec.proof.to_json()
        self.report.artefacts.append(entry)

    async def verify(self, final_round: int | None = None) -> LineageReport:
        """Check every round back to the initial model; never raises for a failed check."""
        rep = self.report
        try:
            if final_round is None:
                latest = await self.main.client.state("fl", "latest_round")
                if latest is None:
                    raise VerificationFailed("the main chain holds no model")
                final_round = int(latest)
            rep.final_round = final_round
            task = await self.main.client.state("fl", "task")
            if task is not None and task["config"].get("aggregation") == "secagg":
                from fedledger.fl.secagg.protocol import Params

                self.secure = Params(threshold=1, frac_bits=int(task["config"]["secagg_frac_bits"]))
            records = {r: await self.main.model_record(r) for r in range(final_round, -1, -1)}
            rep.final_model = records[final_round].args["model"].hex()
            self._artefact("global_model", self.main, records[0])
            for r in range(final_round, 0, -1):
                await self._verify_round(r, records[r], records[r - 1])
                rep.rounds_checked += 1
            rep.rounds_checked += 1  # round 0: authenticator checked by model_record
            rep.ok = True
        except FedledgerError as exc:
            rep.reason = str(exc)
        rep.txs_checked = self.main.txs_checked + sum(v.txs_checked for v in self.subs.values())
        return rep

    async def _blob(self, view: ChainView, args: dict[str, Any]) -> Weights:
        """The model a record names: its stored blob (hash-checked by the client), opened and checked."""
        plain = await open_blob(view, args.get("blob", args["model"]), args["model"], self.key, MODEL)
        try:
            weights = decode_weights(plain)
        except FedledgerError as exc:
            raise VerificationFailed(f"model {args['model'].hex()} on {view.chain_id}: {exc}") from None
        self.report.blobs_checked += 1
        return weights

    async def _verify_round(self, r: int, rec: VerifiedTx, prev: VerifiedTx) -> None:
        model = rec.args["model"]
        base = prev.args["model"]
        if self.secure is not None:
            self._base = await self._blob(self.main, prev.args)
        aggregates: list[tuple[Weights, int, Any]] = []
        for parent in rec.args["parents"]:
            aggregates.append(await self._verify_parent(r, parent, base, rec))
        global_w = await self._blob(self.main, rec.args)
        if self.secure is not None:
            expected = await self._secure_global(r, aggregates)
        else:
            expected = fedavg([(w, n) for w, n, _ in aggregates])
        if weights_hash(expected) != model or weights_hash(global_w) != model:
            raise VerificationFailed(f"round {r}: FedAvg of the edge aggregates is not the recorded global model")
        self._artefact("global_model", self.main, rec)
        self.report.rounds.append({"round": r, "model": model.hex(), "edges": [p["chain"] for p in rec.args["parents"]],
                                   "devices": sorted({a["party"] for a in self.report.artefacts
                                                      if a["kind"] == "device_update" and a["round"] == r}),
                                   "accuracy_bp": rec.args["metrics"].get("accuracy_bp")})

    async def _secure_global(self, r: int, aggregates: list[tuple[Weights, int, Any]]) -> Weights:
        """Seed 001 step 6 as recorded: H(c) = H(Σ c_i), every edge accepted it, model = base + c / Σ n."""
        from fedledger.fl.secagg import protocol as P
        from fedledger.fl.secagg.wire import model_from_sum

        total = P.cloud_sum([c for _, _, c in aggregates])
        rec = await self.main.client.state("secagg", f"cloud_sum/{r}")
        if rec is None or bytes.fromhex(rec["total"]) != P.digest(total):
            raise VerificationFailed(f"round {r}: the cloud's recorded H(c) is not the sum of the edges' c_i")
        for e in rec["edges"]:
            verdict = await self.main.client.state("secagg", f"verdict/{r}/{e['chain']}")
            if verdict is None or not verdict["ok"]:
                raise VerificationFailed(f"round {r}: {e['chain']} did not accept the cloud's sum")
        return model_from_sum(self._base, total, sum(n for _, n, _ in aggregates), self.secure.frac_bits)

    async def _verify_parent(
        self, r: int, parent: dict[str, Any], base: bytes, rec: VerifiedTx
    ) -> tuple[Weights, int, Any]:
        chain = parent["chain"]
        view = self.subs.get(chain)
        if view is None:
            raise VerificationFailed(f"round {r}: no trusted genesis for sub-chain {chain!r}")
        agg = await view.verified_tx(parent["tx"], contract="fl", method="record_aggregate")
        a = agg.args
        if view.identity_role(agg.tx.sender) != "edge":
            raise VerificationFailed(f"round {r}: aggregate on {chain} was not recorded by its edge")
        if (a["round"], a["model"], a["samples"]) != (r, parent["model"], parent["samples"]):
            raise VerificationFailed(f"round {r}: aggregate on {chain} does not match the main-chain record")
        await self._verify_anchor(r, chain, view, agg, parent["anchor"], rec)
        sub_rounds = [agg]  # the final sub-round's aggregate, then back to sub-round 1
        while sub_rounds[0].args.get("sub_round", 1) > 1:
            j = sub_rounds[0].args["sub_round"] - 1
            rec_j = await view.client.state("fl", f"aggregate/{stage(r, j)}")
            if rec_j is None:
                raise VerificationFailed(f"round {r}: {chain} has no sub-round {j} aggregate")
            prev = await view.verified_tx(bytes.fromhex(rec_j["tx"]), contract="fl", method="record_aggregate")
            if prev.tx.sender != agg.tx.sender or prev.args["model"] != sub_rounds[0].args["base"]:
                raise VerificationFailed(f"round {r}: {chain}'s sub-round {j + 1} does not start from sub-round {j}")
            sub_rounds.insert(0, prev)
        if sub_rounds[0].args["base"] != base:
            raise VerificationFailed(f"round {r}: {chain}'s first sub-round does not start from the global model")
        aggregate: Weights = []
        field_sum = None
        for step in sub_rounds:
            aggregate, field_sum = await self._verify_sub_round(r, chain, view, step)
        return aggregate, a["samples"], field_sum

    async def _verify_sub_round(self, r: int, chain: str, view: ChainView, agg: VerifiedTx) -> tuple[Weights, Any]:
        """The sub-round's aggregate recomputed from its device updates (and, under seed 001, its c_i)."""
        a = agg.args
        updates: list[tuple[Weights, int]] = []
        for up_tx in a["updates"]:
            up = await view.verified_tx(up_tx, contract="fl", method="submit_update")
            u = up.args
            if view.identity_role(up.tx.sender) != "device":
                raise VerificationFailed(f"round {r}: update {up_tx.hex()[:16]}… not sent by a device")
            if (u["round"], u.get("sub_round", 1), u["base"]) != (r, a.get("sub_round", 1), a["base"]):
                raise VerificationFailed(f"round {r}: update {up_tx.hex()[:16]}… is for another round or model")
            updates.append((await self._blob(view, u), u["samples"]))
            self._artefact("device_update", view, up, sub_round=u.get("sub_round", 1), samples=u["samples"])
            self.report.device_updates_checked += 1
        field_sum = None
        if self.secure is not None:
            from fedledger.fl.secagg import protocol as P
            from fedledger.fl.secagg import wire

            if "secagg" not in a:
                raise VerificationFailed(f"round {r}: {chain}'s aggregate of a secure task records no H(c_i)")
            field_sum = wire.field_sum(self._base, updates, self.secure)
            if P.digest(field_sum) != a["secagg"]["sum"]:
                raise VerificationFailed(f"round {r}: {chain}'s device updates do not sum to its recorded H(c_i)")
            aggregate = wire.model_from_sum(self._base, field_sum, a["samples"], self.secure.frac_bits)
        else:
            aggregate = fedavg(updates)
        if weights_hash(aggregate) != a["model"] or weights_hash(await self._blob(view, a)) != a["model"]:
            raise VerificationFailed(f"round {r}: FedAvg of {chain}'s device updates is not its recorded aggregate")
        self._artefact("edge_aggregate", view, agg, sub_round=a.get("sub_round", 1), samples=a["samples"])
        self.report.edge_aggregates_checked += 1
        return aggregate, field_sum

    async def _verify_anchor(
        self, r: int, chain: str, view: ChainView, agg: VerifiedTx, anchor_tx: bytes, rec: VerifiedTx
    ) -> None:
        anchored = await self.main.verified_tx(anchor_tx, contract="interlock", method="anchor_subchain")
        try:
            anchor = Anchor.from_obj(anchored.args["anchor"])
            problem = quorum_problem(anchor, anchored.args["signatures"], view.genesis.validators)
        except (FedledgerError, KeyError, TypeError, ValueError) as exc:
            raise VerificationFailed(f"round {r}: anchor of {chain} does not decode: {exc}") from None
        if problem is not None:
            raise VerificationFailed(f"round {r}: anchor of {chain} is not signed by its validators: {problem}")
        if anchor.chain_id != chain or anchor.height < agg.header.height:
            raise VerificationFailed(f"round {r}: anchor does not cover {chain}'s aggregate block")
        if anchored.header.height > rec.header.height:
            raise VerificationFailed(f"round {r}: {chain} was anchored after the global model was published")
        header = await view.header_at(anchor.height)
        if (header.block_hash, header.accumulator) != (anchor.head, anchor.accumulator):
            raise VerificationFailed(f"round {r}: {chain}'s history differs from what the main chain anchored")
        self._artefact("anchor", self.main, anchored, round=r, anchored_chain=chain, anchored_height=anchor.height,
                       anchored_head=anchor.head.hex())
