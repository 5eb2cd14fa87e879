"""Byzantine validators for the simulator, for the microchain and the BFT engine.

Each is the honest engine with one deviation, so whatever the honest code
does to defend itself is exercised against a real attacker. Microchain
(:data:`BEHAVIOURS`):

``equivocate``   proposes two different blocks for every slot it wins;
``double_vote``  signs a second, conflicting vote for every epoch (Rule 2);
``withhold``     never sends its blocks or votes;
``malformed``    also sends garbage and truncated messages every slot.

BFT (:data:`BFT_BEHAVIOURS`, Tendermint):

``equivocate``   as proposer, signs two blocks for its round and sends each
                 half of the validators a different one first;
``double_vote``  signs a conflicting prevote and precommit (nil against a
                 value, or a made-up value against nil) for every one it casts;
``withhold``     sends no proposals, votes or commits (a silent validator);
``malformed``    also sends garbage, forged votes and certificates every 100 ms.
"""

from __future__ import annotations

import dataclasses

from fedledger.consensus.bft.engine import BftEngine
from fedledger.consensus.bft.messages import (
    NIL,
    PREVOTE,
    CommitCert,
    CommitSig,
    Proposal,
    make_proposal,
)
from fedledger.consensus.bft.messages import make_vote as make_bft_vote
from fedledger.consensus.engine import Ready, encode_message, message_kind
from fedledger.consensus.microchain.engine import MicrochainEngine
from fedledger.consensus.microchain.votes import make_vote
from fedledger.crypto.hashing import tagged_hash
from fedledger.crypto.keys import Domain
from fedledger.ledger.block import Block
from fedledger.ledger.chain import propose_block


class Equivocator(MicrochainEngine):
    behaviour = "equivocate"
    misbehaved = False

    def _maybe_propose(self, spin: bool) -> None:
        before = self.stats.proposed + self.stats.spin_proposed
        super()._maybe_propose(spin)
        if self.stats.proposed + self.stats.spin_proposed == before:
            return
        original = self._ready.messages[-1][1]
        block = next(n.block for n in self.nodes.values()
                     if n.block.header.proposer == self.key.public_key and n.slot == self.slot)
        twin_header = dataclasses.replace(block.header, timestamp=block.header.timestamp + 1, signature=b"")
        twin_header = dataclasses.replace(
            twin_header, signature=self.key.sign(Domain.BLOCK, twin_header.signing_bytes()))
        twin = Block(header=twin_header, txs=block.txs)
        self._ready.messages.append((None, encode_message("block", twin.encode())))
        self.misbehaved = self.misbehaved or bool(original)


class DoubleVoter(MicrochainEngine):
    behaviour = "double_vote"
    misbehaved = False

    def _maybe_vote(self) -> None:
        fresh = self.last_committed[0] + 1 not in self.my_votes
        super()._maybe_vote()
        vote = self.my_votes.get(self.last_committed[0] + 1)
        if not fresh or vote is None:
            return
        other = tagged_hash("fedledger/sim-forged-target", vote.target_hash)
        second = make_vote(self.key, vote.chain_id, (vote.source_hash, vote.source_epoch),
                           (other, vote.target_epoch), vote.timestamp)
        self._ready.messages.append((None, encode_message("vote", second.to_obj())))
        self.misbehaved = True


class Withholder(MicrochainEngine):
    behaviour = "withhold"
    misbehaved = False

    def ready(self) -> Ready:
        out = super().ready()
        out.messages = [(p, m) for p, m in out.messages if message_kind(m) not in ("block", "vote")]
        return out


class Malformed(MicrochainEngine):
    behaviour = "malformed"
    misbehaved = False

    def tick(self, now_ms: int) -> None:
        slot = self.slot
        super().tick(now_ms)
        if self.slot != slot:
            junk = tagged_hash("fedledger/sim-junk", self.slot.to_bytes(8, "big"))
            self._ready.messages.append((None, junk))
            self._ready.messages.append((None, encode_message("block", junk)))
            self._ready.messages.append((None, encode_message("vote", {"chain_id": 7})))


BEHAVIOURS: dict[str, type[MicrochainEngine]] = {
    cls.behaviour: cls for cls in (Equivocator, DoubleVoter, Withholder, Malformed)
}


# -- BFT (Tendermint) ------------------------------------------------------------------


class BftEquivocator(BftEngine):
    behaviour = "equivocate"
    misbehaved = False
    misbehaved_at: int | None = None

    def _broadcast_proposal(self, proposal: Proposal, block: Block) -> None:
        """Two signed proposals for one (height, round); each half of the peers sees another one first."""
        consensus = {**block.header.consensus, "round": proposal.round}  # built by us for this round
        twin, _ = propose_block(self.chain, list(block.txs), self.key, block.header.timestamp + 1, consensus)
        self.chain.state.take_changes()
        other = make_proposal(self.key, proposal.chain_id, proposal.height, proposal.round, proposal.pol_round,
                              twin.block_hash)
        peers = [v for v in self.validators if v != self.me]
        first, second = self._proposal_message(proposal, block), self._proposal_message(other, twin)
        for i, peer in enumerate(peers):
            order = (first, second) if i % 2 == 0 else (second, first)
            self._ready.messages.extend((peer, m) for m in order)
        self.misbehaved = True
        if self.misbehaved_at is None:
            self.misbehaved_at = self.now


class BftDoubleVoter(BftEngine):
    behaviour = "double_vote"
    misbehaved = False
    misbehaved_at: int | None = None

    def _vote(self, kind: str, block_hash: bytes) -> None:
        super()._vote(kind, block_hash)
        if self._signed_at(kind, self.round) is None:
            return
        other = NIL if block_hash else tagged_hash("fedledger/sim-forged-value", self.height.to_bytes(8, "big"))
        second = make_bft_vote(self.key, self.chain.chain_id, self.height, self.round, kind, other)
        self._broadcast(encode_message("vote", second.to_obj()))
        self.misbehaved = True
        if self.misbehaved_at is None:
            self.misbehaved_at = self.now


class BftWithholder(BftEngine):
    behaviour = "withhold"
    misbehaved = False
    misbehaved_at: int | None = None

    def ready(self) -> Ready:
        out = super().ready()
        out.messages = [(p, m) for p, m in out.messages if message_kind(m) not in ("proposal", "vote", "commit")]
        return out


class BftMalformed(BftEngine):
    behaviour = "malformed"
    misbehaved = False
    misbehaved_at: int | None = None
    _junk_at = 0

    def tick(self, now_ms: int) -> None:
        super().tick(now_ms)
        if self.now - self._junk_at < 100:
            return
        self._junk_at = self.now
        junk = tagged_hash("fedledger/sim-junk", self.now.to_bytes(8, "big"))
        good = make_bft_vote(self.key, self.chain.chain_id, self.height, self.round, PREVOTE, junk)
        forged_sig = dataclasses.replace(good, block_hash=NIL)  # signature of another vote
        far = make_bft_vote(self.key, self.chain.chain_id, self.height, self.round + 10_000, PREVOTE, NIL)
        fake_cert = CommitCert(self.height, 0, junk, tuple(CommitSig(v, bytes(64)) for v in self.validators))
        for payload in (
            junk,
            junk[:3],
            encode_message("vote", {"chain_id": 7}),
            encode_message("proposal", {"proposal": {}, "block": junk}),
            encode_message("vote", forged_sig.to_obj()),
            encode_message("vote", far.to_obj()),
            encode_message("commit", {"block": junk, "cert": fake_cert.to_obj()}),
            encode_message("nonsense", [1, 2, 3]),
        ):
            self._broadcast(payload)


BFT_BEHAVIOURS: dict[str, type[BftEngine]] = {
    cls.behaviour: cls for cls in (BftEquivocator, BftDoubleVoter, BftWithholder, BftMalformed)
}
