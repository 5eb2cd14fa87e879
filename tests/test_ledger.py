"""Tests for fedledger.ledger (state, transactions, blocks, mempool, proofs) and the fl contract.

Transactions and blocks follow seed 004 §IV-A (tx = {tx_hash, a_i, T_stamp, data, σ_i},
B = (pre_hash, h, mt_root, tx_list, T_stamp, a_j, σ_j)); the FL contract records the
round-by-round lineage of seed 004 §III-A and seed 000 §V.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from conftest import CHAIN_ID, Keys
from fedledger.codec import cbor
from fedledger.contracts import REGISTRY, Context, Contract, fl
from fedledger.crypto.hashing import tagged_hash
from fedledger.crypto.keys import Domain, SigningKey
from fedledger.crypto.merkle import InclusionProof
from fedledger.errors import DecodeError, InvalidBlock, InvalidTransaction, VerificationFailed
from fedledger.ledger import (
    Block,
    BlockHeader,
    ChainState,
    Genesis,
    Mempool,
    Receipt,
    State,
    Transaction,
    apply_block,
    make_tx,
    propose_block,
)
from fedledger.ledger.block import MAX_BLOCK_BYTES
from fedledger.ledger.chain import account_nonce, execute_tx, receipts_root, tx_root
from fedledger.ledger.proofs import TxProof, make_tx_proof, verify_header_chain, verify_tx_proof
from fedledger.ledger.state import state_root_reference
from fedledger.ledger.tx import MAX_TX_BYTES, decode_tx

# -- helpers ---------------------------------------------------------------------


def h32(label: str) -> bytes:
    return tagged_hash("test", label.encode())


def update_args(
    round_: int, samples: int = 10, base: bytes | None = None, tag: str = ""
) -> dict[str, Any]:
    """Arguments of a device's fl.submit_update for ``round_``."""
    return {
        "round": round_,
        "base": base if base is not None else h32(f"base{round_}"),
        "model": h32(f"model{round_}{tag}"),
        "samples": samples,
        "data": h32(f"data{tag}"),
    }


def update_tx(key: SigningKey, nonce: int, round_: int | None = None, **kw: Any) -> Transaction:
    round_ = nonce if round_ is None else round_
    return make_tx(
        key, CHAIN_ID, nonce, "fl", "submit_update", update_args(round_, **kw), 1_700_000_100
    )


def call(chain: ChainState, keys: Keys, sender: SigningKey, method: str, args: Any) -> Receipt:
    """Send one ``fl`` call with the sender's next nonce in its own block; return its receipt."""
    tx = make_tx(
        sender, CHAIN_ID, account_nonce(chain.state, sender.address), "fl", method, args, 1
    )
    block, rejected = propose_block(chain, [tx], keys.validator, chain.head.timestamp + 1)
    assert not rejected
    (receipt,) = apply_block(chain, block)
    return receipt


def sign_header(header: BlockHeader, key: SigningKey, **changes: Any) -> BlockHeader:
    """``header`` with ``changes`` applied, re-signed by ``key`` (a well-signed forgery)."""
    unsigned = dataclasses.replace(header, **changes, signature=b"")
    return dataclasses.replace(unsigned, signature=key.sign(Domain.BLOCK, unsigned.signing_bytes()))


def forge_block(chain: ChainState, txs: list[Transaction], key: SigningKey) -> Block:
    """A correctly linked and signed block whose txs were never checked (as a byzantine proposer makes)."""
    header = BlockHeader(
        chain_id=chain.chain_id,
        height=chain.height + 1,
        prev_hash=chain.head.block_hash,
        tx_count=len(txs),
        tx_root=tx_root(txs),
        receipts_root=receipts_root([]),
        state_root=chain.state.root(),
        proposer=key.public_key,
        timestamp=chain.head.timestamp + 1,
        consensus=None,
        accumulator=b"",
        signature=b"",
    )
    return Block(sign_header(header, key), tuple(txs))


def stored(state: State, key: bytes) -> Any:
    """The decoded value a contract stored under ``key`` (which must exist)."""
    raw = state.get(key)
    assert raw is not None, key
    return cbor.decode(raw)


def snapshot(chain: ChainState) -> tuple[bytes, BlockHeader, dict[bytes, bytes]]:
    return chain.state.root(), chain.head, dict(chain.state.items())


def with_fields(tx: Transaction, key: SigningKey | None = None, **changes: Any) -> Transaction:
    """``tx`` with fields changed; re-signed by ``key`` if given, else the old signature is kept."""
    fields = {name: getattr(tx, name) for name in tx.__dataclass_fields__}
    fields.update(changes)
    out = Transaction(**fields)
    if key is not None:
        out = Transaction(**{**fields, "signature": key.sign(Domain.TX, out.signing_bytes())})
    return out


# -- state: fast root vs the reference, transactional journal ---------------------
KEYS = [b"a", b"b", b"c", b"ab", b"\x00", b"zz"]
ops = st.lists(
    st.one_of(
        st.tuples(st.just("set"), st.sampled_from(KEYS), st.binary(max_size=4)),
        st.tuples(st.just("delete"), st.sampled_from(KEYS)),
        st.tuples(st.just("begin")),
        st.tuples(st.just("commit")),
        st.tuples(st.just("rollback")),
        st.tuples(st.just("take")),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(KEYS), st.binary(max_size=4)), ops)
@example({b"a": b"0"}, [("begin",), ("set", b"a", b"1"), ("rollback",)])  # stale cached leaf
@example(
    {}, [("begin",), ("set", b"a", b"1"), ("begin",), ("delete", b"a"), ("commit",), ("rollback",)]
)
def test_state_matches_reference_model(
    initial: dict[bytes, bytes], script: list[tuple[Any, ...]]
) -> None:
    """Property (STYLE principle 3): the cached root equals ``state_root_reference`` after any
    sequence of writes and nested begin/commit/rollback, and the change log replays to the state."""
    state = State(initial)
    model = dict(initial)
    saved: list[dict[bytes, bytes]] = []
    persisted = dict(initial)  # what a store that applies take_changes() would hold
    for op, *rest in script:
        if op == "set":
            state.set(rest[0], rest[1])
            model[rest[0]] = rest[1]
        elif op == "delete":
            state.delete(rest[0])
            model.pop(rest[0], None)
        elif op == "begin":
            state.begin()
            saved.append(dict(model))
        elif op == "commit" and saved:
            state.commit()
            saved.pop()
        elif op == "rollback" and saved:
            state.rollback()
            model = saved.pop()
        elif op == "take":
            _apply_changes(persisted, state.take_changes())
        assert state.in_transaction == bool(saved)
        assert state.root() == state_root_reference(model)  # also fills the leaf cache
    assert dict(state.items()) == model
    assert list(state.items()) == sorted(model.items())
    assert len(state) == len(model)
    assert state.root() == state_root_reference(model)
    while saved:
        state.commit()
        saved.pop()
    _apply_changes(persisted, state.take_changes())
    assert persisted == model


def _apply_changes(store: dict[bytes, bytes], changes: dict[bytes, bytes | None]) -> None:
    for k, v in changes.items():
        if v is None:
            store.pop(k, None)
        else:
            store[k] = v


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(st.binary(min_size=1, max_size=3), st.binary(max_size=3)), ops)
def test_rollback_restores_exactly(
    initial: dict[bytes, bytes], script: list[tuple[Any, ...]]
) -> None:
    state = State(initial)
    root = state.root()
    state.begin()
    depth = 0
    for op, *rest in script:
        if op == "set":
            state.set(rest[0], rest[1])
        elif op == "delete":
            state.delete(rest[0])
        elif op == "begin":
            state.begin()
            depth += 1
        elif op in ("commit", "rollback") and depth:
            getattr(state, op)()
            depth -= 1
    for _ in range(depth):
        state.commit()
    state.rollback()
    assert not state.in_transaction
    assert dict(state.items()) == initial
    assert state.root() == root == state_root_reference(initial)


def test_state_prefix_scan() -> None:
    state = State({b"c/fl/a": b"1", b"c/fl/b": b"2", b"c/fm": b"3", b"n/x": b"4"})
    assert list(state.keys_with_prefix(b"c/fl/")) == [b"c/fl/a", b"c/fl/b"]


# -- apply_block: happy path ---------------------------------------------------------
def test_apply_block_happy_path(chain: ChainState, keys: Keys) -> None:
    d0, d1 = keys.devices[:2]
    txs = [update_tx(d0, 0), update_tx(d1, 0), update_tx(d0, 1)]
    block, rejected = propose_block(chain, txs, keys.validator, chain.head.timestamp + 5)
    assert rejected == [] and block.txs == tuple(txs)
    assert chain.height == 0  # proposing is a dry run
    follower = ChainState.from_genesis(chain.genesis)
    receipts = apply_block(follower, Block.decode(block.encode()))
    assert [r.success for r in receipts] == [True, True, True]
    assert [r.tx_hash for r in receipts] == [tx.tx_hash for tx in txs]
    assert follower.head == block.header and follower.height == 1
    assert follower.state.root() == block.header.state_root
    assert account_nonce(follower.state, d0.address) == 2
    assert account_nonce(follower.state, d1.address) == 1
    record = stored(follower.state, f"c/fl/update/1/{d0.address.hex()}".encode())
    assert record["model"] == update_args(1)["model"] and record["tx"] == txs[2].tx_hash


def test_propose_block_skips_inadmissible_candidates(chain: ChainState, keys: Keys) -> None:
    good, future = update_tx(keys.devices[0], 0), update_tx(keys.devices[1], 5)
    block, rejected = propose_block(chain, [future, good], keys.validator, 1)
    assert block.txs == (good,) and rejected == [future]
    apply_block(chain, block)


# -- admission: the mempool refuses, and a block carrying it is invalid --------------
BadTx = Callable[[Keys], Transaction]


def _bad_signature(k: Keys) -> Transaction:
    tx = update_tx(k.devices[0], 1)
    return with_fields(tx, signature=bytes([tx.signature[0] ^ 1]) + tx.signature[1:])


def _oversized(k: Keys) -> Transaction:
    args = {**update_args(1), "padding": bytes(MAX_TX_BYTES)}
    return make_tx(k.devices[0], CHAIN_ID, 1, "fl", "submit_update", args, 1)


def _short_sender(k: Keys) -> Transaction:
    return with_fields(update_tx(k.devices[0], 1), sender=k.devices[0].public_key[:31])


# Each device 0 transaction below is checked against a chain where device 0 has used nonce 0.
BAD_TXS: dict[str, tuple[BadTx, str]] = {
    "bad signature": (_bad_signature, "bad signature"),
    "signature of another tx": (
        lambda k: with_fields(
            update_tx(k.devices[0], 1), signature=update_tx(k.devices[0], 2).signature
        ),
        "bad signature",
    ),
    "signed by another key": (
        lambda k: with_fields(update_tx(k.devices[0], 1), k.devices[1]),
        "bad signature",
    ),
    "replayed nonce": (lambda k: update_tx(k.devices[0], 0, round_=7), "replayed or stale nonce 0"),
    "future nonce": (lambda k: update_tx(k.devices[0], 2), "out-of-order nonce 2"),
    "wrong chain_id": (
        lambda k: make_tx(k.devices[0], "other-chain", 1, "fl", "submit_update", update_args(1), 1),
        "for chain 'other-chain'",
    ),
    "unknown contract": (
        lambda k: make_tx(k.devices[0], CHAIN_ID, 1, "nope", "submit_update", {}, 1),
        "unknown contract 'nope'",
    ),
    "unknown method": (
        lambda k: make_tx(k.devices[0], CHAIN_ID, 1, "fl", "mint", {}, 1),
        "unknown method 'mint'",
    ),
    "oversized": (_oversized, f"over the {MAX_TX_BYTES}-byte limit"),
    "malformed payload": (
        lambda k: with_fields(update_tx(k.devices[0], 1), k.devices[0], payload={"contract": "fl"}),
        "bad call payload",
    ),
    "short sender key": (_short_sender, "32-byte"),
    "unknown kind": (
        lambda k: with_fields(update_tx(k.devices[0], 1), k.devices[0], kind="deploy"),
        "unknown transaction kind",
    ),
    "negative timestamp": (
        lambda k: with_fields(update_tx(k.devices[0], 1), k.devices[0], timestamp=-1),
        "non-negative",
    ),
}


@pytest.fixture
def chain1(chain: ChainState, keys: Keys) -> ChainState:
    """The chain after block 1, in which device 0 used nonce 0."""
    block, _ = propose_block(
        chain, [update_tx(keys.devices[0], 0)], keys.validator, chain.head.timestamp + 1
    )
    apply_block(chain, block)
    return chain


@pytest.mark.parametrize("case", BAD_TXS, ids=list(BAD_TXS))
def test_mempool_rejects(case: str, chain1: ChainState, keys: Keys) -> None:
    build, reason = BAD_TXS[case]
    before = snapshot(chain1)
    pool = Mempool(CHAIN_ID)
    pool.add(update_tx(keys.devices[1], 0), chain1.state)  # control: a good tx is admitted
    with pytest.raises(InvalidTransaction, match=reason):
        pool.add(build(keys), chain1.state)
    assert len(pool) == 1
    assert snapshot(chain1) == before
    assert account_nonce(chain1.state, keys.devices[0].address) == 1


@pytest.mark.parametrize("case", BAD_TXS, ids=list(BAD_TXS))
def test_block_with_inadmissible_tx_is_invalid(case: str, chain1: ChainState, keys: Keys) -> None:
    """A valid tx followed by a bad one: the whole block is refused, the first tx's writes too."""
    build, reason = BAD_TXS[case]
    before = snapshot(chain1)
    block = forge_block(chain1, [update_tx(keys.devices[1], 0), build(keys)], keys.validator)
    with pytest.raises(InvalidBlock, match=f"block 2, transaction 1: .*{reason}"):
        apply_block(chain1, block)
    assert snapshot(chain1) == before
    assert account_nonce(chain1.state, keys.devices[1].address) == 0


def test_mempool_counts_queued_nonces(chain: ChainState, keys: Keys) -> None:
    pool = Mempool(CHAIN_ID)
    d = keys.devices[0]
    pool.add(update_tx(d, 0), chain.state)
    pool.add(update_tx(d, 1), chain.state)
    with pytest.raises(InvalidTransaction, match="replayed or stale nonce 1"):
        pool.add(update_tx(d, 1, round_=9), chain.state)
    with pytest.raises(InvalidTransaction, match="already in the pool"):
        pool.add(update_tx(d, 0), chain.state)
    with pytest.raises(InvalidTransaction, match="out-of-order nonce 3"):
        pool.add(update_tx(d, 3), chain.state)
    block, _ = propose_block(chain, pool.select(10), keys.validator, 1)
    apply_block(chain, block)
    pool.remove(block.txs)
    assert len(pool) == 0
    pool.add(update_tx(d, 2), chain.state)


def test_decode_tx_rejects_malformed_bytes(keys: Keys) -> None:
    good = update_tx(keys.devices[0], 0)
    assert decode_tx(good.encode()) == good
    for junk in (
        b"",
        b"\xff",
        good.encode() + b"\x00",
        good.encode()[:-1],
        cbor.encode({"chain_id": CHAIN_ID}),
    ):
        with pytest.raises(InvalidTransaction, match="malformed transaction"):
            decode_tx(junk)


def test_decode_tx_refuses_oversized_bytes_before_parsing() -> None:
    with pytest.raises(InvalidTransaction, match=f"over the {MAX_TX_BYTES}-byte limit"):
        decode_tx(b"\xa0" * (MAX_TX_BYTES + 1))


def test_mempool_is_bounded(chain: ChainState, keys: Keys) -> None:
    pool = Mempool(CHAIN_ID, max_txs=2)
    pool.add(update_tx(keys.devices[0], 0), chain.state)
    pool.add(update_tx(keys.devices[1], 0), chain.state)
    with pytest.raises(InvalidTransaction, match="mempool is full"):
        pool.add(update_tx(keys.devices[2], 0), chain.state)
    assert len(pool) == 2
    tx = update_tx(keys.devices[0], 0)
    small = Mempool(CHAIN_ID, max_bytes=len(tx.encode()) + 10)
    small.add(tx, chain.state)
    with pytest.raises(InvalidTransaction, match="mempool is full"):
        small.add(update_tx(keys.devices[1], 0), chain.state)


def test_mempool_prune_drops_consumed_nonces(chain: ChainState, keys: Keys) -> None:
    pool = Mempool(CHAIN_ID)
    tx = update_tx(keys.devices[0], 0)
    pool.add(tx, chain.state)
    block, _ = propose_block(chain, [tx], keys.validator, 1)
    apply_block(chain, block)
    pool.prune(chain.state)
    assert tx.tx_hash not in pool and len(pool) == 0


# -- contract failure: a valid tx with a failed receipt ------------------------------
def test_contract_failure_keeps_nonce_and_rolls_back_writes(chain: ChainState, keys: Keys) -> None:
    """Duplicate submit_update for a round: failed receipt, nonce consumed, no contract writes."""
    d = keys.devices[0]
    first, dup = update_tx(d, 0, round_=3), update_tx(d, 1, round_=3, tag="other")
    block, rejected = propose_block(chain, [first, dup], keys.validator, 1)
    assert rejected == [] and len(block.txs) == 2
    receipts = apply_block(chain, block)
    assert receipts[0].success and receipts[0].error == ""
    assert not receipts[1].success
    assert "already submitted an update for the round" in receipts[1].error
    assert receipts[1].result is None
    assert account_nonce(chain.state, d.address) == 2
    assert chain.state.get(f"c/fl/update_tx/{dup.tx_hash.hex()}".encode()) is None
    record = stored(chain.state, f"c/fl/update/3/{d.address.hex()}".encode())
    assert record["tx"] == first.tx_hash


@pytest.fixture
def scratch_contract(monkeypatch: pytest.MonkeyPatch) -> Contract:
    """A test-only contract whose ``write_then`` method writes, then fails or not (the fl
    methods check before they write, so they cannot show a partial write being undone)."""
    contract = Contract("scratch")

    @contract.method
    def write_then(ctx: Context, args: Any) -> Any:
        ctx.put("first", args["value"])
        ctx.put(f"by_value/{args['value']}", 1)
        if args["fail"] == "require":
            ctx.require(False, "asked to fail after writing")
        if args["fail"] == "unencodable":
            return 1.5  # results must be encodable: a float is not
        return {"ok": True}

    monkeypatch.setitem(REGISTRY, contract.name, contract)
    return contract


@pytest.mark.parametrize(
    "fail, reason", [("require", "asked to fail after writing"), ("unencodable", "float")]
)
def test_contract_failure_rolls_back_its_own_writes(
    chain: ChainState, keys: Keys, scratch_contract: Contract, fail: str, reason: str
) -> None:
    """STYLE principle 2: a failed call keeps only its nonce; earlier calls in the block keep theirs."""
    d = keys.devices[0]
    ok = make_tx(d, CHAIN_ID, 0, "scratch", "write_then", {"value": 1, "fail": "no"}, 1)
    bad = make_tx(d, CHAIN_ID, 1, "scratch", "write_then", {"value": 2, "fail": fail}, 1)
    block, rejected = propose_block(chain, [ok, bad], keys.validator, 1)
    assert rejected == []
    receipts = apply_block(chain, block)
    assert receipts[0].success and receipts[0].result == {"ok": True}
    assert not receipts[1].success and reason in receipts[1].error and receipts[1].result is None
    assert stored(chain.state, b"c/scratch/first") == 1
    assert chain.state.get(b"c/scratch/by_value/1") is not None
    assert chain.state.get(b"c/scratch/by_value/2") is None
    assert account_nonce(chain.state, d.address) == 2
    assert chain.state.root() == block.header.state_root


def test_failed_receipt_is_what_followers_compute(chain: ChainState, keys: Keys) -> None:
    """The receipts root commits to failures too, so a proposer cannot flip success."""
    d = keys.devices[0]
    block, _ = propose_block(
        chain, [update_tx(d, 0, round_=3), update_tx(d, 1, round_=3)], keys.validator, 1
    )
    flipped = Receipt(block.txs[1].tx_hash, True, "", None)
    good = apply_block(ChainState.from_genesis(chain.genesis), block)
    forged = sign_header(
        block.header, keys.validator, receipts_root=receipts_root([good[0], flipped])
    )
    with pytest.raises(InvalidBlock, match="receipts root"):
        apply_block(chain, Block(forged, block.txs))


# -- tampered blocks -------------------------------------------------------------------
def _retamper(**changes: Any) -> Callable[[Block, Keys, ChainState], Block]:
    return lambda b, k, c: Block(sign_header(b.header, k.validator, **changes), b.txs)


TAMPERED: dict[str, tuple[Callable[[Block, Keys, ChainState], Block], str]] = {
    "bad prev_hash": (_retamper(prev_hash=h32("elsewhere")), "does not link"),
    "wrong height": (_retamper(height=2), "height 2 does not follow head 0"),
    "wrong chain id": (_retamper(chain_id="sub-2"), "is for chain 'sub-2'"),
    "older than parent": (_retamper(timestamp=0), "older than its parent"),
    "bad proposer signature": (
        lambda b, k, c: Block(dataclasses.replace(b.header, signature=bytes(64)), b.txs),
        "bad proposer signature",
    ),
    "signature over other header": (
        lambda b, k, c: Block(dataclasses.replace(b.header, state_root=h32("x")), b.txs),
        "bad proposer signature",
    ),
    "non-validator proposer": (
        lambda b, k, c: Block(
            sign_header(b.header, k.outsider, proposer=k.outsider.public_key), b.txs
        ),
        "not a validator",
    ),
    "tx_root mismatch": (_retamper(tx_root=h32("root")), "tx root"),
    "txs reordered": (lambda b, k, c: Block(b.header, (b.txs[1], b.txs[0])), "tx root"),
    "state_root mismatch": (_retamper(state_root=h32("state")), "state root"),
    "receipts_root mismatch": (_retamper(receipts_root=h32("receipts")), "receipts root"),
    "tx_count mismatch": (_retamper(tx_count=3), "holds 2 transactions, header says 3"),
    "tx dropped": (
        lambda b, k, c: Block(b.header, b.txs[:1]),
        "holds 1 transactions, header says 2",
    ),
}


@pytest.mark.parametrize("case", TAMPERED, ids=list(TAMPERED))
def test_tampered_block_is_invalid(case: str, chain: ChainState, keys: Keys) -> None:
    tamper, reason = TAMPERED[case]
    txs = [update_tx(keys.devices[0], 0), update_tx(keys.devices[1], 0)]
    block, _ = propose_block(chain, txs, keys.validator, chain.head.timestamp + 1)
    before = snapshot(chain)
    with pytest.raises(InvalidBlock, match=reason):
        apply_block(chain, tamper(block, keys, chain))
    assert snapshot(chain) == before
    apply_block(chain, block)  # control: the untampered block is fine
    assert chain.height == 1


def test_block_over_the_byte_limit_is_invalid(chain: ChainState, keys: Keys) -> None:
    """A byzantine proposer's block of 135 near-64 KiB txs (> MAX_BLOCK_BYTES) must be refused."""
    d = keys.devices[0]
    txs = [
        make_tx(d, CHAIN_ID, n, "fl", "submit_update", {**update_args(n), "pad": bytes(65_000)}, 1)
        for n in range(135)
    ]
    assert sum(len(tx.encode()) for tx in txs) > MAX_BLOCK_BYTES
    dry = ChainState(chain.genesis, chain.head, chain.state.copy())
    receipts = [execute_tx(dry.state, CHAIN_ID, tx, 1, chain.head.timestamp + 1) for tx in txs]
    block = forge_block(chain, txs, keys.validator)
    block = Block(
        sign_header(
            block.header,
            keys.validator,
            receipts_root=receipts_root(receipts),
            state_root=dry.state.root(),
        ),
        block.txs,
    )
    with pytest.raises(InvalidBlock, match="bytes"):
        apply_block(chain, block)


# -- fl contract ---------------------------------------------------------------------
def publish_args(
    cloud: SigningKey,
    round_: int,
    signer: SigningKey | None = None,
    auth_round: int | None = None,
    parents: list[Any] | None = None,
) -> dict[str, Any]:
    model, program = h32(f"global{round_}"), h32("program")
    msg = fl.authenticator_message(model, program, round_ if auth_round is None else auth_round)
    return {
        "round": round_,
        "model": model,
        "program": program,
        "authenticator": (signer or cloud).sign(Domain.AUTHENTICATOR, msg),
        "parents": parents or [],
        "metrics": {"accuracy_ppm": 912_000},
    }


def task_args(program: bytes | None = None) -> dict[str, Any]:
    """``fl.open_task`` arguments for the program that :func:`publish_args` uses."""
    return {"program": program or h32("program"), "model": "digits-mlp", "dataset": "digits",
            "test_set": h32("test set"), "test_samples": 360, "device_rounds": 1, "readers": [], "config": {}}


def test_publish_model_with_good_authenticator(chain: ChainState, keys: Keys) -> None:
    """seed 004 §III-A: the owner signs H(model ‖ program ‖ round)."""
    assert call(chain, keys, keys.cloud, "open_task", task_args()).success
    receipt = call(chain, keys, keys.cloud, "publish_model", publish_args(keys.cloud, 0))
    assert receipt.success, receipt.error
    assert stored(chain.state, b"c/fl/latest_round") == 0


@pytest.mark.parametrize(
    "signer, auth_round",
    [("device", None), ("cloud", 1)],
    ids=["signed by another key", "signed for another round"],
)
def test_publish_model_with_bad_authenticator_fails(
    chain: ChainState, keys: Keys, signer: str, auth_round: int | None
) -> None:
    key = keys.devices[0] if signer == "device" else keys.cloud
    assert call(chain, keys, keys.cloud, "open_task", task_args()).success
    receipt = call(
        chain, keys, keys.cloud, "publish_model", publish_args(keys.cloud, 0, key, auth_round)
    )
    assert not receipt.success
    assert "authenticator does not verify" in receipt.error
    assert chain.state.get(b"c/fl/latest_round") is None


def test_device_cannot_publish_model(chain: ChainState, keys: Keys) -> None:
    d = keys.devices[0]
    receipt = call(chain, keys, d, "publish_model", publish_args(d, 0))
    assert not receipt.success
    assert "role 'device' may not do this (needs cloud)" in receipt.error
    assert account_nonce(chain.state, d.address) == 1


def test_unregistered_sender_cannot_submit(chain: ChainState, keys: Keys) -> None:
    receipt = call(chain, keys, keys.outsider, "submit_update", update_args(0))
    assert not receipt.success and "not a registered identity" in receipt.error


def test_edge_cannot_submit_update(chain: ChainState, keys: Keys) -> None:
    receipt = call(chain, keys, keys.validator, "submit_update", update_args(0))
    assert not receipt.success and "role 'edge'" in receipt.error


def _submit_round(chain: ChainState, keys: Keys, round_: int) -> list[bytes]:
    txs = [
        update_tx(
            d,
            account_nonce(chain.state, d.address),
            round_,
            samples=10 + i,
            base=h32("b"),
            tag=str(i),
        )
        for i, d in enumerate(keys.devices)
    ]
    block, _ = propose_block(chain, txs, keys.validator, chain.head.timestamp + 1)
    assert all(r.success for r in apply_block(chain, block))
    return [tx.tx_hash for tx in txs]


def aggregate_args(round_: int, updates: list[bytes], samples: int) -> dict[str, Any]:
    return {
        "round": round_,
        "base": h32("b"),
        "model": h32("agg"),
        "samples": samples,
        "updates": updates,
    }


def test_record_aggregate_happy_path(chain: ChainState, keys: Keys) -> None:
    updates = _submit_round(chain, keys, 0)
    receipt = call(
        chain, keys, keys.validator, "record_aggregate", aggregate_args(0, updates, 10 + 11 + 12)
    )
    assert receipt.success, receipt.error
    assert stored(chain.state, b"c/fl/aggregate/0")["updates"] == updates


def test_record_aggregate_with_unknown_update_fails(chain: ChainState, keys: Keys) -> None:
    updates = _submit_round(chain, keys, 0)
    bogus = h32("never submitted")
    receipt = call(
        chain, keys, keys.validator, "record_aggregate", aggregate_args(0, [*updates, bogus], 33)
    )
    assert not receipt.success and f"update {bogus.hex()} is not on this chain" in receipt.error
    assert chain.state.get(b"c/fl/aggregate/0") is None


def test_record_aggregate_samples_mismatch_fails(chain: ChainState, keys: Keys) -> None:
    updates = _submit_round(chain, keys, 0)
    receipt = call(chain, keys, keys.validator, "record_aggregate", aggregate_args(0, updates, 34))
    assert not receipt.success and "samples 34 do not match the updates' total 33" in receipt.error


def test_record_aggregate_rejects_other_round_and_duplicates(chain: ChainState, keys: Keys) -> None:
    updates = _submit_round(chain, keys, 0)
    receipt = call(chain, keys, keys.validator, "record_aggregate", aggregate_args(1, updates, 33))
    assert not receipt.success and "another round or base" in receipt.error
    receipt = call(
        chain,
        keys,
        keys.validator,
        "record_aggregate",
        aggregate_args(0, updates + updates[:1], 43),
    )
    assert not receipt.success and "listed twice" in receipt.error


def test_device_cannot_record_aggregate(chain: ChainState, keys: Keys) -> None:
    updates = _submit_round(chain, keys, 0)
    receipt = call(chain, keys, keys.devices[0], "record_aggregate", aggregate_args(0, updates, 33))
    assert not receipt.success and "needs edge" in receipt.error


# -- light-client proofs ---------------------------------------------------------------
@pytest.fixture
def proven(chain: ChainState, keys: Keys) -> tuple[Block, list[Receipt]]:
    """Block 1 with three transactions (an unbalanced tree, RFC 6962 §2.1) and its receipts."""
    txs = [update_tx(d, 0, tag=str(i)) for i, d in enumerate(keys.devices)]
    block, _ = propose_block(chain, txs, keys.validator, 5)
    return block, apply_block(chain, block)


@pytest.mark.parametrize("index", [0, 1, 2])
def test_tx_proof_accepts_a_good_proof(
    proven: tuple[Block, list[Receipt]], genesis: Genesis, index: int
) -> None:
    """seed 002 §4.2.3 blockchain receipts; RFC 9162 §2.1.3.2 inclusion verification."""
    block, receipts = proven
    proof = TxProof.from_json(make_tx_proof(block, receipts, index).to_json())
    tx, receipt, header = verify_tx_proof(proof, genesis)
    assert tx == block.txs[index] and receipt == receipts[index] and header == block.header


def test_tx_proof_rejects_a_tampered_tx(
    proven: tuple[Block, list[Receipt]], genesis: Genesis
) -> None:
    block, receipts = proven
    proof = make_tx_proof(block, receipts, 1)
    model = update_args(0, tag="1")["model"]
    at = proof.tx.find(model)
    assert at > 0
    tampered = proof.tx[:at] + bytes([proof.tx[at] ^ 1]) + proof.tx[at + 1 :]
    with pytest.raises(VerificationFailed, match="not in block 1"):
        verify_tx_proof(dataclasses.replace(proof, tx=tampered), genesis)
    other = make_tx_proof(block, receipts, 2)  # a real tx of the block, at the wrong index
    with pytest.raises(VerificationFailed, match="not in block 1"):
        verify_tx_proof(dataclasses.replace(proof, tx=other.tx), genesis)


def test_tx_proof_rejects_a_tampered_header(
    proven: tuple[Block, list[Receipt]], genesis: Genesis
) -> None:
    block, receipts = proven
    proof = make_tx_proof(block, receipts, 0)
    header = dataclasses.replace(block.header, state_root=h32("forged"))
    with pytest.raises(VerificationFailed, match="bad proposer signature"):
        verify_tx_proof(dataclasses.replace(proof, header=header.encode()), genesis)
    with pytest.raises(VerificationFailed, match="does not decode"):
        verify_tx_proof(dataclasses.replace(proof, header=proof.header[:-1]), genesis)


def test_tx_proof_rejects_a_wrong_tree_size(
    proven: tuple[Block, list[Receipt]], genesis: Genesis
) -> None:
    """RFC 9162 proofs carry the tree size; it must be the header's tx_count."""
    block, receipts = proven
    proof = make_tx_proof(block, receipts, 2)
    for size in (2, 4):
        wrong = InclusionProof(index=proof.tx_proof.index, tree_size=size, path=proof.tx_proof.path)
        with pytest.raises(VerificationFailed, match=f"proof is for {size} leaves; block 1 has 3"):
            verify_tx_proof(dataclasses.replace(proof, tx_proof=wrong), genesis)


def test_tx_proof_rejects_a_receipt_of_another_tx(
    proven: tuple[Block, list[Receipt]], genesis: Genesis
) -> None:
    block, receipts = proven
    p0, p1 = make_tx_proof(block, receipts, 0), make_tx_proof(block, receipts, 1)
    with pytest.raises(VerificationFailed, match="another transaction"):
        verify_tx_proof(
            dataclasses.replace(p0, receipt=p1.receipt, receipt_proof=p1.receipt_proof), genesis
        )


def test_tx_proof_rejects_a_header_from_a_non_validator(
    chain: ChainState, keys: Keys, genesis: Genesis
) -> None:
    """Only the genesis validators' signatures make a header trustworthy (seed 000 §III, permissioned)."""
    block, _ = propose_block(chain, [update_tx(keys.devices[0], 0)], keys.outsider, 5)
    receipts = [Receipt(block.txs[0].tx_hash, True, "", None)]
    assert receipts_root(receipts) == block.header.receipts_root
    with pytest.raises(VerificationFailed, match="proposed by a non-validator"):
        verify_tx_proof(make_tx_proof(block, receipts, 0), genesis)


def test_verify_header_chain(chain: ChainState, keys: Keys, genesis: Genesis) -> None:
    headers = [chain.head]
    for n in range(3):
        block, _ = propose_block(chain, [update_tx(keys.devices[0], n)], keys.validator, n + 10)
        apply_block(chain, block)
        headers.append(block.header)
    verify_header_chain(headers, genesis)
    with pytest.raises(VerificationFailed, match="block 2 does not link to block 1"):
        verify_header_chain(
            [*headers[:2], sign_header(headers[2], keys.validator, prev_hash=h32("x")), headers[3]],
            genesis,
        )
    with pytest.raises(VerificationFailed, match="header 1 has height 2"):
        verify_header_chain([headers[0], headers[2]], genesis)
    with pytest.raises(VerificationFailed, match="genesis header does not match"):
        verify_header_chain([dataclasses.replace(headers[0], timestamp=1), *headers[1:]], genesis)


def test_block_decode_is_strict(proven: tuple[Block, list[Receipt]]) -> None:
    block, _ = proven
    assert Block.decode(block.encode()) == block
    with pytest.raises(DecodeError):
        Block.decode(block.encode() + b"\x00")
