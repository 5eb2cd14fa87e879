"""A validator's side of inter-locking: sign anchors of finalized blocks, gather a quorum.

Every ``period`` finalized blocks each validator signs the :class:`Anchor` of
that block (seed 000 §III Type-II/III) and broadcasts ``attest`` =
``[anchor, signature]`` to its chain's peers. Signatures are kept only for an
anchor equal to the one this replica derives from its own finalized block, so
a faulty peer cannot make it relay something else; signatures for heights this
replica has not finalized yet wait (bounded) until it has. Once more than two
thirds of the validators signed, :meth:`AnchorCollector.latest` hands out the
certificate a relayer submits to the other chain. Each validator repeats its
latest signature now and then, because messages can be lost.

No I/O: the chain node feeds it finalized headers and peer messages. Below it,
the two queries cross-chain proofs need: a block's accumulator witness from the
store, and the anchor of a sub-chain that covers a height.
"""

from __future__ import annotations

from typing import Any

from fedledger.consensus.microchain.params import MicrochainParams
from fedledger.contracts.base import read_state
from fedledger.crypto.accumulator import AccumulatorParams
from fedledger.crypto.keys import Domain, SigningKey, is_valid
from fedledger.errors import NotFound, UsageError
from fedledger.ledger.accumulator import batch_proof, block_witness, start_value
from fedledger.ledger.block import BlockHeader
from fedledger.ledger.chain import ChainState
from fedledger.ledger.interlock import Anchor, InterlockConfig, make_anchor, quorum, sign_anchor
from fedledger.ledger.state import State
from fedledger.storage.chainstore import ChainStore

KEEP = 16  # anchored heights remembered
PENDING = 64  # early signatures held per chain


def checkpoint_height(chain: ChainState, height: int) -> int:
    """The last finalized checkpoint at or below ``height``: every block for BFT/dev, epoch boundaries for VCF."""
    if chain.engine != "microchain":
        return height
    r = MicrochainParams.from_obj(chain.genesis.params.get("microchain")).epoch_blocks
    return height - height % r


Certificate = tuple[Anchor, list[list[bytes]]]


class AnchorCollector:
    def __init__(self, chain: ChainState, key: SigningKey) -> None:
        self.chain = chain
        self.config = InterlockConfig.from_params(chain.genesis.params)
        self.validators = set(chain.genesis.validators)
        self.key = key if key.public_key in self.validators else None
        self.params = chain.acc_params.fingerprint()
        self.anchors: dict[int, Anchor] = {}
        self.signatures: dict[int, dict[bytes, bytes]] = {}
        self.pending: list[tuple[Anchor, bytes, bytes]] = []
        self.mine: Any = None  # the latest ``attest`` body this validator signed

    @property
    def enabled(self) -> bool:
        return self.config.period > 0

    def finalized(self, header: BlockHeader, checkpoint: BlockHeader) -> Any:
        """A block was finalized; returns the ``attest`` body to broadcast, if this validator signs it."""
        if not self.config.due(header.height):
            return None
        anchor = make_anchor(header, checkpoint, self.params)
        self.anchors[header.height] = anchor
        self.signatures.setdefault(header.height, {})
        for old in sorted(self.anchors)[:-KEEP]:
            self.anchors.pop(old)
            self.signatures.pop(old, None)
        early, self.pending = self.pending, []
        for a, pk, sig in early:
            self._add(a, pk, sig)
        if self.key is None:
            return None
        sig = sign_anchor(self.key, anchor)
        self._add(anchor, self.key.public_key, sig)
        self.mine = [anchor.to_obj(), sig]
        return self.mine

    def receive(self, peer: bytes, body: Any) -> None:
        """A peer's ``attest``; raises ``DecodeError``/``TypeError``/``ValueError`` on malformed input."""
        obj, sig = body
        anchor = Anchor.from_obj(obj)
        if peer not in self.validators or not isinstance(sig, bytes):
            return
        if not is_valid(peer, Domain.INTERLOCK, anchor.signing_bytes(), sig):
            return
        self._add(anchor, peer, sig)

    def _add(self, anchor: Anchor, pk: bytes, sig: bytes) -> None:
        mine = self.anchors.get(anchor.height)
        if mine is None:
            if anchor.height > self.chain.height and len(self.pending) < PENDING:
                self.pending.append((anchor, pk, sig))
            return
        if anchor == mine:
            self.signatures[anchor.height][pk] = sig

    def latest(self) -> Certificate | None:
        """The highest anchor with a quorum of signatures, and the signatures."""
        need = quorum(len(self.validators))
        for height in sorted(self.anchors, reverse=True):
            sigs = self.signatures.get(height, {})
            if len(sigs) >= need:
                return self.anchors[height], [[pk, sig] for pk, sig in sorted(sigs.items())]
        return None


MAX_BATCH = 1024
MAX_WITNESS_SPAN = 20_000  # blocks a witness may span (the proof costs one exponent per block)


def witness_from_store(store: ChainStore, params: AccumulatorParams, height: int, at: int) -> bytes:
    """ProofGen for the finalized block ``height`` against the accumulator in header ``at``."""
    if not 0 <= height <= at <= store.head_height():
        raise UsageError(f"need 0 <= height <= at <= {store.head_height()}, got height {height}, at {at}")
    if at - height > MAX_WITNESS_SPAN:
        raise UsageError(f"a witness spans at most {MAX_WITNESS_SPAN} blocks")
    previous = start_value(params) if height == 0 else store.header(height - 1).accumulator
    return block_witness(params, previous, (store.header(h) for h in range(height + 1, at + 1)))


def batch_from_store(store: ChainStore, params: AccumulatorParams, heights: list[int],
                     at: int) -> tuple[bytes, bytes]:
    """Batch ProofGen (seed 000 §IV-D) for finalized blocks ``heights`` against header ``at``."""
    if not heights or not 0 <= heights[0] <= heights[-1] <= at <= store.head_height():
        raise UsageError(f"need heights within 0..at and at <= {store.head_height()}")
    if at > MAX_WITNESS_SPAN or len(heights) > MAX_BATCH:
        raise UsageError(f"batch proofs cover chains up to {MAX_WITNESS_SPAN} blocks and {MAX_BATCH} members")
    return batch_proof(params, [store.header(h) for h in range(at + 1)], heights)


def anchor_covering(state: State, chain: str, covers: int, upto: int) -> dict[str, Any]:
    """The first anchor of ``chain`` at or above height ``covers`` recorded at main height <= ``upto``."""
    def get(key: str) -> Any:
        return read_state(state, "interlock", key)

    count = get(f"count/{chain}") or 0
    lo, hi = 0, count  # binary search over the increasing anchored heights
    while lo < hi:
        mid = (lo + hi) // 2
        if get(f"index/{chain}/{mid}") < covers:
            lo = mid + 1
        else:
            hi = mid
    if lo == count:
        raise NotFound(f"{chain!r} has no anchor at or above height {covers} yet")
    entry = get(f"anchor/{chain}/{get(f'index/{chain}/{lo}')}")
    if entry["anchored_at"] > upto:
        raise NotFound(f"{chain!r} was first anchored above height {covers} at main height "
                       f"{entry['anchored_at']}, after {upto}")
    return dict(entry)
