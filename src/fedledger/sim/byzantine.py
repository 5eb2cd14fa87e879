"""Byzantine microchain validators for the simulator.

Each is the honest engine with one deviation, so whatever the honest code
does to defend itself is exercised against a real attacker:

``equivocate``   proposes two different blocks for every slot it wins;
``double_vote``  signs a second, conflicting vote for every epoch (Rule 2);
``withhold``     never sends its blocks or votes;
``malformed``    also sends garbage and truncated messages every slot.
"""

from __future__ import annotations

import dataclasses

from fedledger.consensus.engine import Ready
from fedledger.consensus.microchain.engine import MicrochainEngine, encode_message, message_kind
from fedledger.consensus.microchain.votes import make_vote
from fedledger.crypto.hashing import tagged_hash
from fedledger.crypto.keys import Domain
from fedledger.ledger.block import Block


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
