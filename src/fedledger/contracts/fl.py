"""The federated-learning task contract: the round-by-round record of a job.

Main chain (cloud): ``open_task`` fixes the training program, the dataset and
the hash of the cloud's held-out test set, so published scores can be checked
(seed 004 §VII); ``publish_model`` records each global model with its
authenticator H(model ‖ program ‖ round) signed by the task owner (seed 004
§III-A), and the edge aggregates it was built from, each with the Type-II
anchor (``interlock.anchor_subchain``) that covers it (seed 000 §III).

Sub-chains (edge):
- ``record_data`` is seed 000 §V-A's pointer transaction (d^E, σ, ptr): a
  batch of readings, signed by its device (or, delegated, by the edge peer),
  stays off-chain at ``ptr``;
- ``record_step`` is seed 000 §V-B's tx = H(M_(i+1) ‖ M_O ‖ d_(i+1) ‖ i+1) for
  one step of local training, chained to the previous step and to a recorded
  data batch of the same device;
- ``submit_update`` records a device's local model (its last step);
- ``record_aggregate`` records the edge aggregate and which updates it used.

Decentralised rounds (seed 002 §5.2.2 steps 13–17; no edge aggregator):
- every ``submit_update`` is listed in ``round_updates/<stage>``, and the height
  of a round's first update starts its deadline (``round_start/<stage>``);
- ``close_round`` fixes ``closed/<round>``, the updates every device must
  aggregate, once every device of the chain's registry has submitted or the
  deadline (first update + ``DEADLINE_BLOCKS``) has passed; later updates of
  that round are refused;
- ``vote`` is step 16's VoteReputation: a device scores a peer's closed update
  (basis points), kept per voter and summed per device (``reputation/<addr>``);
- ``record_view`` is the hash of a device's own global model after the round
  (step 17), so that devices' agreement can be checked on chain.

An edge may aggregate its devices k times per cloud round (``sub_round`` 1..k):
sub-round 1 starts from the global model, sub-round j > 1 from the edge's
sub-round j-1 aggregate. Only hashes live on chain; the models and readings
themselves are blobs (seed 004 §IV-C), possibly sealed (``blob`` is then the
stored object's address and ``model`` the plaintext hash).
"""

from __future__ import annotations

from typing import Any

from fedledger.contracts.base import Context, Contract, arg, register, state_key
from fedledger.contracts.identity import lookup_identity, require_role
from fedledger.crypto.hashing import tagged_hash
from fedledger.crypto.keys import PUBLIC_KEY_SIZE, SIGNATURE_SIZE, Domain, address_of, is_valid

fl = register(Contract("fl"))
HASH = 32
MAX_PARENTS = 256
MAX_UPDATES = 4096
MAX_READERS = 64
MAX_SUB_ROUNDS = 100
# Blocks a decentralised round stays open after its first update before any device may close it without
# waiting for the missing devices: about a minute at the microchain's default 200 ms slot.
DEADLINE_BLOCKS = 300
MAX_SCORE = 10_000  # vote scores are basis points


def stage(round_: int, sub_round: int) -> str:
    """State-key label of a device round: ``"r"`` for sub-round 1, ``"r.j"`` after it."""
    return str(round_) if sub_round == 1 else f"{round_}.{sub_round}"


def data_message(chain_id: str, device: bytes, data: bytes, ptr: bytes, samples: int) -> bytes:
    """What σ signs for a batch of readings (seed 000 §V-A): device, H(d), pointer, size, chain."""
    return tagged_hash("fedledger/data", chain_id.encode() + b"\x00" + device + data + ptr + samples.to_bytes(8, "big"))


def step_digest(model: bytes, global_model: bytes, data: bytes, index: int) -> bytes:
    """Seed 000 §V-B: tx_(M_(i+1)) = H(M_(i+1) ‖ M_O ‖ d_(i+1) ‖ i+1), with ``index`` = i+1."""
    return tagged_hash("fedledger/step", model + global_model + data + index.to_bytes(8, "big"))


def authenticator_message(model_hash: bytes, program_hash: bytes, round_: int) -> bytes:
    """The digest the task owner signs: H(global model ‖ training-program hash ‖ round)."""
    return tagged_hash("fedledger/authenticator", model_hash + program_hash + round_.to_bytes(8, "big"))


@fl.method
def open_task(ctx: Context, args: Any) -> None:
    """The cloud opens the job: program, model, dataset, test-set hash, k, and who may read sealed blobs."""
    require_role(ctx, "cloud")
    ctx.require(ctx.get("task") is None, "a task is already open on this chain")
    task = {
        "program": arg(args, "program", bytes, size=HASH),
        "model": arg(args, "model", str),
        "dataset": arg(args, "dataset", str),
        "test_set": arg(args, "test_set", bytes, size=HASH),
        "test_samples": arg(args, "test_samples", int),
        "device_rounds": arg(args, "device_rounds", int),
        "readers": arg(args, "readers", list),
        "config": arg(args, "config", dict),
    }
    ctx.require(task["test_samples"] > 0, "the test set must not be empty")
    ctx.require(1 <= task["device_rounds"] <= MAX_SUB_ROUNDS, f"device_rounds must be 1..{MAX_SUB_ROUNDS}")
    ctx.require(len(task["readers"]) <= MAX_READERS, "too many readers")
    ctx.require(all(isinstance(r, bytes) and len(r) == PUBLIC_KEY_SIZE for r in task["readers"]),
                "readers are 32-byte public keys")
    ctx.put("task", {**task, "owner": ctx.sender, "height": ctx.height, "tx": ctx.tx_hash})


@fl.method
def publish_model(ctx: Context, args: Any) -> None:
    require_role(ctx, "cloud")
    task = ctx.get("task")
    ctx.require(task is not None, "no task is open on this chain (fl.open_task)")
    ctx.require(ctx.sender == task["owner"], "only the task owner publishes global models")
    round_ = arg(args, "round", int)
    model = arg(args, "model", bytes, size=HASH)
    program = arg(args, "program", bytes, size=HASH)
    auth = arg(args, "authenticator", bytes, size=64)
    parents = arg(args, "parents", list)
    metrics = arg(args, "metrics", dict)
    blob = arg(args, "blob", bytes, size=HASH) if "blob" in args else model
    ctx.require(program == task["program"], "the model was not trained with the task's program")
    last = ctx.get("latest_round")
    ctx.require(round_ == (0 if last is None else last + 1), f"round must be {0 if last is None else last + 1}")
    ctx.require(
        is_valid(ctx.sender, Domain.AUTHENTICATOR, authenticator_message(model, program, round_), auth),
        "authenticator does not verify for this model, program and round",
    )
    ctx.require(len(parents) <= MAX_PARENTS, "too many parents")
    ctx.require(round_ == 0 or parents, "a global model after round 0 must name its edge aggregates")
    from fedledger.contracts.secagg import sum_problem

    problem = sum_problem(ctx, round_)  # seed 001 step 6: every edge must accept the secure sum
    ctx.require(problem is None, problem or "")
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
        "blob": blob,
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


def _sub_round(ctx: Context, args: Any) -> int:
    sub = arg(args, "sub_round", int) if "sub_round" in args else 1
    ctx.require(1 <= sub <= MAX_SUB_ROUNDS, f"sub_round must be 1..{MAX_SUB_ROUNDS}")
    return sub


@fl.method
def record_data(ctx: Context, args: Any) -> None:
    """Seed 000 §V-A: (d^E, σ, ptr) for a batch of readings kept off-chain, signed by its device or its edge."""
    device = arg(args, "device", bytes, size=PUBLIC_KEY_SIZE)
    data = arg(args, "data", bytes, size=HASH)
    ptr = arg(args, "ptr", bytes, size=HASH)
    samples = arg(args, "samples", int)
    sig = arg(args, "sig", bytes, size=SIGNATURE_SIZE)
    ctx.require(samples > 0, "a data batch needs at least one reading")
    owner = lookup_identity(ctx, device)
    ctx.require(owner is not None and owner.role == "device", "the data's device is not a registered device")
    signer = ctx.sender
    if signer != device:  # delegated signing: the edge peer signs for a weak device
        require_role(ctx, "edge")
    ctx.require(is_valid(signer, Domain.DATA, data_message(ctx.chain_id, device, data, ptr, samples), sig),
                "σ does not verify for this device, data, pointer and size")
    key = f"data/{device.hex()}/{data.hex()}"
    ctx.require(ctx.get(key) is None, "this data batch is already recorded")
    ctx.put(key, {"device": device, "signer": signer, "data": data, "ptr": ptr, "samples": samples,
                  "sig": sig, "height": ctx.height, "tx": ctx.tx_hash})


@fl.method
def record_step(ctx: Context, args: Any) -> None:
    """Seed 000 §V-B: one intermediate model M_(i+1) = T(M_i, M_O, d_(i+1)) of a device's local training."""
    require_role(ctx, "device")
    round_ = arg(args, "round", int)
    sub = _sub_round(ctx, args)
    index = arg(args, "index", int)
    prev = arg(args, "prev", bytes, size=HASH)
    model = arg(args, "model", bytes, size=HASH)
    global_model = arg(args, "global", bytes, size=HASH)
    data = arg(args, "data", bytes, size=HASH)
    blob = arg(args, "blob", bytes, size=HASH)
    digest = arg(args, "digest", bytes, size=HASH)
    ctx.require(digest == step_digest(model, global_model, data, index),
                "digest is not H(M_(i+1) ‖ M_O ‖ d_(i+1) ‖ i+1)")
    ctx.require(ctx.get(f"data/{ctx.sender.hex()}/{data.hex()}") is not None,
                "d_(i+1) is not a recorded data batch of this device")
    where = f"{stage(round_, sub)}/{ctx.address.hex()}"
    last = ctx.get(f"step_last/{where}")
    ctx.require(index == (1 if last is None else last["index"] + 1),
                f"step index must be {1 if last is None else last['index'] + 1}")
    ctx.require(prev == (global_model if last is None else last["model"]),
                "M_i is not the previous step's model (or M_O for the first step)")
    ctx.require(last is None or last["global"] == global_model, "M_O changed within a device round")
    ctx.require(ctx.get(f"update/{where}") is None, "the device already submitted its update for this round")
    record = {"round": round_, "sub_round": sub, "index": index, "prev": prev, "model": model,
              "global": global_model, "data": data, "blob": blob, "digest": digest, "device": ctx.sender,
              "tx": ctx.tx_hash}
    ctx.put(f"step/{where}/{index}", record)
    ctx.put(f"step_last/{where}", record)


@fl.method
def submit_update(ctx: Context, args: Any) -> None:
    """A device's local model for a round, trained from ``base`` on data ``data``.

    With ``steps`` (> 0) the model must be the last of exactly that many recorded steps from ``base``.
    Under secure aggregation ``masked`` binds the device's seed 001 packet (``contracts.secagg``).
    """
    require_role(ctx, "device")
    round_ = arg(args, "round", int)
    sub = _sub_round(ctx, args)
    base = arg(args, "base", bytes, size=HASH)
    model = arg(args, "model", bytes, size=HASH)
    samples = arg(args, "samples", int)
    data = arg(args, "data", bytes, size=HASH)
    blob = arg(args, "blob", bytes, size=HASH) if "blob" in args else model
    steps = arg(args, "steps", int) if "steps" in args else 0
    masked = arg(args, "masked", bytes, size=HASH) if "masked" in args else None
    ctx.require(samples > 0, "samples must be positive")
    ctx.require(ctx.get(f"closed/{stage(round_, sub)}") is None, f"round {stage(round_, sub)} is closed")
    where = f"{stage(round_, sub)}/{ctx.address.hex()}"
    key = f"update/{where}"
    ctx.require(ctx.get(key) is None, "this device already submitted an update for the round")
    if steps:
        last = ctx.get(f"step_last/{where}")
        ctx.require(last is not None and last["index"] == steps, f"the device recorded no {steps} training steps")
        ctx.require(last["model"] == model and last["global"] == base, "the update is not the last recorded step")
    record = {"round": round_, "sub_round": sub, "base": base, "model": model, "blob": blob, "samples": samples,
              "data": data, "steps": steps, "device": ctx.sender, "tx": ctx.tx_hash}
    if masked is not None:
        record["masked"] = masked
    ctx.put(key, record)
    ctx.put(f"update_tx/{ctx.tx_hash.hex()}", record)
    _index_model(ctx, model)
    _list_round_update(ctx, stage(round_, sub))


def _index_model(ctx: Context, model: bytes) -> None:
    """``by_model/<hash>``: the transactions that recorded a model (updates and aggregates), for auditors."""
    key = f"by_model/{model.hex()}"
    ctx.put(key, [*(ctx.get(key) or []), ctx.tx_hash])


@fl.method
def record_aggregate(ctx: Context, args: Any) -> None:
    """The edge aggregate of a device round; every listed update must be on this chain, same round and base.

    Sub-round j > 1 must start from this edge's sub-round j-1 aggregate. A round with a secure-aggregation
    acceptance needs ``secagg`` = ``{"attempt", "sum"}``: the updates must be exactly the last acceptance's,
    in its order, and ``sum`` is H(c_i) (``contracts.secagg``).
    """
    require_role(ctx, "edge")
    round_ = arg(args, "round", int)
    sub = _sub_round(ctx, args)
    base = arg(args, "base", bytes, size=HASH)
    model = arg(args, "model", bytes, size=HASH)
    blob = arg(args, "blob", bytes, size=HASH) if "blob" in args else model
    samples = arg(args, "samples", int)
    updates = arg(args, "updates", list)
    ctx.require(0 < len(updates) <= MAX_UPDATES, "an aggregate needs 1..4096 updates")
    ctx.require(ctx.get(f"aggregate/{stage(round_, sub)}") is None, "aggregate for this round already recorded")
    if sub > 1:
        prev = ctx.get(f"aggregate/{stage(round_, sub - 1)}")
        ctx.require(prev is not None and prev["model"] == base,
                    f"sub-round {sub} must start from the sub-round {sub - 1} aggregate")
    total = 0
    seen: set[bytes] = set()
    for tx in updates:
        ctx.require(isinstance(tx, bytes) and len(tx) == HASH, "updates are 32-byte tx hashes")
        ctx.require(tx not in seen, "an update is listed twice")
        seen.add(tx)
        up = ctx.get(f"update_tx/{tx.hex()}")
        ctx.require(up is not None, f"update {tx.hex()} is not on this chain")
        ctx.require((up["round"], up.get("sub_round", 1), up["base"]) == (round_, sub, base),
                    f"update {tx.hex()} is for another round or base")
        total += up["samples"]
    ctx.require(total == samples, f"samples {samples} do not match the updates' total {total}")
    record = {"round": round_, "sub_round": sub, "base": base, "model": model, "blob": blob, "samples": samples,
              "updates": updates, "edge": ctx.sender, "tx": ctx.tx_hash}
    if "secagg" in args or ctx.get(f"attempt/{stage(round_, sub)}", contract="secagg") is not None:
        sec = arg(args, "secagg", dict)
        attempt = arg(sec, "attempt", int)
        acc = ctx.get(f"accept/{stage(round_, sub)}/{attempt}", contract="secagg")
        ctx.require(acc is not None and attempt == ctx.get(f"attempt/{stage(round_, sub)}", contract="secagg"),
                    f"acceptance {attempt} is not the round's last")
        ctx.require(acc["updates"] == updates, "the updates are not the accepted ones, in order")
        record["secagg"] = {"attempt": attempt, "sum": arg(sec, "sum", bytes, size=HASH)}
    ctx.put(f"aggregate/{stage(round_, sub)}", record)
    _index_model(ctx, model)


def _list_round_update(ctx: Context, label: str) -> None:
    """``round_updates/<stage>``: every update of a device round, in commit order (seed 002 step 13)."""
    key = f"round_updates/{label}"
    listed = ctx.get(key) or []
    ctx.require(len(listed) < MAX_UPDATES, f"round {label} already holds {MAX_UPDATES} updates")
    if not listed:
        ctx.put(f"round_start/{label}", ctx.height)
    ctx.put(key, [*listed, ctx.tx_hash])


def _chain_devices(ctx: Context) -> list[str]:
    """Addresses (hex) of the devices the identity registry homes on this chain."""
    prefix = state_key("identity", "id/")
    out = []
    for raw in ctx.state.keys_with_prefix(prefix):
        address = raw[len(prefix):].decode()
        ident = ctx.get(f"id/{address}", contract="identity")
        if ident["role"] == "device" and ident["home_chain"] == ctx.chain_id:
            out.append(address)
    return out


def _closed(ctx: Context, round_: int) -> Any:
    closed = ctx.get(f"closed/{stage(round_, 1)}")
    ctx.require(closed is not None, f"round {round_} is not closed (fl.close_round)")
    return closed


@fl.method
def close_round(ctx: Context, args: Any) -> None:
    """Seed 002 §5.2.2 step 14: end a decentralised round and fix the updates every device aggregates.

    Allowed once every device the registry homes on this chain has submitted its update, or once the
    chain is ``DEADLINE_BLOCKS`` past the round's first update; any device of the chain (or its edge)
    may close. ``closed/<round>`` lists the round's updates at closing, in commit order.
    """
    require_role(ctx, "device", "edge")
    round_ = arg(args, "round", int)
    label = stage(round_, 1)
    ctx.require(ctx.get(f"closed/{label}") is None, f"round {round_} is already closed")
    updates = ctx.get(f"round_updates/{label}") or []
    ctx.require(bool(updates), f"round {round_} has no update to close on")
    missing = [a for a in _chain_devices(ctx) if ctx.get(f"update/{label}/{a}") is None]
    deadline = ctx.get(f"round_start/{label}") + DEADLINE_BLOCKS
    ctx.require(not missing or ctx.height >= deadline,
                f"{len(missing)} device(s) have not submitted for round {round_} and its deadline is "
                f"height {deadline}")
    ctx.put(f"closed/{label}", {"round": round_, "updates": updates, "height": ctx.height,
                                "deadline": deadline, "missing": len(missing), "closer": ctx.sender,
                                "tx": ctx.tx_hash})


@fl.method
def vote(ctx: Context, args: Any) -> None:
    """Seed 002 §5.2.2 step 16, VoteReputation(addr, score): a device scores a peer's update of a closed round.

    ``score`` is 0..``MAX_SCORE`` basis points; one vote per voter and update, never on one's own.
    """
    require_role(ctx, "device")
    round_ = arg(args, "round", int)
    update_tx = arg(args, "update_tx", bytes, size=HASH)
    score = arg(args, "score", int)
    ctx.require(0 <= score <= MAX_SCORE, f"score must be 0..{MAX_SCORE} basis points")
    ctx.require(update_tx in _closed(ctx, round_)["updates"],
                f"update {update_tx.hex()[:16]}… is not in round {round_}'s closed set")
    up = ctx.get(f"update_tx/{update_tx.hex()}")
    ctx.require(up["device"] != ctx.sender, "a device may not vote on its own update")
    key = f"vote/{round_}/{update_tx.hex()}/{ctx.address.hex()}"
    ctx.require(ctx.get(key) is None, "this device already voted on this update")
    ctx.put(key, {"round": round_, "update_tx": update_tx, "device": up["device"], "voter": ctx.sender,
                  "score": score, "height": ctx.height, "tx": ctx.tx_hash})
    rep_key = f"reputation/{address_of(up['device']).hex()}"
    rep = ctx.get(rep_key) or {"sum": 0, "count": 0}
    ctx.put(rep_key, {"sum": rep["sum"] + score, "count": rep["count"] + 1})


@fl.method
def record_view(ctx: Context, args: Any) -> None:
    """Seed 002 §5.2.2 step 17: H(a device's own global model after a closed round), once per device.

    Optional ``blob`` is where the (sealed) view is stored; optional ``updates`` are the closed updates
    the device found valid and averaged.
    """
    require_role(ctx, "device")
    round_ = arg(args, "round", int)
    model = arg(args, "model", bytes, size=HASH)
    blob = arg(args, "blob", bytes, size=HASH) if "blob" in args else model
    closed = _closed(ctx, round_)["updates"]
    used = arg(args, "updates", list) if "updates" in args else []
    ctx.require(all(tx in closed for tx in used), "a listed update is not in the round's closed set")
    ctx.require(len(set(used)) == len(used), "an update is listed twice")
    key = f"view/{round_}/{ctx.address.hex()}"
    ctx.require(ctx.get(key) is None, f"this device already recorded its view of round {round_}")
    ctx.put(key, {"round": round_, "model": model, "blob": blob, "updates": used, "device": ctx.sender,
                  "height": ctx.height, "tx": ctx.tx_hash})
