"""Data records: a registered participant puts a value on chain (seed 000 §V-A, §VI).

``records.put(key, value)`` is the Type-I transaction of seed 000 §V-A, ``(d^E,
σ, prt)``: the device's signature is the transaction's, and the value is
either the data itself (up to :data:`MAX_VALUE` bytes) or a pointer to it.
State keeps the value's SHA-256 and size under the sender's address; the value
stays in the transaction, which the chain's accumulator covers. Seed 000's
Table I is measured with these transactions at 32 B to 32 KB.
"""

from __future__ import annotations

from typing import Any

from fedledger.contracts.base import Context, Contract, arg, register
from fedledger.contracts.identity import require_role
from fedledger.crypto.hashing import sha256
from fedledger.ledger.genesis import ROLES

records = register(Contract("records"))
MAX_VALUE = 48 * 1024
MAX_KEY = 64


@records.method
def put(ctx: Context, args: Any) -> dict[str, Any]:
    require_role(ctx, *ROLES)
    key = arg(args, "key", str)
    value = arg(args, "value", bytes)
    ctx.require(0 < len(key) <= MAX_KEY, f"key must be 1-{MAX_KEY} characters")
    ctx.require(len(value) <= MAX_VALUE, f"value is over {MAX_VALUE} bytes")
    record = {"hash": sha256(value), "size": len(value), "height": ctx.height, "tx": ctx.tx_hash}
    ctx.put(f"{ctx.address.hex()}/{key}", record)
    return {"hash": record["hash"]}
