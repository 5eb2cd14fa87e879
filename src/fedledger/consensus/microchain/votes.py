"""Voting-based chain finality messages (seed 004 §VI).

A vote is the seed's ``(vote_hash, h_s, h_t, H_e(s), H_e(t), T_stamp, a_j, σ_j)``
plus the chain id: source and target are checkpoint block hashes, ``H_e`` their
epoch heights. ``vote_hash`` is derived from the signed fields. A certificate
is a set of votes for one link from more than 2/3 of the committee; it proves
the link is a committed-majority link to anyone who knows the committee.
An arbitrator decision (Rule 3) is the trusted arbitrator's signature on one
link, used only when votes split.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property

from fedledger.codec import Record
from fedledger.crypto.hashing import tagged_hash
from fedledger.crypto.keys import Domain, SigningKey, is_valid
from fedledger.errors import VerificationFailed


@dataclass(frozen=True)
class Vote(Record):
    chain_id: str
    source_hash: bytes  # h_s
    target_hash: bytes  # h_t
    source_epoch: int  # H_e(s)
    target_epoch: int  # H_e(t)
    timestamp: int  # T_stamp
    voter: bytes  # pk_j (the address a_j is derived from it)
    signature: bytes  # σ_j

    @cached_property
    def signing_bytes(self) -> bytes:
        return self.encode(exclude=frozenset({"signature"}))

    @cached_property
    def vote_hash(self) -> bytes:
        return tagged_hash("fedledger/vote", self.signing_bytes)

    @property
    def link(self) -> tuple[bytes, bytes]:
        return self.source_hash, self.target_hash

    def signature_ok(self) -> bool:
        return is_valid(self.voter, Domain.VOTE, self.signing_bytes, self.signature)


def make_vote(key: SigningKey, chain_id: str, source: tuple[bytes, int], target: tuple[bytes, int],
              timestamp: int) -> Vote:
    unsigned = Vote(chain_id, source[0], target[0], source[1], target[1], timestamp, key.public_key, b"")
    return Vote(chain_id, source[0], target[0], source[1], target[1], timestamp, key.public_key,
                key.sign(Domain.VOTE, unsigned.signing_bytes))


def is_double_vote(a: Vote, b: Vote) -> bool:
    """Rule 2: same voter, same target epoch, different targets (both validly signed)."""
    return (a.chain_id == b.chain_id and a.voter == b.voter and a.target_epoch == b.target_epoch
            and a.target_hash != b.target_hash and a.signature_ok() and b.signature_ok())


def skips_epoch(vote: Vote) -> bool:
    """The structural half of Rule 1: the target must be the source's child, ``H_e(t) = H_e(s) + 1``."""
    return vote.target_epoch != vote.source_epoch + 1


def check_certificate(votes: Sequence[Vote], chain_id: str, members: Iterable[bytes], quorum: int) -> Vote:
    """Check that ``votes`` make a committed-majority link; return one of them (the link).

    Every vote must be for the same link on ``chain_id``, from a distinct
    committee member, validly signed, and satisfy ``H_e(t) = H_e(s) + 1``;
    there must be at least ``quorum`` (> 2K/3) of them.
    """
    if not votes:
        raise VerificationFailed("empty certificate")
    first = votes[0]
    committee = set(members)
    seen: set[bytes] = set()
    for v in votes:
        if v.chain_id != chain_id or v.link != first.link or v.target_epoch != first.target_epoch \
                or v.source_epoch != first.source_epoch:
            raise VerificationFailed("certificate mixes votes for different links")
        if v.voter not in committee:
            raise VerificationFailed(f"certificate vote by non-member {v.voter.hex()[:16]}")
        if v.voter in seen:
            raise VerificationFailed("certificate counts a voter twice")
        if skips_epoch(v):
            raise VerificationFailed("certificate link violates rule 1 (target is not the source's child)")
        if not v.signature_ok():
            raise VerificationFailed(f"bad vote signature by {v.voter.hex()[:16]}")
        seen.add(v.voter)
    if len(seen) < quorum:
        raise VerificationFailed(f"certificate has {len(seen)} votes; more than 2/3 ({quorum}) are needed")
    return first


@dataclass(frozen=True)
class Decision(Record):
    """Rule 3: the arbitrator's ruling that ``source → target`` is committed after a split vote."""

    chain_id: str
    source_hash: bytes
    target_hash: bytes
    source_epoch: int
    target_epoch: int
    timestamp: int
    signature: bytes

    @cached_property
    def signing_bytes(self) -> bytes:
        return self.encode(exclude=frozenset({"signature"}))

    @property
    def link(self) -> tuple[bytes, bytes]:
        return self.source_hash, self.target_hash

    def check(self, chain_id: str, arbitrator: bytes) -> None:
        if not arbitrator:
            raise VerificationFailed("this chain has no arbitrator")
        if self.chain_id != chain_id or self.target_epoch != self.source_epoch + 1:
            raise VerificationFailed("arbitrator decision is for another chain or skips an epoch")
        if not is_valid(arbitrator, Domain.ARBITRATION, self.signing_bytes, self.signature):
            raise VerificationFailed("bad arbitrator signature")


def make_decision(key: SigningKey, chain_id: str, source: tuple[bytes, int], target: tuple[bytes, int],
                  timestamp: int) -> Decision:
    unsigned = Decision(chain_id, source[0], target[0], source[1], target[1], timestamp, b"")
    return Decision(chain_id, source[0], target[0], source[1], target[1], timestamp,
                    key.sign(Domain.ARBITRATION, unsigned.signing_bytes))
