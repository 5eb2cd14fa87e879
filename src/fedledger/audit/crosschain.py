"""Cross-chain transaction verification, seed 000 §IV-B Protocol 1.

A verifier that trusts *one* main-chain accumulator value ``acc_M`` (at main
height ``H_M``) checks that a transaction ``tx_Q`` is on a sub-chain ``B``,
without trusting any node and without B's genesis:

1. (line 1) take the trusted ``acc_M``;
2. (lines 2-3) the Type-II transaction ``tx_1`` that anchored B is in a
   main-chain block (Merkle paths of the transaction and its successful
   receipt), and that block is in ``acc_M`` (accumulator membership at its
   height, which must be at or below ``H_M``);
3. (line 5) extract ``acc_B`` from ``tx_1``: B's quorum-signed anchor (height
   ``H_B``, head, accumulator, parameters fingerprint);
4. (lines 6-7) ``tx_Q`` is in a block of B (Merkle paths), and that block is
   in ``acc_B`` at a height at or below ``H_B``.

Membership is bound to the position (the height is part of each block's
element), so a proof for another position, a block altered after anchoring,
or a history B rewrote after its anchor fails at step 4. Every step is
reported, with the reason of the first one that fails.

:func:`fetch_proof` assembles a :class:`CrossChainProof` from one node of B
and one main-chain node; :func:`verify_cross_chain` is pure.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fedledger.crypto.accumulator import AccumulatorParams
from fedledger.errors import DecodeError, NotFound, VerificationFailed
from fedledger.ledger.accumulator import acc_int, chain_params, verify_block
from fedledger.ledger.block import BlockHeader
from fedledger.ledger.genesis import Genesis
from fedledger.ledger.interlock import Anchor, quorum_problem
from fedledger.ledger.proofs import TxProof, check_header, check_inclusion
from fedledger.net.client import NodeClient

STEPS = (
    "trusted main-chain accumulator",
    "anchor transaction in main-chain block",
    "main-chain block in trusted accumulator",
    "sub-chain accumulator from anchor",
    "transaction in sub-chain block",
    "sub-chain block in anchored accumulator",
)


@dataclass(frozen=True)
class Trusted:
    """What the verifier trusts: one main-chain accumulator value, its height, and the parameters."""

    main_chain: str
    height: int
    accumulator: bytes
    params: AccumulatorParams


@dataclass(frozen=True)
class CrossChainProof:
    chain_id: str  # the sub-chain B holding the transaction
    tx: TxProof  # tx_Q in its block of B
    block_witness: bytes  # that block's membership in B's anchored accumulator
    anchor: TxProof  # the Type-II transaction in its main-chain block
    anchor_witness: bytes  # that main-chain block's membership in the trusted accumulator

    def to_json(self) -> dict[str, Any]:
        return {"chain_id": self.chain_id, "tx": self.tx.to_json(), "block_witness": self.block_witness.hex(),
                "anchor": self.anchor.to_json(), "anchor_witness": self.anchor_witness.hex()}

    @classmethod
    def from_json(cls, obj: Any) -> CrossChainProof:
        try:
            return cls(str(obj["chain_id"]), TxProof.from_json(obj["tx"]), bytes.fromhex(obj["block_witness"]),
                       TxProof.from_json(obj["anchor"]), bytes.fromhex(obj["anchor_witness"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise DecodeError(f"malformed cross-chain proof: {exc}") from None


@dataclass
class CrossChainResult:
    tx_hash: str = ""
    chain_id: str = ""
    steps: list[dict[str, Any]] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def valid(self) -> bool:
        return len(self.steps) == len(STEPS) and all(s["ok"] for s in self.steps)

    @property
    def failure(self) -> str | None:
        bad = next((s for s in self.steps if not s["ok"]), None)
        return None if bad is None else f"{bad['step']}: {bad['detail']}"

    def to_json(self) -> dict[str, Any]:
        return {"valid": self.valid, "tx_hash": self.tx_hash, "chain_id": self.chain_id,
                "failure": self.failure, "steps": self.steps, **self.facts}


class _Failed(Exception):
    pass


def verify_cross_chain(proof: CrossChainProof, trusted: Trusted) -> CrossChainResult:
    """Run Protocol 1; the result lists each step, stopping at the first that fails."""
    result = CrossChainResult(chain_id=proof.chain_id)
    step = iter(STEPS)

    def ok(detail: str) -> None:
        result.steps.append({"step": next(step), "ok": True, "detail": detail})

    try:
        try:
            acc_int(trusted.params, trusted.accumulator)
        except ValueError as exc:
            raise _Failed(str(exc)) from None
        ok(f"{trusted.main_chain} at height {trusted.height}")

        anchor_tx, receipt, main_header = _inclusion(proof.anchor)
        if main_header.chain_id != trusted.main_chain:
            raise _Failed(f"anchor is in a block of {main_header.chain_id!r}, not of {trusted.main_chain!r}")
        call = anchor_tx.call()
        if (call.contract, call.method) != ("interlock", "anchor_subchain"):
            raise _Failed(f"transaction is {call.contract}.{call.method}, not a Type-II anchor")
        if not receipt.success:
            raise _Failed(f"the main chain rejected the anchor: {receipt.error}")
        ok(f"main-chain block {main_header.height}, transaction {anchor_tx.tx_hash.hex()[:16]}")

        if main_header.height > trusted.height:
            raise _Failed(f"main-chain block {main_header.height} is after the trusted height {trusted.height}")
        if not verify_block(trusted.params, trusted.accumulator, main_header, proof.anchor_witness):
            raise _Failed(f"main-chain block {main_header.height} is not a member of the trusted accumulator")
        ok(f"block {main_header.height} of {trusted.main_chain} is in the accumulator at {trusted.height}")

        try:
            anchor = Anchor.from_obj(call.args["anchor"])
        except (DecodeError, KeyError, TypeError) as exc:
            raise _Failed(f"anchor does not decode: {exc}") from None
        if anchor.chain_id != proof.chain_id:
            raise _Failed(f"anchor is for {anchor.chain_id!r}, not {proof.chain_id!r}")
        if anchor.params != trusted.params.fingerprint():
            raise _Failed("the sub-chain's accumulator uses other parameters than the main chain")
        ok(f"{anchor.chain_id} anchored at height {anchor.height}")
        result.facts["anchored_height"] = anchor.height

        tx, tx_receipt, header = _inclusion(proof.tx)
        result.tx_hash = tx.tx_hash.hex()
        if header.chain_id != proof.chain_id:
            raise _Failed(f"transaction is in a block of {header.chain_id!r}, not {proof.chain_id!r}")
        ok(f"block {header.height} of {header.chain_id}")
        result.facts.update(height=header.height, tx_success=tx_receipt.success)

        if header.height > anchor.height:
            raise _Failed(f"block {header.height} is after the anchored height {anchor.height}; "
                          "wait for the next anchor")
        if header.height == anchor.height and header.block_hash != anchor.head:
            raise _Failed(f"block {header.height} is not the anchored head")
        if not verify_block(trusted.params, anchor.accumulator, header, proof.block_witness):
            raise _Failed(f"block {header.height} with this content is not at that position in the "
                          f"accumulator anchored at {anchor.height}")
        ok(f"block {header.height} is in {proof.chain_id}'s accumulator at {anchor.height}")
    except _Failed as exc:
        result.steps.append({"step": next(step), "ok": False, "detail": str(exc)})
    return result


def _inclusion(proof: TxProof) -> tuple[Any, Any, BlockHeader]:
    try:
        return check_inclusion(proof)
    except VerificationFailed as exc:
        raise _Failed(str(exc)) from None


async def fetch_proof(sub: NodeClient, main: NodeClient, chain_id: str, tx_hash: bytes,
                      main_height: int) -> CrossChainProof:
    """Gather the proof of ``tx_hash`` on ``chain_id`` against the main chain's accumulator at ``main_height``."""
    tx = await sub.tx_proof(tx_hash)
    height = BlockHeader.decode(tx.header).height
    entry = await main.get_json(f"/v1/interlock/anchors/{chain_id}?covers={height}&upto={main_height}")
    anchor = await main.tx_proof(bytes.fromhex(entry["tx"]))
    anchored, at = int(entry["height"]), int(entry["anchored_at"])
    block_witness = await sub.get_json(f"/v1/accumulator/witness?height={height}&at={anchored}")
    anchor_witness = await main.get_json(f"/v1/accumulator/witness?height={at}&at={main_height}")
    return CrossChainProof(chain_id, tx, bytes.fromhex(block_witness["witness"]), anchor,
                           bytes.fromhex(anchor_witness["witness"]))


async def trusted_from_node(main: NodeClient, genesis: Genesis, height: int | None = None) -> Trusted:
    """Trust the main chain's accumulator at ``height`` (default: the head) as a light client does:
    the header must be signed by a validator of the trusted main-chain genesis."""
    if height is None:
        height = int((await main.status())["height"])
    headers = await main.headers(height, height)
    if not headers:
        raise NotFound(f"main chain has no block at {height}")
    check_header(headers[0], genesis)
    return Trusted(genesis.chain_id, height, headers[0].accumulator, chain_params(genesis.params))


async def trusted_from_subchain(sub: NodeClient, genesis: Genesis) -> Trusted:
    """Protocol 1 line 1: the main chain's accumulator from the verifier's own sub-chain, i.e. its
    latest Type-III anchor; the quorum of main-chain validators is re-checked here, so the sub-chain
    node serving it need not be trusted."""
    entry = await sub.state("interlock", f"latest/{genesis.chain_id}")
    if entry is None:
        raise NotFound(f"the sub-chain holds no Type-III anchor of {genesis.chain_id!r} yet")
    tx, receipt, _ = check_inclusion(await sub.tx_proof(bytes.fromhex(entry["tx"])))
    try:
        args = tx.call().args
        anchor = Anchor.from_obj(args["anchor"])
        problem = quorum_problem(anchor, args["signatures"], genesis.validators)
    except (DecodeError, KeyError, TypeError, ValueError) as exc:
        raise VerificationFailed(f"Type-III anchor does not decode: {exc}") from None
    if problem is not None or not receipt.success or anchor.chain_id != genesis.chain_id:
        raise VerificationFailed(f"Type-III anchor is not valid for {genesis.chain_id!r}: {problem}")
    return Trusted(genesis.chain_id, anchor.height, anchor.accumulator, chain_params(genesis.params))
