"""The federated-learning task contract: the round-by-round record of a job.

Main chain (cloud): ``publish_model`` records each global model with its
authenticator H(model ‖ program ‖ round) signed by the task owner (seed 004
§III-A), and the edge aggregates it was built from, each with the Type-II
anchor (``interlock.anchor_subchain``) that covers it (seed 000 §III).
Sub-chains (edge): ``submit_update`` records a device's local model;
``record_aggregate`` records the edge aggregate and which updates it used.
Only hashes live on chain; the models themselves are blobs (seed 004 §IV-C).
"""

from __future__ import annotations

from typing import Any

from fedledger.contracts.base import Context, Contract, arg, register
from fedledger.contracts.identity import require_role
from fedledger.crypto.hashing import tagged_hash
from fedledger.crypto.keys import Domain, is_valid

fl = register(Contract("fl"))
HASH = 32
MAX_PARENTS = 256
MAX_UPDATES = 4096


def authenticator_message(model_hash: bytes, program_hash: bytes, round_: int) -> bytes:
    """The digest the task owner signs: H(global model ‖ training-program hash ‖ round)."""
    return tagged_hash("fedledger/authenticator", model_hash + program_hash + round_.to_bytes(8, "big"))


@fl.method
def publish_model(ctx: Context, args: Any) -> None:
    require_role(ctx, "cloud")
    round_ = arg(args, "round", int)
    model = arg(args, "model", bytes, size=HASH)
    program = arg(args, "program", bytes, size=HASH)
    auth = arg(args, "authenticator", bytes, size=64)
    parents = arg(args, "parents", list)
    metrics = arg(args, "metrics", dict)
    last = ctx.get("latest_round")
    ctx.require(round_ == (0 if last is None else last + 1), f"round must be {0 if last is None else last + 1}")
    ctx.require(
        is_valid(ctx.sender, Domain.AUTHENTICATOR, authenticator_message(model, program, round_), auth),
        "authenticator does not verify for this model, program and round",
    )
    ctx.require(len(parents) <= MAX_PARENTS, "too many parents")
    ctx.require(round_ == 0 or parents, "a global model after round 0 must name its edge aggregates")
    for p in parents:
        ctx.require(isinstance(p, dict), "parent must be a map")
        chain = arg(p, "chain", str)
        arg(p, "tx", bytes, size=HASH)
        arg(p, "model", bytes, size=HASH)
        arg(p, "samples", int)
        anchor = arg(p, "anchor", bytes, size=HASH)
        anchored = ctx.get(f"by_tx/{anchor.hex()}", contract="interlock")
        ctx.require(anchored is not None and anchored[0] == chain,
                    f"parent anchor {anchor.hex()[:16]} is not a Type-II anchor of {chain!r}")
    record = {
        "round": round_,
        "model": model,
        "program": program,
        "authenticator": auth,
        "owner": ctx.sender,
        "parents": parents,
        "metrics": metrics,
        "height": ctx.height,
        "tx": ctx.tx_hash,
    }
    ctx.put(f"model/{round_}", record)
    ctx.put(f"model_by_hash/{model.hex()}", round_)
    ctx.put("latest_round", round_)


@fl.method
def submit_update(ctx: Context, args: Any) -> None:
    """A device's local model for a round, trained from ``base`` on data ``data``."""
    require_role(ctx, "device")
    round_ = arg(args, "round", int)
    base = arg(args, "base", bytes, size=HASH)
    model = arg(args, "model", bytes, size=HASH)
    samples = arg(args, "samples", int)
    data = arg(args, "data", bytes, size=HASH)
    ctx.require(samples > 0, "samples must be positive")
    key = f"update/{round_}/{ctx.address.hex()}"
    ctx.require(ctx.get(key) is None, "this device already submitted an update for the round")
    record = {"round": round_, "base": base, "model": model, "samples": samples, "data": data,
              "device": ctx.sender, "tx": ctx.tx_hash}
    ctx.put(key, record)
    ctx.put(f"update_tx/{ctx.tx_hash.hex()}", record)


@fl.method
def record_aggregate(ctx: Context, args: Any) -> None:
    """The edge aggregate of a round; every listed update must be on this chain, same round and base."""
    require_role(ctx, "edge")
    round_ = arg(args, "round", int)
    base = arg(args, "base", bytes, size=HASH)
    model = arg(args, "model", bytes, size=HASH)
    samples = arg(args, "samples", int)
    updates = arg(args, "updates", list)
    ctx.require(0 < len(updates) <= MAX_UPDATES, "an aggregate needs 1..4096 updates")
    ctx.require(ctx.get(f"aggregate/{round_}") is None, "aggregate for this round already recorded")
    total = 0
    seen: set[bytes] = set()
    for tx in updates:
        ctx.require(isinstance(tx, bytes) and len(tx) == HASH, "updates are 32-byte tx hashes")
        ctx.require(tx not in seen, "an update is listed twice")
        seen.add(tx)
        up = ctx.get(f"update_tx/{tx.hex()}")
        ctx.require(up is not None, f"update {tx.hex()} is not on this chain")
        ctx.require(up["round"] == round_ and up["base"] == base, f"update {tx.hex()} is for another round or base")
        total += up["samples"]
    ctx.require(total == samples, f"samples {samples} do not match the updates' total {total}")
    ctx.put(f"aggregate/{round_}", {"round": round_, "base": base, "model": model, "samples": samples,
                                    "updates": updates, "edge": ctx.sender, "tx": ctx.tx_hash})
