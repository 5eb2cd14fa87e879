"""The inter-locking contract: anchors received from other chains (seed 000 §III, §IV-A).

On the main chain, ``anchor_subchain`` takes a Type-II transaction: a
sub-chain's anchor (height, head hash, accumulator, last finalized
checkpoint) signed by a quorum of that sub-chain's validators. On a
sub-chain, ``anchor_mainchain`` takes the Type-III transaction: the main
chain's anchor signed by a quorum of the main chain's validators. Anyone
may relay an anchor; the quorum, not the relayer, makes it valid.

Anchored heights of a chain must increase. An anchor for a height that is
already anchored with a *different* block is a quorum of that chain signing
two histories: it is not accepted as the chain's state, but recorded as
evidence (``conflict/<chain>/<height>``) and the chain is marked forked.

State: ``role``, ``period``, ``params`` (this chain's accumulator
fingerprint), ``peers/<chain>`` (validator keys), ``latest/<chain>``,
``anchor/<chain>/<height>``, ``count/<chain>`` and ``index/<chain>/<i>``
(anchored heights in order, for lookups), ``by_tx/<tx hash>`` (chain and
height of the anchor a transaction recorded), ``conflict/<chain>/<height>``,
``forked/<chain>``.
"""

from __future__ import annotations

from typing import Any

from fedledger.contracts.base import Context, Contract, arg, register, write_state
from fedledger.errors import ContractError, DecodeError
from fedledger.ledger.interlock import Anchor, InterlockConfig, quorum_problem
from fedledger.ledger.state import State

interlock = register(Contract("interlock"))
MAX_SIGNATURES = 256


def seed_interlock(state: State, config: InterlockConfig, params_fingerprint: bytes) -> None:
    """Write the genesis inter-locking configuration into state."""
    write_state(state, "interlock", "role", config.role)
    write_state(state, "interlock", "period", config.period)
    write_state(state, "interlock", "params", params_fingerprint)
    for chain, keys in config.peers.items():
        write_state(state, "interlock", f"peers/{chain}", list(keys))


def _anchor_arg(args: Any) -> Anchor:
    raw = arg(args, "anchor", dict)
    try:
        return Anchor.from_obj(raw)
    except DecodeError as exc:
        raise ContractError(f"malformed anchor: {exc}") from None


def _accept(ctx: Context, args: Any, role: str, kind: int) -> dict[str, Any]:
    ctx.require(ctx.get("role") == role, f"Type-{'II' if kind == 2 else 'III'} anchors go to the "
                f"{'main chain' if kind == 2 else 'sub-chains'}; this chain's role is {ctx.get('role')!r}")
    anchor = _anchor_arg(args)
    signatures = arg(args, "signatures", list)
    ctx.require(len(signatures) <= MAX_SIGNATURES, "too many signatures")
    chain = anchor.chain_id
    validators = ctx.get(f"peers/{chain}")
    ctx.require(validators is not None, f"{chain!r} is not an inter-locked chain of {ctx.chain_id!r}")
    problem = quorum_problem(anchor, signatures, validators)
    ctx.require(problem is None, f"anchor of {chain!r} at {anchor.height} lacks a quorum: {problem}")
    ctx.require(anchor.params == ctx.get("params"), f"anchor of {chain!r} uses other accumulator parameters")
    ctx.require(0 <= anchor.checkpoint_height <= anchor.height, "checkpoint must be at or below the anchored height")
    entry = {**anchor.to_obj(), "type": kind, "anchored_at": ctx.height, "tx": ctx.tx_hash}
    existing = ctx.get(f"anchor/{chain}/{anchor.height}")
    if existing is not None:
        ctx.require(existing["head"] != anchor.head, f"{chain!r} at {anchor.height} is already anchored")
        ctx.put(f"conflict/{chain}/{anchor.height}", {"anchored": existing, "conflicting": entry})
        ctx.put(f"forked/{chain}", anchor.height)
        return {"conflict": True, "height": anchor.height}
    latest = ctx.get(f"latest/{chain}")
    ctx.require(latest is None or anchor.height > latest["height"],
                f"anchored heights of {chain!r} must increase (latest {latest and latest['height']})")
    count = ctx.get(f"count/{chain}") or 0
    ctx.put(f"anchor/{chain}/{anchor.height}", entry)
    ctx.put(f"index/{chain}/{count}", anchor.height)
    ctx.put(f"count/{chain}", count + 1)
    ctx.put(f"latest/{chain}", entry)
    ctx.put(f"by_tx/{ctx.tx_hash.hex()}", [chain, anchor.height])
    return {"conflict": False, "height": anchor.height}


@interlock.method
def anchor_subchain(ctx: Context, args: Any) -> dict[str, Any]:
    """Type-II: a sub-chain's quorum-signed anchor, recorded on the main chain."""
    return _accept(ctx, args, "main", 2)


@interlock.method
def anchor_mainchain(ctx: Context, args: Any) -> dict[str, Any]:
    """Type-III: the main chain's quorum-signed anchor, recorded on a sub-chain."""
    return _accept(ctx, args, "sub", 3)
