"""The main chain's BFT engine against Tendermint, Algorithm 1 (Buchman, Kwon, Milosevic 2018).

"Line N" is a line of Algorithm 1 in "The latest gossip on BFT consensus"
(arXiv:1807.04938). Engines are real :class:`BftEngine` instances fed by hand
through ``tick``/``step``; blocks are built with the real ``propose_block`` and
checked with the real ``apply_block`` (whose block hook is
``contracts.bft.finish_block``). With four validators f = 1, so 2f + 1 = 3 and
f + 1 = 2. The engine under test is validator 0; at height 1 the proposers of
rounds 0, 1, 2, 3 are validators 1, 2, 3, 0 (``proposer(h, r)`` is validator
``(h + r) mod n``).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Sequence
from typing import Any

import pytest

from fedledger.codec import cbor
from fedledger.consensus.bft.engine import (
    PRECOMMIT_STEP,
    PREVOTE_STEP,
    PROPOSE_STEP,
    BftEngine,
)
from fedledger.consensus.bft.messages import (
    NIL,
    PRECOMMIT,
    PREVOTE,
    CommitCert,
    CommitSig,
    Proposal,
    Vote,
    is_double_sign,
    make_certificate,
    make_proposal,
    make_vote,
    proposer_for,
    quorum,
    skip_threshold,
    verify_certificate,
)
from fedledger.consensus.bft.params import BftParams
from fedledger.consensus.engine import decode_message, encode_message
from fedledger.contracts import bft as bft_contract
from fedledger.contracts.base import Context, lookup
from fedledger.crypto.keys import Domain, SigningKey
from fedledger.errors import ConfigError, ContractError, InvalidBlock, VerificationFailed
from fedledger.ledger.block import Block
from fedledger.ledger.chain import ChainState, apply_block, propose_block
from fedledger.ledger.genesis import Genesis, Identity
from fedledger.ledger.mempool import Mempool
from fedledger.ledger.tx import Transaction, make_tx

CHAIN = "main-test"
T0 = 1_700_000_000_000
KEYS = [SigningKey.from_seed(bytes([0x60 + i]) * 32) for i in range(7)]
CLIENT = SigningKey.from_seed(b"\xc1" * 32)  # an operator identity: its identity calls succeed
OUTSIDER = SigningKey.from_seed(b"\xee" * 32)  # not a validator
FAST = {"timeout_propose_ms": 100, "timeout_prevote_ms": 50, "timeout_precommit_ms": 50, "timeout_delta_ms": 20,
        "empty_block_ms": 0, "rebroadcast_ms": 1_000_000, "evidence_retry_ms": 1_000_000}


# -- a test chain ----------------------------------------------------------------


def make_genesis(n: int = 4, chain_id: str = CHAIN, **params: Any) -> Genesis:
    ids = (Identity(CLIENT.public_key, "edge", "client", chain_id),)
    return Genesis(chain_id, T0, tuple(k.public_key for k in KEYS[:n]), ids,
                   {"engine": "bft", "bft": {**FAST, **params}})


G = make_genesis()
V = [k.public_key for k in KEYS[:4]]


def engine(i: int = 0, genesis: Genesis = G, *, records: dict[str, bytes] | None = None,
           txs: Iterable[Transaction] = (), now: int = T0, chain: ChainState | None = None) -> BftEngine:
    """Validator ``i`` (or an outsider for ``i = -1``), started by one tick at ``now``."""
    chain = chain or ChainState.from_genesis(genesis)
    pool = Mempool(genesis.chain_id)
    for tx in txs:
        pool.add(tx, chain.state)
    eng = BftEngine(chain, OUTSIDER if i < 0 else KEYS[i], pool, records=records)
    eng.tick(now)
    return eng


def build(chain: ChainState, key: SigningKey, round_: int = 0, txs: Sequence[Transaction] = (),
          last_commit: CommitCert | None = None, ts: int = T0, genesis: Genesis = G) -> Block:
    """A block for ``chain``'s next height, as ``key`` builds it in ``round_`` (line 18, getValue)."""
    consensus: dict[str, Any] = {"engine": "bft", "round": round_,
                                 "last_commit": None if last_commit is None else last_commit.to_obj()}
    if chain.height == 0:
        consensus["genesis"] = genesis.to_obj()
    block, rejected = propose_block(chain, list(txs), key, ts, consensus)
    assert not rejected
    return block


def block1(round_: int = 0, ts: int = T0, txs: Sequence[Transaction] = ()) -> Block:
    """A valid block for height 1, built by proposer(1, round_)."""
    return build(ChainState.from_genesis(G), key_of(proposer_for(V, 1, round_)), round_, txs, ts=ts)


def key_of(pk: bytes) -> SigningKey:
    return next(k for k in KEYS if k.public_key == pk)


def resign(block: Block, key: SigningKey, **changes: Any) -> Block:
    """``block`` with header fields changed, signed again by ``key``."""
    header = dataclasses.replace(block.header, proposer=key.public_key, signature=b"", **changes)
    header = dataclasses.replace(header, signature=key.sign(Domain.BLOCK, header.signing_bytes()))
    return Block(header=header, txs=block.txs)


def tx(nonce: int, ts: int = T0) -> Transaction:
    return make_tx(CLIENT, CHAIN, nonce, "identity", "register_identity",
                   {"public_key": bytes([nonce + 1]) * 32, "role": "device", "name": f"d{nonce}",
                    "home_chain": CHAIN}, ts)


def vote(i: int, kind: str, round_: int, block_hash: bytes, height: int = 1, chain_id: str = CHAIN) -> Vote:
    return make_vote(KEYS[i], chain_id, height, round_, kind, block_hash)


def certificate(block: Block, round_: int = 0, voters: Iterable[int] = (0, 1, 2)) -> CommitCert:
    return make_certificate([vote(i, PRECOMMIT, round_, block.block_hash, block.height) for i in voters])


def proposal_message(block: Block, round_: int, pol_round: int = -1, pol: Sequence[Vote] = (),
                     key: SigningKey | None = None) -> bytes:
    key = key or key_of(proposer_for(V, block.height, round_))
    proposal = make_proposal(key, CHAIN, block.height, round_, pol_round, block.block_hash)
    return encode_message("proposal", {"proposal": proposal.to_obj(), "block": block.encode(),
                                       "pol": [v.to_obj() for v in pol]})


def propose(eng: BftEngine, block: Block, round_: int, pol_round: int = -1, pol: Sequence[Vote] = ()) -> None:
    eng.step(V[0], proposal_message(block, round_, pol_round, pol))


def deliver(eng: BftEngine, *votes: Vote) -> None:
    for v in votes:
        eng.step(v.voter, encode_message("vote", v.to_obj()))


def out_votes(eng: BftEngine, kind: str | None = None) -> list[Vote]:
    """Votes ``eng`` broadcast since the last look (draining its Ready batch)."""
    ready = eng.ready()
    found = []
    for _, payload in ready.messages:
        k, body = decode_message(payload)
        if k == "vote":
            v = Vote.from_obj(body)
            if kind is None or v.kind == kind:
                found.append(v)
    return found


def polka(block_hash: bytes, round_: int, voters: Iterable[int] = (1, 2, 3), height: int = 1) -> list[Vote]:
    return [vote(i, PREVOTE, round_, block_hash, height) for i in voters]


def precommits(block_hash: bytes, round_: int, voters: Iterable[int] = (1, 2, 3), height: int = 1) -> list[Vote]:
    return [vote(i, PRECOMMIT, round_, block_hash, height) for i in voters]


def to_round(eng: BftEngine, round_: int) -> None:
    """Line 55: f + 1 messages of a higher round (here nil precommits of validators 1 and 2) move the
    engine there, without adding prevotes to that round."""
    deliver(eng, *[vote(i, PRECOMMIT, round_, NIL) for i in (1, 2)])
    assert eng.round == round_


def run_call(chain: ChainState, method: str, args: Any, sender: SigningKey = CLIENT, height: int = 5) -> Any:
    """Execute one bft contract call as the ledger does: a failure rolls back its writes."""
    fn = lookup("bft", method)
    assert fn is not None
    state = chain.state
    state.begin()
    try:
        result = fn(Context(state, "bft", chain.chain_id, sender.public_key, height, T0, bytes(32)), args)
    except Exception:
        state.rollback()
        raise
    state.commit()
    return result


def chain_after(*blocks: Block) -> ChainState:
    chain = ChainState.from_genesis(G)
    for b in blocks:
        apply_block(chain, b)
    return chain


# ==================================================================================
# thresholds, proposer rotation, parameters
# ==================================================================================


@pytest.mark.parametrize(("n", "q", "skip"), [(1, 1, 1), (3, 3, 1), (4, 3, 2), (5, 4, 2), (6, 5, 2), (7, 5, 3),
                                              (10, 7, 4), (31, 21, 11)])
def test_quorum_is_more_than_two_thirds_and_skip_is_f_plus_1(n: int, q: int, skip: int) -> None:
    """2f + 1 (lines 28, 34, 36, 44, 47, 49) is the smallest count above 2n/3; f + 1 (line 55) = n − 2f."""
    assert quorum(n) == q and 3 * q > 2 * n and 3 * (q - 1) <= 2 * n
    assert skip_threshold(n) == skip
    f = n - q
    assert 3 * f < n  # n ≥ 3f + 1: safety holds with f faulty validators
    assert 2 * q - n >= f + 1  # any two quorums share an honest validator


def test_proposer_rotates_over_validators_by_height_and_round() -> None:
    """Line 14, proposer(h, r): every validator proposes once in any n consecutive rounds, and
    the next height starts one validator further on."""
    assert [proposer_for(V, 1, r) for r in range(4)] == [V[1], V[2], V[3], V[0]]
    assert [proposer_for(V, 2, r) for r in range(4)] == [V[2], V[3], V[0], V[1]]
    for h in range(1, 6):
        assert sorted(proposer_for(V, h, r) for r in range(7, 11)) == sorted(V)


def test_only_the_rounds_proposer_proposes() -> None:
    """Lines 14–21: proposer(h, r) broadcasts a PROPOSAL at StartRound; the others schedule timeoutPropose."""
    proposer, other = engine(1), engine(0)
    msgs = [decode_message(p) for _, p in proposer.ready().messages]
    proposals = [Proposal.from_obj(b["proposal"]) for k, b in msgs if k == "proposal"]
    assert len(proposals) == 1 and proposals[0].round == 0 and proposals[0].pol_round == -1  # line 19
    assert proposals[0].proposer == V[1] and proposer.stats.proposed == 1
    block = Block.decode(next(b["block"] for k, b in msgs if k == "proposal"))
    assert block.header.consensus["round"] == 0 and block.header.consensus["last_commit"] is None
    assert other.stats.proposed == 0 and [t[2] for t in other.timeouts] == ["propose"]  # line 21
    assert any(k == "vote" for k, _ in msgs)  # line 22: the proposer prevotes its own proposal


def test_params_from_genesis_are_checked() -> None:
    assert BftParams.from_obj(None) == BftParams()
    assert BftParams.from_obj({"timeout_delta_ms": 7}).timeout_prevote(3) == 500 + 21
    with pytest.raises(ConfigError, match="unknown bft parameter"):
        BftParams.from_obj({"timeout_propse_ms": 1})
    with pytest.raises(ConfigError, match="positive"):
        BftParams.from_obj({"timeout_prevote_ms": 0})
    with pytest.raises(ConfigError, match="non-negative integer"):
        BftParams.from_obj({"commit_ms": -1})


# ==================================================================================
# propose and prevote (lines 22–33, 57–60)
# ==================================================================================


def test_prevote_for_a_valid_proposal_from_the_proposer() -> None:
    """Lines 22–24, 27: a valid proposal with vr = −1 from proposer(h, r), while unlocked: prevote id(v)."""
    eng = engine(0)
    block = block1()
    propose(eng, block, 0)
    assert [(v.round, v.block_hash) for v in out_votes(eng, PREVOTE)] == [(0, block.block_hash)]
    assert eng.stage == PREVOTE_STEP


def test_prevote_nil_for_an_invalid_proposal() -> None:
    """Lines 23, 26: a proposal whose block does not apply (here: a tampered state root) gets a nil prevote."""
    eng = engine(0)
    bad = resign(block1(), KEYS[1], state_root=bytes(32))
    propose(eng, bad, 0)
    assert [v.block_hash for v in out_votes(eng, PREVOTE)] == [NIL]
    assert eng.stats.invalid_blocks == 1


def test_proposal_not_from_the_rounds_proposer_is_ignored() -> None:
    """Line 22 "from proposer(h_p, round_p)": a proposal signed by another validator changes nothing."""
    eng = engine(0)
    block = build(ChainState.from_genesis(G), KEYS[1], 0)
    eng.step(V[2], proposal_message(block, 0, key=KEYS[2]))
    assert out_votes(eng) == [] and eng.stage == PROPOSE_STEP
    assert eng.stats.rejected == {"proposal not from proposer(h, r)": 1}


def test_timeout_propose_prevotes_nil() -> None:
    """Lines 21, 57–60: without a proposal, timeoutPropose(0) later the validator prevotes nil."""
    eng = engine(0)
    eng.tick(T0 + FAST["timeout_propose_ms"] - 1)
    assert out_votes(eng) == []
    eng.tick(T0 + FAST["timeout_propose_ms"])
    assert [(v.round, v.block_hash) for v in out_votes(eng, PREVOTE)] == [(0, NIL)]
    assert eng.stats.timeouts == {"propose": 1}
    propose(eng, block1(), 0)  # too late: line 22 needs step_p = propose
    assert out_votes(eng) == []


def test_prevote_nil_for_a_proposal_from_the_future() -> None:
    """Line 23 with a timeliness check: a block stamped beyond max_future_ms of our clock gets nil.
    Deciding (line 49) still uses only valid(v): see test_decide_does_not_depend_on_the_clock."""
    eng = engine(0)
    far = block1(ts=T0 + BftParams().max_future_ms + 1)
    propose(eng, far, 0)
    assert [v.block_hash for v in out_votes(eng, PREVOTE)] == [NIL]


# ==================================================================================
# locking and precommit (lines 34–48, 61–64)
# ==================================================================================


def test_polka_locks_and_precommits_the_value() -> None:
    """Lines 36–43: the proposal plus 2f + 1 prevotes for it lock v in this round, precommit id(v),
    and set validValue. The lock is a record handed out with (so persisted before) the precommit."""
    eng = engine(0)
    block = block1()
    propose(eng, block, 0)
    out_votes(eng)
    deliver(eng, *polka(block.block_hash, 0, (1, 2)))
    ready = eng.ready()
    keys = [k for k, _ in ready.records]
    assert keys == ["bft/lock", "bft/precommit"]
    assert cbor.decode(ready.records[0][1]) == [1, 0, block.block_hash]
    sent = [Vote.from_obj(decode_message(p)[1]) for _, p in ready.messages]
    assert [(v.kind, v.block_hash) for v in sent] == [(PRECOMMIT, block.block_hash)]
    assert (eng.locked_round, eng.locked_hash) == (0, block.block_hash)
    assert (eng.valid_round, eng.valid_block) == (0, block)
    assert eng.stage == PRECOMMIT_STEP


def test_two_prevotes_are_not_a_polka() -> None:
    """2f + 1 means 3 of 4: our prevote and one other (exactly half) lock nothing."""
    eng = engine(0)
    block = block1()
    propose(eng, block, 0)
    deliver(eng, *polka(block.block_hash, 0, (1,)))
    assert out_votes(eng, PRECOMMIT) == [] and eng.locked_round == -1


def test_polka_for_nil_precommits_nil() -> None:
    """Lines 44–46: 2f + 1 nil prevotes: precommit nil, without locking."""
    eng = engine(0)
    propose(eng, block1(), 0)
    out_votes(eng)
    deliver(eng, *polka(NIL, 0, (1, 2, 3)))
    assert [(v.kind, v.block_hash) for v in out_votes(eng)] == [(PRECOMMIT, NIL)]
    assert eng.locked_round == -1 and eng.stage == PRECOMMIT_STEP


def test_split_prevotes_wait_for_timeout_prevote_then_precommit_nil() -> None:
    """Lines 34–35, 61–64: 2f + 1 prevotes without a majority schedule timeoutPrevote; when it
    fires the validator precommits nil. Fewer than 2f + 1 prevotes schedule nothing."""
    eng = engine(0)
    block = block1()
    propose(eng, block, 0)
    out_votes(eng)
    deliver(eng, vote(1, PREVOTE, 0, NIL))
    assert "prevote" not in [t[2] for t in eng.timeouts]
    deliver(eng, vote(2, PREVOTE, 0, NIL))  # ours (v), 1 and 2 (nil): 3 prevotes, no 2f + 1 for either
    assert [t[2] for t in eng.timeouts].count("prevote") == 1
    eng.tick(T0 + FAST["timeout_prevote_ms"] - 1)
    assert out_votes(eng) == []
    eng.tick(T0 + FAST["timeout_prevote_ms"])
    assert [(v.kind, v.block_hash) for v in out_votes(eng)] == [(PRECOMMIT, NIL)]


def test_late_polka_sets_valid_value_but_not_the_lock() -> None:
    """Line 36 "step_p ≥ prevote", lines 42–43: a polka that completes after we precommitted nil updates
    validValue/validRound only; lines 37–41 (lock, precommit) need step_p = prevote."""
    eng = engine(0)
    block = block1()
    propose(eng, block, 0)
    deliver(eng, *polka(NIL, 0, (1, 2)))  # with our prevote for v: no majority yet
    eng.tick(T0 + FAST["timeout_prevote_ms"])  # precommit nil
    out_votes(eng)
    deliver(eng, *polka(block.block_hash, 0, (3,)), vote(1, PREVOTE, 0, block.block_hash))
    assert eng.locked_round == -1 and out_votes(eng) == []
    assert (eng.valid_round, eng.valid_block) == (0, block)


# ==================================================================================
# deciding (lines 47–54, 65–67)
# ==================================================================================


def test_decide_on_2f1_precommits_emits_the_block_and_its_certificate() -> None:
    """Lines 49–54: a valid v with 2f + 1 precommits of one round is decided: the block goes to the
    runtime with receipts and state changes, the certificate is recorded, and height h + 1 starts
    with the lock and valid value reset (line 53)."""
    eng = engine(0, txs=[tx(0)])
    block = block1(txs=[tx(0)])
    propose(eng, block, 0)
    deliver(eng, *polka(block.block_hash, 0, (1, 2)))
    eng.ready()
    deliver(eng, *precommits(block.block_hash, 0, (1,)))
    assert eng.ready().committed == []  # ours and one more: 2 of 4
    deliver(eng, *precommits(block.block_hash, 0, (2,)))
    ready = eng.ready()
    assert [c.block for c in ready.committed] == [block]
    assert [r.success for r in ready.committed[0].receipts] == [True]
    assert ready.committed[0].changes  # the register_identity write
    cert = CommitCert.decode(dict(ready.records)["bft/commit/1"])
    verify_certificate(cert, CHAIN, V, 1, block.block_hash)
    assert {s.voter for s in cert.signatures} == {V[0], V[1], V[2]}
    assert eng.chain.height == 1 and eng.chain.head == block.header
    assert (eng.height, eng.round, eng.locked_round, eng.valid_round) == (2, 0, -1, -1)
    replay = chain_after(block)  # the committed state is the block's
    assert dict(replay.state.items()) == dict(eng.chain.state.items())


def test_decide_in_an_earlier_round_and_from_any_proposal_of_the_block() -> None:
    """Line 49 quantifies over every round r: precommits of round 0 decide even while we are in round 2."""
    eng = engine(0)
    block = block1()
    propose(eng, block, 0)
    to_round(eng, 2)
    deliver(eng, *precommits(block.block_hash, 0))
    assert eng.chain.height == 1 and eng.height == 2


def test_decide_does_not_depend_on_the_clock() -> None:
    """Line 50 uses valid(v) only: a block we refused to prevote as untimely is still decided."""
    eng = engine(0)
    far = block1(ts=T0 + BftParams().max_future_ms + 1)
    propose(eng, far, 0)
    deliver(eng, *precommits(far.block_hash, 0))
    assert eng.chain.head == far.header


def test_precommit_timeout_starts_the_next_round_with_longer_timeouts() -> None:
    """Lines 47–48, 65–67 and the growing timeouts: 2f + 1 precommits (for nil) schedule
    timeoutPrecommit(0); then StartRound(1), whose timeoutPropose(1) = propose + delta."""
    eng = engine(0)
    eng.tick(T0 + 100)  # timeoutPropose(0): prevote nil
    deliver(eng, *polka(NIL, 0, (1, 2)))  # precommit nil (line 44)
    deliver(eng, *precommits(NIL, 0, (1, 2)))
    t = T0 + 100 + FAST["timeout_precommit_ms"]
    eng.tick(t - 1)
    assert eng.round == 0
    eng.tick(t)
    assert eng.round == 1 and eng.stage == PROPOSE_STEP and eng.stats.timeouts["precommit"] == 1
    out_votes(eng)
    eng.tick(t + FAST["timeout_propose_ms"] + FAST["timeout_delta_ms"] - 1)
    assert out_votes(eng) == []
    eng.tick(t + FAST["timeout_propose_ms"] + FAST["timeout_delta_ms"])
    assert [(v.round, v.block_hash) for v in out_votes(eng, PREVOTE)] == [(1, NIL)]


def test_skip_to_a_higher_round_on_f_plus_1_messages() -> None:
    """Lines 55–56: f + 1 = 2 distinct validators in round 5 move us there; one, or one twice, does not."""
    eng = engine(0)
    deliver(eng, vote(1, PREVOTE, 5, NIL), vote(1, PRECOMMIT, 5, NIL))
    assert eng.round == 0
    deliver(eng, vote(3, PRECOMMIT, 5, NIL))
    assert eng.round == 5 and eng.stats.rounds == 1


# ==================================================================================
# locked values across rounds (lines 15–16, 23, 28–33)
# ==================================================================================


def _locked_on(block: Block) -> BftEngine:
    eng = engine(0)
    propose(eng, block, 0)
    deliver(eng, *polka(block.block_hash, 0, (1, 2)))
    assert eng.locked_round == 0
    eng.ready()
    return eng


def test_locked_validator_prevotes_nil_for_another_fresh_value() -> None:
    """Line 23: lockedRound ≠ −1 and v ≠ lockedValue: prevote nil (line 26)."""
    mine, other = block1(0), block1(1, ts=T0 + 1)
    eng = _locked_on(mine)
    to_round(eng, 1)
    out_votes(eng)
    propose(eng, other, 1)
    assert [(v.round, v.block_hash) for v in out_votes(eng, PREVOTE)] == [(1, NIL)]


def test_locked_validator_prevotes_its_locked_value_again() -> None:
    """Line 23: lockedValue = v: prevote id(v) even in a later round, with vr = −1."""
    mine = block1(0)
    eng = _locked_on(mine)
    to_round(eng, 1)
    out_votes(eng)
    propose(eng, mine, 1)
    assert [(v.round, v.block_hash) for v in out_votes(eng, PREVOTE)] == [(1, mine.block_hash)]


def test_unlock_on_a_polka_newer_than_the_lock() -> None:
    """Lines 28–30: a proposal of v' with vr = 1 and 2f + 1 prevotes for v' in round 1 is prevoted
    by a validator locked in round 0 (lockedRound ≤ vr). The polka travels with the proposal."""
    mine, newer = block1(0), block1(1, ts=T0 + 1)
    eng = _locked_on(mine)
    to_round(eng, 2)
    out_votes(eng)
    propose(eng, newer, 2, pol_round=1, pol=polka(newer.block_hash, 1, (1, 2, 3)))
    assert [(v.round, v.block_hash) for v in out_votes(eng, PREVOTE)] == [(2, newer.block_hash)]


def test_stay_locked_against_an_older_polka() -> None:
    """Lines 29, 32: locked in round 1, a proposal whose polka is from round 0 (vr < lockedRound) and
    whose value differs gets a nil prevote."""
    old, mine = block1(0), block1(1, ts=T0 + 1)
    eng = engine(0)
    propose(eng, old, 0)
    deliver(eng, *polka(old.block_hash, 0, (1, 2, 3)))  # we locked on old in round 0...
    to_round(eng, 1)
    propose(eng, mine, 1)
    deliver(eng, *polka(mine.block_hash, 1, (1, 2, 3)))  # ...and on mine in round 1
    assert (eng.locked_round, eng.locked_hash) == (1, mine.block_hash)
    to_round(eng, 2)
    out_votes(eng)
    propose(eng, old, 2, pol_round=0, pol=polka(old.block_hash, 0, (1, 2, 3)))  # line 28 fires...
    assert [(v.round, v.block_hash) for v in out_votes(eng, PREVOTE)] == [(2, NIL)]  # ...line 32


def test_proposal_with_valid_round_waits_for_its_polka() -> None:
    """Line 28 fires only with 2f + 1 prevotes for v in round vr; until then nothing is sent, and
    when they arrive (here: one at a time) the validator prevotes."""
    block = block1(1, ts=T0 + 1)
    eng = engine(0)
    to_round(eng, 2)
    out_votes(eng)
    propose(eng, block, 2, pol_round=1)
    deliver(eng, *polka(block.block_hash, 1, (1, 2)))
    assert out_votes(eng, PREVOTE) == [] and eng.stage == PROPOSE_STEP
    deliver(eng, *polka(block.block_hash, 1, (3,)))
    assert [(v.round, v.block_hash) for v in out_votes(eng, PREVOTE)] == [(2, block.block_hash)]


def test_proposer_reproposes_its_valid_value_with_the_polka() -> None:
    """Lines 15–16, 19: with validValue set, the proposer proposes it with vr = validRound, and the
    proposal carries the 2f + 1 prevotes of that round (so line 28 can fire everywhere)."""
    block = block1(0)
    eng = _locked_on(block)
    deliver(eng, *precommits(NIL, 0, (1, 2)))  # round 0 fails for everyone else
    to_round(eng, 3)  # proposer(1, 3) is validator 0
    msgs = [decode_message(p) for _, p in eng.ready().messages]
    body = next(b for k, b in msgs if k == "proposal")
    proposal = Proposal.from_obj(body["proposal"])
    assert (proposal.round, proposal.pol_round, proposal.block_hash) == (3, 0, block.block_hash)
    pol = [Vote.from_obj(v) for v in body["pol"]]
    assert len({v.voter for v in pol if v.round == 0 and v.block_hash == block.block_hash}) >= 3
    judge = engine(2)  # an unlocked validator in round 3 accepts it through line 28
    judge.ready()
    to_round(judge, 3)
    out_votes(judge)
    judge.step(V[0], encode_message("proposal", body))
    assert [(v.round, v.block_hash) for v in out_votes(judge, PREVOTE)] == [(3, block.block_hash)]


def test_a_late_polka_of_an_earlier_round_updates_the_valid_value() -> None:
    """A polka of round r < round_p newer than validRound also sets validValue (the lock stays):
    a validator that heard it late proposes that value instead of a fresh one others must refuse."""
    block = block1(1, ts=T0 + 1)
    eng = engine(0)
    to_round(eng, 1)
    propose(eng, block, 1)
    to_round(eng, 2)
    deliver(eng, *polka(block.block_hash, 1, (1, 2, 3)))
    assert (eng.valid_round, eng.valid_block, eng.locked_round) == (1, block, -1)


# ==================================================================================
# certificates and the block hook
# ==================================================================================


def test_certificate_verification() -> None:
    """Line 49's 2f + 1 precommits as a certificate: distinct validators, valid signatures, one round
    and one block, more than 2/3 of the validator set."""
    block = block1()
    h = block.block_hash
    good = certificate(block, 0, (0, 1, 2))
    verify_certificate(good, CHAIN, V, 1, h)
    verify_certificate(certificate(block, 0, (0, 1, 2, 3)), CHAIN, V, 1, h)
    sigs = good.signatures
    cases = {
        "two of four": (dataclasses.replace(good, signatures=sigs[:2]), "more than 2/3"),
        "a voter twice": (dataclasses.replace(good, signatures=(*sigs[:2], sigs[0])), "twice"),
        "non-validator": (make_certificate([*precommits(h, 0, (0, 1)), vote(4, PRECOMMIT, 0, h)]),
                          "non-validator"),
        "forged signature": (dataclasses.replace(good, signatures=(*sigs[:2], CommitSig(V[3], bytes(64)))),
                             "bad precommit signature"),
        "another round": (dataclasses.replace(good, round=1), "bad precommit signature"),
        "other chain": (make_certificate([vote(i, PRECOMMIT, 0, h, chain_id="other") for i in (0, 1, 2)]),
                        "bad precommit signature"),
        "prevotes": (CommitCert(1, 0, h, tuple(CommitSig(v.voter, v.signature) for v in polka(h, 0, (0, 1, 2)))),
                     "bad precommit signature"),
    }
    for name, (cert, reason) in cases.items():
        try:
            verify_certificate(cert, CHAIN, V, 1, h)
        except VerificationFailed as exc:
            assert re.search(reason, str(exc)), (name, str(exc))
        else:
            pytest.fail(f"certificate with {name} accepted")
    with pytest.raises(VerificationFailed, match="height"):
        verify_certificate(good, CHAIN, V, 2, h)
    with pytest.raises(VerificationFailed, match="another block"):
        verify_certificate(good, CHAIN, V, 1, bytes(32))
    with pytest.raises(VerificationFailed, match="another block"):
        verify_certificate(make_certificate(precommits(NIL, 0, (0, 1, 2))), CHAIN, V, 1, NIL)
    with pytest.raises(ValueError, match="one round"):
        make_certificate([vote(0, PRECOMMIT, 0, h), vote(1, PRECOMMIT, 1, h)])


def test_block_hook_requires_a_certificate_for_the_parent() -> None:
    """The hook (run by apply_block, so by ``fedledger chain verify`` too): block h > 1 must carry a
    > 2/3 certificate for its parent, block 1 none; and the builder is proposer(h, round)."""
    b1 = block1()
    chain = chain_after(b1)
    good = build(chain, KEYS[2], 0, last_commit=certificate(b1))
    assert proposer_for(V, 2, 0) == V[2]
    apply_block(chain_after(b1), good)  # control

    def hook(consensus: Any, proposer: bytes = V[2], height: int = 2, prev: bytes = b1.block_hash) -> None:
        state = chain_after(b1).state
        bft_contract.finish_block(state, CHAIN, height, prev, proposer, consensus)

    base = dict(good.header.consensus)
    cases = [
        ({**base, "last_commit": None}, "bad last_commit"),
        ({**base, "last_commit": certificate(b1, 0, (0, 1)).to_obj()}, "more than 2/3"),
        ({**base, "last_commit": certificate(b1, 0, (0, 1)).to_obj() | {"height": 2}}, "bad last_commit"),
        ({**base, "round": 1}, "not proposer"),
        ({**base, "engine": "microchain"}, "lacks bft consensus fields"),
        ({**base, "round": -1}, "malformed round"),
        ({**base, "extra": 1}, "unknown consensus fields"),
        ("not a map", "lacks bft consensus fields"),
    ]
    for consensus, reason in cases:
        with pytest.raises(InvalidBlock, match=reason):
            hook(consensus)
    with pytest.raises(InvalidBlock, match="bad last_commit"):  # a certificate for another block
        hook(base, prev=bytes(32))
    tampered = resign(good, KEYS[2], consensus={**base, "last_commit": None})
    with pytest.raises(InvalidBlock, match="bad last_commit"):
        apply_block(chain_after(b1), tampered)


def test_block_one_records_the_genesis_validators() -> None:
    """Block 1 carries the genesis document; the hook checks it hashes to the parent (the genesis block)
    and records the validator list every later check uses; a forged document is refused."""
    b1 = block1()
    chain = chain_after(b1)
    assert bft_contract.validators_of(chain.state) == tuple(V)
    forged = make_genesis(chain_id=CHAIN, timeout_delta_ms=21)  # another document, other validators' params
    genesis_block = G.block().block_hash
    for doc, reason in ((forged.to_obj(), "not its parent's"), (None, "malformed genesis"),
                        (make_genesis(chain_id="other").to_obj(), "not its parent's")):
        state = ChainState.from_genesis(G).state
        with pytest.raises(InvalidBlock, match=reason):
            bft_contract.finish_block(state, CHAIN, 1, genesis_block, V[1],
                                      {"engine": "bft", "round": 0, "last_commit": None, "genesis": doc})
    state = ChainState.from_genesis(G).state
    with pytest.raises(InvalidBlock, match="must be empty"):
        bft_contract.finish_block(state, CHAIN, 1, genesis_block, V[1],
                                  {"engine": "bft", "round": 0, "last_commit": certificate(b1).to_obj(),
                                   "genesis": G.to_obj()})


def test_a_chain_replays_with_its_certificates() -> None:
    """Four engines with perfect delivery decide one chain; it replays from genesis with apply_block
    (block hook and certificates included) and every validator took a turn as proposer."""
    engines = [engine(i, txs=[tx(0)]) for i in range(4)]
    decided: list[list[Block]] = [[] for _ in engines]
    now = T0
    while min(len(d) for d in decided) < 8:
        now += 10
        for e in engines:
            e.tick(now)
        moved = True
        while moved:
            moved = False
            for i, e in enumerate(engines):
                ready = e.ready()
                decided[i].extend(ready.blocks)
                for peer, payload in ready.messages:
                    for j, other in enumerate(engines):
                        if j != i and peer in (None, V[j]):
                            other.step(V[i], payload)
                            moved = True
        assert now < T0 + 10_000
    assert all(d[:8] == decided[0][:8] for d in decided)
    chain = chain_after(*decided[0][:8])
    assert chain.height == 8 and len(decided[0][0].txs) == 1
    assert {b.header.proposer for b in decided[0][:8]} == set(V)
    assert all(b.header.consensus["last_commit"]["height"] == b.height - 1 for b in decided[0][1:8])


# ==================================================================================
# double signs (accountability)
# ==================================================================================


def test_conflicting_votes_are_reported_and_both_count() -> None:
    """Two different prevotes of validator 2 for (h, r): a ``bft.report_double_sign`` call with both;
    each still counts for its own value ("2f + 1 ⟨PREVOTE, h, r, id(v)⟩" counts senders of that message)."""
    eng = engine(0)
    block = block1()
    propose(eng, block, 0)
    a, b = vote(2, PREVOTE, 0, block.block_hash), vote(2, PREVOTE, 0, NIL)
    deliver(eng, a, b, b)
    calls = eng.ready().calls
    assert calls == [("bft", "report_double_sign", {"a": a.to_obj(), "b": b.to_obj()})]
    assert eng._count(0, PREVOTE, block.block_hash) == 2 and eng._count(0, PREVOTE, NIL) == 1
    assert eng._count(0, PREVOTE) == 2  # distinct validators
    deliver(eng, vote(2, PRECOMMIT, 0, NIL), vote(2, PRECOMMIT, 0, block.block_hash))
    assert eng.ready().calls == []  # one report per offender until the chain records it


def test_equivocating_proposer_is_reported() -> None:
    """Two signed proposals of proposer(1, 0) for round 0: evidence; only the first is prevoted."""
    eng = engine(0)
    first, second = block1(ts=T0), block1(ts=T0 + 5)
    propose(eng, first, 0)
    propose(eng, second, 0)
    ready = eng.ready()
    assert [c[1] for c in ready.calls] == ["report_double_sign"]
    a, b = (Proposal.from_obj(ready.calls[0][2][k]) for k in "ab")
    assert is_double_sign(a, b) and {a.block_hash, b.block_hash} == {first.block_hash, second.block_hash}
    prevotes = [Vote.from_obj(decode_message(p)[1]) for _, p in ready.messages]
    assert [v.block_hash for v in prevotes] == [first.block_hash]


def test_report_double_sign_records_the_validator_once() -> None:
    """The contract checks the evidence itself and records the signer as faulty, once."""
    chain = chain_after(block1())
    h = bytes(range(32))
    a, b = vote(3, PRECOMMIT, 4, h, height=9), vote(3, PRECOMMIT, 4, NIL, height=9)
    out = run_call(chain, "report_double_sign", {"a": a.to_obj(), "b": b.to_obj()})
    assert out == {"validator": V[3], "height": 9, "round": 4, "step": PRECOMMIT}
    assert bft_contract.is_faulty(chain.state, V[3]) and not bft_contract.is_faulty(chain.state, V[2])
    with pytest.raises(ContractError, match="already"):
        run_call(chain, "report_double_sign", {"a": b.to_obj(), "b": a.to_obj()})
    with pytest.raises(ContractError, match="already recorded as faulty"):
        c = vote(3, PREVOTE, 4, NIL, height=9)
        run_call(chain, "report_double_sign", {"a": c.to_obj(), "b": vote(3, PREVOTE, 4, h, height=9).to_obj()})


def test_report_double_sign_rejects_anything_but_a_double_sign() -> None:
    chain = chain_after(block1())
    h = bytes(range(32))
    base = vote(1, PREVOTE, 0, h, height=3)
    forged = dataclasses.replace(vote(1, PREVOTE, 0, NIL, height=3), signature=base.signature)
    proposal = make_proposal(KEYS[1], CHAIN, 3, 0, -1, h)
    cases = [
        (base, base, "not two different"),
        (base, vote(1, PREVOTE, 1, NIL, height=3), "not two different"),  # another round
        (base, vote(1, PRECOMMIT, 0, NIL, height=3), "not two different"),  # another step
        (base, vote(1, PREVOTE, 0, NIL, height=4), "not two different"),  # another height
        (base, vote(2, PREVOTE, 0, NIL, height=3), "not two different"),  # another validator
        (base, forged, "not two different"),  # a bad signature
        (base, proposal, "not two different"),  # a vote and a proposal
        (vote(4, PREVOTE, 0, h, height=3), vote(4, PREVOTE, 0, NIL, height=3), "not a validator"),
        (vote(1, PREVOTE, 0, h, height=3, chain_id="x"), vote(1, PREVOTE, 0, NIL, height=3, chain_id="x"),
         "another chain"),
    ]
    for a, b, reason in cases:
        with pytest.raises(ContractError, match=reason):
            run_call(chain, "report_double_sign", {"a": a.to_obj(), "b": b.to_obj()})
    with pytest.raises(ContractError, match="malformed evidence"):
        run_call(chain, "report_double_sign", {"a": {"x": 1}, "b": base.to_obj()})
    fresh = ChainState.from_genesis(G)  # before block 1 the validator set is unknown
    with pytest.raises(ContractError, match="report again later"):
        run_call(fresh, "report_double_sign", {"a": base.to_obj(), "b": vote(1, PREVOTE, 0, NIL, 3).to_obj()})
    assert not any(bft_contract.is_faulty(chain.state, pk) for pk in V)


def test_double_sign_evidence_reaches_the_chain_through_a_transaction() -> None:
    """End to end: the engine's call, signed as a transaction and decided in a block, records the offender."""
    eng = engine(0)
    block = block1()
    propose(eng, block, 0)
    deliver(eng, vote(3, PREVOTE, 0, block.block_hash), vote(3, PREVOTE, 0, NIL))
    (contract, method, args), = eng.ready().calls
    report = make_tx(KEYS[0], CHAIN, 0, contract, method, args, T0)
    chain = chain_after(block)
    b2 = build(chain, KEYS[2], 0, txs=[report], last_commit=certificate(block))
    receipts = apply_block(chain, b2)
    assert receipts[0].success, receipts[0].error
    assert bft_contract.is_faulty(chain.state, V[3])


# ==================================================================================
# restart: no conflicting signatures, resume where we were
# ==================================================================================


def test_restart_resumes_the_round_and_never_signs_a_conflicting_vote() -> None:
    """Own messages and the lock are records handed out before the messages; an engine rebuilt from
    them resumes at the same round and step, keeps its lock, resends the same votes and refuses to
    sign anything that conflicts."""
    block = block1(1, ts=T0 + 1)
    eng = engine(0)
    to_round(eng, 1)
    propose(eng, block, 1)
    deliver(eng, *polka(block.block_hash, 1, (1, 2)))
    records = dict(eng.ready().records)
    assert set(records) == {"bft/prevote", "bft/precommit", "bft/lock"}

    again = engine(0, records=records, now=T0 + 5)
    assert (again.height, again.round, again.stage) == (1, 1, PRECOMMIT_STEP)
    assert (again.locked_round, again.locked_hash) == (1, block.block_hash)
    assert again._count(1, PREVOTE, block.block_hash) == 1  # our own prevote counts again
    assert again._sign(PREVOTE, NIL) is None and again._sign(PRECOMMIT, NIL) is None
    assert again.stats.refused_to_sign == 2
    same = again._sign(PREVOTE, block.block_hash)
    assert same is not None and same.encode() == records["bft/prevote"] and again.ready().records == []
    deliver(again, *polka(NIL, 1, (1, 2, 3)))  # line 44 would precommit nil: we already precommitted
    assert out_votes(again, PRECOMMIT) == []
    again.params = dataclasses.replace(again.params, rebroadcast_ms=1)
    again.tick(T0 + 10)
    assert {(v.kind, v.block_hash) for v in out_votes(again)} == {(PREVOTE, block.block_hash),
                                                                    (PRECOMMIT, block.block_hash)}
    later = engine(0, records=records, chain=chain_after(block1()))  # those records are for height 1
    assert (later.height, later.round, later.locked_round) == (2, 0, -1)


def test_restart_as_proposer_does_not_propose_twice() -> None:
    """A proposer that restarts in the round it proposed in cannot re-sign another block for it."""
    proposer = engine(1)
    records = dict(proposer.ready().records)
    assert list(records) == ["bft/proposal", "bft/prevote"]  # in this order: proposal, then line 22
    resumed = engine(1, records=records, now=T0 + 7)  # it had prevoted too: it resumes in step prevote
    assert resumed.stage == PREVOTE_STEP and resumed.ready().messages == []
    crashed_between = {"bft/proposal": records["bft/proposal"]}
    again = engine(1, records=crashed_between, now=T0 + 7)  # builds another block (another timestamp)...
    msgs = [decode_message(p)[0] for _, p in again.ready().messages]
    assert "proposal" not in msgs and again.stats.refused_to_sign == 1  # ...but will not sign it
    assert [t[2] for t in again.timeouts] == ["propose"]  # it waits like any other validator


def test_restart_after_deciding_reloads_the_certificate_to_propose_on() -> None:
    """The certificate of the head is a record, so a restarted proposer of the next height can build
    its block (its last_commit) even if every validator restarted."""
    b1 = block1()
    eng = engine(0)
    propose(eng, b1, 0)
    deliver(eng, *precommits(b1.block_hash, 0))
    records = dict(eng.ready().records)
    for key_index in (2,):  # proposer(2, 0)
        again = engine(key_index, records={k: v for k, v in records.items() if k.startswith("bft/commit")},
                       chain=chain_after(b1))
        body = next(b for k, b in map(decode_message, (p for _, p in again.ready().messages)) if k == "proposal")
        block = Block.decode(body["block"])
        assert block.height == 2 and CommitCert.from_obj(block.header.consensus["last_commit"]).block_hash == \
            b1.block_hash
        apply_block(chain_after(b1), block)


# ==================================================================================
# catch-up
# ==================================================================================


def _three_blocks() -> list[Block]:
    b1 = block1()
    b2 = build(chain_after(b1), KEYS[2], 0, last_commit=certificate(b1))
    b3 = build(chain_after(b1, b2), KEYS[3], 0, last_commit=certificate(b2))
    return [b1, b2, b3]


def test_catch_up_applies_synced_blocks_once_certified() -> None:
    """Block h is applied with the certificate in block h + 1's last_commit; the newest needs a
    ``commit`` message (block and certificate). Order of arrival does not matter."""
    b1, b2, b3 = _three_blocks()
    eng = engine(-1)
    eng.step(V[1], encode_message("commit", {"block": b3.encode(), "cert": certificate(b3).to_obj()}))
    assert eng.chain.height == 0
    eng.receive_blocks([b1, b2, b3])
    assert eng.chain.height == 3 and eng.stats.decided_by_certificate == 3
    assert [c.block for c in eng.ready().committed] == [b1, b2, b3]


def test_catch_up_refuses_blocks_without_a_valid_certificate() -> None:
    b1, b2, _ = _three_blocks()
    eng = engine(-1)
    eng.receive_blocks([b1])  # no certificate yet
    assert eng.chain.height == 0
    forged = dataclasses.replace(certificate(b1), signatures=certificate(b1).signatures[:2])
    eng.step(V[1], encode_message("commit", {"block": b1.encode(), "cert": forged.to_obj()}))
    assert eng.chain.height == 0 and eng.stats.rejected == {"bad certificate": 1}
    other = block1(ts=T0 + 9)  # a certificate for another block does not certify this one
    eng.step(V[1], encode_message("commit", {"block": other.encode(), "cert": certificate(b1).to_obj()}))
    assert eng.chain.height == 0 and eng.stats.rejected["commit names another block"] == 1
    forged_next = resign(b2, KEYS[2], consensus={**b2.header.consensus, "last_commit": forged.to_obj()})
    eng.receive_blocks([forged_next])  # a forged successor certifies nothing...
    assert eng.chain.height == 0
    eng.receive_blocks([b2])  # ...and does not keep the genuine one out
    assert eng.chain.height == 1 and eng.chain.head == b1.header


def test_a_forged_block_sent_first_does_not_block_catch_up() -> None:
    b1, b2, _ = _three_blocks()
    eng = engine(-1)
    eng.receive_blocks([block1(ts=T0 + 9), b2])  # another height-1 block (valid, never decided) comes first
    assert eng.chain.height == 0
    eng.receive_blocks([b1])
    assert eng.chain.head == b1.header


def test_decided_validator_answers_a_peer_still_on_that_height() -> None:
    """A peer sending messages for a height we have decided gets the block and its certificate."""
    b1 = block1()
    eng = engine(0)
    eng.params = dataclasses.replace(eng.params, rebroadcast_ms=1000)
    propose(eng, b1, 0)
    deliver(eng, *precommits(b1.block_hash, 0))
    eng.ready()
    eng.step(V[3], encode_message("vote", vote(3, PREVOTE, 4, NIL).to_obj()))
    assert eng.ready().messages == []  # just decided: the peer is probably about to decide too
    eng.tick(T0 + 500)  # past the grace after a decision
    eng.ready()
    eng.step(V[3], encode_message("vote", vote(3, PREVOTE, 4, NIL).to_obj()))
    replies = eng.ready().messages
    assert [(peer, decode_message(p)[0]) for peer, p in replies] == [(V[3], "commit")]
    peer = engine(3)
    peer.step(V[0], replies[0][1])
    assert peer.chain.head == b1.header


def test_a_peer_stuck_in_an_earlier_round_gets_our_votes_of_its_rounds() -> None:
    """Retransmission for lines 34 and 47: a validator that lost votes of round 0 waits there for 2f + 1;
    a message from it in round 0 makes us send it our votes of rounds 0..round_p (once per interval)."""
    eng = engine(0)
    eng.tick(T0 + 100)  # timeoutPropose(0): prevote nil
    deliver(eng, *polka(NIL, 0, (1, 2)))  # precommit nil
    deliver(eng, *precommits(NIL, 0, (1, 2)))
    eng.tick(T0 + 150)  # timeoutPrecommit(0): round 1
    eng.tick(T0 + 400)  # timeoutPropose(1): prevote nil in round 1
    assert eng.round == 1
    eng.ready()
    eng.step(V[3], encode_message("vote", vote(3, PRECOMMIT, 0, NIL).to_obj()))
    sent = [(peer, Vote.from_obj(decode_message(p)[1])) for peer, p in eng.ready().messages]
    assert {(peer, v.round, v.kind) for peer, v in sent} == {(V[3], 0, PREVOTE), (V[3], 0, PRECOMMIT),
                                                             (V[3], 1, PREVOTE)}
    assert all(v.voter == V[0] for _, v in sent)
    eng.step(V[3], encode_message("vote", vote(3, PREVOTE, 0, NIL).to_obj()))
    assert eng.ready().messages == []  # not again within rebroadcast_ms


def test_rebroadcast_repeats_own_messages_and_relays_the_polka() -> None:
    """Every rebroadcast_ms: our messages of the current round again, and the proposal of our validRound
    with its 2f + 1 prevotes, so validators that lost them learn of the polka (and can propose it)."""
    block = block1(0)
    eng = _locked_on(block)
    to_round(eng, 1)
    eng.tick(T0 + 200)  # timeoutPropose(1): prevote nil in round 1
    eng.ready()
    eng.params = dataclasses.replace(eng.params, rebroadcast_ms=100)
    eng.tick(T0 + 300)
    msgs = [decode_message(p) for peer, p in eng.ready().messages if peer is None]
    votes = [Vote.from_obj(b) for k, b in msgs if k == "vote"]
    assert [(v.round, v.kind, v.block_hash) for v in votes] == [(1, PREVOTE, NIL)]
    relayed = [b for k, b in msgs if k == "proposal"]
    assert len(relayed) == 1 and Proposal.from_obj(relayed[0]["proposal"]).round == 0
    late = engine(2)  # missed the round-0 prevotes; the relay gives it the polka (and validValue)
    late.ready()
    deliver(late, *[vote(i, PRECOMMIT, 1, NIL) for i in (1, 3)])  # line 55: to round 1
    late.step(V[0], encode_message("proposal", relayed[0]))
    assert (late.valid_round, late.valid_block) == (0, block)


def test_engine_asks_to_sync_from_a_peer_two_heights_ahead() -> None:
    eng = engine(0)
    eng.step(V[2], encode_message("vote", vote(2, PREVOTE, 0, NIL, height=2).to_obj()))
    assert not eng.wants_sync(V[2])  # one ahead: it will tell us (commit), or we ask a bit later
    eng.tick(T0 + FAST["rebroadcast_ms"])
    assert eng.wants_sync(V[2])
    eng.note_peer_height(V[1], 5)
    assert eng.wants_sync(V[1]) and not eng.wants_sync(V[3])


# ==================================================================================
# pacing and bad input
# ==================================================================================


def test_round_zero_waits_for_transactions_up_to_empty_block_ms() -> None:
    """An idle chain makes no stream of empty blocks: proposer(1, 0) proposes once a transaction is
    waiting, or after empty_block_ms."""
    g = make_genesis(empty_block_ms=1000)
    idle = engine(1, g)
    assert idle.stats.proposed == 0
    idle.tick(T0 + 999)
    assert idle.stats.proposed == 0
    idle.tick(T0 + 1000)
    assert idle.stats.proposed == 1
    busy = engine(1, g, txs=[tx(0)])
    assert busy.stats.proposed == 1
    waiting = engine(0, g)  # a non-proposer starts timeoutPropose only then too
    assert waiting.timeouts == [] and waiting.waiting


def test_malformed_and_foreign_messages_change_nothing() -> None:
    eng = engine(0)
    block = block1()
    good = vote(1, PREVOTE, 0, block.block_hash)
    bad_inputs = [
        b"\xff\x00garbage",
        cbor.encode(["vote"]),
        encode_message("nonsense", 1),
        encode_message("vote", {"chain_id": 7}),
        encode_message("proposal", {"proposal": {}, "block": b""}),
        encode_message("commit", {"block": b"", "cert": {}}),
    ]
    for raw in bad_inputs:
        eng.step(V[1], raw)
    assert eng.stats.malformed == len(bad_inputs)
    rejected = [
        dataclasses.replace(good, signature=bytes(64)),  # bad signature
        vote(4, PREVOTE, 0, block.block_hash),  # not a validator
        vote(1, PREVOTE, 0, block.block_hash, chain_id="other"),  # another chain
        vote(1, PREVOTE, 1000, NIL),  # a round far ahead
        dataclasses.replace(good, kind="commit"),  # no such step (and an invalid signature)
        dataclasses.replace(good, block_hash=b"short"),
    ]
    deliver(eng, *rejected)
    assert sum(eng.stats.rejected.values()) == len(rejected)
    mismatch = make_proposal(KEYS[1], CHAIN, 1, 0, -1, bytes(32))  # names another block
    eng.step(V[1], encode_message("proposal", {"proposal": mismatch.to_obj(), "block": block.encode()}))
    assert eng.stats.rejected["proposal names another block"] == 1
    assert eng.votes == {} and eng.proposals == {} and eng.round == 0 and out_votes(eng) == []


def test_engine_requires_a_bft_genesis() -> None:
    plain = Genesis(CHAIN, T0, tuple(V), (), {"engine": "dev"})
    with pytest.raises(ConfigError, match="does not run the bft engine"):
        BftEngine(ChainState.from_genesis(plain), KEYS[0], Mempool(CHAIN))
