"""State transitions: validate and apply transactions and blocks. Pure, no I/O.

``apply_block(chain, block)`` either applies the whole block (state, head) or
raises :class:`InvalidBlock` and leaves ``chain`` exactly as it was. A block
is invalid if any transaction in it fails the admission checks (signature,
chain, nonce, known contract and method); a transaction whose *contract call*
fails is valid: it consumes its nonce and keeps a failed receipt, and the
call's writes are rolled back.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from fedledger import contracts
from fedledger.codec import cbor
from fedledger.crypto.accumulator import AccumulatorParams
from fedledger.crypto.keys import Domain, SigningKey, is_valid
from fedledger.crypto.merkle import merkle_root
from fedledger.errors import ContractError, DecodeError, InvalidBlock, InvalidTransaction
from fedledger.ledger.accumulator import chain_params, next_value
from fedledger.ledger.block import MAX_BLOCK_BYTES, MAX_BLOCK_TXS, Block, BlockHeader, Receipt
from fedledger.ledger.genesis import Genesis
from fedledger.ledger.state import State
from fedledger.ledger.tx import Call, Transaction, check_tx_static

ProposerCheck = Callable[[BlockHeader, "ChainState"], None]


@dataclass
class ChainState:
    """Everything needed to validate the next block: genesis, head and state."""

    genesis: Genesis
    head: BlockHeader
    state: State

    @classmethod
    def from_genesis(cls, genesis: Genesis) -> ChainState:
        return cls(genesis=genesis, head=genesis.block().header, state=genesis.initial_state())

    @property
    def chain_id(self) -> str:
        return self.genesis.chain_id

    @property
    def height(self) -> int:
        return self.head.height

    @property
    def acc_params(self) -> AccumulatorParams:
        return chain_params(self.genesis.params)

    @property
    def engine(self) -> str:
        return str(self.genesis.params.get("engine", "dev"))


def finish_block(chain: ChainState, height: int, prev_hash: bytes, proposer: bytes, consensus: object) -> None:
    """Run the consensus engine's state rules at the end of a block (credit, committee, ...)."""
    hook = contracts.BLOCK_HOOKS.get(chain.engine)
    if hook is not None:
        hook(chain.state, chain.chain_id, height, prev_hash, proposer, consensus)


def nonce_key(address: bytes) -> bytes:
    return b"n/" + address


def account_nonce(state: State, address: bytes) -> int:
    """The next nonce the account must use."""
    raw = state.get(nonce_key(address))
    return 0 if raw is None else int.from_bytes(raw, "big")


def check_admission(tx: Transaction, chain_id: str, expected_nonce: int) -> Call:
    """Admission checks: static checks, then the exact expected nonce, then a known method."""
    call = check_tx_static(tx, chain_id)
    if tx.nonce != expected_nonce:
        what = "replayed or stale" if tx.nonce < expected_nonce else "out-of-order"
        raise InvalidTransaction(f"{what} nonce {tx.nonce}: the account's next nonce is {expected_nonce}")
    if contracts.lookup(call.contract, call.method) is None:
        if call.contract not in contracts.REGISTRY:
            raise InvalidTransaction(f"unknown contract {call.contract!r}")
        raise InvalidTransaction(f"unknown method {call.method!r} of contract {call.contract!r}")
    return call


def validate_tx(state: State, chain_id: str, tx: Transaction) -> Call:
    """Admission checks against the current state."""
    return check_admission(tx, chain_id, account_nonce(state, tx.address))


def execute_tx(state: State, chain_id: str, tx: Transaction, height: int, timestamp: int) -> Receipt:
    """Validate and execute one transaction; contract failure rolls back its writes."""
    call = validate_tx(state, chain_id, tx)
    state.set(nonce_key(tx.address), (tx.nonce + 1).to_bytes(8, "big"))
    method = contracts.lookup(call.contract, call.method)
    assert method is not None
    ctx = contracts.Context(state, call.contract, chain_id, tx.sender, height, timestamp, tx.tx_hash)
    state.begin()
    try:
        result = method(ctx, call.args)
        cbor.encode(result)  # results must be encodable to be provable
    except (ContractError, DecodeError) as exc:
        state.rollback()
        return Receipt(tx.tx_hash, False, str(exc), None)
    except Exception as exc:  # bad arguments or a contract bug: deterministic, so safe to record
        state.rollback()
        return Receipt(tx.tx_hash, False, f"contract error: {type(exc).__name__}: {exc}", None)
    state.commit()
    return Receipt(tx.tx_hash, True, "", result)


def tx_root(txs: Iterable[Transaction]) -> bytes:
    return merkle_root([tx.encode() for tx in txs])


def receipts_root(receipts: Iterable[Receipt]) -> bytes:
    return merkle_root([r.encode() for r in receipts])


def validate_header(chain: ChainState, header: BlockHeader) -> None:
    """Link, height, time and proposer signature checks against the current head."""
    if header.chain_id != chain.chain_id:
        raise InvalidBlock(f"block is for chain {header.chain_id!r}, not {chain.chain_id!r}")
    if header.height != chain.height + 1:
        raise InvalidBlock(f"height {header.height} does not follow head {chain.height}")
    if header.prev_hash != chain.head.block_hash:
        raise InvalidBlock(f"block {header.height} does not link to the head's hash")
    if header.timestamp < chain.head.timestamp:
        raise InvalidBlock(f"block {header.height} is older than its parent")
    if header.proposer not in chain.genesis.validators:
        raise InvalidBlock(f"proposer of block {header.height} is not a validator of {chain.chain_id}")
    if not is_valid(header.proposer, Domain.BLOCK, header.signing_bytes(), header.signature):
        raise InvalidBlock(f"bad proposer signature on block {header.height}")


def apply_block(chain: ChainState, block: Block) -> list[Receipt]:
    """Validate and apply ``block``; on any failure ``chain`` is left unchanged."""
    header = block.header
    validate_header(chain, header)
    if len(block.txs) > MAX_BLOCK_TXS:
        raise InvalidBlock(f"block {header.height} has over {MAX_BLOCK_TXS} transactions")
    size = sum(len(tx.encode()) for tx in block.txs)
    if size > MAX_BLOCK_BYTES:
        raise InvalidBlock(f"block {header.height} is {size} bytes, over the {MAX_BLOCK_BYTES}-byte limit")
    if len(block.txs) != header.tx_count:
        raise InvalidBlock(f"block {header.height} holds {len(block.txs)} transactions, header says {header.tx_count}")
    if tx_root(block.txs) != header.tx_root:
        raise InvalidBlock(f"tx root of block {header.height} does not match its transactions")
    chain.state.begin()
    try:
        receipts = _execute_all(chain, block.txs, header.height, header.timestamp)
        finish_block(chain, header.height, header.prev_hash, header.proposer, header.consensus)
        if receipts_root(receipts) != header.receipts_root:
            raise InvalidBlock(f"receipts root of block {header.height} does not match execution")
        if chain.state.root() != header.state_root:
            raise InvalidBlock(f"state root of block {header.height} does not match execution")
        if header.accumulator != next_value(chain.acc_params, chain.head.accumulator, header):
            raise InvalidBlock(f"accumulator of block {header.height} does not extend its parent's")
    except BaseException:
        chain.state.rollback()
        raise
    chain.state.commit()
    chain.head = header
    return receipts


def _execute_all(chain: ChainState, txs: Iterable[Transaction], height: int, ts: int) -> list[Receipt]:
    receipts = []
    for i, tx in enumerate(txs):
        try:
            receipts.append(execute_tx(chain.state, chain.chain_id, tx, height, ts))
        except InvalidTransaction as exc:
            raise InvalidBlock(f"block {height}, transaction {i}: {exc}") from None
    return receipts


def propose_block(
    chain: ChainState,
    candidates: Iterable[Transaction],
    key: SigningKey,
    timestamp: int,
    consensus: object = None,
) -> tuple[Block, list[Transaction]]:
    """Build and sign the next block from ``candidates`` (a dry run: ``chain`` is unchanged).

    Candidates that fail admission against the evolving state are skipped and
    returned as the second element, so the caller can drop them from its mempool.
    """
    height = chain.height + 1
    ts = max(timestamp, chain.head.timestamp)
    included: list[Transaction] = []
    receipts: list[Receipt] = []
    rejected: list[Transaction] = []
    size = 0
    chain.state.begin()
    try:
        for tx in candidates:
            if len(included) >= MAX_BLOCK_TXS:
                break
            tx_size = len(tx.encode())
            if size + tx_size > MAX_BLOCK_BYTES:
                break
            chain.state.begin()
            try:
                receipts.append(execute_tx(chain.state, chain.chain_id, tx, height, ts))
            except InvalidTransaction:
                chain.state.rollback()
                rejected.append(tx)
                continue
            chain.state.commit()
            included.append(tx)
            size += tx_size
        finish_block(chain, height, chain.head.block_hash, key.public_key, consensus)
        state_root = chain.state.root()
    finally:
        chain.state.rollback()
    unsigned = BlockHeader(
        chain_id=chain.chain_id,
        height=height,
        prev_hash=chain.head.block_hash,
        tx_count=len(included),
        tx_root=tx_root(included),
        receipts_root=receipts_root(receipts),
        state_root=state_root,
        proposer=key.public_key,
        timestamp=ts,
        consensus=consensus,
        accumulator=b"",
        signature=b"",
    )
    unsigned = dataclasses.replace(unsigned, accumulator=next_value(chain.acc_params, chain.head.accumulator, unsigned))
    header = dataclasses.replace(unsigned, signature=key.sign(Domain.BLOCK, unsigned.signing_bytes()))
    return Block(header=header, txs=tuple(included)), rejected
