"""Spot-check a model's training after the fact (seed 000 §V-B).

``fedledger audit training --model HASH --samples k`` finds the model on the
chains: a device update (``fl.submit_update``), an edge aggregate (every
update of every sub-round of that edge round) or a global model (every update
behind every edge aggregate it names). For each update it picks ``k`` of the
recorded training steps at random and, for each step i+1, trusting only the
genesis documents:

1. proves the step's ``fl.record_step`` transaction, sent by the update's
   device, for the update's round, and checks tx = H(M_(i+1) ‖ M_O ‖ d_(i+1) ‖ i+1);
2. fetches M_i: the previous step's model (its own proven record and blob), or
   for the first step M_O itself, proven as the round's starting model: the
   previous round's global model on the main chain (authenticator checked) or
   the edge's previous sub-round aggregate on the sub-chain;
3. fetches d_(i+1): the proven ``fl.record_data`` pointer transaction, with σ
   checked again against the device (or its edge, when delegated), and the
   sealed batch it points at, opened with the auditor's reader key;
4. takes the training program from the proven ``fl.open_task`` (its hash must
   match the task's and the global models' program hash) and re-runs the step.

The verdict is per step with the reason of the first failure. Recomputing
needs torch; everything else here is the ledger-side light client.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field
from typing import Any

from fedledger.audit.chainview import ChainView, VerifiedTx
from fedledger.audit.network import Found, Network
from fedledger.contracts.fl import data_message, stage, step_digest
from fedledger.crypto.keys import Domain, address_of, is_valid
from fedledger.errors import FedledgerError, UsageError, VerificationFailed
from fedledger.storage.artefacts import DATA, MODEL


@dataclass
class TrainingAudit:
    ok: bool = False
    model: str = ""
    kind: str = ""
    round: int = -1
    samples: int = 0
    updates_checked: int = 0
    steps_checked: int = 0
    txs_checked: int = 0
    reason: str = ""
    steps: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


class TrainingAuditor:
    def __init__(self, net: Network, samples: int, rng: random.Random | None = None) -> None:
        if samples < 1:
            raise UsageError("--samples must be at least 1")
        self.net = net
        self.samples = samples
        self.rng = rng or random.SystemRandom()  # the prover must not know which steps get checked
        self.report = TrainingAudit(samples=samples)
        self._program: dict[str, Any] | None = None
        self._program_hash = b""

    async def audit(self, model: bytes) -> TrainingAudit:
        """Audit every update behind ``model``; never raises for a failed check."""
        rep = self.report
        rep.model = model.hex()
        try:
            found = await self.net.find_model(model)
            if not found:
                raise VerificationFailed(f"model {model.hex()} is not recorded on any chain")
            target = found[0]
            rep.kind, rep.round = target.kind, target.round
            if rep.round < 1:
                raise VerificationFailed("the round-0 model was not trained: there is nothing to audit")
            task, self._program = await self.net.task()
            self._program_hash = task.args["program"]
            for view, update in await self._updates(target):
                await self._audit_update(view, update)
            rep.ok = not any(not s["ok"] for s in rep.steps)
            if not rep.ok:
                rep.reason = next(s["reason"] for s in rep.steps if not s["ok"])
        except FedledgerError as exc:
            rep.reason = str(exc)
        rep.txs_checked = self.net.main.txs_checked + sum(v.txs_checked for v in self.net.subs.values())
        return rep

    async def _updates(self, target: Found) -> list[tuple[ChainView, VerifiedTx]]:
        """The device updates whose training produced ``target``."""
        if target.kind == "device_update":
            return [(target.view, target.record)]
        if target.kind == "edge_aggregate":
            return await self._aggregate_updates(target.view, target.record)
        out: list[tuple[ChainView, VerifiedTx]] = []
        for parent in target.record.args["parents"]:
            view = self.net.sub(parent["chain"])
            agg = await view.verified_tx(parent["tx"], contract="fl", method="record_aggregate")
            if agg.args["model"] != parent["model"]:
                raise VerificationFailed(f"{parent['chain']}'s aggregate is not the one the global model names")
            out += await self._aggregate_updates(view, agg)
        return out

    async def _aggregate_updates(self, view: ChainView, agg: VerifiedTx) -> list[tuple[ChainView, VerifiedTx]]:
        """Every update of this edge round up to ``agg``'s sub-round (each sub-round builds on the last)."""
        r = int(agg.args["round"])
        out: list[tuple[ChainView, VerifiedTx]] = []
        for j in range(1, int(agg.args.get("sub_round", 1)) + 1):
            rec = agg if j == agg.args.get("sub_round", 1) else \
                await view.verified_record("fl", f"aggregate/{stage(r, j)}", "record_aggregate")
            if rec is None or rec.tx.sender != agg.tx.sender:
                raise VerificationFailed(f"{view.chain_id} has no sub-round {j} aggregate for round {r}")
            for tx in rec.args["updates"]:
                out.append((view, await view.verified_tx(tx, contract="fl", method="submit_update")))
        return out

    async def _audit_update(self, view: ChainView, update: VerifiedTx) -> None:
        u = update.args
        if view.identity_role(update.tx.sender) != "device":
            raise VerificationFailed(f"update {update.tx.tx_hash.hex()[:16]}… was not sent by a device")
        steps = int(u.get("steps", 0))
        if steps < 1:
            raise VerificationFailed(f"update {update.tx.tx_hash.hex()[:16]}… recorded no training steps")
        self.report.updates_checked += 1
        for index in sorted(self.rng.sample(range(1, steps + 1), min(steps, self.samples))):
            entry = {"chain": view.chain_id, "device": view.identity_name(update.tx.sender),
                     "round": u["round"], "sub_round": u.get("sub_round", 1), "index": index, "of": steps}
            try:
                problem = await self._audit_step(view, update, index, steps)
            except VerificationFailed as exc:
                problem = str(exc)
            entry.update(ok=problem is None, reason=problem or "")
            self.report.steps.append(entry)
            self.report.steps_checked += 1

    async def _step(self, view: ChainView, update: VerifiedTx, index: int) -> VerifiedTx:
        u = update.args
        where = f"{stage(u['round'], u.get('sub_round', 1))}/{address_of(update.tx.sender).hex()}"
        rec = await view.verified_record("fl", f"step/{where}/{index}", "record_step")
        if rec is None:
            raise VerificationFailed(f"step {index} is not recorded")
        s = rec.args
        if rec.tx.sender != update.tx.sender:
            raise VerificationFailed(f"step {index} was recorded by another key than the update's device")
        if (s["round"], s.get("sub_round", 1), s["index"]) != (u["round"], u.get("sub_round", 1), index):
            raise VerificationFailed(f"step {index}'s record is for another round or index")
        if s["global"] != u["base"]:
            raise VerificationFailed(f"step {index} does not start from the update's M_O")
        if s["digest"] != step_digest(s["model"], s["global"], s["data"], index):
            raise VerificationFailed(f"step {index}'s tx is not H(M_(i+1) ‖ M_O ‖ d_(i+1) ‖ i+1)")
        return rec

    async def _audit_step(self, view: ChainView, update: VerifiedTx, index: int, steps: int) -> str | None:
        from fedledger.fl.data import decode_dataset
        from fedledger.fl.steps import recompute_step
        from fedledger.fl.weights import decode_weights

        step = await self._step(view, update, index)
        s = step.args
        if index == steps and s["model"] != update.args["model"]:
            return f"the update is not its last step's model M_({steps})"
        if index == 1:
            prev = await self._start_model(view, update)
        else:
            before = (await self._step(view, update, index - 1)).args
            if before["model"] != s["prev"]:
                return f"step {index} does not continue from step {index - 1}"
            prev = await self.net.open_blob(view, before["blob"], before["model"], MODEL)
        batch = await self._data(view, update.tx.sender, s["data"])
        assert self._program is not None
        record = {**s, "device": update.tx.sender}
        return await asyncio.to_thread(recompute_step, self._program, record, decode_weights(prev),
                                       decode_dataset(batch))

    async def _start_model(self, view: ChainView, update: VerifiedTx) -> bytes:
        """M_O, proven as the model the round started from, and its bytes."""
        u = update.args
        r, j, base = int(u["round"]), int(u.get("sub_round", 1)), u["base"]
        if j == 1:
            rec = await self.net.main.model_record(r - 1)
            owner_view = self.net.main
        else:
            found = await view.verified_record("fl", f"aggregate/{stage(r, j - 1)}", "record_aggregate")
            if found is None or view.identity_role(found.tx.sender) != "edge":
                raise VerificationFailed(f"{view.chain_id} has no sub-round {j - 1} aggregate to start from")
            rec, owner_view = found, view
        if rec.args["model"] != base:
            raise VerificationFailed("M_O is not the model the round started from")
        if j == 1 and rec.args["program"] != self._program_hash:
            raise VerificationFailed(f"the round-{r - 1} model was published for another training program")
        return await self.net.open_blob(owner_view, rec.args.get("blob", base), base, MODEL)

    async def _data(self, view: ChainView, device: bytes, data: bytes) -> bytes:
        """d_(i+1): the proven pointer transaction, σ re-checked, and the batch it points at."""
        rec = await view.verified_record("fl", f"data/{device.hex()}/{data.hex()}", "record_data")
        if rec is None:
            raise VerificationFailed(f"d_(i+1) {data.hex()[:16]}… is not a recorded data batch of the device")
        d = rec.args
        signer = rec.tx.sender
        if d["device"] != device or d["data"] != data:
            raise VerificationFailed("the data record is for another device or batch")
        if signer != device and view.identity_role(signer) != "edge":
            raise VerificationFailed("the data batch was signed by neither its device nor an edge")
        if not is_valid(signer, Domain.DATA, data_message(view.chain_id, device, data, d["ptr"], d["samples"]),
                        d["sig"]):
            raise VerificationFailed("σ of the data batch does not verify")
        return await self.net.open_blob(view, d["ptr"], data, DATA)
