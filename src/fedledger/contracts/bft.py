"""BFT main-chain rules on chain: commit certificates, proposer rotation, double-sign evidence.

State layout (contract namespace ``bft``):

``validators``          the genesis validator list, in genesis order (the rotation order)
``faulty/<pk hex>``     set once a validator is proven to have signed two conflicting messages
``evidence/<hash hex>`` evidence already used (height it was recorded at)

The block hook (:func:`finish_block`, run inside ``apply_block`` and
``propose_block``, so ``fedledger chain verify`` replays it) checks every block
against the state of its parent:

* the consensus field is ``{"engine": "bft", "round": r, "last_commit": cert}``;
* the proposer is ``proposer(h, r)`` for the round ``r`` the block was built in
  (Algorithm 1 line 14: only the round's proposer calls ``getValue()``);
* ``last_commit`` is a commit certificate for the parent: more than 2/3 of the
  validators' valid precommits of one round for ``prev_hash`` (line 49);
  block 1 has none.

Block 1 also carries the genesis document, which must hash to its parent
(the genesis block); the hook records its validator list, so every later
check runs against the validator set the chain was founded with, on replay too.
"""

from __future__ import annotations

from typing import Any

from fedledger.consensus.bft.messages import (
    CommitCert,
    decode_signed,
    evidence_hash,
    is_double_sign,
    proposer_for,
    verify_certificate,
)
from fedledger.contracts.base import (
    Context,
    Contract,
    arg,
    read_state,
    register,
    state_key,
    write_state,
)
from fedledger.errors import (
    ContractError,
    DecodeError,
    FedledgerError,
    InvalidBlock,
    VerificationFailed,
)
from fedledger.ledger.state import State

bft = register(Contract("bft"))


def _skey(key: str) -> bytes:
    return state_key("bft", key)


def read(state: State, key: str) -> Any:
    return read_state(state, "bft", key)


def write(state: State, key: str, value: Any) -> None:
    write_state(state, "bft", key, value)


def validators_of(state: State) -> tuple[bytes, ...] | None:
    """The validator list recorded at block 1 (``None`` before block 1 is applied)."""
    raw = read(state, "validators")
    return None if raw is None else tuple(raw)


def is_faulty(state: State, public_key: bytes) -> bool:
    return read(state, f"faulty/{public_key.hex()}") is not None


# -- block hook ------------------------------------------------------------------


def finish_block(state: State, chain_id: str, height: int, prev_hash: bytes, proposer: bytes,
                 consensus: Any) -> None:
    """Consensus rules of a BFT block; any violation makes the block invalid (see the module doc)."""
    if not isinstance(consensus, dict) or consensus.get("engine") != "bft":
        raise InvalidBlock(f"block {height} lacks bft consensus fields")
    round_ = consensus.get("round")
    if not isinstance(round_, int) or isinstance(round_, bool) or round_ < 0:
        raise InvalidBlock(f"block {height} has a malformed round")
    allowed = {"engine", "round", "last_commit"} | ({"genesis"} if height == 1 else set())
    if set(consensus) - allowed:
        raise InvalidBlock(f"block {height} has unknown consensus fields {sorted(set(consensus) - allowed)}")
    if height == 1:
        _record_validators(state, chain_id, prev_hash, consensus.get("genesis"))
    validators = validators_of(state)
    if validators is None:
        raise InvalidBlock(f"block {height}: no validator set recorded on this chain")
    if proposer != proposer_for(validators, height, round_):
        raise InvalidBlock(f"block {height} was built by a validator that is not proposer(h, {round_})")
    last = consensus.get("last_commit")
    if height == 1:
        if last is not None:
            raise InvalidBlock("block 1 has no parent to certify; last_commit must be empty")
        return
    try:
        cert = CommitCert.from_obj(last)
        verify_certificate(cert, chain_id, validators, height - 1, prev_hash)
    except (DecodeError, VerificationFailed) as exc:
        raise InvalidBlock(f"block {height}: bad last_commit: {exc}") from None


def _record_validators(state: State, chain_id: str, prev_hash: bytes, doc: Any) -> None:
    from fedledger.ledger.genesis import Genesis

    try:
        genesis = Genesis.from_obj(doc)
        genesis_hash = genesis.block().block_hash
    except (FedledgerError, TypeError, ValueError) as exc:
        raise InvalidBlock(f"block 1 carries a malformed genesis document: {exc}") from None
    if genesis.chain_id != chain_id or genesis_hash != prev_hash:
        raise InvalidBlock("block 1 carries a genesis document that is not its parent's")
    if not genesis.validators:
        raise InvalidBlock("the genesis document names no validators")
    write(state, "validators", list(genesis.validators))


# -- transactions ----------------------------------------------------------------


@bft.method
def report_double_sign(ctx: Context, args: Any) -> dict[str, Any]:
    """Evidence ``{a, b}``: two conflicting messages a validator signed for one height, round and step.

    Anyone may report; the evidence proves itself (both signatures are
    checked). The validator is recorded as faulty once; the same evidence, or
    a second piece against an already faulty validator, is refused.
    """
    try:
        a, b = decode_signed(arg(args, "a", dict)), decode_signed(arg(args, "b", dict))
    except DecodeError as exc:
        raise ContractError(f"malformed evidence: {exc}") from None
    ctx.require(a.chain_id == ctx.chain_id, "evidence is about another chain")
    validators = validators_of(ctx.state)
    ctx.require(validators is not None, "the validator set is recorded by block 1; report again later")
    assert validators is not None
    ctx.require(a.signer in validators, "the signer is not a validator of this chain")
    ctx.require(is_double_sign(a, b), "not two different validly signed messages for one height, round and step")
    digest = evidence_hash(a, b)
    ctx.require(ctx.get(f"evidence/{digest.hex()}") is None, "this evidence has already been used")
    ctx.require(ctx.get(f"faulty/{a.signer.hex()}") is None, "this validator is already recorded as faulty")
    ctx.put(f"evidence/{digest.hex()}", ctx.height)
    ctx.put(f"faulty/{a.signer.hex()}", {"height": a.height, "round": a.round, "step": a.kind,
                                          "evidence": digest, "recorded_at": ctx.height, "reporter": ctx.sender})
    return {"validator": a.signer, "height": a.height, "round": a.round, "step": a.kind}
