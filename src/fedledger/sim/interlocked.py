"""Chains built block by block in one process, and a sub-chain anchored on a main chain.

:class:`ChainBuilder` signs calls (tracking nonces), proposes and applies
blocks, and makes accumulator witnesses; tests and benchmarks use it to build
inter-locked chains without processes. :func:`build` makes a sub-chain of
``sub_blocks`` blocks, a quorum-signed Type-II anchor of its head in a
main-chain block and more main blocks after it, and returns a Protocol 1 proof
(seed 000 §IV-B) for a transaction of the sub-chain with the trusted
main-chain value.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fedledger.audit.crosschain import CrossChainProof, Trusted
from fedledger.crypto.hashing import tagged_hash
from fedledger.crypto.keys import SigningKey
from fedledger.ledger.accumulator import block_witness, start_value
from fedledger.ledger.block import Block, BlockHeader, Receipt
from fedledger.ledger.chain import ChainState, apply_block, propose_block
from fedledger.ledger.genesis import Genesis, Identity
from fedledger.ledger.interlock import make_anchor, sign_anchor
from fedledger.ledger.proofs import TxProof, make_tx_proof
from fedledger.ledger.tx import make_tx

T0 = 1_700_000_000_000
Call = tuple[SigningKey, str, str, Any]  # sender, contract, method, args


@dataclass
class ChainBuilder:
    state: ChainState
    blocks: list[Block] = field(default_factory=list)
    receipts: list[list[Receipt]] = field(default_factory=list)
    nonces: dict[bytes, int] = field(default_factory=dict)

    @classmethod
    def from_genesis(cls, genesis: Genesis) -> ChainBuilder:
        return cls(ChainState.from_genesis(genesis))

    def add(self, signer: SigningKey, calls: list[Call]) -> Block:
        """Sign ``calls`` with the next nonces, and propose and apply a block of them signed by ``signer``."""
        txs = []
        for sender, contract, method, args in calls:
            n = self.nonces.get(sender.public_key, 0)
            self.nonces[sender.public_key] = n + 1
            txs.append(make_tx(sender, self.state.chain_id, n, contract, method, args, T0))
        block, rejected = propose_block(self.state, txs, signer, T0 + len(self.blocks) + 1)
        if rejected:
            raise ValueError(f"{len(rejected)} calls were not admissible")
        self.receipts.append(apply_block(self.state, block))
        self.blocks.append(block)
        return block

    def header(self, height: int) -> BlockHeader:
        return self.state.genesis.block().header if height == 0 else self.blocks[height - 1].header

    def witness(self, height: int, at: int) -> bytes:
        """Membership witness of block ``height`` in the accumulator of block ``at``."""
        params = self.state.acc_params
        previous = start_value(params) if height == 0 else self.header(height - 1).accumulator
        return block_witness(params, previous, (self.header(h) for h in range(height + 1, at + 1)))

    def proof(self, height: int, index: int = 0) -> TxProof:
        return make_tx_proof(self.blocks[height - 1], self.receipts[height - 1], index)


def _key(label: str) -> SigningKey:
    return SigningKey.from_seed(tagged_hash("fedledger/sim/interlocked", label.encode()))


def _genesis(chain_id: str, role: str, keys: list[SigningKey], peers: dict[str, list[SigningKey]],
             client: SigningKey) -> Genesis:
    interlock = {"role": role, "period": 1, "peers": {c: [k.public_key for k in ks] for c, ks in peers.items()}}
    return Genesis(chain_id, T0, tuple(k.public_key for k in keys),
                   (Identity(client.public_key, "device", "client", chain_id),), {"interlock": interlock})


def build(sub_blocks: int = 8, main_after: int = 4) -> tuple[CrossChainProof, Trusted, TxProof, Genesis]:
    """Protocol 1 proof for the transaction in sub-chain block 1, the trusted main value, and (for a
    baseline) the same transaction's plain inclusion proof with the sub-chain genesis."""
    main_keys, sub_keys = [_key(f"main-{i}") for i in range(4)], [_key(f"sub-{i}") for i in range(4)]
    client, relayer = _key("client"), _key("relayer")
    sub = ChainBuilder.from_genesis(_genesis("sub-1", "sub", sub_keys, {"main": main_keys}, client))
    for h in range(1, sub_blocks + 1):
        sub.add(sub_keys[h % 4], [(client, "records", "put", {"key": f"k{h}", "value": bytes(32)})])
    head = sub.blocks[-1].header
    anchor = make_anchor(head, head, sub.state.acc_params.fingerprint())
    args = {"anchor": anchor.to_obj(), "signatures": [[k.public_key, sign_anchor(k, anchor)] for k in sub_keys[:3]]}
    main = ChainBuilder.from_genesis(_genesis("main", "main", main_keys, {"sub-1": sub_keys}, client))
    main.add(main_keys[0], [(relayer, "interlock", "anchor_subchain", args)])
    for i in range(main_after):
        main.add(main_keys[(i + 1) % 4], [(client, "records", "put", {"key": f"m{i}", "value": b""})])
    top = main.state.height
    proof = CrossChainProof("sub-1", sub.proof(1), sub.witness(1, sub_blocks), main.proof(1), main.witness(1, top))
    trusted = Trusted("main", top, main.state.head.accumulator, main.state.acc_params)
    return proof, trusted, sub.proof(1), sub.state.genesis
