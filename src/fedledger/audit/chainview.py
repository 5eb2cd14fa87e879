"""A light client's view of one chain, trusting only its genesis document.

Everything a node returns is checked before use: headers are verified from
genesis (links and validator signatures), and every transaction comes with
Merkle audit paths into a header of that verified chain.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fedledger.crypto.keys import Domain, is_valid
from fedledger.errors import DecodeError, VerificationFailed
from fedledger.ledger.block import BlockHeader, Receipt
from fedledger.ledger.genesis import Genesis
from fedledger.ledger.proofs import TxProof, verify_header_chain, verify_tx_proof
from fedledger.ledger.tx import Call, Transaction
from fedledger.net.client import NodeClient


@dataclass(frozen=True)
class VerifiedTx:
    tx: Transaction
    receipt: Receipt
    header: BlockHeader
    call: Call
    proof: TxProof

    @property
    def args(self) -> dict[str, Any]:
        return self.call.args

    def where(self, chain_id: str) -> dict[str, Any]:
        """Where the record is: chain, transaction, block height and block hash (what its proof checked)."""
        return {"chain": chain_id, "tx": self.tx.tx_hash.hex(), "height": self.header.height,
                "block": self.header.block_hash.hex()}


class ChainView:
    def __init__(self, client: NodeClient, genesis: Genesis) -> None:
        self.client = client
        self.genesis = genesis
        self._headers: list[BlockHeader] = []
        self.txs_checked = 0

    @property
    def chain_id(self) -> str:
        return self.genesis.chain_id

    async def sync_headers(self) -> list[BlockHeader]:
        """Fetch and verify headers from where we stopped up to the node's head."""
        head = int((await self.client.status())["height"])
        if head >= len(self._headers):
            new = await self.client.headers(len(self._headers), head)
            candidate = self._headers + new
            verify_header_chain(candidate, self.genesis)
            self._headers = candidate
        return self._headers

    async def header_at(self, height: int) -> BlockHeader:
        if height >= len(self._headers):
            await self.sync_headers()
        if height >= len(self._headers):
            raise VerificationFailed(f"{self.chain_id} has no block at height {height}")
        return self._headers[height]

    async def verified_tx(self, tx_hash: bytes, *, contract: str, method: str | tuple[str, ...]) -> VerifiedTx:
        """A transaction proven to be in this chain, with a successful receipt, calling ``contract.method``
        (or one of several methods)."""
        proof = await self.client.tx_proof(tx_hash)
        tx, receipt, header = verify_tx_proof(proof, self.genesis)
        if tx.tx_hash != tx_hash:
            raise VerificationFailed(f"node returned a different transaction for {tx_hash.hex()}")
        if await self.header_at(header.height) != header:
            raise VerificationFailed(f"block {header.height} of {self.chain_id} is not on the verified chain")
        if not receipt.success:
            raise VerificationFailed(f"transaction {tx_hash.hex()} failed on chain: {receipt.error}")
        try:
            call = tx.call()
        except DecodeError as exc:
            raise VerificationFailed(f"transaction {tx_hash.hex()} is not a call: {exc}") from None
        methods = (method,) if isinstance(method, str) else method
        if call.contract != contract or call.method not in methods:
            raise VerificationFailed(
                f"transaction {tx_hash.hex()} calls {call.contract}.{call.method}, "
                f"expected {contract}.{'/'.join(methods)}"
            )
        self.txs_checked += 1
        return VerifiedTx(tx, receipt, header, call, proof)

    async def verified_record(self, contract: str, key: str, method: str) -> VerifiedTx | None:
        """The proven transaction behind a state record that names its ``tx`` (``None`` if no record)."""
        rec = await self.client.state(contract, key)
        if rec is None:
            return None
        return await self.verified_tx(bytes.fromhex(rec["tx"]), contract=contract, method=method)

    def identity_role(self, public_key: bytes) -> str | None:
        """Role of a launch identity in this chain's genesis (``None`` if unknown)."""
        for ident in self.genesis.identities:
            if ident.public_key == public_key:
                return ident.role
        return None

    def identity_name(self, public_key: bytes) -> str:
        """Name of a launch identity in this chain's genesis (the key's hex if unknown)."""
        for ident in self.genesis.identities:
            if ident.public_key == public_key:
                return ident.name
        return public_key.hex()

    async def model_record(self, round_: int) -> VerifiedTx:
        """The proven ``fl.publish_model`` transaction of a round, authenticator checked."""
        from fedledger.contracts.fl import authenticator_message

        rec = await self.client.state("fl", f"model/{round_}")
        if rec is None:
            raise VerificationFailed(f"{self.chain_id} has no global model for round {round_}")
        vtx = await self.verified_tx(bytes.fromhex(rec["tx"]), contract="fl", method="publish_model")
        args = vtx.args
        if args["round"] != round_:
            raise VerificationFailed(f"model record for round {round_} points at round {args['round']}")
        if self.identity_role(vtx.tx.sender) != "cloud":
            raise VerificationFailed(f"round {round_} model was published by a non-cloud key")
        message = authenticator_message(args["model"], args["program"], round_)
        if not is_valid(vtx.tx.sender, Domain.AUTHENTICATOR, message, args["authenticator"]):
            raise VerificationFailed(f"authenticator of round {round_} does not verify")
        return vtx


async def verify_global_model(
    main: ChainView, round_: int, model_hash: bytes, program: bytes
) -> VerifiedTx:
    """Seed 004 §III-A: accept a global model only if its authenticator is on the main chain."""
    vtx = await main.model_record(round_)
    if vtx.args["model"] != model_hash:
        raise VerificationFailed(f"model {model_hash.hex()[:16]}… is not the round-{round_} global model")
    if vtx.args["program"] != program:
        raise VerificationFailed(f"round {round_} model was published for a different training program")
    return vtx
