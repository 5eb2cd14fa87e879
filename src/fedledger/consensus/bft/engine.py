"""The BFT engine of the main chain: Tendermint, Algorithm 1 of Buchman, Kwon and Milosevic (2018).

A pure state machine (see ``consensus/engine.py``): ``tick(now_ms)`` and
``step(peer, message)`` in, a :class:`Ready` batch out. Comments cite the
lines of Algorithm 1 ("The latest gossip on BFT consensus", arXiv:1807.04938).

* Heights are consensus instances; each runs rounds of propose → prevote →
  precommit. ``proposer(h, r)`` rotates over the genesis validator list.
* The proposer of a round proposes its ``validValue`` if it has one, else a
  fresh block from the mempool (lines 14–19), built with ``propose_block`` and
  carrying the commit certificate of the previous block as ``last_commit``.
* Validators prevote for a proposal only if the block is valid (it applies to
  the committed state, block hook included) and they are not locked on
  another value, or the proposal shows a newer polka (lines 22–33). They
  precommit a value once they see 2f + 1 prevotes for it, and lock on it
  (lines 36–43). A block is decided, and final, with 2f + 1 precommits of one
  round for it (line 49): a commit certificate.
* Timeouts grow with the round (lines 57–67); f + 1 messages of a higher round
  make a validator skip to it (line 55).

Departures, each harmless to safety:

* Round 0 of a height waits up to ``empty_block_ms`` for transactions (and
  ``commit_ms`` after the previous decision) before the proposer proposes and
  the others start their propose timeout, so an idle chain makes no stream of
  empty blocks (CometBFT's ``create_empty_blocks_interval``). Proposals that
  arrive meanwhile are handled as usual.
* A prevote for a proposal also needs its timestamp to be at most
  ``max_future_ms`` ahead of the local clock ("timely"). Only the prevote
  rules use it; locking and deciding use the deterministic ``valid(v)``, so a
  clock difference can cost a round but never a decision.
* Gossip is simulated by retransmission (the paper assumes every message
  sent before the network settles is eventually delivered; ours can be
  lost): every ``rebroadcast_ms`` a validator sends its own messages of the
  current round again and relays the proposal of its ``validRound`` with its
  polka; a proposal carries the prevotes of its round and of ``vr`` (the polka
  line 28 waits for); a peer still in an earlier round of our height gets our
  votes of its rounds; a peer still working on a height we decided gets the
  block and its certificate (``commit``).
* A polka of an earlier round, newer than ``validRound``, also sets
  ``validValue`` (line 36 only looks at the current round); the lock is not
  touched. Line 49 takes the value from any proposal or ``commit`` message
  with that hash, not only the round-r proposal.
* A validator that signs two values in one round and step counts for both
  ("2f + 1 ⟨PREVOTE, h, r, id(v)⟩" counts the senders of that message) and
  is reported (``bft.report_double_sign``); "2f + 1 of any kind" counts
  distinct validators.
* Own messages and the lock are handed to the runtime as records before they
  are sent; a restarted validator resumes at the round and step it reached
  and never signs a message that conflicts with one it signed before.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from fedledger.codec import cbor
from fedledger.consensus.bft.messages import (
    NIL,
    PRECOMMIT,
    PREVOTE,
    PROPOSAL,
    CommitCert,
    Proposal,
    Signed,
    Vote,
    make_certificate,
    make_proposal,
    make_vote,
    proposer_for,
    quorum,
    skip_threshold,
    verify_certificate,
)
from fedledger.consensus.bft.params import BftParams
from fedledger.consensus.engine import Committed, Ready, TxSource, decode_message, encode_message
from fedledger.contracts.bft import is_faulty
from fedledger.crypto.keys import SigningKey
from fedledger.errors import ConfigError, DecodeError, FedledgerError
from fedledger.ledger.block import Block, Receipt
from fedledger.ledger.chain import ChainState, apply_block, propose_block
from fedledger.ledger.tx import Transaction
from fedledger.logs import log_event

log = logging.getLogger("fedledger.bft")

PROPOSE_STEP, PREVOTE_STEP, PRECOMMIT_STEP = 0, 1, 2
STEP_NAMES = ("propose", "prevote", "precommit")
MAX_ROUND_AHEAD = 64  # messages for rounds further ahead of ours are dropped (bounded memory)
MAX_VALUES_PER_VOTER = 4  # distinct values one (equivocating) validator may vote for per round and step
MAX_FUTURE = 1024  # messages for the next height held until we get there
MAX_SYNCED = 2048  # heights ahead of ours for which synced blocks and commits are kept
MAX_CANDIDATES = 4  # synced blocks kept per height (a faulty peer may send forgeries first)
RECORD_PREFIX = "bft/"


@dataclass
class Validated:
    """A block that applies to the committed state: what committing it changes."""

    replica: ChainState  # the chain after the block (its state object is shared; only the head is its own)
    receipts: list[Receipt]
    diff: dict[bytes, bytes | None]


@dataclass
class Stats:
    proposed: int = 0
    decided: int = 0
    decided_by_certificate: int = 0  # decisions from a commit message or synced blocks
    rounds: int = 0  # rounds started after round 0
    timeouts: dict[str, int] = field(default_factory=dict)
    invalid_blocks: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    malformed: int = 0
    double_signs: int = 0
    refused_to_sign: int = 0  # the sign guard stopped a conflicting signature (after a restart)
    commits_sent: int = 0

    def reject(self, reason: str) -> None:
        self.rejected[reason] = self.rejected.get(reason, 0) + 1


class BftEngine:
    def __init__(self, chain: ChainState, key: SigningKey, txs: TxSource, *,
                 records: Mapping[str, bytes] | None = None) -> None:
        if chain.engine != "bft":
            raise ConfigError(f"chain {chain.chain_id} does not run the bft engine")
        self.params = BftParams.from_obj(chain.genesis.params.get("bft"))
        self.chain = chain  # the committed chain: mirrors the store
        self.key = key
        self.txs = txs
        self.validators: tuple[bytes, ...] = tuple(chain.genesis.validators)
        if not self.validators:
            raise ConfigError(f"chain {chain.chain_id} has no validators")
        self.n = len(self.validators)
        self.quorum = quorum(self.n)
        self.skip = skip_threshold(self.n)
        self.me = key.public_key
        self.is_validator = self.me in self.validators
        self.stats = Stats()
        self.now = chain.genesis.timestamp
        self.started = False
        self.rejected: list[Transaction] = []  # skipped by our proposals; the runtime drops them
        self._ready = Ready()
        # what this validator has signed (persisted): the latest message of each kind, and its lock
        self.signed: dict[str, Signed] = {}
        self.lock_record: tuple[int, int, bytes] | None = None
        self.last_cert: CommitCert | None = None  # certificate of the block at chain.height
        self.last_block: Block | None = None
        self._load(records or {})
        # catch-up and evidence
        self.future: list[tuple[bytes, str, Any]] = []  # messages for height + 1
        self.synced: dict[int, list[Block]] = {}  # height -> candidate blocks from peers' stores
        self.pending_commits: dict[int, tuple[Block, CommitCert]] = {}  # checked certificates, later heights
        self.ahead: dict[bytes, int] = {}  # peer -> highest height it is working on, when above ours
        self.behind_since: int | None = None
        self.commit_sent: dict[bytes, tuple[int, int]] = {}  # peer -> (height, time) of our last commit reply
        self.evidence: dict[bytes, list[Any]] = {}  # offender -> [call args, last submitted]
        self._last_rebroadcast = 0
        self.decided_at = self.now
        self.height_start = self.now  # when the current height started (round 0 waits from here)
        self.waiting = False  # round 0 waits for transactions (see the module doc)
        self._start_height(chain.height + 1)

    # -- persistence ---------------------------------------------------------------
    def _load(self, records: Mapping[str, bytes]) -> None:
        """Reload what this validator signed before a restart (and the certificate of its head)."""
        for kind, cls in ((PROPOSAL, Proposal), (PREVOTE, Vote), (PRECOMMIT, Vote)):
            raw = records.get(RECORD_PREFIX + kind)
            if raw is not None:
                self.signed[kind] = cls.decode(raw)
        raw = records.get(RECORD_PREFIX + "lock")
        if raw is not None:
            h, r, block_hash = cbor.decode(raw)
            self.lock_record = (int(h), int(r), bytes(block_hash))
        for slot in (0, 1):
            raw = records.get(f"{RECORD_PREFIX}commit/{slot}")
            if raw is None:
                continue
            cert = CommitCert.decode(raw)
            if cert.height == self.chain.height and cert.block_hash == self.chain.head.block_hash:
                self.last_cert = cert

    def _record(self, key: str, value: bytes) -> None:
        self._ready.records.append((RECORD_PREFIX + key, value))

    # -- the Engine interface ------------------------------------------------------------
    def tick(self, now_ms: int) -> None:
        self.now = max(self.now, now_ms)
        if not self.started:
            self.started = True
            self.height_start = self.decided_at = self._last_rebroadcast = self.now
            self._start_round(self.round)
        self._fire_timeouts()
        if self.waiting and self.stage == PROPOSE_STEP and self.round == 0 and self._round0_due():
            self.waiting = False
            self._enter_propose()
        if self.now - self._last_rebroadcast >= self.params.rebroadcast_ms:
            self._last_rebroadcast = self.now
            self._rebroadcast()
        self._retry_evidence()
        self._progress()

    def step(self, peer: bytes, message: bytes) -> None:
        try:
            kind, body = decode_message(message)
            self._dispatch(peer, kind, body)
        except (DecodeError, TypeError, KeyError, ValueError, IndexError) as exc:
            self.stats.malformed += 1
            log_event(log, logging.DEBUG, "malformed message", peer=peer.hex()[:16], error=str(exc))
        self._progress()

    def ready(self) -> Ready:
        out, self._ready = self._ready, Ready()
        return out

    def advance(self, applied: Sequence[Block]) -> None:
        """Decided blocks are folded into ``self.chain`` when they are emitted."""

    # -- messages ------------------------------------------------------------------
    def _dispatch(self, peer: bytes, kind: str, body: Any) -> None:
        if kind == "proposal":
            proposal = Proposal.from_obj(body["proposal"])
            if self._route(peer, kind, body, proposal.height):
                block = Block.decode(body["block"])
                pol = [Vote.from_obj(v) for v in body.get("pol", [])[: 2 * self.n]]
                self._receive_proposal(proposal, block, pol)
                self._help_lagging(peer, proposal.round)
        elif kind == "vote":
            vote = Vote.from_obj(body)
            if self._route(peer, kind, body, vote.height):
                self._add_vote(vote)
                self._help_lagging(peer, vote.round)
        elif kind == "commit":
            cert = CommitCert.from_obj(body["cert"])
            if cert.height > self.height:
                self.note_peer_height(peer, cert.height + 1)
            self._receive_commit(Block.decode(body["block"]), cert)
        else:
            raise DecodeError(f"unknown consensus message {kind!r}")

    def _route(self, peer: bytes, kind: str, body: Any, height: int) -> bool:
        """Messages for our height are handled now; the next height's wait; a peer behind gets help."""
        if height == self.height:
            return True
        if height > self.height:
            self.note_peer_height(peer, height)
            if height == self.height + 1 and len(self.future) < MAX_FUTURE:
                self.future.append((peer, kind, body))
        elif height == self.chain.height:
            self._send_commit(peer)  # the peer is still deciding the block we have decided
        return False

    def note_peer_height(self, peer: bytes, height: int) -> None:
        """``peer`` is working on ``height`` (from its messages or its status)."""
        if height > self.height:
            self.ahead[peer] = max(height, self.ahead.get(peer, 0))
            if self.behind_since is None:
                self.behind_since = self.now

    def wants_sync(self, peer: bytes) -> bool:
        """Whether to fetch decided blocks from ``peer``: it is two heights ahead, or one for a while."""
        height = self.ahead.get(peer, 0)
        if height >= self.height + 2:
            return True
        return height == self.height + 1 and self.behind_since is not None \
            and self.now - self.behind_since >= self.params.rebroadcast_ms

    def _help_lagging(self, peer: bytes, round_: int) -> None:
        """A peer still in an earlier round of our height gets our votes from its round to ours.

        A validator that lost messages before the network settled can wait
        forever for 2f + 1 votes of its round (lines 34, 47) while the others
        have moved on and only repeat their newer messages; this hands it the
        votes it is missing, at most once per ``rebroadcast_ms``."""
        if round_ >= self.round or peer not in self.validators or not self.is_validator:
            return
        last = self.helped.get(peer)
        if last is not None and last[0] <= round_ and self.now - last[1] < self.params.rebroadcast_ms:
            return
        self.helped[peer] = (round_, self.now)
        for r in range(round_, self.round + 1):
            for kind in (PREVOTE, PRECOMMIT):
                for vote in self.votes.get((r, kind), {}).get(self.me, {}).values():
                    self._ready.messages.append((peer, encode_message("vote", vote.to_obj())))

    def _broadcast(self, payload: bytes) -> None:
        self._ready.messages.append((None, payload))

    def _proposal_message(self, proposal: Proposal, block: Block) -> bytes:
        """A proposal with the prevotes we hold for its block in its round and its ``vr``.

        The polka of ``vr`` is what line 28 waits for; the prevotes of the
        round itself let a relayed proposal carry its polka to validators that
        lost some of those prevotes."""
        pol = [v.to_obj() for r in sorted({proposal.pol_round, proposal.round}) if r >= 0
               for v in self._votes_for(r, PREVOTE, proposal.block_hash)]
        return encode_message("proposal", {"proposal": proposal.to_obj(), "block": block.encode(),
                                           "pol": pol[: 2 * self.n]})

    def _send_commit(self, peer: bytes) -> None:
        if self.last_block is None or self.last_cert is None:
            return
        if self.now - self.decided_at < self.params.rebroadcast_ms // 2:
            return  # a peer a moment behind usually decides by itself; a stuck one will ask again
        sent = self.commit_sent.get(peer)
        if sent is not None and sent[0] == self.chain.height and self.now - sent[1] < self.params.rebroadcast_ms:
            return
        self.commit_sent[peer] = (self.chain.height, self.now)
        self.stats.commits_sent += 1
        self._ready.messages.append((peer, self.commit_message()))

    def commit_message(self, block: Block | None = None) -> bytes:
        """``commit``: the last decided block and its certificate (for a peer that is catching up)."""
        block = block or self.last_block
        assert block is not None and self.last_cert is not None
        return encode_message("commit", {"block": block.encode(), "cert": self.last_cert.to_obj()})

    # -- per-height state (lines 2–9, 52–54) ---------------------------------------------
    def _start_height(self, height: int) -> None:
        self.height = height
        self.round = 0  # round_p
        self.stage = PROPOSE_STEP  # step_p (``step`` is the Engine method)
        self.locked_round, self.locked_hash = -1, NIL  # lines 6–7
        self.valid_round = -1  # line 9
        self.valid_block: Block | None = None  # line 8 (validValue)
        self.proposals: dict[int, tuple[Proposal, Block]] = {}
        self.blocks: dict[bytes, Block] = {}
        # (round, step) -> voter -> value -> vote. A validator that signs two values counts for
        # both: "2f + 1 ⟨PREVOTE, h, r, id(v)⟩" is about messages for v from distinct validators.
        self.votes: dict[tuple[int, str], dict[bytes, dict[bytes, Vote]]] = {}
        self.tally: dict[tuple[int, str], Counter[bytes]] = {}
        self.senders: dict[int, set[bytes]] = {}  # round -> validators heard from (line 55)
        self.fired: set[tuple[int, int]] = set()  # (line, round) of the "for the first time" rules
        self.validity: dict[bytes, Validated | None] = {}
        self.timeouts: list[tuple[int, int, str, int, int]] = []  # (due, seq, kind, height, round)
        self.helped: dict[bytes, tuple[int, int]] = {}  # peer -> (its round, time) we last sent it our votes
        self.height_start = self.now
        self.waiting = False
        self.ahead = {p: h for p, h in self.ahead.items() if h > height}
        self.behind_since = self.now if self.ahead else None
        if self.lock_record is not None and self.lock_record[0] == height:  # a restart while locked
            self.locked_round, self.locked_hash = self.lock_record[1], self.lock_record[2]
        resume = max((m.round for m in self.signed.values() if m.height == height), default=0)
        for msg in self.signed.values():  # after a restart our own votes of this height count again
            if isinstance(msg, Vote) and msg.height == height:
                self._add_vote(msg)
        if self.started:
            self._start_round(resume)
        else:
            self.round = resume
        future, self.future = self.future, []
        for peer, kind, body in future:
            try:
                self._dispatch(peer, kind, body)
            except (DecodeError, TypeError, KeyError, ValueError, IndexError):
                self.stats.malformed += 1
        self.synced = {h: bs for h, bs in self.synced.items() if h >= height}
        self.pending_commits = {h: c for h, c in self.pending_commits.items() if h >= height}

    def _signed_at(self, kind: str, round_: int) -> Signed | None:
        msg = self.signed.get(kind)
        return msg if msg is not None and msg.height == self.height and msg.round == round_ else None

    # -- StartRound (lines 11–21) ----------------------------------------------------------
    def _start_round(self, round_: int) -> None:
        if round_ > self.round:
            self.stats.rounds += 1
        self.round = round_  # line 12
        self.stage = PROPOSE_STEP  # line 13
        # after a restart: the step this validator had reached in the round
        if self._signed_at(PRECOMMIT, round_) is not None:
            self.stage = PRECOMMIT_STEP
        elif self._signed_at(PREVOTE, round_) is not None:
            self.stage = PREVOTE_STEP
        if self.stage != PROPOSE_STEP:
            return
        self.waiting = round_ == 0  # round 0 starts on a tick (after the runtime applied the last block)
        if not self.waiting:
            self._enter_propose()

    def _round0_due(self) -> bool:
        """Round 0 starts once ``commit_ms`` passed and transactions wait (or ``empty_block_ms`` passed)."""
        p = self.params
        elapsed = self.now - self.height_start
        return elapsed >= p.commit_ms and (len(self.txs) > 0 or elapsed >= p.empty_block_ms)

    def _enter_propose(self) -> None:
        if self.is_validator and proposer_for(self.validators, self.height, self.round) == self.me \
                and self._propose():
            return
        self._schedule("propose", self.params.timeout_propose(self.round))  # line 21

    def _propose(self) -> bool:
        """Lines 14–19: propose validValue if there is one, else a fresh block; False if we cannot."""
        if self.valid_block is not None:  # lines 15–16
            block, pol_round = self.valid_block, self.valid_round
        else:  # line 18: getValue()
            if self.height > 1 and self.last_cert is None:
                log_event(log, logging.INFO, "cannot propose without the parent's certificate", height=self.height)
                return False
            consensus: dict[str, Any] = {"engine": "bft", "round": self.round,
                                         "last_commit": self.last_cert.to_obj() if self.height > 1 and
                                         self.last_cert is not None else None}
            if self.height == 1:
                consensus["genesis"] = self.chain.genesis.to_obj()
            done = frozenset(tx.tx_hash for tx in self.last_block.txs) if self.last_block else frozenset()
            candidates = self.txs.select(self.params.max_block_txs, done)
            block, rejected = propose_block(self.chain, candidates, self.key, self.now, consensus)
            self.chain.state.take_changes()  # the dry run's rollback marked keys it did not change
            self.rejected.extend(rejected)
            pol_round = -1
        proposal = self._sign(PROPOSAL, block.block_hash, pol_round)
        if proposal is None:
            return False
        assert isinstance(proposal, Proposal)
        self.stats.proposed += 1
        self._receive_proposal(proposal, block, [])
        self._broadcast_proposal(proposal, block)  # line 19
        return True

    def _broadcast_proposal(self, proposal: Proposal, block: Block) -> None:
        self._broadcast(self._proposal_message(proposal, block))

    # -- signing, guarded and recorded before sending --------------------------------------
    def _sign(self, kind: str, block_hash: bytes, pol_round: int = -1) -> Signed | None:
        """Sign our message of ``kind`` for the current height and round, unless that would conflict.

        The latest signed message of each kind is persisted (as a record, before
        it is sent). A message for an earlier (height, round), or a different
        one for the same, is refused: after a restart we resend what we signed.
        """
        last = self.signed.get(kind)
        here = (self.height, self.round)
        if last is not None and (last.height, last.round) >= here:
            same = (last.height, last.round) == here and last.block_hash == block_hash and \
                (not isinstance(last, Proposal) or last.pol_round == pol_round)
            if same:
                return last
            self.stats.refused_to_sign += 1
            log_event(log, logging.WARNING, "refusing to sign a conflicting message", kind=kind,
                      height=self.height, round=self.round)
            return None
        msg: Signed
        if kind == PROPOSAL:
            msg = make_proposal(self.key, self.chain.chain_id, self.height, self.round, pol_round, block_hash)
        else:
            msg = make_vote(self.key, self.chain.chain_id, self.height, self.round, kind, block_hash)
        self.signed[kind] = msg
        self._record(kind, msg.encode())
        return msg

    def _vote(self, kind: str, block_hash: bytes) -> None:
        """Broadcast our prevote or precommit for the current round (lines 24, 26, 30, 32, 40, 45, 59, 63)."""
        if not self.is_validator:
            return
        vote = self._sign(kind, block_hash)
        if vote is None:
            return
        assert isinstance(vote, Vote)
        self._add_vote(vote)
        self._broadcast(encode_message("vote", vote.to_obj()))

    def _rebroadcast(self) -> None:
        """Send our messages of the current round again (any may have been lost), and relay the
        proposal of our ``validRound`` with its polka, so every validator learns the newest polka."""
        if 0 <= self.valid_round < self.round and self.valid_round in self.proposals:
            self._broadcast(self._proposal_message(*self.proposals[self.valid_round]))
        for kind in (PROPOSAL, PREVOTE, PRECOMMIT):
            msg = self._signed_at(kind, self.round)
            if msg is None:
                continue
            if isinstance(msg, Proposal):
                got = self.proposals.get(self.round)
                if got is not None and got[0] == msg:
                    self._broadcast_proposal(msg, got[1])
            else:
                self._broadcast(encode_message("vote", msg.to_obj()))

    # -- receiving ---------------------------------------------------------------------
    def _check_signed(self, msg: Signed) -> bool:
        if msg.chain_id != self.chain.chain_id:
            self.stats.reject("other chain")
            return False
        if not msg.well_formed():
            self.stats.reject("malformed fields")
            return False
        if msg.signer not in self.validators:
            self.stats.reject("not a validator")
            return False
        if msg.round > self.round + MAX_ROUND_AHEAD:
            self.stats.reject("round too far ahead")
            return False
        return True

    def _receive_proposal(self, proposal: Proposal, block: Block, pol: Sequence[Vote]) -> None:
        if not self._check_signed(proposal):
            return
        if proposal.proposer != proposer_for(self.validators, proposal.height, proposal.round):
            self.stats.reject("proposal not from proposer(h, r)")
            return
        if block.block_hash != proposal.block_hash:
            self.stats.reject("proposal names another block")
            return
        first = self.proposals.get(proposal.round)
        if first is not None and first[0].signing_bytes != proposal.signing_bytes:
            self._double_sign(first[0], proposal)
            return
        if first is None and not proposal.signature_ok:
            self.stats.reject("bad proposal signature")
            return
        for vote in pol:
            if vote.kind == PREVOTE and vote.height == proposal.height \
                    and vote.round in (proposal.pol_round, proposal.round) and vote.block_hash == proposal.block_hash:
                self._add_vote(vote)
        if first is not None:
            return
        self.proposals[proposal.round] = (proposal, block)
        self.blocks.setdefault(block.block_hash, block)
        self.senders.setdefault(proposal.round, set()).add(proposal.proposer)

    def _add_vote(self, vote: Vote) -> None:
        if not self._check_signed(vote):
            return
        slot = (vote.round, vote.kind)
        mine = self.votes.get(slot, {}).get(vote.voter, {})
        if vote.block_hash in mine or len(mine) >= MAX_VALUES_PER_VOTER:
            return
        if not vote.signature_ok:
            self.stats.reject("bad vote signature")
            return
        if mine:
            self._double_sign(next(iter(mine.values())), vote)  # reported; both votes still count
        self.votes.setdefault(slot, {}).setdefault(vote.voter, {})[vote.block_hash] = vote
        self.tally.setdefault(slot, Counter())[vote.block_hash] += 1
        self.senders.setdefault(vote.round, set()).add(vote.voter)

    def _receive_commit(self, block: Block, cert: CommitCert) -> None:
        """A decided block with its certificate (line 49 with the precommits in hand)."""
        if not self.height <= cert.height < self.height + MAX_SYNCED or block.height != cert.height:
            return
        if block.block_hash != cert.block_hash:
            self.stats.reject("commit names another block")
            return
        try:
            verify_certificate(cert, self.chain.chain_id, self.validators, cert.height, block.block_hash)
        except FedledgerError as exc:
            self.stats.reject("bad certificate")
            log_event(log, logging.INFO, "bad commit certificate", height=cert.height, reason=str(exc))
            return
        self.pending_commits[cert.height] = (block, cert)  # applied by _sync_rule once we get there

    def receive_blocks(self, blocks: Sequence[Block]) -> None:
        """Decided blocks from a peer's store (catch-up): each applies once its certificate is known.

        The certificate of block h is the ``last_commit`` of block h + 1; the
        peer's newest block needs a ``commit`` message, which follows the blocks.
        """
        for block in blocks:
            if self.height <= block.height < self.height + MAX_SYNCED:
                candidates = self.synced.setdefault(block.height, [])
                if block not in candidates and len(candidates) < MAX_CANDIDATES:
                    candidates.append(block)
        self._progress()

    def _certified(self, height: int) -> tuple[Block, CommitCert] | None:
        """A block for ``height`` with a valid certificate: from a commit message, or a synced block
        whose certificate is the ``last_commit`` of a synced block at ``height + 1``."""
        known = self.pending_commits.get(height)
        if known is not None:
            return known
        for nxt in self.synced.get(height + 1, []):
            consensus = nxt.header.consensus
            try:
                cert = CommitCert.from_obj(consensus.get("last_commit") if isinstance(consensus, dict) else None)
            except DecodeError:
                continue
            for block in self.synced.get(height, []):
                if block.block_hash != cert.block_hash:
                    continue
                try:
                    verify_certificate(cert, self.chain.chain_id, self.validators, height, block.block_hash)
                except FedledgerError:
                    self.stats.reject("bad certificate")
                    continue
                return block, cert
        return None

    def _sync_rule(self) -> bool:
        """Decide the current height from a certified block of a peer (line 49 by certificate)."""
        found = self._certified(self.height)
        if found is None:
            return False
        block, cert = found
        if not self._valid(block):  # more than 2/3 precommitted an invalid block: we are not their chain
            self.pending_commits.pop(self.height, None)
            self.synced[self.height] = [b for b in self.synced.get(self.height, []) if b != block]
            return False
        self.stats.decided_by_certificate += 1
        self._decide(block, cert)
        return True

    # -- valid(v) ------------------------------------------------------------------------
    def _valid(self, block: Block) -> bool:
        """valid(v): the block applies to the committed chain (block hook included). Cached per block."""
        h = block.block_hash
        if h in self.validity:
            return self.validity[h] is not None
        if block.height != self.height:
            return False
        replica = dataclasses.replace(self.chain)  # shares the state object; apply_block moves only its head
        state = self.chain.state
        state.begin()
        try:
            receipts = apply_block(replica, block)
        except Exception as exc:  # noqa: BLE001 - any failure to apply makes the block invalid, deterministically
            state.rollback()
            state.take_changes()
            self.validity[h] = None
            self.stats.invalid_blocks += 1
            log_event(log, logging.INFO, "invalid block", height=block.height, reason=str(exc))
            return False
        undo = state.detach()
        diff = state.take_changes()
        state.revert(undo)
        state.take_changes()
        self.validity[h] = Validated(replica, receipts, diff)
        return True

    def _timely(self, block: Block) -> bool:
        return block.header.timestamp <= self.now + self.params.max_future_ms

    # -- the upon rules ---------------------------------------------------------------------
    def _votes_for(self, round_: int, kind: str, block_hash: bytes) -> list[Vote]:
        return [vs[block_hash] for vs in self.votes.get((round_, kind), {}).values() if block_hash in vs]

    def _count(self, round_: int, kind: str, block_hash: bytes | None = None) -> int:
        """Distinct validators that sent ``kind`` in ``round_`` (for ``block_hash``, if given)."""
        if block_hash is None:
            return len(self.votes.get((round_, kind), {}))
        tally = self.tally.get((round_, kind))
        return 0 if tally is None else tally[block_hash]

    def _progress(self) -> None:
        """Fire upon rules until none applies (each firing changes state, so this ends)."""
        if not self.started:
            return
        for _ in range(10_000):
            if not self._fire_one():
                return
        raise RuntimeError("bft rules did not settle")  # a bug, not an input: rules fire finitely often

    def _fire_one(self) -> bool:
        if self._sync_rule() or self._decide_rule() or self._skip_rule():
            return True
        r = self.round
        got = self.proposals.get(r)
        if self.stage == PROPOSE_STEP and got is not None:
            proposal, block = got
            vr = proposal.pol_round
            if vr == -1:  # line 22
                ok = self._valid(block) and self._timely(block) and \
                    (self.locked_round == -1 or self.locked_hash == block.block_hash)  # line 23
                self._vote(PREVOTE, block.block_hash if ok else NIL)  # lines 24, 26
                self.stage = PREVOTE_STEP  # line 27
                return True
            if 0 <= vr < r and self._count(vr, PREVOTE, block.block_hash) >= self.quorum:  # line 28
                ok = self._valid(block) and self._timely(block) and \
                    (self.locked_round <= vr or self.locked_hash == block.block_hash)  # line 29
                self._vote(PREVOTE, block.block_hash if ok else NIL)  # lines 30, 32
                self.stage = PREVOTE_STEP  # line 33
                return True
        if self.stage == PREVOTE_STEP and (34, r) not in self.fired and self._count(r, PREVOTE) >= self.quorum:
            self.fired.add((34, r))  # line 34
            self._schedule("prevote", self.params.timeout_prevote(r))  # line 35
            return True
        if self.stage >= PREVOTE_STEP and (36, r) not in self.fired and got is not None \
                and self._count(r, PREVOTE, got[1].block_hash) >= self.quorum and self._valid(got[1]):
            self.fired.add((36, r))  # line 36
            block = got[1]
            if self.stage == PREVOTE_STEP:  # line 37
                self.locked_round, self.locked_hash = r, block.block_hash  # lines 38–39
                self._record("lock", cbor.encode([self.height, r, block.block_hash]))
                self.lock_record = (self.height, r, block.block_hash)
                self._vote(PRECOMMIT, block.block_hash)  # line 40
                self.stage = PRECOMMIT_STEP  # line 41
            self.valid_round, self.valid_block = r, block  # lines 42–43
            return True
        if self._polka_rule():
            return True
        if self.stage == PREVOTE_STEP and self._count(r, PREVOTE, NIL) >= self.quorum:  # line 44
            self._vote(PRECOMMIT, NIL)  # line 45
            self.stage = PRECOMMIT_STEP  # line 46
            return True
        if (47, r) not in self.fired and self._count(r, PRECOMMIT) >= self.quorum:
            self.fired.add((47, r))  # line 47
            self._schedule("precommit", self.params.timeout_precommit(r))  # line 48
            return True
        return False

    def _polka_rule(self) -> bool:
        """A polka of an earlier round newer than validRound also updates validValue (lines 42–43).

        Line 36 only looks at the current round; a validator that hears of a
        polka late (its prevotes were lost before the network settled) would
        otherwise propose a fresh value that locked validators must refuse.
        Which valid value a proposer proposes never matters for safety (any
        proposal must pass lines 22–33 at every validator); the lock is not
        touched here."""
        for round_, (_, block) in self.proposals.items():
            if self.valid_round < round_ < self.round and \
                    self._count(round_, PREVOTE, block.block_hash) >= self.quorum and self._valid(block):
                self.valid_round, self.valid_block = round_, block
                return True
        return False

    def _decide_rule(self) -> bool:
        """Line 49: a value with 2f + 1 precommits of one round, valid, decides the height."""
        for (round_, kind), tally in self.tally.items():
            if kind != PRECOMMIT:
                continue
            for block_hash, count in tally.items():
                if block_hash == NIL or count < self.quorum:
                    continue
                block = self.blocks.get(block_hash)
                if block is None or not self._valid(block):  # line 50
                    continue
                self._decide(block, make_certificate(self._votes_for(round_, PRECOMMIT, block_hash)))
                return True
        return False

    def _skip_rule(self) -> bool:
        """Line 55: f + 1 messages of a higher round: at least one honest validator is there."""
        later = [r for r, who in self.senders.items() if r > self.round and len(who) >= self.skip]
        if not later:
            return False
        self._start_round(max(later))  # line 56
        return True

    # -- timeouts (lines 57–67) ---------------------------------------------------------------
    def _schedule(self, kind: str, after_ms: int) -> None:
        self.timeouts.append((self.now + after_ms, len(self.timeouts), kind, self.height, self.round))

    def _fire_timeouts(self) -> None:
        due = sorted(t for t in self.timeouts if t[0] <= self.now)
        if not due:
            return
        self.timeouts = [t for t in self.timeouts if t[0] > self.now]
        for _, _, kind, height, round_ in due:
            if height != self.height or round_ != self.round:
                continue
            if kind == "propose" and self.stage == PROPOSE_STEP:  # line 58
                self._timed_out(kind)
                self._vote(PREVOTE, NIL)  # line 59
                self.stage = PREVOTE_STEP  # line 60
            elif kind == "prevote" and self.stage == PREVOTE_STEP:  # line 62
                self._timed_out(kind)
                self._vote(PRECOMMIT, NIL)  # line 63
                self.stage = PRECOMMIT_STEP  # line 64
            elif kind == "precommit":  # line 66
                self._timed_out(kind)
                self._start_round(self.round + 1)  # line 67
            self._progress()

    def _timed_out(self, kind: str) -> None:
        self.stats.timeouts[kind] = self.stats.timeouts.get(kind, 0) + 1

    # -- decision (lines 49–54) -------------------------------------------------------------
    def _decide(self, block: Block, cert: CommitCert) -> None:
        done = self.validity[block.block_hash]
        assert done is not None
        self.chain.state.apply(done.diff)
        self.chain.state.take_changes()
        for f in dataclasses.fields(self.chain):  # everything apply_block moved on the replica (the head)
            if f.name != "state":
                setattr(self.chain, f.name, getattr(done.replica, f.name))
        self._ready.committed.append(Committed(block, done.receipts, done.diff))  # line 51
        self.last_block, self.last_cert = block, cert
        self._record(f"commit/{block.height % 2}", cert.encode())
        self.stats.decided += 1
        log_event(log, logging.DEBUG, "decided", height=block.height, round=cert.round, txs=len(block.txs))
        self.decided_at = self.now
        self._start_height(block.height + 1)  # lines 52–54

    # -- accountability ----------------------------------------------------------------------
    def _double_sign(self, a: Signed, b: Signed) -> None:
        """Two conflicting messages from one validator: report them (once, then until the chain records it)."""
        if not a.signature_ok or not b.signature_ok:
            self.stats.reject("bad signature on a conflicting message")
            return
        self.stats.double_signs += 1
        offender = a.signer
        if offender in self.evidence or is_faulty(self.chain.state, offender):
            return
        log_event(log, logging.INFO, "double sign", validator=offender.hex()[:16], height=a.height,
                  round=a.round, step=a.kind)
        args = {"a": a.to_obj(), "b": b.to_obj()}
        self.evidence[offender] = [args, self.now]
        self._ready.calls.append(("bft", "report_double_sign", args))

    def _retry_evidence(self) -> None:
        for offender in list(self.evidence):
            args, sent = self.evidence[offender]
            if is_faulty(self.chain.state, offender):
                del self.evidence[offender]
            elif self.now - sent >= self.params.evidence_retry_ms:
                self.evidence[offender][1] = self.now
                self._ready.calls.append(("bft", "report_double_sign", args))

    # -- observation ---------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        return {"finalized_height": self.chain.height, "head_height": self.chain.height, "height": self.height,
                "round": self.round, "step": STEP_NAMES[self.stage], "locked_round": self.locked_round}
