"""Seed 001's on-chain records: the edge's acceptance, H(S_Dij), penalties, and the cloud's verified sum.

Sub-chain (edge and its devices), per device round ``<stage>``:

- a device binds its packet in ``fl.submit_update`` (``masked``: the packet
  digest, which covers ``g + η``, H(η ‖ −p) and the digest of every share);
- ``accept`` is the edge's signed acceptance (step 3, attempt 1, 2, …): the
  accepted updates, each with the commitment the edge checked (packet digest
  ‖ sketches digest). The contract checks each packet digest against the
  device's own ``submit_update``, takes the weights from the recorded sample
  counts, and refuses a device penalised in this round;
- ``share_sum`` is a device's H(S_Dij) for an attempt (step 4), once;
- ``penalise`` names a device whose share or share sum failed (steps 4–5),
  with the digest of the public evidence (the bad share, checkable by anyone
  against the dealer's bound digest and sketches); it counts in
  ``penalties/<addr>`` and bars the device from later attempts of the round.
  ``fl.record_aggregate`` with ``secagg`` must list exactly the last
  acceptance's updates and records H(c_i).

Main chain (cloud and edges), per round (step 6):

- ``cloud_sum``: the task owner commits to H(c) and the edge sums it added;
- ``commit``: each listed edge records COM(c_i) under the challenge fixed by
  H(c), once;
- ``verdict``: each edge's check of COM(c) = Σ COM(c_i), allowed only once
  every listed edge has committed. A refusal penalises the cloud
  (``penalties/<addr>``), and ``fl.publish_model`` refuses the round's model
  unless every listed edge accepted the sum.

The contract checks what is cheap to check on chain (who, which round, that
commitments match what devices signed, ordering); the vector arithmetic runs
off chain, and its evidence is public.
"""

from __future__ import annotations

from typing import Any

from fedledger.contracts.base import Context, Contract, arg, register
from fedledger.contracts.fl import HASH, MAX_UPDATES, _sub_round, stage
from fedledger.contracts.identity import lookup_identity, require_role
from fedledger.crypto.keys import PUBLIC_KEY_SIZE, address_of

secagg = register(Contract("secagg"))
MAX_ATTEMPTS = 64
MAX_REASON = 256
COM_BYTES = 8 * 4  # eight sketch rows of 32-bit field elements


def accepted(ctx: Context, label: str) -> Any:
    """The last acceptance of device round ``label`` (or None)."""
    attempt = ctx.get(f"attempt/{label}")
    return None if attempt is None else ctx.get(f"accept/{label}/{attempt}")


@secagg.method
def accept(ctx: Context, args: Any) -> None:
    """Step 3: the edge's acceptance of a round's packets (repeated without penalised dealers)."""
    require_role(ctx, "edge")
    label = stage(arg(args, "round", int), _sub_round(ctx, args))
    attempt = arg(args, "attempt", int)
    challenge = arg(args, "challenge", bytes, size=HASH)
    updates = arg(args, "updates", list)
    commitments = arg(args, "commitments", list)
    last = ctx.get(f"attempt/{label}") or 0
    ctx.require(attempt == last + 1, f"attempt must be {last + 1}")
    ctx.require(attempt <= MAX_ATTEMPTS, f"at most {MAX_ATTEMPTS} attempts per round")
    ctx.require(0 < len(updates) <= MAX_UPDATES, f"an acceptance lists 1..{MAX_UPDATES} updates")
    ctx.require(len(commitments) == len(updates), "one commitment per accepted update")
    ctx.require(all(isinstance(tx, bytes) and len(tx) == HASH for tx in updates), "updates are 32-byte tx hashes")
    ctx.require(all(isinstance(c, bytes) and len(c) == 2 * HASH for c in commitments), "commitments are 64 bytes")
    ctx.require(len(set(updates)) == len(updates), "an update is listed twice")
    devices, weights = [], []
    for tx, com in zip(updates, commitments, strict=True):
        up = ctx.get(f"update_tx/{tx.hex()}", contract="fl")
        ctx.require(up is not None and stage(up["round"], up.get("sub_round", 1)) == label,
                    f"update {tx.hex()[:16]}… is not an update of round {label} on this chain")
        ctx.require(up.get("masked") == com[:HASH],
                    f"commitment for {tx.hex()[:16]}… is not the packet its device bound")
        ctx.require(ctx.get(f"penalty/{label}/{address_of(up['device']).hex()}") is None,
                    f"device {up['device'].hex()[:16]}… was penalised in round {label}")
        devices.append(up["device"])
        weights.append(up["samples"])
    ctx.put(f"accept/{label}/{attempt}", {"attempt": attempt, "challenge": challenge, "updates": updates,
                                          "commitments": commitments, "devices": devices, "weights": weights,
                                          "edge": ctx.sender, "height": ctx.height, "tx": ctx.tx_hash})
    ctx.put(f"attempt/{label}", attempt)


@secagg.method
def share_sum(ctx: Context, args: Any) -> None:
    """Step 4: H(S_Dij), a participant's share sum for an attempt, recorded once."""
    ident = require_role(ctx, "device")
    ctx.require(ident.home_chain == ctx.chain_id, "the device is not homed on this chain")
    label = stage(arg(args, "round", int), _sub_round(ctx, args))
    attempt = arg(args, "attempt", int)
    digest = arg(args, "hash", bytes, size=HASH)
    ctx.require(ctx.get(f"accept/{label}/{attempt}") is not None, f"round {label} has no acceptance {attempt}")
    key = f"sum/{label}/{attempt}/{ctx.address.hex()}"
    ctx.require(ctx.get(key) is None, "this device already recorded its share sum for the attempt")
    ctx.put(key, {"hash": digest, "device": ctx.sender, "tx": ctx.tx_hash})


def _penalty(ctx: Context, offender: bytes, label: str, reason: str, evidence: bytes) -> None:
    key = f"penalty/{label}/{address_of(offender).hex()}"
    ctx.require(ctx.get(key) is None, "this party was already penalised in the round")
    ctx.put(key, {"offender": offender, "reason": reason, "evidence": evidence, "by": ctx.sender,
                  "height": ctx.height, "tx": ctx.tx_hash})
    count = f"penalties/{address_of(offender).hex()}"
    ctx.put(count, int(ctx.get(count) or 0) + 1)


@secagg.method
def penalise(ctx: Context, args: Any) -> None:
    """Steps 4–5: penalise a device whose share or share sum is provably wrong."""
    require_role(ctx, "edge")
    label = stage(arg(args, "round", int), _sub_round(ctx, args))
    offender = arg(args, "offender", bytes, size=PUBLIC_KEY_SIZE)
    reason = arg(args, "reason", str)
    evidence = arg(args, "evidence", bytes, size=HASH)
    ctx.require(len(reason) <= MAX_REASON, "reason is too long")
    ident = lookup_identity(ctx, offender)
    ctx.require(ident is not None and ident.role == "device", "the offender is not a registered device")
    ctx.require(ctx.get(f"attempt/{label}") is not None, f"round {label} has no acceptance")
    _penalty(ctx, offender, label, reason, evidence)


# -- main chain: step 6 ----------------------------------------------------------------------


@secagg.method
def cloud_sum(ctx: Context, args: Any) -> None:
    """Step 6: the task owner commits to H(c) and to the edge sums H(c_i) it added."""
    require_role(ctx, "cloud")
    task = ctx.get("task", contract="fl")
    ctx.require(task is not None and task["owner"] == ctx.sender, "only the task owner sums a round")
    round_ = arg(args, "round", int)
    last = ctx.get("latest_round", contract="fl")
    ctx.require(last is not None and round_ == last + 1, "the sum must be for the next round")
    ctx.require(ctx.get(f"cloud_sum/{round_}") is None, f"round {round_}'s sum is already recorded")
    total = arg(args, "total", bytes, size=HASH)
    blob = arg(args, "blob", bytes, size=HASH)
    edges = arg(args, "edges", list)
    ctx.require(0 < len(edges) <= MAX_UPDATES, "the sum lists 1..4096 edge sums")
    chains: set[str] = set()
    for e in edges:
        ctx.require(isinstance(e, dict), "an edge sum is a map")
        chain = arg(e, "chain", str)
        arg(e, "sum", bytes, size=HASH)
        ctx.require(arg(e, "weight", int) > 0, "edge weights are positive")
        ctx.require(chain not in chains, f"edge {chain!r} is listed twice")
        chains.add(chain)
    ctx.put(f"cloud_sum/{round_}", {"round": round_, "total": total, "blob": blob, "edges": edges,
                                    "owner": ctx.sender, "height": ctx.height, "tx": ctx.tx_hash})


def _edge_of_round(ctx: Context, round_: int) -> tuple[Any, str]:
    ident = require_role(ctx, "edge")
    rec = ctx.get(f"cloud_sum/{round_}")
    ctx.require(rec is not None, f"round {round_} has no recorded cloud sum")
    ctx.require(any(e["chain"] == ident.home_chain for e in rec["edges"]),
                f"{ident.home_chain!r} is not an edge of round {round_}'s sum")
    return rec, ident.home_chain


@secagg.method
def commit(ctx: Context, args: Any) -> None:
    """Step 6: an edge's COM(c_i) under the challenge fixed by H(c), once."""
    round_ = arg(args, "round", int)
    com = arg(args, "com", bytes, size=COM_BYTES)
    _, chain = _edge_of_round(ctx, round_)
    key = f"commit/{round_}/{chain}"
    ctx.require(ctx.get(key) is None, f"{chain!r} already committed for round {round_}")
    ctx.put(key, {"com": com, "edge": ctx.sender, "tx": ctx.tx_hash})


@secagg.method
def verdict(ctx: Context, args: Any) -> None:
    """Step 6: an edge's check of COM(c) = Σ COM(c_i); a refusal penalises the cloud."""
    round_ = arg(args, "round", int)
    ok = arg(args, "ok", bool)
    reason = arg(args, "reason", str)
    ctx.require(len(reason) <= MAX_REASON, "reason is too long")
    rec, chain = _edge_of_round(ctx, round_)
    missing = [e["chain"] for e in rec["edges"] if ctx.get(f"commit/{round_}/{e['chain']}") is None]
    ctx.require(not missing, f"edges {', '.join(missing)} have not committed COM(c_i) yet")
    key = f"verdict/{round_}/{chain}"
    ctx.require(ctx.get(key) is None, f"{chain!r} already gave its verdict on round {round_}")
    ctx.put(key, {"ok": ok, "reason": reason, "edge": ctx.sender, "tx": ctx.tx_hash})
    if not ok and ctx.get(f"penalty/cloud/{round_}/{address_of(rec['owner']).hex()}") is None:
        _penalty(ctx, rec["owner"], f"cloud/{round_}", reason, rec["total"])  # once, however many edges refuse


def sum_problem(ctx: Context, round_: int) -> str | None:
    """Why round ``round_``'s model may not be published under seed 001 (None: verified or not secure)."""
    rec = ctx.get(f"cloud_sum/{round_}", contract="secagg")
    if rec is None:
        return None
    for e in rec["edges"]:
        v = ctx.get(f"verdict/{round_}/{e['chain']}", contract="secagg")
        if v is None:
            return f"edge {e['chain']!r} has not verified round {round_}'s secure sum"
        if not v["ok"]:
            return f"edge {e['chain']!r} rejected round {round_}'s secure sum: {v['reason']}"
    return None
