"""Two inter-locked chains in one process: block accumulators, quorum anchors, Protocol 1.

Seed 000 §IV-A (Update/ProofGen/ProofVerf over blocks, ``v_i = v_(i-1)^(p_i)``),
§III Fig. 2 (Type-II/III transactions) and §IV-B Protocol 1 (cross-chain
verification). Every attack here must be *rejected with the failing step
named*, not merely fail to crash.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import gmpy2
import pytest

from fedledger.audit.crosschain import STEPS, CrossChainProof, Trusted, verify_cross_chain
from fedledger.codec import cbor
from fedledger.crypto.keys import Domain, SigningKey
from fedledger.errors import InvalidBlock
from fedledger.ledger.accumulator import (
    acc_int,
    batch_proof,
    block_prime,
    chain_params,
    verify_block,
    verify_blocks,
)
from fedledger.ledger.block import Block, Receipt
from fedledger.ledger.chain import apply_block, propose_block, receipts_root, tx_root
from fedledger.ledger.genesis import Genesis, Identity
from fedledger.ledger.interlock import Anchor, make_anchor, quorum, sign_anchor
from fedledger.ledger.proofs import make_tx_proof
from fedledger.ledger.tx import make_tx
from fedledger.node.interlock import AnchorCollector
from fedledger.sim.interlocked import T0, ChainBuilder


def key(label: str) -> SigningKey:
    return SigningKey.from_seed(label.encode().ljust(32, b"\0"))


MAIN_KEYS = [key(f"main-{i}") for i in range(4)]
SUB_KEYS = [key(f"sub-{i}") for i in range(4)]
CLIENT = key("client")
RELAYER = key("relayer")


def genesis(chain_id: str, role: str, validators: list[SigningKey], peers: dict[str, list[SigningKey]]) -> Genesis:
    ids = (Identity(CLIENT.public_key, "edge", "client", chain_id),)
    interlock = {"role": role, "period": 2, "peers": {c: [k.public_key for k in ks] for c, ks in peers.items()}}
    return Genesis(chain_id, T0, tuple(k.public_key for k in validators), ids, {"interlock": interlock})


def register(label: str) -> tuple[SigningKey, str, str, Any]:
    return (CLIENT, "identity", "register_identity",
            {"public_key": key(label).public_key, "role": "device", "name": label, "home_chain": "sub-1"})


def sub_chain(variant: str = "") -> ChainBuilder:
    chain = ChainBuilder.from_genesis(genesis("sub-1", "sub", SUB_KEYS, {"main": MAIN_KEYS}))
    for h in range(1, 5):
        chain.add(SUB_KEYS[h % 4], [register(f"dev-{h}{variant if h == 2 else ''}")])
    return chain


def signed(anchor: Anchor, signers: list[SigningKey]) -> dict[str, Any]:
    return {"anchor": anchor.to_obj(), "signatures": [[k.public_key, sign_anchor(k, anchor)] for k in signers]}


def anchor_of(chain: ChainBuilder, height: int) -> Anchor:
    header = chain.header(height)
    return make_anchor(header, header, chain.state.acc_params.fingerprint())


@dataclass
class World:
    sub: ChainBuilder
    main: ChainBuilder
    anchor_height: int = 3  # main block holding the Type-II anchor of sub-1 at height 4

    def proof(self, tx_height: int = 2, at: int | None = None) -> CrossChainProof:
        at = self.main.state.height if at is None else at
        return CrossChainProof(
            "sub-1",
            self.sub.proof(tx_height),
            self.sub.witness(tx_height, 4),
            self.main.proof(self.anchor_height),
            self.main.witness(self.anchor_height, at),
        )

    def trusted(self, at: int | None = None) -> Trusted:
        at = self.main.state.height if at is None else at
        return Trusted("main", at, self.main.header(at).accumulator, self.main.state.acc_params)


@pytest.fixture(scope="module")
def world() -> World:
    sub = sub_chain()
    main = ChainBuilder.from_genesis(genesis("main", "main", MAIN_KEYS, {"sub-1": SUB_KEYS}))
    main.add(MAIN_KEYS[0], [register("m1")])
    main.add(MAIN_KEYS[1], [register("m2")])
    anchored = main.add(MAIN_KEYS[2], [(RELAYER, "interlock", "anchor_subchain", signed(anchor_of(sub, 4), SUB_KEYS[:3]))])
    assert main.receipts[-1][0].success, main.receipts[-1][0].error
    assert anchored.height == 3
    main.add(MAIN_KEYS[3], [register("m4")])
    main.add(MAIN_KEYS[0], [register("m5")])
    return World(sub, main)


def failed_step(result: Any) -> tuple[str, str]:
    bad = [s for s in result.steps if not s["ok"]]
    assert len(bad) == 1 and not result.valid, result.to_json()
    return bad[0]["step"], bad[0]["detail"]


# -- the chain accumulator (seed 000 §IV-A) ---------------------------------------
def test_every_header_carries_the_accumulator_after_its_block(world: World) -> None:
    """Update: v_0 = g^(p_0) for the genesis block, v_i = v_(i-1)^(p_i) mod N."""
    params = world.sub.state.acc_params
    value = params.g
    for h in range(0, 5):
        header = world.sub.header(h)
        value = int(gmpy2.powmod(value, block_prime(params, header), params.n))
        assert acc_int(params, header.accumulator) == value
    assert params.modulus_bits >= 2048 and gmpy2.is_prime(block_prime(params, world.sub.header(3)))


def test_a_block_with_a_wrong_accumulator_is_invalid(world: World) -> None:
    chain = sub_chain()
    block, _ = propose_block(chain.state, [], SUB_KEYS[1], T0 + 10)
    unsigned = dataclasses.replace(block.header, accumulator=chain.header(4).accumulator, signature=b"")
    header = dataclasses.replace(unsigned, signature=SUB_KEYS[1].sign(Domain.BLOCK, unsigned.signing_bytes()))
    with pytest.raises(InvalidBlock, match="accumulator of block 5"):
        apply_block(chain.state, Block(header, block.txs))


def test_witnesses_verify_for_every_position_and_only_there(world: World) -> None:
    """ProofGen/ProofVerf: w_i = v_(i-1)^(p_(i+1)...p_n); w_i^(p_i) = v_n; the height is in the element."""
    params, value = world.sub.state.acc_params, world.sub.header(4).accumulator
    for h in range(0, 5):
        w = world.sub.witness(h, 4)
        assert verify_block(params, value, world.sub.header(h), w)
        other = world.sub.header(h + 1 if h < 4 else 0)
        assert not verify_block(params, value, other, w)


def test_batch_proof_covers_several_blocks_at_once(world: World) -> None:
    """Seed 000 §IV-D/E: one aggregate witness (Protocol 2's g_0) and a PoE for t blocks; a batch
    holding a block that is not in the chain, or listing a block at another height, fails."""
    params, headers = world.sub.state.acc_params, [world.sub.header(h) for h in range(5)]
    value = headers[-1].accumulator
    witness, poe = batch_proof(params, headers, [1, 2, 4])
    assert verify_blocks(params, value, [headers[1], headers[2], headers[4]], witness, poe)
    forged = sub_chain(variant="-forged").header(2)
    assert not verify_blocks(params, value, [headers[1], forged, headers[4]], witness, poe)
    assert not verify_blocks(params, value, [headers[1], headers[3], headers[4]], witness, poe)
    assert not verify_blocks(params, value, [headers[1], headers[2]], witness, poe)


# -- Protocol 1 ---------------------------------------------------------------------
def test_protocol_1_accepts_a_transaction_on_the_sub_chain(world: World) -> None:
    result = verify_cross_chain(world.proof(), world.trusted())
    assert result.valid, result.to_json()
    assert [s["step"] for s in result.steps] == list(STEPS)
    assert result.facts["height"] == 2 and result.facts["anchored_height"] == 4
    assert CrossChainProof.from_json(world.proof().to_json()) == world.proof()


def test_a_block_that_is_not_in_the_chain_is_rejected(world: World) -> None:
    """A validly signed block at height 2 that the chain never had (built on the same parent)."""
    fork = sub_chain(variant="-forged")
    forged = dataclasses.replace(world.proof(), tx=fork.proof(2))
    step, detail = failed_step(verify_cross_chain(forged, world.trusted()))
    assert step == "sub-chain block in anchored accumulator" and "not at that position" in detail


def test_a_proof_for_the_wrong_position_is_rejected(world: World) -> None:
    """Block 2's transaction with block 3's witness, and block 2's header relabelled as height 3."""
    wrong = dataclasses.replace(world.proof(), block_witness=world.sub.witness(3, 4))
    step, _ = failed_step(verify_cross_chain(wrong, world.trusted()))
    assert step == "sub-chain block in anchored accumulator"
    good = world.proof()
    header = world.sub.blocks[1].header
    moved = dataclasses.replace(good, tx=dataclasses.replace(
        good.tx, header=dataclasses.replace(header, height=3).encode()), block_witness=world.sub.witness(3, 4))
    step, detail = failed_step(verify_cross_chain(moved, world.trusted()))
    assert step == "sub-chain block in anchored accumulator" and "block 3" in detail


def test_a_block_altered_after_anchoring_is_rejected(world: World) -> None:
    """Swap the transaction in block 2 for another one and re-sign the header: the Merkle paths
    match the altered header, but the altered header is not the anchored block."""
    original = world.sub.blocks[1]
    other = make_tx(CLIENT, "sub-1", 1, "identity", "register_identity",
                    {"public_key": key("evil").public_key, "role": "cloud", "name": "evil", "home_chain": "sub-1"}, T0)
    receipts = [Receipt(other.tx_hash, True, "", None)]
    unsigned = dataclasses.replace(original.header, tx_root=tx_root([other]), receipts_root=receipts_root(receipts),
                                   signature=b"")
    header = dataclasses.replace(unsigned, signature=SUB_KEYS[2].sign(Domain.BLOCK, unsigned.signing_bytes()))
    proof = dataclasses.replace(world.proof(), tx=make_tx_proof(Block(header, (other,)), receipts, 0))
    step, detail = failed_step(verify_cross_chain(proof, world.trusted()))
    assert step == "sub-chain block in anchored accumulator" and "not at that position" in detail


def test_a_sub_chain_that_rewrites_history_after_its_anchor_is_exposed(world: World) -> None:
    """The sub-chain's validators rebuild heights 2..4 differently after anchoring height 4. Proofs
    from the rewritten chain verify against its own accumulator but not against the main chain's
    anchor; and if its quorum signs the rewritten head, the main chain records the conflict."""
    rewritten = sub_chain(variant="-rewritten")
    assert rewritten.header(4).accumulator != world.sub.header(4).accumulator
    params = rewritten.state.acc_params
    assert verify_block(params, rewritten.header(4).accumulator, rewritten.header(2), rewritten.witness(2, 4))
    proof = dataclasses.replace(world.proof(), tx=rewritten.proof(2),
                                block_witness=rewritten.witness(2, 4))
    step, _ = failed_step(verify_cross_chain(proof, world.trusted()))
    assert step == "sub-chain block in anchored accumulator"

    main = ChainBuilder.from_genesis(world.main.state.genesis)
    main.add(MAIN_KEYS[0], [(RELAYER, "interlock", "anchor_subchain", signed(anchor_of(world.sub, 4), SUB_KEYS[:3]))])
    main.add(MAIN_KEYS[1], [(RELAYER, "interlock", "anchor_subchain", signed(anchor_of(rewritten, 4), SUB_KEYS[1:]))])
    receipt = main.receipts[-1][0]
    assert receipt.success and receipt.result == {"conflict": True, "height": 4}
    state = main.state.state
    assert cbor.decode(state.get(b"c/interlock/forked/sub-1") or b"") == 4
    latest = cbor.decode(state.get(b"c/interlock/latest/sub-1") or b"")
    assert latest["head"] == world.sub.header(4).block_hash  # the first anchor stays the record


def test_the_trusted_accumulator_bounds_what_verifies(world: World) -> None:
    """Protocol 1 lines 1-3: the anchor's main block must be in the one trusted value."""
    step, detail = failed_step(verify_cross_chain(world.proof(at=2), world.trusted(at=2)))
    assert step == "main-chain block in trusted accumulator" and "after the trusted height" in detail
    bogus = dataclasses.replace(world.trusted(), accumulator=world.main.header(4).accumulator)
    step, detail = failed_step(verify_cross_chain(world.proof(), bogus))
    assert step == "main-chain block in trusted accumulator" and "not a member" in detail


def test_an_anchor_proof_that_is_not_a_type_ii_anchor_is_rejected(world: World) -> None:
    other = dataclasses.replace(world.proof(), anchor=world.main.proof(2))
    step, detail = failed_step(verify_cross_chain(other, world.trusted()))
    assert step == "anchor transaction in main-chain block" and "not a Type-II anchor" in detail


# -- the interlock contract (Type-II and Type-III) ------------------------------------
def anchor_receipt(chain: ChainBuilder, method: str, args: dict[str, Any]) -> Receipt:
    signer = MAIN_KEYS[0] if chain.state.chain_id == "main" else SUB_KEYS[0]
    chain.add(signer, [(RELAYER, "interlock", method, args)])
    return chain.receipts[-1][0]


@pytest.mark.parametrize("case, mutate, reason", [
    ("two of four", lambda a: signed(a, SUB_KEYS[:2]), "2 of 4 validators signed; a quorum is 3"),
    ("outsider", lambda a: signed(a, [*SUB_KEYS[:2], MAIN_KEYS[0]]), "is not a validator"),
    ("duplicate signer", lambda a: signed(a, [SUB_KEYS[0], SUB_KEYS[0], SUB_KEYS[1]]), "appears twice"),
    ("forged signature", lambda a: {**signed(a, SUB_KEYS[:3]), "signatures": [
        [k.public_key, sign_anchor(k, dataclasses.replace(a, height=99))] for k in SUB_KEYS[:3]]}, "bad signature"),
    ("other parameters", lambda a: signed(dataclasses.replace(a, params=bytes(32)), SUB_KEYS), "other accumulator"),
])
def test_type_ii_needs_a_quorum_of_the_sub_chains_validators(case: str, mutate: Any, reason: str) -> None:
    """Seed 000 §III: Type-II transactions must not rest on one (possibly compromised) node."""
    main = ChainBuilder.from_genesis(genesis("main", "main", MAIN_KEYS, {"sub-1": SUB_KEYS}))
    receipt = anchor_receipt(main, "anchor_subchain", mutate(anchor_of(sub_chain(), 4)))
    assert not receipt.success and reason in receipt.error, (case, receipt.error)


def test_anchors_go_one_way_and_heights_increase() -> None:
    sub = sub_chain()
    main = ChainBuilder.from_genesis(genesis("main", "main", MAIN_KEYS, {"sub-1": SUB_KEYS}))
    assert anchor_receipt(main, "anchor_subchain", signed(anchor_of(sub, 4), SUB_KEYS[:3])).success
    stale = anchor_receipt(main, "anchor_subchain", signed(anchor_of(sub, 2), SUB_KEYS[:3]))
    assert not stale.success and "must increase" in stale.error
    wrong_way = anchor_receipt(main, "anchor_mainchain", signed(anchor_of(main, 1), MAIN_KEYS[:3]))
    assert not wrong_way.success and "this chain's role is 'main'" in wrong_way.error
    type3 = anchor_receipt(sub, "anchor_mainchain", signed(anchor_of(main, 2), MAIN_KEYS[1:]))
    assert type3.success, type3.error
    latest = cbor.decode(sub.state.state.get(b"c/interlock/latest/main") or b"")
    assert latest["type"] == 3 and latest["accumulator"] == main.header(2).accumulator


# -- the validators' side: signing and gathering a quorum -------------------------------
def test_collector_gathers_a_quorum_of_matching_signatures_only() -> None:
    sub = sub_chain()
    collectors = [AnchorCollector(sub.state, k) for k in SUB_KEYS]
    header = sub.header(4)
    bodies = [c.finalized(header, header) for c in collectors]
    assert collectors[0].latest() is None  # only its own signature so far
    liar = Anchor.from_obj({**bodies[1][0], "accumulator": sub.header(3).accumulator})
    collectors[0].receive(SUB_KEYS[1].public_key, [liar.to_obj(), sign_anchor(SUB_KEYS[1], liar)])
    collectors[0].receive(SUB_KEYS[2].public_key, bodies[3])  # signed by 3, claimed from 2
    assert collectors[0].latest() is None
    collectors[0].receive(SUB_KEYS[2].public_key, bodies[2])
    collectors[0].receive(SUB_KEYS[3].public_key, bodies[3])
    cert = collectors[0].latest()
    assert cert is not None and cert[0] == anchor_of(sub, 4) and len(cert[1]) == quorum(4) == 3
    assert not collectors[0].config.due(3) and collectors[0].config.due(4)


def test_signatures_that_arrive_before_the_block_is_final_wait_for_it() -> None:
    sub = sub_chain()
    behind = ChainBuilder.from_genesis(sub.state.genesis)
    for block in sub.blocks[:2]:
        apply_block(behind.state, block)
    collector = AnchorCollector(behind.state, SUB_KEYS[0])
    header = sub.header(4)
    for k in SUB_KEYS[1:]:
        body = AnchorCollector(sub.state, k).finalized(header, header)
        collector.receive(k.public_key, body)
    assert collector.latest() is None
    for block in sub.blocks[2:]:
        apply_block(behind.state, block)
    collector.finalized(header, header)
    cert = collector.latest()
    assert cert is not None and len(cert[1]) == 4


def test_genesis_without_accumulator_parameters_uses_rsa_2048() -> None:
    from fedledger.crypto.accumulator import RSA_2048

    params = chain_params({})
    assert params.n == RSA_2048 and params.prime_bits == 256
