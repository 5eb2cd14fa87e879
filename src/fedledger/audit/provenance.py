"""Where a model came from: ``fedledger verify model FILE`` (and the auditor node's HTTP endpoint).

The file's SHA-256 is looked up on the chains. A global model gets its full
lineage checked back to round 0 (:class:`~fedledger.audit.lineage.LineageVerifier`):
every round, edge, device, artefact hash and anchor, each with where its proven
transaction is. A device update or an edge aggregate gets its own proven record
and the lineage of the global model it went into (or, before that model is
published, of the one it started from). A file with any byte altered hashes to
a model no chain records, so it FAILs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fedledger.audit.lineage import LineageVerifier
from fedledger.audit.network import Network
from fedledger.crypto.hashing import sha256
from fedledger.errors import FedledgerError, VerificationFailed


@dataclass
class ModelProvenance:
    ok: bool = False
    model: str = ""
    kind: str = ""
    round: int = -1
    reason: str = ""
    record: dict[str, Any] = field(default_factory=dict)
    lineage: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


async def verify_model(net: Network, data: bytes, *, proofs: bool = False) -> ModelProvenance:
    """The provenance of the model whose bytes are ``data``; never raises for a failed check."""
    out = ModelProvenance(model=sha256(data).hex())
    try:
        found = await net.find_model(bytes.fromhex(out.model))
        if not found:
            raise VerificationFailed(f"no chain records a model with hash {out.model}: the file was altered "
                                     "or is not a model of this federation")
        target = found[0]  # a global model if it is one, else the first sub-chain record
        out.kind, out.round = target.kind, target.round
        out.record = target.record.where(target.view.chain_id)
        final = target.round
        if target.kind != "global" and await net.main.client.state("fl", f"model/{final}") is None:
            final -= 1  # not yet in a global model: check the one it started from
        verifier = LineageVerifier(net.main, net.subs, net.key, proofs=proofs)
        lineage = await verifier.verify(final)
        out.lineage = lineage.to_json()
        if not lineage.ok:
            raise VerificationFailed(f"lineage of round {final}: {lineage.reason}")
        if target.kind != "global" and final == target.round and \
                out.record["tx"] not in {a["tx"] for a in lineage.artefacts}:
            raise VerificationFailed(f"the {target.kind.replace('_', ' ')} is recorded but did not go into "
                                     f"the round-{final} global model")
        out.ok = True
    except FedledgerError as exc:
        out.reason = str(exc)
    return out
