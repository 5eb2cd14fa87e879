"""The microchain engine: PoC block proposal plus voting-based chain finality.

A pure state machine (see ``consensus/engine.py``): ``tick(now_ms)`` and
``step(peer, message)`` in, a :class:`Ready` batch out. It keeps the block
tree above the last finalized checkpoint in memory (a block is *confirmed*
when it is valid and joins the tree, seed 004 §IV-B.2) and hands blocks to the
runtime only once they are *finalized* (§VI), so the store never holds a block
that could be reverted.

Rounds (slots) are ``slot_ms`` long and numbered from the genesis timestamp.

* At the start of a slot each committee member runs Algorithm 1's
  ``generate_block``: its VRF output on the slot is ``hc``; if
  ``TB(hc, ξ) < d_cond`` it proposes on the current head.
* Half-way through the slot, if no candidate for the next height has arrived,
  the member at rank ``height mod K`` proposes (rule iii, spin).
* The head is found from the last committed checkpoint by taking, at each
  height, the child whose proposer has the highest credit, then the smallest
  ``TB`` (rule ii); spin blocks rank below PoC blocks.
* Once the slot holding the checkpoint of epoch ``H_e(B_c) + 1`` is over, each
  member votes ``B_c → checkpoint`` (§VI-A step 1). Votes are counted under
  Rules 1 and 2; more than 2/3 of the committee on a link commits its target
  and finalizes its source (step 3). A double vote yields a slashing call.
* No block is proposed beyond epoch ``H_e(B_c) + 1``: the chain waits for the
  finality gadget instead of outrunning it, so a late vote is never stale.
* Rule 3: if an arbitrator key is configured and a target epoch stays
  uncommitted ``arbitration_slots`` after its first vote, the arbitrator picks
  the most-voted checkpoint and signs a decision every node accepts.

Each block may carry the certificate (or decision) of one committed link not
yet on its branch; the block hook checks it and pays the voters one credit
point, and it lets a node that was offline learn finality from blocks alone.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from fedledger.consensus.engine import Committed, Ready, TxSource, decode_message, encode_message
from fedledger.consensus.microchain.params import MicrochainParams
from fedledger.consensus.microchain.poc import poc_alpha, tb, wins
from fedledger.consensus.microchain.votes import (
    Decision,
    Vote,
    is_double_vote,
    make_decision,
    make_vote,
    skips_epoch,
)
from fedledger.contracts.microchain import Dynasty, current_dynasty, params_of, read, ticket_duty
from fedledger.crypto import vrf
from fedledger.crypto.keys import Domain, SigningKey, is_valid
from fedledger.errors import DecodeError, FedledgerError, InvalidBlock
from fedledger.ledger.block import Block, Receipt
from fedledger.ledger.chain import ChainState, apply_block, propose_block
from fedledger.ledger.state import State
from fedledger.logs import log_event

log = logging.getLogger("fedledger.microchain")

MAX_ORPHANS = 256
MAX_PENDING_VOTES = 4096
RESUBMIT_SLOTS = 10
REVOTE_SLOTS = 3


@dataclass
class TreeNode:
    """A confirmed, not yet finalized block and what undoes it."""

    block: Block
    receipts: list[Receipt]
    diff: dict[bytes, bytes | None]
    undo: dict[bytes, object]
    dynasty: Dynasty  # committee after this block (who may propose its children)
    rank: tuple[int, int, int, bytes]  # fork-choice order among siblings: smaller is better
    children: list[bytes] = field(default_factory=list)

    @property
    def parent(self) -> bytes:
        return self.block.header.prev_hash

    @property
    def slot(self) -> int:
        return int(self.block.header.consensus["slot"])


@dataclass
class Stats:
    proposed: int = 0
    spin_proposed: int = 0
    accepted: int = 0
    rejected_blocks: int = 0
    rejected_votes: dict[str, int] = field(default_factory=dict)
    malformed: int = 0
    forks: int = 0  # blocks that arrived for a height that already had a child of the same parent
    finalized_height: int = 0
    committed_epoch: int = 0
    slashings: int = 0
    decisions: int = 0

    def reject_vote(self, reason: str) -> None:
        self.rejected_votes[reason] = self.rejected_votes.get(reason, 0) + 1


class MicrochainEngine:
    def __init__(self, chain: ChainState, key: SigningKey, txs: TxSource, *,
                 arbitrator: SigningKey | None = None, my_votes: Sequence[Vote] = ()) -> None:
        params = params_of(chain.state)
        if params is None:
            raise InvalidBlock(f"chain {chain.chain_id} is not a microchain (no microchain params in genesis)")
        self.params: MicrochainParams = params
        self.chain = chain  # finalized: mirrors the store
        self.key = key
        self.txs = txs
        self.arbitrator = arbitrator
        self.work = ChainState(chain.genesis, chain.head, chain.state.copy())
        self.root = chain.head.block_hash
        self.root_dynasty = current_dynasty(chain.state)
        self.nodes: dict[bytes, TreeNode] = {}
        self.position = self.root
        self.stats = Stats(finalized_height=chain.height)
        epoch = chain.height // params.epoch_blocks
        self.committed: dict[int, bytes] = {epoch: self.root}
        self.last_committed = (epoch, self.root)
        self.certs: dict[int, Any] = {}  # target epoch -> certificate object for blocks
        self.votes: dict[int, dict[bytes, Vote]] = {}  # target epoch -> voter -> vote
        self.first_vote_slot: dict[int, int] = {}
        self.banned: set[bytes] = set()
        self.seen_votes: dict[tuple[bytes, int], Vote] = {}  # (voter, target epoch) -> first valid vote
        self.my_votes: dict[int, Vote] = {v.target_epoch: v for v in my_votes}
        self.pending_votes: list[Vote] = []
        self.pending_decisions: list[Decision] = []
        self.orphans: dict[bytes, list[Block]] = {}
        self.by_slot: dict[tuple[bytes, int], Block] = {}  # (proposer, slot) -> first block seen
        self.reported: set[bytes] = set()
        self.decided: set[int] = set()
        self.missing_parents: set[bytes] = set()
        self.now = chain.genesis.timestamp
        self.slot = -1
        self.spin_done = -1
        self.duty_sent: dict[tuple[Any, ...], int] = {}  # call identity -> slot it was last submitted
        self._ready = Ready()

    # -- time --------------------------------------------------------------------
    def slot_of(self, now_ms: int) -> int:
        return (now_ms - self.chain.genesis.timestamp) // self.params.slot_ms

    def tick(self, now_ms: int) -> None:
        self.now = now_ms
        slot = self.slot_of(now_ms)
        if slot > self.slot:
            self.slot = slot
            self._retry_pending()
            self._maybe_vote()
            self._duties()
            self._maybe_propose(spin=False)
        elif self.spin_done < slot and now_ms >= self.chain.genesis.timestamp + slot * self.params.slot_ms \
                + self.params.slot_ms // 2:
            self.spin_done = slot
            self._maybe_propose(spin=True)
        if self.arbitrator is not None:
            self._maybe_arbitrate()

    # -- messages ----------------------------------------------------------------
    def step(self, peer: bytes, message: bytes) -> None:
        try:
            kind, body = decode_message(message)
            if kind == "block":
                self.receive_block(Block.decode(body), peer)
            elif kind == "vote":
                self._count_vote(Vote.from_obj(body))
            elif kind == "decision":
                self._receive_decision(Decision.from_obj(body))
            else:
                raise DecodeError(f"unknown consensus message {kind!r}")
        except (DecodeError, TypeError, KeyError, ValueError) as exc:
            self.stats.malformed += 1
            log_event(log, logging.DEBUG, "malformed message", peer=peer.hex()[:16], error=str(exc))

    def ready(self) -> Ready:
        out, self._ready = self._ready, Ready()
        return out

    def advance(self, applied: Sequence[Block]) -> None:
        """Finalized blocks are already folded into ``self.chain`` when they are emitted."""

    # -- the block tree ----------------------------------------------------------
    def _node_header(self, block_hash: bytes) -> Any:
        return self.chain.head if block_hash == self.root else self.nodes[block_hash].block.header

    def _known(self, block_hash: bytes) -> bool:
        return block_hash == self.root or block_hash in self.nodes

    def dynasty_after(self, block_hash: bytes) -> Dynasty:
        return self.root_dynasty if block_hash == self.root else self.nodes[block_hash].dynasty

    def _path_from_root(self, block_hash: bytes) -> list[bytes]:
        path = []
        while block_hash != self.root:
            path.append(block_hash)
            block_hash = self.nodes[block_hash].parent
        path.reverse()
        return path

    def _checkout(self, target: bytes) -> None:
        """Move the working state to just after block ``target`` (undo, then redo diffs)."""
        if target == self.position:
            return
        on_path = set(self._path_from_root(target))
        while self.position != self.root and self.position not in on_path:
            node = self.nodes[self.position]
            self.work.state.revert(node.undo)
            self.position = node.parent
        for h in self._path_from_root(target)[len(self._path_from_root(self.position)):]:
            self.work.state.apply(self.nodes[h].diff)
        self.position = target
        self.work.head = self._node_header(target)
        self.work.state.take_changes()

    def receive_block(self, block: Block, peer: bytes | None = None) -> None:
        header = block.header
        h = block.block_hash
        if self._known(h) or header.height <= self.chain.height:
            self.missing_parents.discard(h)
            return
        if header.chain_id != self.chain.chain_id:
            self.stats.rejected_blocks += 1
            return
        if not self._known(header.prev_hash):
            if sum(len(v) for v in self.orphans.values()) < MAX_ORPHANS:
                self.orphans.setdefault(header.prev_hash, []).append(block)
            self.missing_parents.add(header.prev_hash)
            return
        consensus = header.consensus
        slot = consensus.get("slot") if isinstance(consensus, dict) else None
        if not isinstance(slot, int) or slot > self.slot + 1:
            self.stats.rejected_blocks += 1
            return
        if not is_valid(header.proposer, Domain.BLOCK, header.signing_bytes(), header.signature):
            self.stats.rejected_blocks += 1  # before anything is recorded about its proposer
            return
        self._check_equivocation(block)
        parent = header.prev_hash
        self._checkout(parent)
        state: State = self.work.state
        state.take_changes()
        state.begin()
        try:
            receipts = apply_block(self.work, block)
        except FedledgerError as exc:
            state.rollback()
            self.work.head = self._node_header(parent)
            self.stats.rejected_blocks += 1
            log_event(log, logging.INFO, "block rejected", height=header.height, reason=str(exc))
            return
        undo = state.detach()
        diff = state.take_changes()
        self.position = h
        siblings = self.nodes[parent].children if parent in self.nodes else self._root_children()
        if siblings:
            self.stats.forks += 1
        proposer_dynasty = self.dynasty_after(parent)
        self.nodes[h] = TreeNode(block, receipts, diff, undo, current_dynasty(state),
                                 self._rank(block, proposer_dynasty))
        if parent in self.nodes:
            self.nodes[parent].children.append(h)
        self.stats.accepted += 1
        cert = consensus.get("cert")
        if cert is not None:
            self._learn_certificate(cert)
        for child in self.orphans.pop(h, []):
            self.receive_block(child)
        self.missing_parents.discard(h)

    def _root_children(self) -> list[bytes]:
        return [k for k, n in self.nodes.items() if n.parent == self.root]

    def _children(self, block_hash: bytes) -> list[bytes]:
        return self.nodes[block_hash].children if block_hash in self.nodes else self._root_children()

    def _rank(self, block: Block, dynasty: Dynasty) -> tuple[int, int, int, bytes]:
        """Rule ii): highest proposer credit, then smallest TB(hc, ξ); spin blocks (rule iii) last."""
        proof = block.header.consensus["vrf"]
        credit = dynasty.credit_of(block.header.proposer) if block.header.proposer in dynasty.members else 0
        if not proof:
            return (1, -credit, 0, block.block_hash)
        return (0, -credit, tb(vrf.proof_to_hash(proof), self.params.xi), block.block_hash)

    def head(self) -> bytes:
        """Fork choice: from the last committed checkpoint, the best child at every height."""
        cur = self.last_committed[1]
        if not self._known(cur):
            cur = self.root
        while True:
            children = self._children(cur)
            if not children:
                return cur
            cur = min(children, key=lambda c: self.nodes[c].rank)

    def _ancestor_at(self, block_hash: bytes, height: int) -> bytes | None:
        while block_hash != self.root:
            node = self.nodes[block_hash]
            if node.block.height == height:
                return block_hash
            block_hash = node.parent
        return self.root if self.chain.height == height else None

    def _height(self, block_hash: bytes) -> int:
        return int(self._node_header(block_hash).height)

    def _epoch(self, block_hash: bytes) -> int:
        return self._height(block_hash) // self.params.epoch_blocks

    # -- proposal (Algorithm 1) --------------------------------------------------
    def _maybe_propose(self, spin: bool) -> None:
        head = self.head()
        height = self._height(head) + 1
        if height // self.params.epoch_blocks > self.last_committed[0] + 1:
            return  # wait for finality before starting another epoch
        dynasty = self.dynasty_after(head)
        me = self.key.public_key
        if me not in dynasty.members or (head in self.nodes and self.nodes[head].slot >= self.slot):
            return  # not a member, or a candidate for this slot already arrived (rule i/ii)
        if spin:
            if dynasty.spin_proposer(height) != me:
                return
            proof = b""
        else:
            proof = vrf.prove(self.key, poc_alpha(self.chain.chain_id, dynasty.seed, self.slot))
            if not wins(vrf.proof_to_hash(proof), self.params.xi, dynasty.credit_of(me), dynasty.total_credit):
                return
        if (me, self.slot) in self.by_slot:
            return  # one block per slot
        self._checkout(head)
        branch_txs = {tx.tx_hash for hh in self._path_from_root(head) for tx in self.nodes[hh].block.txs}
        consensus: dict[str, Any] = {"engine": "microchain", "slot": self.slot, "vrf": proof}
        cert = self._certificate_for_branch()
        if cert is not None:
            consensus["cert"] = cert
        candidates = self.txs.select(self.params.max_block_txs, branch_txs)
        block, _ = propose_block(self.work, candidates, self.key, self.now, consensus)
        if spin:
            self.stats.spin_proposed += 1
        else:
            self.stats.proposed += 1
        self.receive_block(block)
        self._ready.messages.append((None, encode_message("block", block.encode())))

    def _certificate_for_branch(self) -> Any:
        last = read(self.work.state, "last_certified")
        nxt = (0 if last is None else int(last)) + 1
        return self.certs.get(nxt)

    def _duties(self) -> None:
        """System calls due at the next height: beacon steps and the sortition ticket.

        A call is re-submitted only if it is still due ``RESUBMIT_SLOTS`` later
        (it may have been lost, or rejected for a phase that has passed)."""
        from fedledger.consensus.microchain.beacon import duties

        head = self.head()
        height = self._height(head) + 1
        self._checkout(head)
        state, chain_id = self.work.state, self.chain.chain_id
        calls = [("beacon", m, a) for m, a in duties(state, self.key, chain_id, height)]
        calls += [("microchain", m, a) for m, a in ticket_duty(state, self.key, chain_id, height)]
        for contract, method, args in calls:
            ident = (contract, method, args.get("dynasty"), args.get("dealer"), args.get("complainer"))
            if self.slot - self.duty_sent.get(ident, -RESUBMIT_SLOTS) >= RESUBMIT_SLOTS:
                self.duty_sent[ident] = self.slot
                self._ready.calls.append((contract, method, args))

    def _check_equivocation(self, block: Block) -> None:
        header = block.header
        key = (header.proposer, int(header.consensus["slot"]))
        first = self.by_slot.setdefault(key, block)
        if first.block_hash != block.block_hash and block.block_hash not in self.reported:
            self.reported.add(block.block_hash)
            self.stats.slashings += 1
            self._ready.calls.append(("microchain", "slash_equivocation",
                                      {"a": first.header.to_obj(), "b": header.to_obj()}))

    # -- voting-based chain finality (§VI) --------------------------------------
    def _maybe_vote(self) -> None:
        source_epoch, source = self.last_committed
        target_epoch = source_epoch + 1
        if target_epoch in self.my_votes:
            mine = self.my_votes[target_epoch]
            if self.slot % REVOTE_SLOTS == 0 and mine.source_hash == source:  # votes may be lost: repeat
                self._ready.messages.append((None, encode_message("vote", mine.to_obj())))
            return
        target = self._ancestor_at(self.head(), target_epoch * self.params.epoch_blocks)
        if target is None or target == self.root or self.nodes[target].slot >= self.slot:
            return
        dynasty = self.dynasty_after(self.nodes[target].parent)
        if self.key.public_key not in dynasty.members:
            return
        vote = make_vote(self.key, self.chain.chain_id, (source, source_epoch), (target, target_epoch), self.now)
        self.my_votes[target_epoch] = vote
        self._ready.records.append((f"vote/{target_epoch:012d}", vote.encode()))
        self._ready.messages.append((None, encode_message("vote", vote.to_obj())))
        self._count_vote(vote)

    def _count_vote(self, vote: Vote) -> None:
        """§VI-A step 2: check the voter, its signature and Rules 1–2, then count."""
        if vote.chain_id != self.chain.chain_id:
            return self.stats.reject_vote("other chain")
        if vote.target_epoch <= self.last_committed[0]:
            seen = self.seen_votes.get((vote.voter, vote.target_epoch))
            if seen is not None and vote.voter not in self.banned and is_double_vote(seen, vote):
                self._punish_double_vote(seen, vote)  # late, but still provable
            return self.stats.reject_vote("rule 1: stale target")  # H_e(t) < H_e(head)
        if skips_epoch(vote):
            return self.stats.reject_vote("rule 1: target is not the source's child")
        if vote.voter in self.banned:
            return self.stats.reject_vote("rule 2: voter banned")
        seen = self.seen_votes.get((vote.voter, vote.target_epoch))
        if seen is not None and seen.vote_hash == vote.vote_hash:
            return None  # a duplicate delivery
        if not vote.signature_ok():
            return self.stats.reject_vote("bad signature")
        if seen is not None:
            if is_double_vote(seen, vote):
                self._punish_double_vote(seen, vote)
            return self.stats.reject_vote("rule 2: double vote")
        if not self._known(vote.target_hash) or vote.target_epoch > self._epoch(self.head()):
            if len(self.pending_votes) < MAX_PENDING_VOTES:
                self.pending_votes.append(vote)  # from the future: count when our head gets there
            return None
        self.seen_votes[(vote.voter, vote.target_epoch)] = vote
        if self._epoch(vote.target_hash) != vote.target_epoch or \
                self._height(vote.target_hash) % self.params.epoch_blocks:
            return self.stats.reject_vote("target is not a checkpoint of that epoch")
        dynasty = self._committee_of(vote.target_hash)
        if vote.voter not in dynasty.members:
            return self.stats.reject_vote("voter not in committee")
        self.votes.setdefault(vote.target_epoch, {})[vote.voter] = vote
        self.first_vote_slot.setdefault(vote.target_epoch, self.slot)
        self._tally(vote.target_epoch)
        return None

    def _punish_double_vote(self, a: Vote, b: Vote) -> None:
        """Rule 2: reject all the voter's votes and emit slashing evidence anyone can verify."""
        self.banned.add(a.voter)
        for table in self.votes.values():
            table.pop(a.voter, None)
        self.stats.slashings += 1
        log_event(log, logging.INFO, "double vote", voter=a.voter.hex()[:16], epoch=a.target_epoch)
        self._ready.calls.append(("microchain", "slash_double_vote", {"a": a.to_obj(), "b": b.to_obj()}))

    def _committee_of(self, block_hash: bytes) -> Dynasty:
        """The dynasty that proposed (and votes on) block ``block_hash``."""
        return self.dynasty_after(self.nodes[block_hash].parent) if block_hash in self.nodes else self.root_dynasty

    def _tally(self, target_epoch: int) -> None:
        source_epoch, source = self.last_committed
        if target_epoch != source_epoch + 1:
            return
        by_link: dict[bytes, list[Vote]] = {}
        for v in self.votes.get(target_epoch, {}).values():
            if v.source_hash == source and v.source_epoch == source_epoch:
                by_link.setdefault(v.target_hash, []).append(v)
        for target, votes in sorted(by_link.items()):
            if self._known(target) and len(votes) >= self._committee_of(target).quorum:
                quorum = self._committee_of(target).quorum
                cert = {"votes": [v.to_obj() for v in votes[:quorum]]}
                self._commit(source_epoch, source, target_epoch, target, cert)
                return

    def _learn_certificate(self, cert: Any) -> None:
        """A certificate in a valid block (already checked by the block hook) commits its link."""
        link = Decision.from_obj(cert["decision"]) if "decision" in cert else Vote.from_obj(cert["votes"][0])
        if self.committed.get(link.source_epoch) == link.source_hash:
            self._commit(link.source_epoch, link.source_hash, link.target_epoch, link.target_hash, cert)

    def _receive_decision(self, decision: Decision) -> None:
        try:
            decision.check(self.chain.chain_id, self.params.arbitrator)
        except FedledgerError:
            self.stats.malformed += 1
            return
        if decision.target_epoch <= self.last_committed[0]:
            return
        if not self._known(decision.target_hash) or self.committed.get(decision.source_epoch) != decision.source_hash:
            self.pending_decisions.append(decision)
            return
        self.stats.decisions += 1
        self._commit(decision.source_epoch, decision.source_hash, decision.target_epoch, decision.target_hash,
                     {"decision": decision.to_obj()})

    def _maybe_arbitrate(self) -> None:
        """Rule 3: decide a split vote after ``arbitration_slots`` without a commit."""
        assert self.arbitrator is not None
        source_epoch, source = self.last_committed
        epoch = source_epoch + 1
        first = self.first_vote_slot.get(epoch)
        if epoch in self.decided or first is None or self.slot < first + self.params.arbitration_slots:
            return
        counts: dict[bytes, int] = {}
        for v in self.votes.get(epoch, {}).values():
            if v.source_hash == source and self._known(v.target_hash):
                counts[v.target_hash] = counts.get(v.target_hash, 0) + 1
        if not counts:
            return
        target = min(counts, key=lambda t: (-counts[t], t))
        self.decided.add(epoch)
        decision = make_decision(self.arbitrator, self.chain.chain_id, (source, source_epoch), (target, epoch),
                                 self.now)
        log_event(log, logging.INFO, "arbitrator decision", epoch=epoch, votes=counts[target])
        self._ready.messages.append((None, encode_message("decision", decision.to_obj())))
        self._receive_decision(decision)

    def _commit(self, source_epoch: int, source: bytes, target_epoch: int, target: bytes, cert: Any) -> None:
        """``source → target`` is a committed-majority link: target committed, source finalized."""
        if target_epoch != self.last_committed[0] + 1 or self.committed.get(source_epoch) != source:
            return
        self.committed[target_epoch] = target
        self.last_committed = (target_epoch, target)
        self.certs[target_epoch] = cert
        self.stats.committed_epoch = target_epoch
        if source != self.root:
            self._finalize(source)
        self._retry_pending()
        self._tally(target_epoch + 1)

    def _finalize(self, checkpoint: bytes) -> None:
        """Hand every block from the root to ``checkpoint`` to the runtime and prune other branches."""
        self._checkout(checkpoint)
        for h in self._path_from_root(checkpoint):
            node = self.nodes.pop(h)
            self.chain.state.apply(node.diff)
            self.chain.state.take_changes()
            self.chain.head = node.block.header
            self.root_dynasty = node.dynasty
            self._ready.committed.append(Committed(node.block, node.receipts, node.diff))
        self.root = checkpoint
        self.stats.finalized_height = self.chain.height
        keep = self._descendants(checkpoint)
        self.nodes = {h: n for h, n in self.nodes.items() if h in keep}
        self.by_slot = {k: b for k, b in self.by_slot.items() if b.height > self.chain.height}
        # orphans at or below the finalized height, or on pruned forks, will never connect: forget them
        self.orphans = {p: [b for b in bs if b.height > self.chain.height + 1 or p == checkpoint]
                        for p, bs in self.orphans.items() if p == checkpoint or p not in self.nodes}
        self.orphans = {p: bs for p, bs in self.orphans.items() if bs}
        self.missing_parents = {p for p in self.missing_parents if p in self.orphans}
        for epoch in [e for e in self.votes if e <= self.last_committed[0] - 1]:
            del self.votes[epoch]
        self.seen_votes = {k: v for k, v in self.seen_votes.items() if k[1] > self.last_committed[0] - 2}
        for epoch in [e for e in self.certs if e < self.chain.height // self.params.epoch_blocks]:
            del self.certs[epoch]

    def _descendants(self, root: bytes) -> set[bytes]:
        out: set[bytes] = set()
        stack = list(self._children(root))
        while stack:
            h = stack.pop()
            if h in self.nodes and h not in out:
                out.add(h)
                stack.extend(self.nodes[h].children)
        return out

    def _retry_pending(self) -> None:
        votes, self.pending_votes = self.pending_votes, []
        for v in votes:
            self._count_vote(v)
        decisions, self.pending_decisions = self.pending_decisions, []
        for d in decisions:
            self._receive_decision(d)

    # -- catch-up -----------------------------------------------------------------
    def tree_blocks(self) -> list[Block]:
        """Every confirmed, unfinalized block, parents first (for a peer that is catching up)."""
        return sorted((n.block for n in self.nodes.values()), key=lambda b: b.height)

    def status(self) -> dict[str, Any]:
        head = self.head()
        return {"finalized_height": self.chain.height, "head_height": self._height(head),
                "committed_epoch": self.last_committed[0], "tree_blocks": len(self.nodes)}
