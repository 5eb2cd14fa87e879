"""Microchain consensus against seed paper 004 (μDFL, Xu & Chen).

Sections checked: §IV-A/B (committee, C_init), §V (Definitions 1–2,
equations (1)–(2), Algorithm 1, chain extension rules i–iii), §VI (votes,
committed-majority links, committed and finalized checkpoints, §VI-A steps 1–3,
Rules 1–3) and §VII (C_max, security stake, slashing).

Blocks are built with the real ``propose_block`` and checked with the real
``apply_block`` (whose block hook is ``contracts.microchain.finish_block``);
engines are real :class:`MicrochainEngine` instances fed by hand through
``tick``/``step``. Spin blocks (rule iii) are deterministic, so most chains
here are made of them; PoC blocks are found by searching slots for a winner.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import pytest

from fedledger.consensus.engine import decode_message, encode_message, message_kind
from fedledger.consensus.microchain.engine import MAX_ORPHANS, MicrochainEngine
from fedledger.consensus.microchain.params import MicrochainParams
from fedledger.consensus.microchain.poc import d_cond, poc_alpha, tb, wins
from fedledger.consensus.microchain.sortition import select_committee
from fedledger.consensus.microchain.votes import (
    Decision,
    Vote,
    check_certificate,
    is_double_vote,
    make_decision,
    make_vote,
    skips_epoch,
)
from fedledger.contracts.base import Context, lookup
from fedledger.contracts.microchain import Dynasty, current_dynasty, read, sort_by_address, write
from fedledger.crypto import vrf
from fedledger.crypto.keys import Domain, SigningKey, address_of
from fedledger.errors import ConfigError, ContractError, InvalidBlock, VerificationFailed
from fedledger.ledger.block import Block
from fedledger.ledger.chain import ChainState, apply_block, propose_block, tx_root
from fedledger.ledger.genesis import Genesis
from fedledger.ledger.mempool import Mempool
from fedledger.ledger.tx import Transaction, make_tx

CHAIN = "mc-test"
T0 = 1_700_000_000_000
SLOT_MS = 100
OUTSIDER = SigningKey.from_seed(b"\xee" * 32)  # not a validator: an observing engine's key
WATCHER = SigningKey.from_seed(b"\xed" * 32)
CLIENT = SigningKey.from_seed(b"\xc1" * 32)  # submits slashing evidence as transactions
ARBITER = SigningKey.from_seed(b"\xab" * 32)  # Rule 3 trusted arbitrator


# -- a test chain ----------------------------------------------------------------


@dataclass
class Net:
    genesis: Genesis
    keys: list[SigningKey]  # committee members first, keys[i] at rank i (spin order); then non-members
    params: MicrochainParams

    @property
    def k(self) -> int:
        return self.params.committee_size

    @property
    def members(self) -> list[bytes]:
        return [key.public_key for key in self.keys[: self.k]]

    def spin_key(self, height: int) -> SigningKey:
        """Rule iii): the member at rank ``height mod K``."""
        return self.keys[height % self.k]

    def chain(self) -> ChainState:
        return ChainState.from_genesis(self.genesis)

    @property
    def seed(self) -> bytes:
        return self.genesis.genesis_hash  # the genesis dynasty's epoch randomness


def make_net(k: int = 4, n: int | None = None, **overrides: Any) -> Net:
    n = k if n is None else n
    keys = [SigningKey.from_seed(bytes([0x40 + i]) * 32) for i in range(n)]
    params = {"committee_size": k, "epoch_blocks": 2, "slot_ms": SLOT_MS, "dynasty_epochs": 64, **overrides}
    genesis = Genesis(CHAIN, T0, tuple(key.public_key for key in keys), (),
                      {"engine": "microchain", "microchain": params})
    members = current_dynasty(genesis.initial_state()).members
    keys.sort(key=lambda key: (key.public_key not in members,
                               members.index(key.public_key) if key.public_key in members else 0))
    return Net(genesis, keys, MicrochainParams.from_obj(params))


def copy_chain(chain: ChainState) -> ChainState:
    return ChainState(chain.genesis, chain.head, chain.state.copy())


def with_credits(chain: ChainState, credits: Sequence[int]) -> ChainState:
    """The same chain with the sitting dynasty's credits (used by PoC and fork choice) replaced."""
    dynasty = current_dynasty(chain.state)
    write(chain.state, "dynasty", dataclasses.replace(dynasty, credits=tuple(credits)).to_obj())
    chain.state.take_changes()
    return chain


def consensus(slot: int, proof: bytes = b"", cert: Any = None) -> dict[str, Any]:
    out: dict[str, Any] = {"engine": "microchain", "slot": slot, "vrf": proof}
    if cert is not None:
        out["cert"] = cert
    return out


def spin_block(net: Net, chain: ChainState, slot: int, txs: Iterable[Transaction] = (), cert: Any = None,
               ts: int | None = None) -> Block:
    """A rule-iii block on ``chain``'s head by the member at rank height mod K."""
    key = net.spin_key(chain.height + 1)
    block, rejected = propose_block(chain, list(txs), key, T0 + slot * SLOT_MS if ts is None else ts,
                                    consensus(slot, b"", cert))
    assert not rejected
    return block


def grow(net: Net, chain: ChainState, heights: int) -> list[Block]:
    """Apply ``heights`` spin blocks to ``chain`` (slot = height) and return them."""
    blocks = []
    for _ in range(heights):
        block = spin_block(net, chain, chain.height + 1)
        apply_block(chain, block)
        blocks.append(block)
    return blocks


def resign(block: Block, key: SigningKey, txs: Sequence[Transaction] | None = None, **changes: Any) -> Block:
    """``block`` with header fields changed, signed again by ``key`` (who becomes its proposer)."""
    header = dataclasses.replace(block.header, proposer=key.public_key, signature=b"", **changes)
    header = dataclasses.replace(header, signature=key.sign(Domain.BLOCK, header.signing_bytes()))
    return Block(header=header, txs=block.txs if txs is None else tuple(txs))


def proof_for(key: SigningKey, seed: bytes, slot: int) -> bytes:
    return vrf.prove(key, poc_alpha(CHAIN, seed, slot))


def proof_tb(proof: bytes, xi: int = 32) -> int:
    return tb(vrf.proof_to_hash(proof), xi)


def winning_slots(key: SigningKey, seed: bytes, credit: int, total: int, slots: Iterable[int],
                  xi: int = 32) -> list[tuple[int, bytes]]:
    out = []
    for slot in slots:
        proof = proof_for(key, seed, slot)
        if wins(vrf.proof_to_hash(proof), xi, credit, total):
            out.append((slot, proof))
    return out


def poc_block(chain: ChainState, key: SigningKey, slot: int, proof: bytes) -> Block:
    block, _ = propose_block(chain, [], key, T0 + slot * SLOT_MS, consensus(slot, proof))
    return block


# -- engines fed by hand -----------------------------------------------------------


def engine(net: Net, key: SigningKey = OUTSIDER, *, slot: int = 500, arbitrator: SigningKey | None = None,
           chain: ChainState | None = None) -> MicrochainEngine:
    """A replica at genesis whose clock reads ``slot``; with a non-member key it only observes."""
    eng = MicrochainEngine(copy_chain(chain) if chain is not None else net.chain(), key, Mempool(CHAIN),
                           arbitrator=arbitrator)
    eng.tick(T0 + slot * SLOT_MS)
    eng.ready()
    return eng


def deliver_block(eng: MicrochainEngine, block: Block, sender: bytes | None = None) -> None:
    eng.step(sender or block.header.proposer, encode_message("block", block.encode()))


def deliver_vote(eng: MicrochainEngine, vote: Vote) -> None:
    eng.step(vote.voter, encode_message("vote", vote.to_obj()))


def vote(key: SigningKey, source: tuple[bytes, int], target: tuple[bytes, int], ts: int = T0,
         chain_id: str = CHAIN) -> Vote:
    return make_vote(key, chain_id, source, target, ts)


def calls_of(ready_calls: list[tuple[str, str, Any]], method: str) -> list[Any]:
    return [args for contract, m, args in ready_calls if contract == "microchain" and m == method]


def run_call(chain: ChainState, method: str, args: Any, sender: SigningKey = CLIENT, height: int = 1) -> Any:
    """Execute one microchain contract call as the ledger does: a failure rolls back its writes."""
    fn = lookup("microchain", method)
    assert fn is not None
    state = chain.state
    state.begin()
    try:
        result = fn(Context(state, "microchain", CHAIN, sender.public_key, height, T0, bytes(32)), args)
    except Exception:
        state.rollback()
        raise
    state.commit()
    return result


def credit_of(chain: ChainState, pk: bytes) -> int:
    return int(read(chain.state, f"credit/{pk.hex()}") or 0)


def stake_of(chain: ChainState, pk: bytes) -> int:
    return int(read(chain.state, f"stake/{pk.hex()}") or 0)


def jailed(chain: ChainState, pk: bytes) -> bool:
    return bool(read(chain.state, f"jailed/{pk.hex()}"))


# ==================================================================================
# §V  Proof-of-Credit
# ==================================================================================


@pytest.mark.parametrize(("xi", "credit", "total"), [
    (4, 1, 3), (4, 2, 3), (3, 1, 3), (8, 1, 4), (8, 3, 4), (32, 1, 6), (32, 5, 7), (64, 1, 3), (64, 2, 3),
    (1, 1, 1), (1, 1, 2), (16, 7, 7),
])
def test_d_cond_is_equation_2_rounded_down(xi: int, credit: int, total: int) -> None:
    """§V eq. (2): d_cond(ξ, p_j) = (2^ξ − 1)·p_j with p_j = c_j/Σc (Definition 1), floored to an integer."""
    expected = ((2**xi - 1) * Fraction(credit, total)).__floor__()
    assert d_cond(xi, credit, total) == expected
    assert 0 <= d_cond(xi, credit, total) <= 2**xi - 1  # d_cond ∈ {0,1}^ξ


def test_d_cond_edge_cases() -> None:
    """§V eq. (2) edge cases: no credit, all the credit, an empty distribution, exact floors."""
    assert d_cond(8, 0, 5) == 0  # zero credit: can never win
    assert d_cond(8, 5, 5) == 255  # p_j = 1: the whole range 2^ξ − 1
    assert d_cond(8, 1, 0) == 0  # Σc = 0: nobody has credit, nobody wins
    assert d_cond(8, 0, 0) == 0
    assert d_cond(4, 1, 3) == 5  # 15/3 exactly
    assert d_cond(3, 1, 3) == 2  # 7/3 = 2.33 → 2 (floor, not round)
    assert d_cond(3, 2, 3) == 4  # 14/3 = 4.67 → 4 (floor, not round)
    assert d_cond(64, 1, 3) == 6148914691236517205  # exact integer arithmetic at ξ = 64, no float error
    assert d_cond(64, 2, 3) == 12297829382473034410


def test_tb_takes_the_xi_low_bits() -> None:
    """§V Definition 2: TB(hc, ξ) outputs the lower ξ bits of the hash code."""
    hc = bytes(range(64))
    value = int.from_bytes(hc, "big")
    for xi in (1, 7, 8, 13, 32, 64):
        assert tb(hc, xi) == value % (1 << xi)
    assert tb(b"\x00" * 62 + b"\x01\xff", 8) == 0xFF  # low bits are the last byte...
    assert tb(b"\x00" * 62 + b"\x01\xff", 9) == 0x1FF  # ...then the low bit of the one before
    assert tb(b"\xff" + b"\x00" * 63, 64) == 0  # high bytes never leak into the value
    assert tb(b"\xff" * 64, 5) == 31


def test_wins_is_strict_new_proof_below_d_cond() -> None:
    """§V Algorithm 1 line 9 (``new_proof < d_cond``) and line 26 (reject if ``new_proof ≥ d_cond``)."""
    xi, credit, total = 8, 1, 4
    target = d_cond(xi, credit, total)  # 63
    assert target == 63

    def hc(low: int) -> bytes:
        return b"\x5a" * 63 + bytes([low])

    assert wins(hc(target - 1), xi, credit, total)
    assert not wins(hc(target), xi, credit, total)  # equality loses: the comparison is strict
    assert not wins(hc(target + 1), xi, credit, total)
    assert wins(hc(0), xi, credit, total)
    assert not wins(hc(0), xi, 0, total)  # zero credit never wins
    assert not wins(b"\xff" * 64, xi, total, total)  # even p_j = 1 loses at TB = 2^ξ − 1


def test_poc_win_frequency_is_proportional_to_credit() -> None:
    """§V Definition 1 / §IV-B.2: the chance of proposing is proportional to credit weight p_j.

    Two validators with credits 1 and 3 (Σc = 4) should win about 1/4 and 3/4
    of the slots. Keys and seed are fixed, so the counts are deterministic."""
    light, heavy = SigningKey.from_seed(b"\x11" * 32), SigningKey.from_seed(b"\x33" * 32)
    seed, slots = b"\x42" * 32, range(800)
    n_light = len(winning_slots(light, seed, 1, 4, slots))
    n_heavy = len(winning_slots(heavy, seed, 3, 4, slots))
    assert abs(n_light / len(slots) - 0.25) < 0.06
    assert abs(n_heavy / len(slots) - 0.75) < 0.06
    assert 2.2 < n_heavy / n_light < 4.0


def test_poc_block_is_accepted_only_with_a_winning_proof_for_its_slot() -> None:
    """§V Algorithm 1 lines 23–28: the block's proof must be the proposer's VRF on this slot and seed,
    and below the proposer's d_cond; any other proof makes the block invalid."""
    net = make_net(4)
    key = net.keys[0]
    won = winning_slots(key, net.seed, 1, 4, range(1, 200))
    lost = [s for s in range(1, 200) if s not in dict(won)]
    (slot, proof), (other_slot, other_proof) = won[0], won[1]
    good = poc_block(net.chain(), key, slot, proof)
    chain = net.chain()
    apply_block(chain, good)  # control: the honest winning block is valid
    assert chain.height == 1

    cases = {
        "proof for another slot": (resign(good, key, consensus=consensus(other_slot, proof)),
                                   "bad PoC VRF proof"),
        "proof of another slot": (resign(good, key, consensus=consensus(slot, other_proof)),
                                  "bad PoC VRF proof"),
        "proof on another seed": (resign(good, key, consensus=consensus(slot, proof_for(key, b"\x01" * 32, slot))),
                                  "bad PoC VRF proof"),
        "another member's proof": (resign(good, net.keys[1], consensus=consensus(slot, proof)),
                                   "bad PoC VRF proof"),
        "valid proof that loses": (resign(good, key, consensus=consensus(lost[0], proof_for(key, net.seed, lost[0]))),
                                   r"PoC proof is not below d_cond \(Algorithm 1 line 26\)"),
        "truncated proof": (resign(good, key, consensus=consensus(slot, proof[:-1])), "bad PoC VRF proof"),
    }
    for name, (block, reason) in cases.items():
        chain = net.chain()
        before = chain.state.root()
        with pytest.raises(InvalidBlock, match=reason):
            apply_block(chain, block)
        assert chain.height == 0 and chain.state.root() == before, name  # chain left unchanged


def test_poc_win_depends_on_the_dynasty_credit_distribution() -> None:
    """§V Algorithm 1 lines 23–26: d_cond uses the proposer's credit over the committee's Σc.

    A proof that loses with credit 1 of 4 wins with credit 3 of 6 (p = 1/2):
    the verifier reads the credits, not the proposer."""
    net = make_net(4)
    key = net.keys[0]
    credits = (3, 1, 1, 1)
    slot, proof = next((s, p) for s, p in winning_slots(key, net.seed, 3, 6, range(1, 300))
                       if not wins(vrf.proof_to_hash(p), 32, 1, 4))
    block = poc_block(with_credits(net.chain(), credits), key, slot, proof)
    apply_block(with_credits(net.chain(), credits), block)
    with pytest.raises(InvalidBlock, match="not below d_cond"):
        apply_block(net.chain(), block)  # same block, equal credits: not a winner


def test_block_must_extend_the_head_at_the_next_height() -> None:
    """§V Algorithm 1 lines 18–22: reject if height ≠ head.height + 1 or pre_hash ≠ H(head)."""
    net = make_net(4)
    chain = net.chain()
    b1 = spin_block(net, chain, 1)
    with pytest.raises(InvalidBlock, match="does not follow head"):
        apply_block(chain, resign(b1, net.spin_key(1), height=2))
    with pytest.raises(InvalidBlock, match="does not link to the head's hash"):
        apply_block(chain, resign(b1, net.spin_key(1), prev_hash=b"\x13" * 32))
    apply_block(chain, b1)
    with pytest.raises(InvalidBlock, match="does not follow head"):
        apply_block(chain, b1)  # the same block again: height 1 no longer follows head 1
    assert chain.head == b1.header


def test_block_needs_a_valid_proposer_signature_and_valid_transactions() -> None:
    """§V Algorithm 1 lines 13–17: Verify_Sign(new_block, σ) and Verify_TX(new_block) must hold."""
    net = make_net(4)
    chain = net.chain()
    key = net.spin_key(1)
    good = spin_block(net, chain, 1)

    forged_sig = Block(dataclasses.replace(good.header, signature=bytes(64)), good.txs)
    with pytest.raises(InvalidBlock, match="bad proposer signature"):
        apply_block(chain, forged_sig)
    other_signer = dataclasses.replace(good.header, signature=net.keys[2].sign(Domain.BLOCK, good.header.signing_bytes()))
    with pytest.raises(InvalidBlock, match="bad proposer signature"):
        apply_block(chain, Block(other_signer, good.txs))

    tx = make_tx(CLIENT, CHAIN, 0, "identity", "register_identity",
                 {"public_key": bytes(32), "role": "device", "name": "x", "home_chain": CHAIN}, T0)
    with_tx = spin_block(net, chain, 1, txs=[tx])
    apply_block(copy_chain(chain), with_tx)  # control: the transaction itself is admissible

    bad_sig_tx = dataclasses.replace(tx, signature=bytes(64))
    bad_nonce_tx = make_tx(CLIENT, CHAIN, 5, "identity", "register_identity",
                           {"public_key": bytes(32), "role": "device", "name": "x", "home_chain": CHAIN}, T0)
    for bad, reason in ((bad_sig_tx, "transaction 0: bad signature"), (bad_nonce_tx, "transaction 0: out-of-order nonce")):
        block = resign(with_tx, key, txs=[bad], tx_root=tx_root([bad]))
        before = chain.state.root()
        with pytest.raises(InvalidBlock, match=reason):
            apply_block(chain, block)
        assert chain.height == 0 and chain.state.root() == before
    tampered = Block(with_tx.header, (bad_sig_tx,))  # swapping a transaction breaks the signed tx root
    with pytest.raises(InvalidBlock, match="tx root"):
        apply_block(chain, tampered)


def test_proposer_must_be_in_the_current_dynasty() -> None:
    """§IV-B.2: only validators in the current dynasty may propose, even with a winning-looking proof."""
    net = make_net(4, n=5)
    outsider = net.keys[4]  # a genesis validator, but not in the K = 4 committee
    assert outsider.public_key not in current_dynasty(net.chain().state).members
    good = spin_block(net, net.chain(), 1)
    slot, proof = winning_slots(outsider, net.seed, 1, 4, range(1, 100))[0]
    with pytest.raises(InvalidBlock, match="not in dynasty 0"):
        apply_block(net.chain(), resign(good, outsider, consensus=consensus(slot, proof)))
    with pytest.raises(InvalidBlock, match="not in dynasty 0"):
        apply_block(net.chain(), resign(good, outsider))


def test_spin_block_only_from_rank_height_mod_k() -> None:
    """§V-B rule iii): with no PoC winner, the member at rank ``height mod K`` (members sorted by
    account address) may propose; an empty-proof block from anyone else is invalid."""
    net = make_net(4)
    chain = net.chain()
    dynasty = current_dynasty(chain.state)
    assert list(dynasty.members) == sorted(dynasty.members, key=address_of)  # rank = address order
    for height in range(1, 9):
        rank = height % net.k
        assert dynasty.spin_proposer(height) == dynasty.members[rank]
        block = spin_block(net, chain, height)
        assert block.header.proposer == dynasty.members[rank]
        for other in net.keys:
            if other.public_key != dynasty.members[rank]:
                with pytest.raises(InvalidBlock, match="not at rank height mod K"):
                    apply_block(chain, resign(block, other))
        apply_block(chain, block)
    assert chain.height == 8


def test_fork_choice_prefers_higher_proposer_credit() -> None:
    """§V-B rule ii), first sub-rule: among candidates on one parent, the head is the block whose
    proposer has the highest credit, even when the other block has the smaller TB."""
    net = make_net(4)
    credits = (1, 3, 1, 1)
    base = with_credits(net.chain(), credits)
    light, heavy = net.keys[0], net.keys[1]
    light_wins = winning_slots(light, net.seed, 1, 6, range(1, 300))
    heavy_wins = winning_slots(heavy, net.seed, 3, 6, range(1, 300))
    (sl, pl), (sh, ph) = next((a, b) for a in light_wins for b in heavy_wins if proof_tb(a[1]) < proof_tb(b[1]))
    b_light = poc_block(copy_chain(base), light, sl, pl)
    b_heavy = poc_block(copy_chain(base), heavy, sh, ph)
    for order in ((b_light, b_heavy), (b_heavy, b_light)):
        eng = engine(net, chain=base)
        for b in order:
            deliver_block(eng, b)
        assert eng.stats.accepted == 2 and eng.stats.forks == 1  # rule ii): both are confirmed
        assert eng.head() == b_heavy.block_hash


def test_fork_choice_on_equal_credit_prefers_smaller_tb() -> None:
    """§V-B rule ii), second sub-rule: on equal highest credit, the block with the smallest
    PoC value TB(hc, ξ) becomes the head (not the first seen, not the smaller hash)."""
    net = make_net(4)
    chain = net.chain()
    a_wins = winning_slots(net.keys[0], net.seed, 1, 4, range(1, 200))
    b_wins = winning_slots(net.keys[2], net.seed, 1, 4, range(1, 200))
    pairs = [(poc_block(chain, net.keys[0], s, p), poc_block(chain, net.keys[2], t, q))
             for (s, p), (t, q) in zip(a_wins[:6], b_wins[:6], strict=True)]

    def tb_of(b: Block) -> int:
        return proof_tb(b.header.consensus["vrf"])

    # a pair where the smaller TB has the larger block hash, so a hash tie-break would pick the other
    x, y = next((x, y) for x, y in pairs
                if (tb_of(x) < tb_of(y)) != (x.block_hash < y.block_hash) and tb_of(x) != tb_of(y))
    best = x if tb_of(x) < tb_of(y) else y
    for order in ((x, y), (y, x)):
        eng = engine(net)
        for b in order:
            deliver_block(eng, b)
        assert eng.head() == best.block_hash


def test_fork_choice_poc_block_beats_spin_block() -> None:
    """§V-B rules i) and iii): a lone spin block becomes the head (rule i), but a valid PoC block for
    the same parent outranks it, even from a proposer with less credit."""
    net = make_net(4)
    credits = (1, 3, 1, 1)  # the spin proposer of height 1 (rank 1) has the most credit
    base = with_credits(net.chain(), credits)
    spin = spin_block(net, copy_chain(base), 1)
    assert spin.header.proposer == net.keys[1].public_key
    slot, proof = winning_slots(net.keys[0], net.seed, 1, 6, range(2, 300))[0]
    poc = poc_block(copy_chain(base), net.keys[0], slot, proof)
    eng = engine(net, chain=base)
    deliver_block(eng, spin)
    assert eng.head() == spin.block_hash
    deliver_block(eng, poc)
    assert eng.head() == poc.block_hash
    eng2 = engine(net, chain=base)
    for b in (poc, spin):
        deliver_block(eng2, b)
    assert eng2.head() == poc.block_hash


def test_head_follows_the_best_branch_to_its_tip() -> None:
    """§IV-B / §V-B: the head is the tip of the best branch from the last committed checkpoint,
    chosen height by height; a longer branch under a worse first block does not win."""
    net = make_net(4)
    base = with_credits(net.chain(), (1, 3, 1, 1))
    good_chain, bad_chain = copy_chain(base), copy_chain(base)
    slot, proof = winning_slots(net.keys[1], net.seed, 3, 6, range(1, 300))[0]
    good = poc_block(good_chain, net.keys[1], slot, proof)
    apply_block(good_chain, good)
    bad = grow(net, bad_chain, 3)  # spin branch, three blocks long
    eng = engine(net, chain=base)
    for b in [*bad, good]:
        deliver_block(eng, b)
    assert eng.head() == good.block_hash
    nxt = spin_block(net, good_chain, slot + 1)
    deliver_block(eng, nxt)
    assert eng.head() == nxt.block_hash


# ==================================================================================
# §VI  Voting-based chain finality
# ==================================================================================


@pytest.mark.parametrize("k", list(range(1, 22)))
def test_quorum_is_strictly_more_than_two_thirds(k: int) -> None:
    """§VI-A step 3: a link needs vote_count > 2K/3; exactly 2K/3 is not enough."""
    dyn = Dynasty(0, 0, tuple(bytes([i]) * 32 for i in range(k)), (1,) * k, b"")
    q = dyn.quorum
    assert 3 * q > 2 * k
    assert 3 * (q - 1) <= 2 * k


def _checkpoint_chain(net: Net, heights: int = 5) -> tuple[ChainState, list[Block]]:
    chain = net.chain()
    return chain, grow(net, chain, heights)


def test_vote_tuple_and_signature() -> None:
    """§VI: Vote = (vote_hash, h_s, h_t, H_e(s), H_e(t), T_stamp, a_j, σ_j), signed by the voter."""
    net = make_net(4)
    source, target = (b"\x01" * 32, 0), (b"\x02" * 32, 1)
    v = vote(net.keys[0], source, target, ts=T0 + 7)
    assert (v.source_hash, v.target_hash, v.source_epoch, v.target_epoch, v.timestamp) == \
        (b"\x01" * 32, b"\x02" * 32, 0, 1, T0 + 7)
    assert v.voter == net.keys[0].public_key and v.signature_ok()
    assert v.vote_hash != vote(net.keys[0], source, target, ts=T0 + 8).vote_hash  # covers T_stamp
    assert Vote.from_obj(v.to_obj()) == v
    assert not dataclasses.replace(v, target_epoch=2).signature_ok()
    assert not dataclasses.replace(v, voter=net.keys[1].public_key).signature_ok()
    assert not skips_epoch(v) and skips_epoch(vote(net.keys[0], source, (b"\x02" * 32, 2)))


def test_rule1_rejects_votes_that_skip_an_epoch_and_stale_votes() -> None:
    """§VI-B Rule 1: a vote with H_e(t) ≠ H_e(s) + 1 is rejected; a vote for an epoch at or below the
    last committed checkpoint (H_e(t) ≠ H_e(head)) is rejected and counts for nothing."""
    net = make_net(4)
    _, blocks = _checkpoint_chain(net, 5)
    g, b2, b4 = net.genesis.block().block_hash, blocks[1].block_hash, blocks[3].block_hash
    eng = engine(net)
    for b in blocks:
        deliver_block(eng, b)

    for key in net.keys:  # every member votes genesis(epoch 0) → B4 claiming epoch 2: skips epoch 1
        deliver_vote(eng, vote(key, (g, 0), (b4, 2)))
    assert eng.stats.rejected_votes == {"rule 1: target is not the source's child": 4}
    assert eng.last_committed == (0, g) and not eng.votes

    for key in net.keys[:3]:
        deliver_vote(eng, vote(key, (g, 0), (b2, 1)))
    assert eng.last_committed == (1, b2)
    deliver_vote(eng, vote(net.keys[3], (g, 0), (b2, 1)))  # late: epoch 1 is already committed
    assert eng.stats.rejected_votes["rule 1: stale target"] == 1
    assert eng.stats.rejected_votes == {"rule 1: target is not the source's child": 4, "rule 1: stale target": 1}


def test_votes_from_non_members_bad_signatures_and_other_chains_are_not_counted() -> None:
    """§VI-A step 2: a vote counts only if sent by a committee member, correctly signed, for this chain."""
    net = make_net(4, n=5)
    _, blocks = _checkpoint_chain(net, 3)
    g, b2 = net.genesis.block().block_hash, blocks[1].block_hash
    eng = engine(net)
    for b in blocks:
        deliver_block(eng, b)
    good = [vote(k, (g, 0), (b2, 1)) for k in net.keys[:3]]
    deliver_vote(eng, vote(net.keys[4], (g, 0), (b2, 1)))  # a validator outside the K = 4 committee
    deliver_vote(eng, vote(OUTSIDER, (g, 0), (b2, 1)))
    deliver_vote(eng, dataclasses.replace(good[0], signature=bytes(64)))
    deliver_vote(eng, dataclasses.replace(good[1], signature=good[2].signature))
    deliver_vote(eng, vote(net.keys[2], (g, 0), (b2, 1), chain_id="other"))
    assert eng.stats.rejected_votes == {"voter not in committee": 2, "bad signature": 2, "other chain": 1}
    assert eng.last_committed == (0, g)
    deliver_vote(eng, good[0])
    deliver_vote(eng, good[1])
    assert eng.last_committed == (0, g)  # the rejected ones were not counted: 2 of 3
    deliver_vote(eng, good[2])
    assert eng.last_committed == (1, b2)


def _vote_rounds(eng: MicrochainEngine, voters: Sequence[SigningKey],
                 link: tuple[tuple[bytes, int], tuple[bytes, int]]) -> list[int]:
    """Deliver the voters' votes for ``link`` one by one; the committed epoch after each."""
    out = []
    for key in voters:
        deliver_vote(eng, vote(key, *link))
        out.append(eng.last_committed[0])
    return out


def test_committed_majority_link_commits_target_and_finalizes_source() -> None:
    """§VI definitions and §VI-A step 3: > 2/3 votes on B_s → B_t make B_t committed and B_s finalized.

    Finalized blocks (up to and including the source checkpoint) leave the engine in
    ``ready().committed``; nothing beyond the source is ever emitted."""
    net = make_net(4)
    _, blocks = _checkpoint_chain(net, 5)
    g = net.genesis.block().block_hash
    b2, b4 = blocks[1].block_hash, blocks[3].block_hash
    eng = engine(net)
    for b in blocks:
        deliver_block(eng, b)
    assert eng.head() == blocks[-1].block_hash and not eng.ready().committed

    assert _vote_rounds(eng, net.keys[:3], ((g, 0), (b2, 1))) == [0, 0, 1]
    assert eng.committed == {0: g, 1: b2}
    # B2 is committed; its source is the genesis (finalized by definition): nothing new to emit
    assert eng.ready().committed == [] and eng.chain.height == 0

    assert _vote_rounds(eng, [net.keys[3], net.keys[0], net.keys[2]], ((b2, 1), (b4, 2))) == [1, 1, 2]
    out = eng.ready().committed
    assert [c.block.block_hash for c in out] == [blocks[0].block_hash, blocks[1].block_hash]
    assert eng.chain.height == 2 and eng.chain.head == blocks[1].header
    assert eng.stats.finalized_height == 2 and eng.last_committed == (2, b4)
    # the finalized state is exactly the state after B2
    replay = net.chain()
    for b in blocks[:2]:
        apply_block(replay, b)
    assert eng.chain.state.root() == replay.state.root() == blocks[1].header.state_root
    assert eng.ready().committed == []  # emitted once


@pytest.mark.parametrize(("k", "needed"), [(3, 3), (4, 3), (6, 5), (7, 5)])
def test_exactly_two_thirds_does_not_commit(k: int, needed: int) -> None:
    """§VI-A step 3: ``vote_count > 2K/3`` — for K = 3 two votes and for K = 6 four votes (exactly 2/3)
    do not make a committed-majority link; one more vote does."""
    net = make_net(k)
    _, blocks = _checkpoint_chain(net, 3)
    g, b2 = net.genesis.block().block_hash, blocks[1].block_hash
    eng = engine(net)
    for b in blocks:
        deliver_block(eng, b)
    rounds = _vote_rounds(eng, net.keys[:needed], ((g, 0), (b2, 1)))
    assert rounds == [0] * (needed - 1) + [1]


def test_split_votes_on_conflicting_checkpoints_commit_nothing() -> None:
    """§VI-A / §VI-B: votes split between conflicting checkpoints of one epoch do not add up."""
    net = make_net(4)
    chain = net.chain()
    b1 = grow(net, chain, 1)[0]
    b2a = spin_block(net, chain, 2)  # two children of B1 (same spin proposer, two slots)
    b2b = spin_block(net, chain, 3)
    g = net.genesis.block().block_hash
    eng = engine(net)
    for b in (b1, b2a, b2b):
        deliver_block(eng, b)
    for key, target in zip(net.keys, (b2a, b2a, b2b, b2b), strict=True):
        deliver_vote(eng, vote(key, (g, 0), (target.block_hash, 1)))
    assert eng.last_committed == (0, g) and not eng.stats.rejected_votes


def test_votes_are_counted_per_link_source_and_target() -> None:
    """§VI-A step 2: the count is vote_count[h_source, h_target]; votes for the same target from
    another source are a different link and do not add up."""
    net = make_net(4)
    _, blocks = _checkpoint_chain(net, 3)
    g, b2 = net.genesis.block().block_hash, blocks[1].block_hash
    eng = engine(net)
    for b in blocks:
        deliver_block(eng, b)
    deliver_vote(eng, vote(net.keys[0], (g, 0), (b2, 1)))
    deliver_vote(eng, vote(net.keys[1], (g, 0), (b2, 1)))
    deliver_vote(eng, vote(net.keys[2], (b"\x31" * 32, 0), (b2, 1)))  # same target, unknown source
    assert eng.last_committed == (0, g)
    deliver_vote(eng, vote(net.keys[3], (g, 0), (b2, 1)))
    assert eng.last_committed == (1, b2)


def test_rule2_double_vote_bans_voter_and_emits_slashing_evidence() -> None:
    """§VI-B Rule 2: two votes by one voter for different targets of the same epoch: the second is
    rejected, every vote of that voter is dropped, and a ``slash_double_vote`` call carries both votes."""
    net = make_net(4)
    _, blocks = _checkpoint_chain(net, 3)
    g, b2 = net.genesis.block().block_hash, blocks[1].block_hash
    eng = engine(net)
    for b in blocks:
        deliver_block(eng, b)
    cheat = net.keys[0]
    first = vote(cheat, (g, 0), (b2, 1))
    second = vote(cheat, (g, 0), (b"\x99" * 32, 1))  # a conflicting target (unknown block) of epoch 1
    deliver_vote(eng, first)
    assert cheat.public_key in eng.votes[1]
    deliver_vote(eng, second)
    assert eng.stats.rejected_votes == {"rule 2: double vote": 1}
    assert cheat.public_key in eng.banned and cheat.public_key not in eng.votes.get(1, {})
    calls = eng.ready().calls
    assert calls_of(calls, "slash_double_vote") == [{"a": first.to_obj(), "b": second.to_obj()}]
    assert eng.stats.slashings == 1

    deliver_vote(eng, first)  # the banned voter's votes never count again
    deliver_vote(eng, vote(cheat, (g, 0), (b2, 1), ts=T0 + 1))
    assert eng.stats.rejected_votes["rule 2: voter banned"] == 2
    deliver_vote(eng, vote(net.keys[1], (g, 0), (b2, 1)))
    deliver_vote(eng, vote(net.keys[2], (g, 0), (b2, 1)))
    assert eng.last_committed == (0, g)  # 2 honest votes + the cheater's dropped vote: no quorum
    deliver_vote(eng, vote(net.keys[3], (g, 0), (b2, 1)))
    assert eng.last_committed == (1, b2)
    assert calls_of(eng.ready().calls, "slash_double_vote") == []  # evidence reported once


def test_rule2_revote_for_the_same_target_is_not_a_double_vote() -> None:
    """§VI-B Rule 2 needs t1 ≠ t2: repeating a vote for the same checkpoint is not punished."""
    net = make_net(4)
    _, blocks = _checkpoint_chain(net, 3)
    g, b2 = net.genesis.block().block_hash, blocks[1].block_hash
    eng = engine(net)
    for b in blocks:
        deliver_block(eng, b)
    v1 = vote(net.keys[0], (g, 0), (b2, 1))
    v2 = vote(net.keys[0], (g, 0), (b2, 1), ts=T0 + 5)  # same link, later timestamp
    assert not is_double_vote(v1, v2)
    deliver_vote(eng, v1)
    deliver_vote(eng, v1)  # a duplicate delivery
    deliver_vote(eng, v2)
    assert not eng.banned and calls_of(eng.ready().calls, "slash_double_vote") == []
    assert len(eng.votes[1]) == 1


def _double_vote_evidence(net: Net, target_epoch: int = 1) -> tuple[Vote, Vote]:
    cheat = net.keys[0]
    a = vote(cheat, (b"\x01" * 32, target_epoch - 1), (b"\x02" * 32, target_epoch))
    b = vote(cheat, (b"\x01" * 32, target_epoch - 1), (b"\x03" * 32, target_epoch))
    return a, b


def test_slash_double_vote_contract_jails_and_zeroes_stake_and_credit() -> None:
    """§VII: a Rule-2 violation forfeits the security stake and the credit; the same evidence
    cannot be used twice (in either order)."""
    net = make_net(4, stake=70, c_init=2)
    chain = net.chain()
    a, b = _double_vote_evidence(net)
    cheat = a.voter
    assert (credit_of(chain, cheat), stake_of(chain, cheat), jailed(chain, cheat)) == (2, 70, False)
    result = run_call(chain, "slash_double_vote", {"a": a.to_obj(), "b": b.to_obj()})
    assert result == {"offender": cheat, "slashed": 70}
    assert (credit_of(chain, cheat), stake_of(chain, cheat), jailed(chain, cheat)) == (0, 0, True)
    assert read(chain.state, "slashed_total") == 70
    for other in net.members[1:]:  # nobody else is touched
        assert (credit_of(chain, other), stake_of(chain, other), jailed(chain, other)) == (2, 70, False)
    root = chain.state.root()
    for args in ({"a": a.to_obj(), "b": b.to_obj()}, {"a": b.to_obj(), "b": a.to_obj()}):
        with pytest.raises(ContractError, match="already been slashed"):
            run_call(chain, "slash_double_vote", args)
    assert chain.state.root() == root


def test_slash_double_vote_rejects_forged_evidence() -> None:
    """§VI-B Rule 2 evidence must be two validly signed votes by one voter for different targets of
    one epoch on this chain; anything else is rejected and changes nothing."""
    net = make_net(4)
    a, b = _double_vote_evidence(net)
    other_voter = vote(net.keys[1], (b"\x01" * 32, 0), (b"\x03" * 32, 1))
    other_epoch = vote(net.keys[0], (b"\x01" * 32, 1), (b"\x03" * 32, 2))
    other_chain = (vote(net.keys[0], (b"\x01" * 32, 0), (b"\x02" * 32, 1), chain_id="other"),
                   vote(net.keys[0], (b"\x01" * 32, 0), (b"\x03" * 32, 1), chain_id="other"))
    forged: dict[str, tuple[Any, str]] = {
        "identical votes": ({"a": a.to_obj(), "b": a.to_obj()}, "not a rule-2 double vote"),
        "different voters": ({"a": a.to_obj(), "b": other_voter.to_obj()}, "not a rule-2 double vote"),
        "different epochs": ({"a": a.to_obj(), "b": other_epoch.to_obj()}, "not a rule-2 double vote"),
        "zero signature": ({"a": a.to_obj(), "b": dataclasses.replace(b, signature=bytes(64)).to_obj()},
                           "not a rule-2 double vote"),
        "borrowed signature": ({"a": a.to_obj(), "b": dataclasses.replace(b, signature=a.signature).to_obj()},
                               "not a rule-2 double vote"),
        "other chain": ({"a": other_chain[0].to_obj(), "b": other_chain[1].to_obj()}, "another chain"),
        "missing vote": ({"a": a.to_obj()}, "missing argument"),
    }
    for name, (args, reason) in forged.items():
        chain = net.chain()
        root = chain.state.root()
        with pytest.raises(ContractError, match=reason):
            run_call(chain, "slash_double_vote", args)
        assert chain.state.root() == root, name
        assert not jailed(chain, a.voter)


def test_double_vote_evidence_from_the_engine_slashes_through_a_transaction() -> None:
    """§VI-B Rule 2 + §VII end to end: the engine's ``slash_double_vote`` call, submitted as a
    transaction in a block, jails the voter in the block's state; resubmitting fails (receipt)."""
    net = make_net(4)
    chain, blocks = _checkpoint_chain(net, 3)
    g, b2 = net.genesis.block().block_hash, blocks[1].block_hash
    eng = engine(net)
    for b in blocks:
        deliver_block(eng, b)
    cheat = net.keys[2]
    deliver_vote(eng, vote(cheat, (g, 0), (b2, 1)))
    deliver_vote(eng, vote(cheat, (g, 0), (b"\x77" * 32, 1)))
    (args,) = calls_of(eng.ready().calls, "slash_double_vote")

    tx1 = make_tx(CLIENT, CHAIN, 0, "microchain", "slash_double_vote", args, T0)
    tx2 = make_tx(CLIENT, CHAIN, 1, "microchain", "slash_double_vote", args, T0)
    block = spin_block(net, chain, 4, txs=[tx1, tx2])
    replica = net.chain()  # another replica replays the chain and executes the evidence
    for b in blocks:
        apply_block(replica, b)
    receipts = apply_block(replica, block)
    assert [r.success for r in receipts] == [True, False]
    assert "already been slashed" in receipts[1].error
    assert receipts[0].result == {"offender": cheat.public_key, "slashed": net.params.stake}
    pk = cheat.public_key
    assert (credit_of(replica, pk), stake_of(replica, pk), jailed(replica, pk)) == (0, 0, True)
    assert read(replica.state, "slashed_total") == net.params.stake


# -- certificates ------------------------------------------------------------------


def test_check_certificate_accepts_a_quorum_of_distinct_members() -> None:
    """§VI committed-majority link: > 2/3 of the committee, distinct members, one link, signed."""
    net = make_net(4)
    link = ((b"\x01" * 32, 0), (b"\x02" * 32, 1))
    votes = [vote(k, *link) for k in net.keys[:3]]
    assert check_certificate(votes, CHAIN, net.members, 3) == votes[0]
    assert check_certificate([*votes, vote(net.keys[3], *link)], CHAIN, net.members, 3) == votes[0]


def test_check_certificate_rejects_bad_certificates() -> None:
    """§VI: a certificate with a non-member, a repeated voter, too few votes, mixed links, a skipped
    epoch (Rule 1), a bad signature or another chain proves nothing."""
    net = make_net(4)
    link = ((b"\x01" * 32, 0), (b"\x02" * 32, 1))
    v = [vote(k, *link) for k in net.keys]
    bad: dict[str, tuple[list[Vote], str]] = {
        "non-member": ([v[0], v[1], vote(OUTSIDER, *link)], "non-member"),
        "same vote twice": ([v[0], v[1], v[1]], "counts a voter twice"),
        "same voter, two timestamps": ([v[0], v[1], vote(net.keys[1], *link, ts=T0 + 9)], "counts a voter twice"),
        "too few": ([v[0], v[1]], r"more than 2/3 \(3\)"),
        "empty": ([], "empty certificate"),
        "mixed links": ([v[0], v[1], vote(net.keys[2], link[0], (b"\x03" * 32, 1))], "different links"),
        "skips an epoch": ([vote(k, link[0], (b"\x02" * 32, 2)) for k in net.keys[:3]], "rule 1"),
        "bad signature": ([v[0], v[1], dataclasses.replace(v[2], signature=v[3].signature)], "bad vote signature"),
        "other chain": ([vote(k, *link, chain_id="other") for k in net.keys[:3]], "different links"),
    }
    for name, (votes, reason) in bad.items():
        with pytest.raises(VerificationFailed, match=reason):
            check_certificate(votes, CHAIN, net.members, 3)
        assert name


def test_certificate_in_a_block_pays_each_voter_one_credit_capped_at_c_max() -> None:
    """§VI + §VII: a block carrying a committed-majority certificate gives each voter +1 credit,
    never above C_max; a second certificate for an already certified epoch is rejected."""
    net = make_net(4, c_init=1, c_max=2)
    chain, blocks = _checkpoint_chain(net, 2)
    g, b2 = net.genesis.block().block_hash, blocks[1].block_hash
    cert1 = {"votes": [vote(k, (g, 0), (b2, 1)).to_obj() for k in net.keys[:3]]}
    b3 = spin_block(net, chain, 3, cert=cert1)
    apply_block(chain, b3)
    assert [credit_of(chain, pk) for pk in net.members] == [2, 2, 2, 1]
    assert read(chain.state, "certified/1") == {"source": g, "target": b2}
    assert read(chain.state, "last_certified") == 1

    plain4 = spin_block(net, chain, 4)
    again = resign(plain4, net.spin_key(4), consensus=consensus(4, b"", cert1))
    with pytest.raises(InvalidBlock, match="epoch 1 is already certified on this branch"):
        apply_block(chain, again)
    with pytest.raises(InvalidBlock, match="already certified"):
        spin_block(net, chain, 4, cert=cert1)  # an honest proposer cannot build it either
    assert chain.height == 3

    apply_block(chain, plain4)
    b4 = plain4.block_hash
    cert2 = {"votes": [vote(k, (b2, 1), (b4, 2)).to_obj() for k in (net.keys[0], net.keys[1], net.keys[3])]}
    apply_block(chain, spin_block(net, chain, 5, cert=cert2))
    assert [credit_of(chain, pk) for pk in net.members] == [2, 2, 2, 2]  # 3 → capped at C_max = 2
    assert read(chain.state, "last_certified") == 2


@pytest.mark.parametrize("r", [1, 2, 3])
def test_certificate_names_checkpoints_recorded_on_the_branch(r: int) -> None:
    """§VI: checkpoints are the blocks with height mod R = 0 (H_e = ⌊height/R⌋). A certificate for
    genesis → B_R can ride in block R + 1 (which records B_R as the epoch-1 checkpoint), not in
    block R itself, and names the checkpoint hash exactly."""
    net = make_net(4, epoch_blocks=r)
    chain, blocks = _checkpoint_chain(net, r)
    g, cp = net.genesis.block().block_hash, blocks[-1].block_hash
    cert = {"votes": [vote(k, (g, 0), (cp, 1)).to_obj() for k in net.keys[:3]]}
    before = net.chain()  # block R itself, proposed on height R - 1, cannot carry it yet
    grow(net, before, r - 1)
    with pytest.raises(InvalidBlock, match="not on this branch"):
        spin_block(net, before, r, cert=cert)
    wrong = {"votes": [vote(k, (g, 0), (blocks[-2].block_hash if r > 1 else g, 1)).to_obj()
                       for k in net.keys[:3]]}
    with pytest.raises(InvalidBlock, match="not on this branch"):
        spin_block(net, chain, r + 1, cert=wrong)
    apply_block(chain, spin_block(net, chain, r + 1, cert=cert))
    assert read(chain.state, "checkpoint/1") == cp and read(chain.state, "checkpoint/0") == g
    assert read(chain.state, "certified/1") == {"source": g, "target": cp}


def test_block_with_a_bad_certificate_is_invalid() -> None:
    """§VI: the block hook verifies a carried certificate against the committee and the branch."""
    net = make_net(4)
    chain, blocks = _checkpoint_chain(net, 2)
    g, b2 = net.genesis.block().block_hash, blocks[1].block_hash
    plain = spin_block(net, chain, 3)
    key = net.spin_key(3)
    certs = {
        "too few votes": ({"votes": [vote(k, (g, 0), (b2, 1)).to_obj() for k in net.keys[:2]]},
                          "bad finality certificate"),
        "non-member": ({"votes": [vote(k, (g, 0), (b2, 1)).to_obj() for k in (*net.keys[:2], OUTSIDER)]},
                       "bad finality certificate: certificate vote by non-member"),
        "checkpoint not on branch": ({"votes": [vote(k, (g, 0), (b"\x05" * 32, 1)).to_obj() for k in net.keys[:3]]},
                                     "not on this branch"),
        "decision without arbitrator": ({"decision": make_decision(ARBITER, CHAIN, (g, 0), (b2, 1), T0).to_obj()},
                                        "no arbitrator"),
    }
    for name, (cert, reason) in certs.items():
        root = chain.state.root()
        with pytest.raises(InvalidBlock, match=reason):
            apply_block(chain, resign(plain, key, consensus=consensus(3, b"", cert)))
        assert chain.height == 2 and chain.state.root() == root, name


# -- Rule 3: the arbitrator --------------------------------------------------------


def test_rule3_arbitrator_decides_a_split_vote_at_every_engine() -> None:
    """§VI-B Rule 3: when votes split and nothing commits for ``arbitration_slots`` slots, the trusted
    arbitrator decides the plurality checkpoint; every replica accepts its signed decision and
    ignores a decision signed by any other key."""
    arbitration_slots = 5
    net = make_net(4, arbitrator=ARBITER.public_key, arbitration_slots=arbitration_slots)
    chain = net.chain()
    b1 = grow(net, chain, 1)[0]
    forks = [spin_block(net, chain, 2), spin_block(net, chain, 3)]  # conflicting checkpoints of epoch 1
    plural, minor = sorted(forks, key=lambda b: b.block_hash, reverse=True)  # plurality = larger hash
    g = net.genesis.block().block_hash
    s0 = 500
    arb = engine(net, OUTSIDER, slot=s0, arbitrator=ARBITER)
    others = [engine(net, WATCHER, slot=s0), engine(net, SigningKey.from_seed(b"\xec" * 32), slot=s0)]
    everyone = [arb, *others]
    votes = [vote(net.keys[0], (g, 0), (plural.block_hash, 1)), vote(net.keys[1], (g, 0), (plural.block_hash, 1)),
             vote(net.keys[2], (g, 0), (minor.block_hash, 1))]  # keys[3] is silent
    for eng in everyone:
        for b in (b1, *forks):
            deliver_block(eng, b)
        assert eng.head() == min(forks, key=lambda b: b.block_hash).block_hash  # the head is the *other* fork
        for v in votes:
            deliver_vote(eng, v)
        assert eng.last_committed == (0, g)

    arb.tick(T0 + (s0 + arbitration_slots - 1) * SLOT_MS)
    arb.tick(T0 + (s0 + arbitration_slots) * SLOT_MS - 1)
    assert arb.last_committed == (0, g)
    assert not [m for _, m in arb.ready().messages if message_kind(m) == "decision"]  # too early
    arb.tick(T0 + (s0 + arbitration_slots) * SLOT_MS)
    decisions = [m for _, m in arb.ready().messages if message_kind(m) == "decision"]
    assert len(decisions) == 1
    kind, body = decode_message(decisions[0])
    assert Decision.from_obj(body).link == (g, plural.block_hash)
    assert arb.last_committed == (1, plural.block_hash) and arb.stats.decisions == 1

    impostor = make_decision(OUTSIDER, CHAIN, (g, 0), (minor.block_hash, 1), T0)
    with pytest.raises(VerificationFailed, match="bad arbitrator signature"):
        impostor.check(CHAIN, ARBITER.public_key)
    for eng in others:
        eng.step(OUTSIDER.public_key, encode_message("decision", impostor.to_obj()))
        assert eng.last_committed == (0, g) and eng.stats.decisions == 0 and eng.stats.malformed == 1
        eng.step(ARBITER.public_key, decisions[0])
        assert eng.last_committed == (1, plural.block_hash) and eng.stats.decisions == 1
        assert eng.certs[1] == {"decision": body}  # what later blocks carry instead of votes
    # arbitration happens once per epoch
    arb.tick(T0 + (s0 + 3 * arbitration_slots) * SLOT_MS)
    assert not [m for _, m in arb.ready().messages if message_kind(m) == "decision"]


def test_rule3_decision_must_be_for_this_chain_and_the_next_epoch() -> None:
    """§VI-B Rule 3: an arbitrator decision is a signed link s → t with H_e(t) = H_e(s) + 1 on this
    chain; signed by the arbitrator but skipping an epoch or for another chain, it is refused."""
    link = ((b"\x01" * 32, 0), (b"\x02" * 32, 1))
    make_decision(ARBITER, CHAIN, *link, T0).check(CHAIN, ARBITER.public_key)
    with pytest.raises(VerificationFailed, match="another chain or skips an epoch"):
        make_decision(ARBITER, CHAIN, link[0], (b"\x02" * 32, 2), T0).check(CHAIN, ARBITER.public_key)
    with pytest.raises(VerificationFailed, match="another chain or skips an epoch"):
        make_decision(ARBITER, "other", *link, T0).check(CHAIN, ARBITER.public_key)
    with pytest.raises(VerificationFailed, match="no arbitrator"):
        make_decision(ARBITER, CHAIN, *link, T0).check(CHAIN, b"")
    forged = dataclasses.replace(make_decision(ARBITER, CHAIN, *link, T0), target_hash=b"\x03" * 32)
    with pytest.raises(VerificationFailed, match="bad arbitrator signature"):
        forged.check(CHAIN, ARBITER.public_key)


def test_rule3_no_arbitrator_means_no_decision() -> None:
    """§VI-B Rule 3 is optional: with no arbitrator key in the genesis, a decision is never accepted."""
    net = make_net(4)
    chain = net.chain()
    blocks = grow(net, chain, 2)
    g = net.genesis.block().block_hash
    eng = engine(net)
    for b in blocks:
        deliver_block(eng, b)
    d = make_decision(ARBITER, CHAIN, (g, 0), (blocks[1].block_hash, 1), T0)
    eng.step(ARBITER.public_key, encode_message("decision", d.to_obj()))
    assert eng.last_committed == (0, g) and eng.stats.malformed == 1


# ==================================================================================
# §VII  Credit, stake and punishment
# ==================================================================================


def test_genesis_gives_every_validator_c_init_credit_and_a_stake() -> None:
    """§IV-A: every node starts with C_init credit; §VII: each committee member deposits a security
    stake; §IV-B: the initial dynasty D_init is the administrator's list (first K by address)."""
    net = make_net(4, n=6, c_init=2, c_max=9, stake=70, initial_balance=500)
    chain = net.chain()
    for key in net.keys:
        pk = key.public_key
        assert credit_of(chain, pk) == 2
        assert stake_of(chain, pk) == 70
        assert read(chain.state, f"balance/{pk.hex()}") == 430
        assert not jailed(chain, pk)
    dyn = current_dynasty(chain.state)
    assert dyn.number == 0 and dyn.start == 0 and dyn.seed == net.genesis.genesis_hash
    assert list(dyn.members) == sort_by_address([k.public_key for k in net.keys])[:4]
    assert dyn.credits == (2, 2, 2, 2) and dyn.total_credit == 8 and dyn.quorum == 3


def test_default_params_match_the_seed() -> None:
    """§IV-A: C_init = 1 by default, and C_init may not exceed C_max."""
    params = MicrochainParams()
    assert params.c_init == 1 and params.c_init <= params.c_max
    with pytest.raises(ConfigError):
        MicrochainParams(c_init=5, c_max=4)


def test_block_equivocation_yields_slashing_evidence_that_jails_the_proposer() -> None:
    """§VII punishment: two different blocks signed by one proposer for the same slot produce a
    ``slash_equivocation`` call; executing it jails the proposer and forfeits its stake."""
    net = make_net(4)
    chain = net.chain()
    b = spin_block(net, chain, 1)
    twin = spin_block(net, chain, 1, ts=T0 + SLOT_MS + 1)  # same proposer, same slot, other content
    assert b.block_hash != twin.block_hash and b.header.proposer == twin.header.proposer
    eng = engine(net)
    deliver_block(eng, b)
    assert calls_of(eng.ready().calls, "slash_equivocation") == []
    deliver_block(eng, twin)
    (args,) = calls_of(eng.ready().calls, "slash_equivocation")
    assert args == {"a": b.header.to_obj(), "b": twin.header.to_obj()}
    deliver_block(eng, twin)
    assert calls_of(eng.ready().calls, "slash_equivocation") == []  # reported once

    cheat = b.header.proposer
    result = run_call(chain, "slash_equivocation", args)
    assert result == {"offender": cheat, "slashed": net.params.stake}
    assert (credit_of(chain, cheat), stake_of(chain, cheat), jailed(chain, cheat)) == (0, 0, True)
    with pytest.raises(ContractError, match="already been slashed"):
        run_call(chain, "slash_equivocation", {"a": args["b"], "b": args["a"]})


def test_slash_equivocation_rejects_non_equivocations() -> None:
    """§VII: only two distinct, validly signed blocks by one proposer for one slot are evidence."""
    net = make_net(4)
    chain = net.chain()
    b = spin_block(net, chain, 1)
    later = spin_block(net, chain, 2)  # same height and parent, another slot: not equivocation
    assert later.header.proposer == b.header.proposer
    other = resign(b, net.keys[2])
    forged = dataclasses.replace(spin_block(net, chain, 1, ts=T0 + 555).header, signature=bytes(64))
    cases = {
        "same block": ({"a": b.header.to_obj(), "b": b.header.to_obj()}, "not two blocks by one proposer"),
        "different slots": ({"a": b.header.to_obj(), "b": later.header.to_obj()}, "different slots"),
        "different proposers": ({"a": b.header.to_obj(), "b": other.header.to_obj()}, "not two blocks by one proposer"),
        "bad signature": ({"a": b.header.to_obj(), "b": forged.to_obj()}, "bad block signature"),
    }
    for name, (args, reason) in cases.items():
        state = net.chain()
        with pytest.raises(ContractError, match=reason):
            run_call(state, "slash_equivocation", args)
        assert not jailed(state, b.header.proposer), name


# ==================================================================================
# §IV-B.1  Credit-weighted sortition
# ==================================================================================


def _tickets(credits: Sequence[int], trial: int) -> list[tuple[bytes, int, bytes]]:
    out = []
    for i, c in enumerate(credits):
        pk = hashlib.sha256(b"pk%d" % i).digest()
        beta = hashlib.sha512(b"trial%d/" % trial + pk).digest()
        out.append((pk, c, beta))
    return out


def test_sortition_is_deterministic_and_order_independent() -> None:
    """§IV-B.1: every validator computes the same committee from the same tickets."""
    for trial in range(20):
        tickets = _tickets([1, 2, 3, 1, 5, 2, 1], trial)
        chosen = select_committee(tickets, 4)
        assert chosen == select_committee(list(tickets), 4)
        shuffled = list(tickets)
        random.Random(trial).shuffle(shuffled)
        assert select_committee(shuffled, 4) == chosen
        assert len(chosen) == 4 and len(set(chosen)) == 4
        assert set(chosen) <= {t[0] for t in tickets}


def test_sortition_excludes_zero_credit() -> None:
    """§IV-B.1 / §VII: a candidate with no credit (e.g. slashed) is never selected, even with the
    best possible VRF output and even when the committee would otherwise be short."""
    for trial in range(20):
        tickets = _tickets([1, 1, 1, 1, 1], trial)
        zero = (b"\x00" * 32, 0, b"\xff" * 64)
        assert zero[0] not in select_committee([*tickets, zero], 3)
        assert select_committee([*tickets, zero], 10) == select_committee(tickets, 10)
        assert len(select_committee([*tickets, zero], 10)) == 5
    assert select_committee([(b"\x01" * 32, 0, b"\xff" * 64)], 1) == []


def test_sortition_returns_k_members_ranked_by_vrf_when_credits_are_equal() -> None:
    """§IV-B.1: with equal credit the winners are the k largest VRF outputs."""
    tickets = _tickets([2] * 8, 7)
    expected = [pk for pk, _, beta in sorted(tickets, key=lambda t: t[2][:32], reverse=True)[:3]]
    assert select_committee(tickets, 3) == expected


def test_sortition_favours_higher_credit() -> None:
    """§IV-B.1 / §VII: selection probability follows credit weight (k = 1: exactly c_i/Σc)."""
    credits = [1, 1, 1, 3, 3, 3]
    trials = 3000
    wins_by = [0] * len(credits)
    in_pair = [0] * len(credits)
    for trial in range(trials):
        tickets = _tickets(credits, trial)
        index = {t[0]: i for i, t in enumerate(tickets)}
        wins_by[index[select_committee(tickets, 1)[0]]] += 1
        for pk in select_committee(tickets, 2):
            in_pair[index[pk]] += 1
    heavy_share = sum(wins_by[3:]) / trials
    assert abs(heavy_share - 0.75) < 0.04  # Σ 3·3 / 12
    for i in range(3):
        assert abs(wins_by[i] / trials - 1 / 12) < 0.03
        assert abs(wins_by[3 + i] / trials - 3 / 12) < 0.04
    assert min(in_pair[3:]) > max(in_pair[:3])


# ==================================================================================
# An honest committee end to end
# ==================================================================================


class Cluster:
    """K honest engines with instant, lossless delivery, ticked in virtual time."""

    def __init__(self, net: Net, tick_ms: int = 25) -> None:
        self.net = net
        self.engines = [MicrochainEngine(net.chain(), k, Mempool(CHAIN)) for k in net.keys[: net.k]]
        self.finalized: list[list[Block]] = [[] for _ in self.engines]
        self.calls: list[list[tuple[str, str, Any]]] = [[] for _ in self.engines]
        self.now = T0
        self.tick_ms = tick_ms

    def run_until(self, t: int) -> None:
        while self.now < t:
            self.now += self.tick_ms
            for e in self.engines:
                e.tick(self.now)
            self._drain()

    def _drain(self) -> None:
        busy = True
        while busy:
            busy = False
            for i, e in enumerate(self.engines):
                r = e.ready()
                self.finalized[i] += r.blocks
                self.calls[i] += r.calls
                for peer, payload in r.messages:
                    busy = True
                    for j, other in enumerate(self.engines):
                        if j != i and (peer is None or peer == other.key.public_key):
                            other.step(e.key.public_key, payload)


def test_honest_committee_finalizes_one_chain_and_pays_voters() -> None:
    """§IV-B.2–3, §V, §VI and §VII together: four honest validators propose by PoC/spin, vote on
    checkpoints, finalize the same chain, and every certificate on it pays its voters."""
    net = make_net(4, c_max=1000)
    cluster = Cluster(net)
    cluster.run_until(T0 + 40 * SLOT_MS)
    heights = [e.chain.height for e in cluster.engines]
    assert min(heights) >= 6, heights
    reference = cluster.finalized[0]
    for blocks in cluster.finalized:
        assert [b.height for b in blocks] == list(range(1, len(blocks) + 1))
        common = min(len(blocks), len(reference))
        assert [b.block_hash for b in blocks[:common]] == [b.block_hash for b in reference[:common]]
    for e in cluster.engines:
        assert e.stats.rejected_blocks == 0 and e.stats.slashings == 0 and e.stats.malformed == 0
        assert set(e.stats.rejected_votes) <= {"rule 1: stale target"}  # only votes past a quorum
        assert e.chain.height % net.params.epoch_blocks == 0  # finalization stops at a checkpoint
    assert all(not calls_of(c, "slash_double_vote") and not calls_of(c, "slash_equivocation")
               for c in cluster.calls)

    replica = net.chain()
    certified = 0
    for b in reference:
        apply_block(replica, b)
        if "cert" in b.header.consensus:
            certified += 1
            assert len(b.header.consensus["cert"]["votes"]) == current_dynasty(replica.state).quorum
    assert certified >= 2
    assert read(replica.state, "last_certified") == certified
    total = sum(credit_of(replica, pk) for pk in net.members)
    assert total == 4 * net.params.c_init + 3 * certified  # +1 per voter per certificate
    assert replica.state.root() == cluster.engines[0].chain.state.root()


def test_member_votes_for_the_checkpoint_once_its_slot_is_over() -> None:
    """§VI-A step 1: when H_e(head) = H_e(B_c) + 1, a member signs and broadcasts a vote for the link
    B_c → checkpoint (here genesis → B2) once the checkpoint's slot is over, persisting it first;
    a non-member never votes."""
    net = make_net(4)
    me = net.keys[0]  # rank 0: not the spin proposer of heights 1–3
    s0 = next(s for s in range(10, 200)
              if not any(wins(vrf.proof_to_hash(proof_for(me, net.seed, t)), 32, 1, 4) for t in (s, s + 1)))
    chain = net.chain()
    b1 = spin_block(net, chain, s0)
    apply_block(chain, b1)
    b2 = spin_block(net, chain, s0 + 1)  # the checkpoint of epoch 1, for the next slot
    g = net.genesis.block().block_hash
    eng = engine(net, me, slot=s0)
    watcher = engine(net, WATCHER, slot=s0)

    def votes_out(e: MicrochainEngine) -> tuple[list[Vote], list[tuple[str, bytes]]]:
        out = e.ready()
        return [Vote.from_obj(decode_message(m)[1]) for _, m in out.messages if message_kind(m) == "vote"], \
            out.records

    for e in (eng, watcher):
        deliver_block(e, b1)
        deliver_block(e, b2)
        e.tick(T0 + (s0 + 1) * SLOT_MS)  # the checkpoint's own slot: too early to vote
    assert eng.head() == b2.block_hash
    assert votes_out(eng) == ([], [])
    for e in (eng, watcher):
        e.tick(T0 + (s0 + 2) * SLOT_MS)
    votes, records = votes_out(eng)
    assert len(votes) == 1
    (v,) = votes
    assert (v.source_hash, v.source_epoch, v.target_hash, v.target_epoch, v.voter) == \
        (g, 0, b2.block_hash, 1, me.public_key)
    assert v.signature_ok()
    assert records == [("vote/000000000001", v.encode())]
    assert eng.votes[1] == {me.public_key: v}  # it counts its own vote
    assert votes_out(watcher)[0] == []


def test_rule1_votes_beyond_the_head_epoch_wait_for_the_head() -> None:
    """§VI-B Rule 1 (H_e(t) must equal H_e(head)): votes for a known checkpoint of an epoch the local
    head has not reached are not counted; they count once the head reaches that epoch."""
    net = make_net(4)
    base = with_credits(net.chain(), (1, 3, 1, 1))
    good_chain, side_chain = copy_chain(base), copy_chain(base)
    slot, proof = winning_slots(net.keys[1], net.seed, 3, 6, range(1, 300))[0]
    good = poc_block(good_chain, net.keys[1], slot, proof)
    apply_block(good_chain, good)
    side = grow(net, side_chain, 2)  # a spin branch that reaches the epoch-1 checkpoint first
    g, target = net.genesis.block().block_hash, side[1].block_hash
    eng = engine(net, chain=base)
    for b in (good, *side):
        deliver_block(eng, b)
    assert eng.head() == good.block_hash  # height 1: epoch 0
    for key in net.keys[:3]:
        deliver_vote(eng, vote(key, (g, 0), (target, 1)))
    assert eng.last_committed == (0, g) and not eng.votes.get(1) and not eng.stats.rejected_votes
    deliver_block(eng, spin_block(net, good_chain, slot + 1))  # the head reaches epoch 1
    eng.tick(T0 + 600 * SLOT_MS)
    assert eng.last_committed == (1, target)


# ==================================================================================
# Regression tests for attacks on the engine's bookkeeping
# ==================================================================================


def _forged_copy(block: Block, ts_shift: int = 7) -> Block:
    """``block`` with another timestamp and a garbage signature: anyone can make this."""
    header = dataclasses.replace(block.header, timestamp=block.header.timestamp + ts_shift, signature=bytes(64))
    return Block(header=header, txs=block.txs)


def test_forged_block_does_not_mask_a_real_equivocation() -> None:
    """§VII punishment must not be defeatable: a forged (badly signed) block for (P, slot) sent first
    must not stop the real equivocation of P in that slot from being reported as valid evidence."""
    net = make_net(4)
    chain = net.chain()
    b = spin_block(net, chain, 1)
    twin = spin_block(net, chain, 1, ts=T0 + SLOT_MS + 1)
    eng = engine(net)
    deliver_block(eng, _forged_copy(b))
    assert eng.stats.rejected_blocks == 1 and eng.stats.accepted == 0
    deliver_block(eng, b)
    deliver_block(eng, twin)
    reports = calls_of(eng.ready().calls, "slash_equivocation")
    assert reports, "the real equivocation was not reported"
    for args in reports:  # every report must be evidence the contract accepts
        for h in (args["a"], args["b"]):
            assert h["signature"] != bytes(64), "a report carries the forged, unsigned header"
    state = net.chain()
    for args in reports:
        with contextlib.suppress(ContractError):
            run_call(state, "slash_equivocation", args)
    assert jailed(state, b.header.proposer)


def test_forged_block_cannot_stop_a_member_from_proposing() -> None:
    """§V Algorithm 1 / rule iii): a member that wins (or holds the spin rank) proposes in its slot;
    an unsigned block claiming to be from it must not take that slot away."""
    net = make_net(4)
    me = net.spin_key(1)  # the spin proposer of height 1: it proposes in slot s0 + 1 by PoC or by spin
    s0 = next(s for s in range(10, 200) if not wins(vrf.proof_to_hash(proof_for(me, net.seed, s)), 32, 1, 4))
    honest = engine(net, me, slot=s0)
    attacked = engine(net, me, slot=s0)
    assert honest.stats.proposed == attacked.stats.proposed == 0
    bait = _forged_copy(spin_block(net, net.chain(), s0 + 1))
    assert bait.header.proposer == me.public_key
    deliver_block(attacked, bait, sender=OUTSIDER.public_key)
    assert attacked.stats.rejected_blocks == 1
    for e in (honest, attacked):
        e.tick(T0 + (s0 + 1) * SLOT_MS)
        e.tick(T0 + (s0 + 1) * SLOT_MS + SLOT_MS // 2)
    assert honest.stats.proposed + honest.stats.spin_proposed == 1  # control
    assert attacked.stats.proposed + attacked.stats.spin_proposed == 1


def test_orphan_buffer_is_bounded() -> None:
    """Robustness of block reception (§IV-B.2 accepts only valid blocks): orphans whose parent is
    unknown are unverified, so the engine must not store an unbounded number of them."""
    net = make_net(4)
    template = spin_block(net, net.chain(), 1)
    eng = engine(net)
    for i in range(MAX_ORPHANS + 200):
        header = dataclasses.replace(template.header, height=5, prev_hash=b"\x66" * 32, timestamp=T0 + i,
                                     signature=bytes(64))
        eng.receive_block(Block(header=header, txs=()))
    assert sum(len(v) for v in eng.orphans.values()) <= MAX_ORPHANS


def test_jailed_voter_earns_no_credit_from_a_certificate() -> None:
    """§VII: the credit reward is for honest validators; a validator proven to have double-voted is
    jailed with zero credit, and a certificate that still carries its vote must not pay it."""
    net = make_net(4)
    chain, blocks = _checkpoint_chain(net, 2)
    g, b2 = net.genesis.block().block_hash, blocks[1].block_hash
    cheat = net.keys[0]
    a, b = vote(cheat, (g, 0), (b2, 1)), vote(cheat, (g, 0), (b"\x44" * 32, 1))
    tx = make_tx(CLIENT, CHAIN, 0, "microchain", "slash_double_vote", {"a": a.to_obj(), "b": b.to_obj()}, T0)
    apply_block(chain, spin_block(net, chain, 3, txs=[tx]))
    assert jailed(chain, cheat.public_key) and credit_of(chain, cheat.public_key) == 0
    apply_block(chain, spin_block(net, chain, 4))
    cert = {"votes": [a.to_obj(), *(vote(k, (g, 0), (b2, 1)).to_obj() for k in net.keys[1:3])]}
    try:
        apply_block(chain, spin_block(net, chain, 5, cert=cert))
        assert [credit_of(chain, k.public_key) for k in net.keys[1:3]] == [2, 2]
    except InvalidBlock:
        pass  # refusing a certificate that counts a jailed voter would be a fix too
    assert credit_of(chain, cheat.public_key) == 0


def test_double_vote_arriving_after_the_commit_is_still_slashed() -> None:
    """§VI-B Rule 2 + §VII: two signed votes by one voter for different checkpoints of one epoch are
    a violation whenever they are seen; a late second vote must still yield slashing evidence."""
    net = make_net(4)
    _, blocks = _checkpoint_chain(net, 3)
    g, b2 = net.genesis.block().block_hash, blocks[1].block_hash
    eng = engine(net)
    for b in blocks:
        deliver_block(eng, b)
    first = vote(net.keys[0], (g, 0), (b2, 1))
    for v in (first, vote(net.keys[1], (g, 0), (b2, 1)), vote(net.keys[2], (g, 0), (b2, 1))):
        deliver_vote(eng, v)
    assert eng.last_committed == (1, b2)
    eng.ready()
    second = vote(net.keys[0], (g, 0), (b"\x98" * 32, 1))
    assert is_double_vote(first, second)
    deliver_vote(eng, second)
    assert calls_of(eng.ready().calls, "slash_double_vote") == [{"a": first.to_obj(), "b": second.to_obj()}]
