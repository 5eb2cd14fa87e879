"""Identity registry: who may act on a permissioned chain, and in which role.

Seed 000 §III and seed 004 §IV-A assume a PKI that certifies every device,
edge and cloud key; this contract is that registry on chain. Launch identities
come from the genesis document; edge and cloud operators may admit more.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fedledger.contracts.base import Context, Contract, arg, register, write_state
from fedledger.crypto.keys import PUBLIC_KEY_SIZE, address_of
from fedledger.ledger.genesis import ROLES, Identity
from fedledger.ledger.state import State

identity = register(Contract("identity"))
OPERATOR_ROLES = ("cloud", "edge")


def _key(address: bytes) -> str:
    return f"id/{address.hex()}"


def seed_identities(state: State, identities: Iterable[Identity]) -> None:
    """Write the genesis identities straight into state."""
    for ident in identities:
        write_state(state, "identity", _key(address_of(ident.public_key)), ident.to_obj())


def lookup_identity(ctx: Context, public_key: bytes) -> Identity | None:
    raw = ctx.get(_key(address_of(public_key)), contract="identity")
    return None if raw is None else Identity.from_obj(raw)


def require_role(ctx: Context, *roles: str) -> Identity:
    """The sender's identity, which must hold one of ``roles``."""
    ident = lookup_identity(ctx, ctx.sender)
    ctx.require(ident is not None, "sender is not a registered identity")
    assert ident is not None
    ctx.require(ident.role in roles, f"sender's role {ident.role!r} may not do this (needs {'/'.join(roles)})")
    return ident


@identity.method
def register_identity(ctx: Context, args: Any) -> dict[str, Any]:
    """Admit a new participant; only operators (edge, cloud) may do so."""
    require_role(ctx, *OPERATOR_ROLES)
    pk = arg(args, "public_key", bytes, size=PUBLIC_KEY_SIZE)
    role = arg(args, "role", str)
    name = arg(args, "name", str)
    home = arg(args, "home_chain", str)
    ctx.require(role in ROLES, f"unknown role {role!r}")
    ctx.require(lookup_identity(ctx, pk) is None, "identity already registered")
    ctx.put(_key(address_of(pk)), Identity(pk, role, name, home).to_obj())
    return {"address": address_of(pk)}
