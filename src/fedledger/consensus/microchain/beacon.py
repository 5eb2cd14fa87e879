"""Epoch randomness beacon of a microchain committee (seed 004 §IV-B (1) and (4)).

Each dynasty's committee produces the seed of the next committee's VRF
sortition (§IV-B 1). The paper uses RandShare over PVSS (§IV-B 4); we run the
equivalent commit-reveal with Feldman-VSS recovery on chain, through the
``beacon`` contract (:mod:`fedledger.contracts.beacon`), in the first five
phases of the dynasty (:data:`fedledger.contracts.microchain.PHASES`):

deal      member i posts commitments C_ik = a_ik·G to a random polynomial f_i of
          degree t−1 and the shares f_i(j) sealed to each member j;
complain  member j complains about dealer i if its share does not verify;
justify   dealer i answers each complaint by publishing that share, checked on
          chain; Q = dealers who dealt and justified every complaint;
reveal    each i ∈ Q reveals r_i = f_i(0), checked against C_i0;
recover   for each i ∈ Q that did not reveal, members post their verified
          shares; any t of them give r_i.

The seed is H("fedledger/beacon", [d, r_i for i ∈ Q in member order]).

With n members, f = ⌊(n−1)/3⌋ faulty at most, and threshold t = f + 1:

* Unbiasable. Q, and every r_i with i ∈ Q (bound by C_i0), are fixed when the
  justify phase ends, before any secret is revealed. Withholding a reveal
  changes nothing: every honest member holds a valid share of every i ∈ Q
  (its own, or the one the dealer published to justify its complaint), and
  the n − f ≥ 2f + 1 ≥ t honest members recover r_i in the recover phase.
* Unpredictable. Before the reveal phase the adversary holds at most f < t
  shares of an honest dealer's polynomial (shares published in a justify only
  ever answer complaints, which honest members never make against an honest
  dealer), so it learns nothing about an honest r_i, hence about the seed.
* Availability caveat. If Q is empty, or some r_i in Q can be neither revealed
  nor recovered, the output falls back to H("fedledger/beacon-fallback",
  [d, previous seed]) — predictable, but it needs more than f faulty or
  offline members (at least n − t + 1 withholding their shares).

Everything here is pure: it reads chain state and returns values or calls.
"""

from __future__ import annotations

from typing import Any

from fedledger.codec import cbor
from fedledger.contracts.base import read_state, state_key
from fedledger.contracts.microchain import Dynasty, current_dynasty, params_of, phase_of, read
from fedledger.crypto import vss
from fedledger.crypto.hashing import tagged_hash
from fedledger.crypto.keys import SigningKey
from fedledger.ledger.state import State

NAMESPACE = "beacon"


def faults(n: int) -> int:
    """f: the most faulty members a committee of n tolerates."""
    return (n - 1) // 3


def threshold(n: int) -> int:
    """t = f + 1 shares recover a secret; f cannot."""
    return faults(n) + 1


# -- state layout (contract namespace ``beacon``; i, j are member ranks) ------
#   <d>/commit/<i>           dealer i's commitments [C_i0 .. C_i,t-1]
#   <d>/boxes/<i>            dealer i's sealed shares, one per member in order
#   <d>/complaint/<i>/<j>    j complained about i: b"" until i justifies with f_i(j+1)
#   <d>/reveal/<i>           r_i = f_i(0)
#   <d>/share/<i>/<j>        f_i(j+1) posted by j in the recover phase


def slot(d: int, kind: str, *ranks: int) -> str:
    """The key of one beacon record (see the layout above)."""
    return "/".join([str(d), kind, *map(str, ranks)])


def _get(state: State, k: str) -> Any:
    return read_state(state, NAMESPACE, k)


def _under(state: State, prefix: str) -> dict[int, Any]:
    """{rank: value} of the keys ``prefix/<rank>``."""
    base = state_key(NAMESPACE, f"{prefix}/")
    return {int(k[len(base):]): cbor.decode(state.get(k) or b"") for k in state.keys_with_prefix(base)}


def commitments(state: State, d: int, i: int) -> list[bytes] | None:
    return _get(state, slot(d, "commit", i))


def complaints(state: State, d: int, i: int) -> dict[int, bytes]:
    """{complainer rank: justified share, or b"" while unanswered} against dealer i."""
    return _under(state, slot(d, "complaint", i))


def revealed(state: State, d: int, i: int) -> bytes | None:
    return _get(state, slot(d, "reveal", i))


def qualified(state: State, d: int, i: int) -> bool:
    """i dealt, and answered every complaint against it with a valid share (checked on chain)."""
    return commitments(state, d, i) is not None and all(complaints(state, d, i).values())


def public_shares(state: State, d: int, i: int) -> dict[int, bytes]:
    """{VSS index j+1: f_i(j+1)} of every verified share of dealer i on chain (posted or justified)."""
    shares = {j + 1: s for j, s in _under(state, slot(d, "share", i)).items()}
    shares.update((j + 1, s) for j, s in complaints(state, d, i).items() if s)
    return shares


def polynomial(key: SigningKey, chain_id: str, dynasty: int, t: int) -> list[bytes]:
    """The member's secret coefficients a_0..a_{t-1} for ``dynasty``.

    Derived from its private seed, so a restarted node re-derives the same
    polynomial and nobody without the key can predict it.
    """
    base = cbor.encode(["fedledger/beacon-polynomial", key.seed(), chain_id, dynasty])
    return [vss.random_scalar_from(base + k.to_bytes(4, "big")) for k in range(t)]


def _my_share(key: SigningKey, state: State, d: int, i: int, me: int) -> bytes | None:
    """My verified share of dealer i's polynomial, or None if its box or share is bad."""
    c = commitments(state, d, i)
    boxes = _get(state, slot(d, "boxes", i))
    if c is None or boxes is None:
        return None
    try:
        share = vss.decrypt_share(key, boxes[me])
    except ValueError:
        return None
    return share if vss.verify_share(c, me + 1, share) else None


def duties(state: State, key: SigningKey, chain_id: str, height: int) -> list[tuple[str, dict[str, Any]]]:
    """The beacon calls ``(method, args)`` member ``key`` should submit in a block at ``height``.

    Empty if it is not a member of the current committee or has nothing left to
    do in this phase. Calls already on chain are not repeated; calls still in
    the mempool are (the contract rejects the duplicate).
    """
    params = params_of(state)
    try:
        dyn = current_dynasty(state)
    except LookupError:
        return []
    if params is None or key.public_key not in dyn.members:
        return []
    d, phase = phase_of(params, height)
    if d != dyn.number:
        return []
    members, n = dyn.members, len(dyn.members)
    me, t = members.index(key.public_key), threshold(n)
    calls: list[tuple[str, dict[str, Any]]] = []
    if phase == "deal" and commitments(state, d, me) is None:
        commits, shares = vss.deal(polynomial(key, chain_id, d, t), n)
        boxes = [vss.encrypt_share(pk, s) for pk, s in zip(members, shares, strict=True)]
        calls.append(("deal", {"dynasty": d, "commitments": commits, "shares": boxes}))
    elif phase == "complain":
        for i in range(n):
            if (i != me and commitments(state, d, i) is not None and me not in complaints(state, d, i)
                    and _my_share(key, state, d, i, me) is None):
                calls.append(("complain", {"dynasty": d, "dealer": members[i]}))
    elif phase == "justify":
        open_ = [j for j, s in complaints(state, d, me).items() if not s]
        if open_:
            _, shares = vss.deal(polynomial(key, chain_id, d, t), n)
            for j in open_:
                calls.append(("justify", {"dynasty": d, "complainer": members[j], "share": shares[j]}))
    elif phase == "reveal":
        if qualified(state, d, me) and revealed(state, d, me) is None:
            calls.append(("reveal", {"dynasty": d, "secret": polynomial(key, chain_id, d, t)[0]}))
    elif phase == "recover":
        for i in range(n):
            if not qualified(state, d, i) or revealed(state, d, i) is not None:
                continue
            pool = public_shares(state, d, i)
            if len(pool) >= t or me + 1 in pool:
                continue
            share = _my_share(key, state, d, i, me)
            if share is not None:
                calls.append(("recover", {"dynasty": d, "dealer": members[i], "share": share}))
    return calls


def _dynasty(state: State, d: int) -> Dynasty:
    """Committee d: the current one, or the one just rotated out."""
    dyn = current_dynasty(state)
    if dyn.number != d:
        prev = read(state, "dynasty_prev")
        if prev is None or prev["number"] != d:
            raise LookupError(f"dynasty {d} is neither the current committee nor the previous one")
        dyn = Dynasty.from_obj(prev)
    return dyn


def _outcome(state: State, d: int) -> tuple[bytes, dict[str, Any]]:
    dyn = _dynasty(state, d)
    n = len(dyn.members)
    t = threshold(n)
    q = [i for i in range(n) if qualified(state, d, i)]
    secrets: list[bytes] = []
    revealed_, recovered = [], []
    for i in q:
        r = revealed(state, d, i)
        if r is not None:
            revealed_.append(i)
        else:
            pool = public_shares(state, d, i)
            if len(pool) < t:
                continue
            r = vss.recover(pool, t)
            recovered.append(i)
        secrets.append(r)
    fallback = not q or len(secrets) < len(q)
    if fallback:
        seed = tagged_hash("fedledger/beacon-fallback", cbor.encode([d, dyn.seed]))
    else:
        seed = tagged_hash("fedledger/beacon", cbor.encode([d, secrets]))
    status = {"qualified": q, "revealed": revealed_, "recovered": recovered, "fallback": fallback}
    return seed, status


def seed_for(state: State, dynasty_number: int) -> bytes:
    """The epoch seed dynasty ``dynasty_number`` hands to the next committee's sortition.

    Final once that dynasty's recover phase is over. Readable while the chain is
    in that dynasty or the next one (it needs the committee and, for the
    fallback, its seed); ``LookupError`` otherwise.
    A pure function of ``state``: it reads and never writes.
    """
    return _outcome(state, dynasty_number)[0]


def beacon_status(state: State, dynasty_number: int) -> dict[str, Any]:
    """{qualified, revealed, recovered: member ranks; fallback: bool} for logs and tests."""
    return _outcome(state, dynasty_number)[1]
