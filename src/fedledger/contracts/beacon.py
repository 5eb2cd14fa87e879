"""The epoch-randomness beacon contract (seed 004 §IV-B (1) and (4)).

Committee members run commit-reveal with Feldman-VSS recovery, one method per
phase of the dynasty: ``deal``, ``complain``, ``justify``, ``reveal``,
``recover``. Every call names the current ``dynasty``, must fall in its phase
and come from a member of the current committee; the contract checks every
share and secret it can against the dealer's commitments, so the seed
(:func:`fedledger.consensus.microchain.beacon.seed_for`) reads only verified
values. The protocol, the state layout and the security argument are in
:mod:`fedledger.consensus.microchain.beacon`.
"""

from __future__ import annotations

from typing import Any

from fedledger.consensus.microchain import beacon as logic
from fedledger.contracts.base import Context, Contract, arg, register
from fedledger.contracts.microchain import Dynasty, current_dynasty, params_of, phase_of
from fedledger.crypto import vss
from fedledger.errors import ContractError

beacon = register(Contract("beacon"))
PK = 32


def _enter(ctx: Context, args: Any, phase: str) -> tuple[int, Dynasty, int]:
    """Check dynasty, phase and membership; return (dynasty, committee, sender's rank)."""
    d = arg(args, "dynasty", int)
    params = params_of(ctx.state)
    if params is None or ctx.get("dynasty", "microchain") is None:
        raise ContractError("this chain has no microchain committee")
    dyn = current_dynasty(ctx.state)
    ctx.require(d == dyn.number, f"dynasty must be the current one, {dyn.number}")
    at = phase_of(params, ctx.height)
    ctx.require(at == (d, phase), f"{phase} is not open at height {ctx.height} (dynasty {at[0]}, phase {at[1]})")
    ctx.require(ctx.sender in dyn.members, "sender is not a member of the current committee")
    return d, dyn, dyn.members.index(ctx.sender)


def _member(ctx: Context, dyn: Dynasty, args: Any, name: str) -> int:
    pk = arg(args, name, bytes, size=PK)
    ctx.require(pk in dyn.members, f"{name} is not a member of the current committee")
    return dyn.members.index(pk)


@beacon.method
def deal(ctx: Context, args: Any) -> None:
    """Post commitments to a degree t−1 polynomial and the n sealed shares, in member order."""
    d, dyn, me = _enter(ctx, args, "deal")
    n = len(dyn.members)
    t = logic.threshold(n)
    commitments = arg(args, "commitments", list)
    boxes = arg(args, "shares", list)
    ctx.require(logic.commitments(ctx.state, d, me) is None, "already dealt in this dynasty")
    ctx.require(len(commitments) == t, f"need exactly t = {t} commitments")
    ctx.require(all(vss.is_point(c) for c in commitments), "a commitment is not a valid group element")
    ctx.require(len(boxes) == n, f"need exactly n = {n} sealed shares")
    ctx.require(all(isinstance(b, bytes) and len(b) == vss.BOX_SIZE for b in boxes),
                f"a sealed share is not {vss.BOX_SIZE} bytes")
    ctx.put(logic.slot(d, "commit", me), commitments)
    ctx.put(logic.slot(d, "boxes", me), boxes)


@beacon.method
def complain(ctx: Context, args: Any) -> None:
    """The sender's share from ``dealer`` does not open or verify; the dealer must justify."""
    d, dyn, me = _enter(ctx, args, "complain")
    i = _member(ctx, dyn, args, "dealer")
    ctx.require(i != me, "cannot complain about your own deal")
    ctx.require(logic.commitments(ctx.state, d, i) is not None, "dealer has not dealt")
    ctx.require(me not in logic.complaints(ctx.state, d, i), "already complained about this dealer")
    ctx.put(logic.slot(d, "complaint", i, me), b"")


@beacon.method
def justify(ctx: Context, args: Any) -> None:
    """Answer a complaint by publishing the complainer's share, checked against the commitments."""
    d, dyn, me = _enter(ctx, args, "justify")
    j = _member(ctx, dyn, args, "complainer")
    share = arg(args, "share", bytes, size=vss.SCALAR_SIZE)
    current = logic.complaints(ctx.state, d, me).get(j)
    ctx.require(current is not None, "no complaint from this member against you")
    ctx.require(not current, "complaint already justified")
    commitments = logic.commitments(ctx.state, d, me)
    ctx.require(commitments is not None and vss.verify_share(commitments, j + 1, share),
                "share does not verify at the complainer's index")
    ctx.put(logic.slot(d, "complaint", me, j), share)


@beacon.method
def reveal(ctx: Context, args: Any) -> None:
    """A qualified dealer reveals its secret r = f(0), checked against C_0."""
    d, _, me = _enter(ctx, args, "reveal")
    secret = arg(args, "secret", bytes, size=vss.SCALAR_SIZE)
    ctx.require(logic.qualified(ctx.state, d, me), "not a qualified dealer (no deal, or an unanswered complaint)")
    ctx.require(logic.revealed(ctx.state, d, me) is None, "already revealed")
    commitments = logic.commitments(ctx.state, d, me)
    ctx.require(commitments is not None and vss.secret_matches(commitments, secret),
                "secret does not match the commitment C_0")
    ctx.put(logic.slot(d, "reveal", me), secret)


@beacon.method
def recover(ctx: Context, args: Any) -> None:
    """Post the sender's share of a qualified dealer that did not reveal."""
    d, dyn, me = _enter(ctx, args, "recover")
    i = _member(ctx, dyn, args, "dealer")
    share = arg(args, "share", bytes, size=vss.SCALAR_SIZE)
    ctx.require(logic.qualified(ctx.state, d, i), "dealer is not qualified")
    ctx.require(logic.revealed(ctx.state, d, i) is None, "dealer already revealed")
    pool = logic.public_shares(ctx.state, d, i)
    ctx.require(me + 1 not in pool, "your share of this dealer is already on chain")
    ctx.require(len(pool) < logic.threshold(len(dyn.members)), "enough shares already posted")
    commitments = logic.commitments(ctx.state, d, i)
    ctx.require(commitments is not None and vss.verify_share(commitments, me + 1, share),
                "share does not verify at your index")
    ctx.put(logic.slot(d, "share", i, me), share)
