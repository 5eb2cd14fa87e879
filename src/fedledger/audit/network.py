"""What an auditor connects to: light-client views of the main chain and of every sub-chain, and a reader key.

Every record an auditor uses is a proven transaction (``ChainView.verified_tx``)
and every blob is checked against the hash that record names, so the nodes it
talks to are trusted for nothing but availability.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fedledger.audit.chainview import ChainView, VerifiedTx
from fedledger.crypto.keys import SigningKey
from fedledger.errors import FedledgerError, VerificationFailed
from fedledger.fl.program import program_hash
from fedledger.storage.artefacts import open_artefact


@dataclass(frozen=True)
class Found:
    """A model hash located on a chain: a global model, an edge aggregate or a device update."""

    kind: str  # "global", "edge_aggregate" or "device_update"
    view: ChainView
    record: VerifiedTx

    @property
    def round(self) -> int:
        return int(self.record.args["round"])


@dataclass
class Network:
    main: ChainView
    subs: dict[str, ChainView]
    key: SigningKey | None = None  # a reader of sealed artefacts

    def sub(self, chain_id: str) -> ChainView:
        view = self.subs.get(chain_id)
        if view is None:
            raise VerificationFailed(f"no trusted genesis for sub-chain {chain_id!r}")
        return view

    async def task(self) -> tuple[VerifiedTx, dict[str, Any]]:
        """The proven ``fl.open_task`` and the training program it names (checked against its hash)."""
        task = await self.main.verified_record("fl", "task", "open_task")
        if task is None:
            raise VerificationFailed("no FL task is open on the main chain")
        if self.main.identity_role(task.tx.sender) != "cloud":
            raise VerificationFailed("the task was opened by a non-cloud key")
        program = task.args["config"].get("program")
        if not isinstance(program, dict) or program_hash(program) != task.args["program"]:
            raise VerificationFailed("the task's training program does not hash to its recorded program hash")
        return task, program

    async def open_blob(self, view: ChainView, address: bytes, plain_hash: bytes, context: bytes) -> bytes:
        return await open_blob(view, address, plain_hash, self.key, context)

    async def find_model(self, model: bytes) -> list[Found]:
        """Every proven record of ``model``: as a global model on the main chain, or on any sub-chain."""
        found: list[Found] = []
        round_ = await self.main.client.state("fl", f"model_by_hash/{model.hex()}")
        if round_ is not None:
            found.append(Found("global", self.main, await self.main.model_record(int(round_))))
        for view in self.subs.values():
            for tx in await view.client.state("fl", f"by_model/{model.hex()}") or []:
                rec = await view.verified_tx(bytes.fromhex(tx), contract="fl", method=("submit_update", "record_aggregate"))
                if rec.args["model"] != model:
                    raise VerificationFailed(f"{view.chain_id} indexes {tx[:16]}… under another model")
                found.append(Found("device_update" if rec.call.method == "submit_update" else "edge_aggregate",
                                   view, rec))
        return found


async def open_blob(view: ChainView, address: bytes, plain_hash: bytes, key: SigningKey | None,
                    context: bytes) -> bytes:
    """A blob held by ``view``'s node, opened with the reader ``key`` and checked against ``plain_hash``."""
    try:
        stored = await view.client.get_blob(address.hex())
        return open_artefact(stored, plain_hash, key, context)
    except FedledgerError as exc:
        raise VerificationFailed(f"blob {address.hex()} on {view.chain_id}: {exc}") from None
