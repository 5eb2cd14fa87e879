"""Inter-locking statements between chains (seed 000 §III Fig. 2, §IV-A; seed 004 §III-B).

Type-I transactions are ordinary ones. A *Type-II* transaction carries a
sub-chain's latest :class:`Anchor` to the main chain; a *Type-III* transaction
carries the main chain's latest :class:`Anchor` to every sub-chain. An anchor
says: chain ``chain_id`` has, at ``height``, the finalized block ``head`` with
accumulator value ``accumulator``, and its last finalized checkpoint at or
below that height is ``(checkpoint_height, checkpoint_hash)``.

One node's word is not enough (seed 000 assumes cloud peers can be
compromised): an anchor is valid only with the signatures of a *quorum* of
the sending chain's validators, more than two thirds of them (``2n/3 + 1``),
each over the anchor's canonical bytes in the ``interlock`` signature domain.
Honest validators sign only finalized blocks, so with at most ``f < n/3``
faulty validators no two conflicting anchors for one height both reach a
quorum.

``params`` pins the accumulator parameters (their fingerprint): a chain that
could pick its own modulus might know its factors and forge membership
proofs against its own anchored values later, so every chain of a deployment
uses the one modulus of the main chain (the ceremony's output).

Each chain learns the others' validator sets from its genesis document
(``params.interlock``: ``{"role": "main" | "sub", "period": blocks,
"peers": {chain_id: [public keys]}}``);
validators attest every ``period`` finalized blocks. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fedledger.codec import Record
from fedledger.crypto.keys import Domain, SigningKey, is_valid
from fedledger.errors import ConfigError
from fedledger.ledger.block import BlockHeader

MAX_PEER_CHAINS = 256
ROLES = ("main", "sub")


@dataclass(frozen=True)
class Anchor(Record):
    chain_id: str
    height: int
    head: bytes
    accumulator: bytes
    params: bytes  # AccumulatorParams.fingerprint() of the chain's accumulator
    checkpoint_height: int
    checkpoint_hash: bytes

    def signing_bytes(self) -> bytes:
        return self.encode()


@dataclass(frozen=True)
class InterlockConfig:
    role: str  # "main" takes Type-II anchors from sub-chains; "sub" takes Type-III anchors from the main chain
    period: int
    peers: dict[str, tuple[bytes, ...]]

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> InterlockConfig:
        spec = params.get("interlock") or {}
        if not isinstance(spec, Mapping):
            raise ConfigError("genesis parameter 'interlock' must be a map")
        role = spec.get("role", "sub")
        period = spec.get("period", 0)
        peers = spec.get("peers", {})
        if role not in ROLES:
            raise ConfigError(f"interlock role must be one of {', '.join(ROLES)}")
        if not isinstance(period, int) or isinstance(period, bool) or period < 0:
            raise ConfigError("interlock period must be a non-negative number of blocks")
        if not isinstance(peers, Mapping) or len(peers) > MAX_PEER_CHAINS:
            raise ConfigError("interlock peers must map chain ids to validator keys")
        out: dict[str, tuple[bytes, ...]] = {}
        for chain, keys in peers.items():
            if not isinstance(chain, str) or not isinstance(keys, list | tuple) or not keys or \
                    not all(isinstance(k, bytes) and len(k) == 32 for k in keys):
                raise ConfigError(f"interlock peer {chain!r} needs a list of 32-byte validator keys")
            out[chain] = tuple(keys)
        return cls(role, period, out)

    def due(self, height: int) -> bool:
        """Whether validators attest the finalized block at ``height``."""
        return self.period > 0 and height > 0 and height % self.period == 0


def quorum(n: int) -> int:
    """Votes needed out of ``n`` validators: more than two thirds."""
    return 2 * n // 3 + 1


def make_anchor(head: BlockHeader, checkpoint: BlockHeader, params: bytes) -> Anchor:
    return Anchor(head.chain_id, head.height, head.block_hash, head.accumulator, params,
                  checkpoint.height, checkpoint.block_hash)


def sign_anchor(key: SigningKey, anchor: Anchor) -> bytes:
    return key.sign(Domain.INTERLOCK, anchor.signing_bytes())


def quorum_problem(anchor: Anchor, signatures: Iterable[Sequence[bytes]], validators: Sequence[bytes]) -> str | None:
    """Why ``signatures`` (``[public key, signature]`` pairs) are not a quorum for ``anchor``; ``None`` if they are.

    Signers must be distinct validators and each signature must verify.
    """
    members = set(validators)
    signed: set[bytes] = set()
    message = anchor.signing_bytes()
    for pair in signatures:
        if len(pair) != 2 or not all(isinstance(x, bytes) for x in pair):
            return "a signature entry must be [public key, signature]"
        pk, sig = pair
        if pk not in members:
            return f"signer {pk.hex()[:16]} is not a validator of {anchor.chain_id!r}"
        if pk in signed:
            return f"signer {pk.hex()[:16]} appears twice"
        if not is_valid(pk, Domain.INTERLOCK, message, sig):
            return f"bad signature from {pk.hex()[:16]}"
        signed.add(pk)
    need = quorum(len(members))
    if len(signed) < need:
        return f"{len(signed)} of {len(members)} validators signed; a quorum is {need}"
    return None
