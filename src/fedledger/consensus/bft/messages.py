"""Signed BFT messages: proposals, prevotes, precommits and commit certificates.

Algorithm 1 (Buchman, Kwon, Milosevic 2018) exchanges ``⟨PROPOSAL, h, r, v,
vr⟩``, ``⟨PREVOTE, h, r, id(v)⟩`` and ``⟨PRECOMMIT, h, r, id(v)⟩``. Here
``v`` is a block, ``id(v)`` its block hash and ``nil`` the empty byte string.
Each message carries the chain id and its signer and is signed over its
canonical encoding (without the signature) in its own domain, so a signature
can only ever mean one thing.

A *commit certificate* for block ``B`` at height ``h`` is a set of
precommits ``⟨PRECOMMIT, h, r, id(B)⟩`` of one round from more than two thirds
of the validators (the 2f + 1 of line 49). It proves ``B`` was decided to
anyone who knows the validator set; block ``h + 1`` carries it as
``last_commit``. Two different messages signed by one validator for the same
height, round and step are a *double sign*, the evidence
``bft.report_double_sign`` accepts.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property, lru_cache
from typing import Any

from fedledger.codec import Record
from fedledger.crypto.hashing import tagged_hash
from fedledger.crypto.keys import PUBLIC_KEY_SIZE, Domain, SigningKey, is_valid
from fedledger.errors import DecodeError, VerificationFailed

PREVOTE = "prevote"
PRECOMMIT = "precommit"
PROPOSAL = "proposal"
VOTE_KINDS = (PREVOTE, PRECOMMIT)
NIL = b""  # id(nil)
HASH_SIZE = 32


def quorum(n: int) -> int:
    """Smallest number of validators that is more than two thirds of ``n`` (2f + 1 when n = 3f + 1)."""
    return 2 * n // 3 + 1


def skip_threshold(n: int) -> int:
    """f + 1 (line 55): enough validators that at least one of them is honest."""
    return n - quorum(n) + 1


@dataclass(frozen=True)
class Proposal(Record):
    """``⟨PROPOSAL, h, r, v, vr⟩``; the block travels next to it, named by ``block_hash``."""

    chain_id: str
    height: int
    round: int
    pol_round: int  # vr = validRound of the proposer, −1 for a fresh value
    block_hash: bytes
    proposer: bytes
    signature: bytes

    @cached_property
    def signing_bytes(self) -> bytes:
        return self.encode(exclude=frozenset({"signature"}))

    @property
    def signer(self) -> bytes:
        return self.proposer

    @property
    def kind(self) -> str:
        return PROPOSAL

    @cached_property
    def signature_ok(self) -> bool:
        return is_valid(self.proposer, Domain.BFT_PROPOSAL, self.signing_bytes, self.signature)

    def well_formed(self) -> bool:
        return (self.height >= 1 and self.round >= 0 and -1 <= self.pol_round < self.round
                and len(self.block_hash) == HASH_SIZE and len(self.proposer) == PUBLIC_KEY_SIZE)


@dataclass(frozen=True)
class Vote(Record):
    """``⟨PREVOTE, h, r, id(v)⟩`` or ``⟨PRECOMMIT, h, r, id(v)⟩``; ``block_hash`` is empty for nil."""

    chain_id: str
    height: int
    round: int
    kind: str
    block_hash: bytes
    voter: bytes
    signature: bytes

    @cached_property
    def signing_bytes(self) -> bytes:
        return self.encode(exclude=frozenset({"signature"}))

    @property
    def signer(self) -> bytes:
        return self.voter

    @cached_property
    def signature_ok(self) -> bool:
        return is_valid(self.voter, Domain.BFT_VOTE, self.signing_bytes, self.signature)

    def well_formed(self) -> bool:
        return (self.kind in VOTE_KINDS and self.height >= 1 and self.round >= 0
                and len(self.block_hash) in (0, HASH_SIZE) and len(self.voter) == PUBLIC_KEY_SIZE)


Signed = Proposal | Vote


def make_proposal(key: SigningKey, chain_id: str, height: int, round_: int, pol_round: int,
                  block_hash: bytes) -> Proposal:
    unsigned = Proposal(chain_id, height, round_, pol_round, block_hash, key.public_key, b"")
    return Proposal(chain_id, height, round_, pol_round, block_hash, key.public_key,
                    key.sign(Domain.BFT_PROPOSAL, unsigned.signing_bytes))


def make_vote(key: SigningKey, chain_id: str, height: int, round_: int, kind: str, block_hash: bytes) -> Vote:
    if kind not in VOTE_KINDS:
        raise ValueError(f"a vote is a prevote or a precommit, not {kind!r}")
    unsigned = Vote(chain_id, height, round_, kind, block_hash, key.public_key, b"")
    return Vote(chain_id, height, round_, kind, block_hash, key.public_key,
                key.sign(Domain.BFT_VOTE, unsigned.signing_bytes))


def decode_signed(obj: Any) -> Signed:
    """A proposal or a vote from its map form (evidence carries either)."""
    if isinstance(obj, dict) and "pol_round" in obj:
        return Proposal.from_obj(obj)
    if isinstance(obj, dict) and "kind" in obj:
        return Vote.from_obj(obj)
    raise DecodeError("expected a signed proposal or vote")


def is_double_sign(a: Signed, b: Signed) -> bool:
    """Two different, validly signed messages by one validator for one (chain, height, round, step)."""
    return (type(a) is type(b) and a.kind == b.kind and a.chain_id == b.chain_id and a.signer == b.signer
            and a.height == b.height and a.round == b.round and a.signing_bytes != b.signing_bytes
            and a.signature_ok and b.signature_ok)


def evidence_hash(a: Signed, b: Signed) -> bytes:
    """Order-independent identifier of a piece of double-sign evidence."""
    first, second = sorted((a.signing_bytes, b.signing_bytes))
    return tagged_hash("fedledger/bft-evidence", tagged_hash("x", first) + tagged_hash("x", second))


@dataclass(frozen=True)
class CommitSig(Record):
    voter: bytes
    signature: bytes


@dataclass(frozen=True)
class CommitCert(Record):
    """Precommits of one round for one block from more than two thirds of the validators."""

    height: int
    round: int
    block_hash: bytes
    signatures: tuple[CommitSig, ...]

    def votes(self, chain_id: str) -> list[Vote]:
        return [Vote(chain_id, self.height, self.round, PRECOMMIT, self.block_hash, s.voter, s.signature)
                for s in self.signatures]


def make_certificate(votes: Iterable[Vote]) -> CommitCert:
    """A certificate from precommits of one round for one block (sorted by voter: one encoding per set)."""
    votes = sorted(votes, key=lambda v: v.voter)
    if not votes:
        raise ValueError("a certificate needs votes")
    first = votes[0]
    if any(v.kind != PRECOMMIT or (v.height, v.round, v.block_hash) != (first.height, first.round, first.block_hash)
           for v in votes):
        raise ValueError("a certificate holds precommits of one round for one block")
    return CommitCert(first.height, first.round, first.block_hash,
                      tuple(CommitSig(v.voter, v.signature) for v in votes))


def verify_certificate(cert: CommitCert, chain_id: str, validators: Sequence[bytes], height: int,
                       block_hash: bytes) -> None:
    """Raise :class:`VerificationFailed` unless ``cert`` proves ``block_hash`` was decided at ``height``.

    Line 49: 2f + 1 ``⟨PRECOMMIT, h, r, id(v)⟩`` of one round ``r``, here
    from distinct validators, each signature valid, more than 2/3 of them.
    The answer is a pure function of the arguments, so it is remembered: a
    replica meets the same certificate when it validates, applies and replays.
    """
    problem = _certificate_problem(cert.encode(), chain_id, tuple(validators), height, block_hash)
    if problem:
        raise VerificationFailed(problem)


@lru_cache(maxsize=1024)
def _certificate_problem(raw: bytes, chain_id: str, validators: tuple[bytes, ...], height: int,
                         block_hash: bytes) -> str:
    try:
        _check_certificate(CommitCert.decode(raw), chain_id, validators, height, block_hash)
    except VerificationFailed as exc:
        return str(exc)
    return ""


def _check_certificate(cert: CommitCert, chain_id: str, validators: Sequence[bytes], height: int,
                       block_hash: bytes) -> None:
    if cert.height != height:
        raise VerificationFailed(f"certificate is for height {cert.height}, not {height}")
    if cert.block_hash != block_hash or len(block_hash) != HASH_SIZE:
        raise VerificationFailed(f"certificate at height {height} is for another block (or nil)")
    if cert.round < 0:
        raise VerificationFailed("certificate round is negative")
    members = set(validators)
    seen: set[bytes] = set()
    for vote in cert.votes(chain_id):
        if vote.voter not in members:
            raise VerificationFailed(f"certificate counts non-validator {vote.voter.hex()[:16]}")
        if vote.voter in seen:
            raise VerificationFailed(f"certificate counts validator {vote.voter.hex()[:16]} twice")
        if not vote.signature_ok:
            raise VerificationFailed(f"bad precommit signature by {vote.voter.hex()[:16]}")
        seen.add(vote.voter)
    if len(seen) < quorum(len(members)):
        raise VerificationFailed(f"certificate has {len(seen)} precommits; more than 2/3 "
                                 f"({quorum(len(members))} of {len(members)}) are needed")


def proposer_for(validators: Sequence[bytes], height: int, round_: int) -> bytes:
    """proposer(h, r): round robin over the genesis validator list, shifted by height and round."""
    return validators[(height + round_) % len(validators)]
