"""Microchain committee, credit and stake on chain (seed 004 §IV-A, §IV-B, §VII).

State layout (contract namespace ``microchain``):

``params``                  the chain's :class:`MicrochainParams`, written at genesis
``dynasty``                 the current committee: number, first height, members
                            (sorted by address, the spin order), their credits at
                            selection, and the epoch randomness seed
``credit/<pk hex>``         credit stake c_i, 0 ≤ c_i ≤ C_max
``stake/<pk hex>``          security stake sc_i
``balance/<pk hex>``        spendable balance (the stake comes out of it)
``jailed/<pk hex>``         set once a validator is proven to have misbehaved
``ticket/<d>/<pk hex>``     VRF sortition output for dynasty d
``evidence/<hash hex>``     slashing evidence already used (height)

Blocks of dynasty d are the heights [d·L, (d+1)·L) with L = dynasty_epochs·R.
The committee for dynasty d+1 is chosen at the end of block (d+1)·L − 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fedledger.codec import cbor
from fedledger.consensus.microchain.params import MicrochainParams
from fedledger.consensus.microchain.poc import poc_alpha, ticket_alpha, wins
from fedledger.consensus.microchain.sortition import select_committee
from fedledger.consensus.microchain.votes import Decision, Vote, check_certificate, is_double_vote
from fedledger.contracts.base import (
    Context,
    Contract,
    arg,
    read_state,
    register,
    state_key,
    write_state,
)
from fedledger.crypto import vrf
from fedledger.crypto.hashing import tagged_hash
from fedledger.crypto.keys import Domain, SigningKey, address_of, is_valid
from fedledger.errors import (
    ContractError,
    DecodeError,
    InvalidBlock,
    InvalidSignature,
    VerificationFailed,
)
from fedledger.ledger.block import BlockHeader
from fedledger.ledger.state import State

microchain = register(Contract("microchain"))

# Phases of a dynasty, in order, each an equal share of its L blocks: the
# epoch-randomness beacon runs first, then candidates post sortition tickets.
PHASES = ("deal", "complain", "justify", "reveal", "recover", "ticket")


def _skey(key: str) -> bytes:
    return state_key("microchain", key)


def read(state: State, key: str) -> Any:
    return read_state(state, "microchain", key)


def write(state: State, key: str, value: Any) -> None:
    write_state(state, "microchain", key, value)


@dataclass(frozen=True)
class Dynasty:
    number: int
    start: int  # first block height of the dynasty
    members: tuple[bytes, ...]  # sorted by address: rank i is the spin proposer when height mod K = i
    credits: tuple[int, ...]  # credit of each member when the committee was selected
    seed: bytes  # epoch randomness used for this dynasty's PoC lottery

    @property
    def total_credit(self) -> int:
        return sum(self.credits)

    def credit_of(self, member: bytes) -> int:
        return self.credits[self.members.index(member)]

    def spin_proposer(self, height: int) -> bytes:
        """Rule iii): the member at rank ``height mod K``."""
        return self.members[height % len(self.members)]

    @property
    def quorum(self) -> int:
        """Smallest vote count strictly above 2/3 of the committee (§VI-A step 3)."""
        return 2 * len(self.members) // 3 + 1

    def to_obj(self) -> dict[str, Any]:
        return {"number": self.number, "start": self.start, "members": list(self.members),
                "credits": list(self.credits), "seed": self.seed}

    @classmethod
    def from_obj(cls, raw: dict[str, Any]) -> Dynasty:
        return cls(raw["number"], raw["start"], tuple(raw["members"]), tuple(raw["credits"]), raw["seed"])


def sort_by_address(keys: list[bytes]) -> list[bytes]:
    return sorted(keys, key=address_of)


def params_of(state: State) -> MicrochainParams | None:
    raw = read(state, "params")
    return None if raw is None else MicrochainParams.from_obj(raw)


def current_dynasty(state: State) -> Dynasty:
    raw = read(state, "dynasty")
    if raw is None:
        raise LookupError("this chain has no microchain committee")
    return Dynasty.from_obj(raw)


def phase_of(params: MicrochainParams, height: int) -> tuple[int, str]:
    """(dynasty number, phase name) of block ``height``."""
    length = params.dynasty_blocks
    return height // length, PHASES[(height % length) * len(PHASES) // length]


def credit(state: State, pk: bytes) -> int:
    return int(read(state, f"credit/{pk.hex()}") or 0)


def seed_microchain(state: State, params: MicrochainParams, validators: list[bytes], genesis_seed: bytes) -> None:
    """Genesis: the initial dynasty D_init is the administrator's validator list (§IV-B)."""
    write(state, "params", params.to_obj())
    for pk in validators:
        write(state, f"candidate/{pk.hex()}", True)
        write(state, f"credit/{pk.hex()}", params.c_init)
        write(state, f"balance/{pk.hex()}", params.initial_balance - params.stake)
        write(state, f"stake/{pk.hex()}", params.stake)
    members = sort_by_address(list(validators))[: params.committee_size]
    write(state, "dynasty", Dynasty(0, 0, tuple(members), tuple(params.c_init for _ in members), genesis_seed).to_obj())


# -- block hook: runs at the end of every block, before the state root -------


def finish_block(state: State, chain_id: str, height: int, prev_hash: bytes, proposer: bytes,
                 consensus: Any) -> None:
    """Consensus rules that depend on chain state; any violation makes the block invalid.

    1. Algorithm 1, lines 23–28: the proposer's PoC proof (or, under rule
       iii, its spin rank) against the dynasty's credits.
    2. Record the checkpoint hash of the epoch the parent closed.
    3. A committed-majority link certificate (or a Rule 3 decision) carried by
       the block: verified against the committee, then each voter earns one
       credit point, capped at C_max (§VII).
    4. At the last block of a dynasty, select the next committee (§IV-B.1).
    """
    params = params_of(state)
    assert params is not None
    dynasty = current_dynasty(state)
    info = _consensus_fields(consensus, height)
    _check_proposal(state, params, dynasty, chain_id, height, proposer, info)
    if height % params.epoch_blocks == 1 or params.epoch_blocks == 1:
        write(state, f"checkpoint/{(height - 1) // params.epoch_blocks}", prev_hash)
    if info.get("cert") is not None:
        _apply_certificate(state, params, dynasty, chain_id, info["cert"])
    if (height + 1) % params.dynasty_blocks == 0:
        _rotate(state, params, dynasty, chain_id)


def _consensus_fields(consensus: Any, height: int) -> dict[str, Any]:
    if not isinstance(consensus, dict) or consensus.get("engine") != "microchain":
        raise InvalidBlock(f"block {height} lacks microchain consensus fields")
    if not isinstance(consensus.get("slot"), int) or not isinstance(consensus.get("vrf"), bytes):
        raise InvalidBlock(f"block {height} has malformed slot or VRF proof")
    return consensus


def _check_proposal(state: State, params: MicrochainParams, dynasty: Dynasty, chain_id: str, height: int,
                    proposer: bytes, info: dict[str, Any]) -> None:
    slot = info["slot"]
    last_slot = read(state, "last_slot")
    if last_slot is not None and slot <= last_slot:
        raise InvalidBlock(f"block {height} is for slot {slot}, not after its parent's slot {last_slot}")
    write(state, "last_slot", slot)
    if proposer not in dynasty.members:
        raise InvalidBlock(f"proposer of block {height} is not in dynasty {dynasty.number}")
    if not info["vrf"]:  # rule iii): the spin proposer of this height
        if proposer != dynasty.spin_proposer(height):
            raise InvalidBlock(f"block {height} is a spin block from a validator not at rank height mod K")
        return
    try:
        hc = vrf.verify(proposer, poc_alpha(chain_id, dynasty.seed, slot), info["vrf"])
    except InvalidSignature as exc:
        raise InvalidBlock(f"block {height}: bad PoC VRF proof ({exc})") from None
    if not wins(hc, params.xi, dynasty.credit_of(proposer), dynasty.total_credit):
        raise InvalidBlock(f"block {height}: PoC proof is not below d_cond (Algorithm 1 line 26)")


def _members_for(state: State, dynasty: Dynasty, target_epoch: int, params: MicrochainParams) -> Dynasty:
    if target_epoch * params.epoch_blocks >= dynasty.start:
        return dynasty
    prev = read(state, "dynasty_prev")
    return dynasty if prev is None else Dynasty.from_obj(prev)


def _apply_certificate(state: State, params: MicrochainParams, dynasty: Dynasty, chain_id: str, cert: Any) -> None:
    try:
        if isinstance(cert, dict) and "decision" in cert:
            link: Vote | Decision = Decision.from_obj(cert["decision"])
            assert isinstance(link, Decision)
            link.check(chain_id, params.arbitrator)
            voters: list[bytes] = []
        else:
            votes = [Vote.from_obj(v) for v in cert["votes"]]
            committee = _members_for(state, dynasty, votes[0].target_epoch if votes else 0, params)
            link = check_certificate(votes, chain_id, committee.members, committee.quorum)
            voters = [v.voter for v in votes]
    except (VerificationFailed, DecodeError, KeyError, TypeError, IndexError) as exc:
        raise InvalidBlock(f"bad finality certificate: {exc}") from None
    if read(state, f"certified/{link.target_epoch}") is not None:
        raise InvalidBlock(f"epoch {link.target_epoch} is already certified on this branch")
    for epoch, h in ((link.source_epoch, link.source_hash), (link.target_epoch, link.target_hash)):
        recorded = checkpoint_hash(state, epoch)
        if recorded != h:
            raise InvalidBlock(f"certificate names a checkpoint of epoch {epoch} that is not on this branch")
    write(state, f"certified/{link.target_epoch}", {"source": link.source_hash, "target": link.target_hash})
    write(state, "last_certified", link.target_epoch)
    for pk in voters:
        if not read(state, f"jailed/{pk.hex()}"):  # §VII: only honest validators earn credit
            write(state, f"credit/{pk.hex()}", min(params.c_max, credit(state, pk) + 1))


def checkpoint_hash(state: State, epoch: int) -> bytes | None:
    """Checkpoint hash of ``epoch`` on this branch (epoch 0 is the genesis block)."""
    value = read(state, f"checkpoint/{epoch}")
    return value if isinstance(value, bytes) else None


def _rotate(state: State, params: MicrochainParams, dynasty: Dynasty, chain_id: str) -> None:
    """Select dynasty d+1 from the VRF tickets posted in dynasty d, weighted by credit."""
    from fedledger.consensus.microchain.beacon import seed_for

    number = dynasty.number + 1
    seed = seed_for(state, dynasty.number)
    tickets = []
    for key in list(state.keys_with_prefix(_skey(f"ticket/{number}/"))):
        pk = bytes.fromhex(key.decode().rsplit("/", 1)[1])
        if not read(state, f"jailed/{pk.hex()}"):
            tickets.append((pk, credit(state, pk), cbor.decode(state.get(key) or b"\x40")))
    chosen = select_committee(tickets, params.committee_size)
    if len(chosen) < params.committee_size:  # too few tickets: keep sitting members, best credit first
        sitting = [pk for pk in dynasty.members if pk not in chosen and not read(state, f"jailed/{pk.hex()}")]
        sitting.sort(key=lambda pk: (-credit(state, pk), address_of(pk)))
        chosen += sitting[: params.committee_size - len(chosen)]
    if not chosen:
        chosen = list(dynasty.members)
    members = sort_by_address(chosen)
    write(state, "dynasty_prev", dynasty.to_obj())
    write(state, "dynasty", Dynasty(number, number * params.dynasty_blocks, tuple(members),
                                    tuple(max(1, credit(state, pk)) for pk in members), seed).to_obj())


# -- transactions ---------------------------------------------------------------


def _pair(args: Any, cls: Any, what: str) -> tuple[Any, Any]:
    """The two records ``a`` and ``b`` of a piece of slashing evidence."""
    try:
        return cls.from_obj(arg(args, "a", dict)), cls.from_obj(arg(args, "b", dict))
    except DecodeError as exc:
        raise ContractError(f"malformed {what}: {exc}") from None


def _slash(ctx: Context, offender: bytes, hash_a: bytes, hash_b: bytes) -> dict[str, Any]:
    """§VII: the security stake is forfeited, credit drops to zero, the validator is jailed."""
    first, second = sorted((hash_a, hash_b))
    evidence = tagged_hash("fedledger/evidence", first + second)
    ctx.require(ctx.get(f"evidence/{evidence.hex()}") is None, "this misbehaviour has already been slashed")
    stake = int(ctx.get(f"stake/{offender.hex()}") or 0)
    ctx.put(f"evidence/{evidence.hex()}", ctx.height)
    ctx.put(f"stake/{offender.hex()}", 0)
    ctx.put(f"credit/{offender.hex()}", 0)
    ctx.put(f"jailed/{offender.hex()}", True)
    ctx.put("slashed_total", int(ctx.get("slashed_total") or 0) + stake)
    return {"offender": offender, "slashed": stake}


@microchain.method
def slash_double_vote(ctx: Context, args: Any) -> dict[str, Any]:
    """Rule 2 evidence: two validly signed votes by one voter for different targets of one epoch."""
    a, b = _pair(args, Vote, "vote")
    ctx.require(a.chain_id == ctx.chain_id, "evidence is about another chain")
    ctx.require(is_double_vote(a, b), "the two votes are not a rule-2 double vote")
    return _slash(ctx, a.voter, a.vote_hash, b.vote_hash)


@microchain.method
def slash_equivocation(ctx: Context, args: Any) -> dict[str, Any]:
    """Two different blocks signed by one proposer for the same slot."""
    a, b = _pair(args, BlockHeader, "header")
    ctx.require(a.chain_id == ctx.chain_id == b.chain_id, "evidence is about another chain")
    ctx.require(a.proposer == b.proposer and a.block_hash != b.block_hash, "not two blocks by one proposer")
    ctx.require(isinstance(a.consensus, dict) and isinstance(b.consensus, dict)
                and a.consensus.get("slot") == b.consensus.get("slot"), "the blocks are for different slots")
    for h in (a, b):
        ctx.require(is_valid(h.proposer, Domain.BLOCK, h.signing_bytes(), h.signature), "bad block signature")
    return _slash(ctx, a.proposer, a.block_hash, b.block_hash)


@microchain.method
def ticket(ctx: Context, args: Any) -> dict[str, Any]:
    """Sortition ticket of a candidate for the next dynasty (§IV-B.1), posted in the ticket phase."""
    params = params_of(ctx.state)
    ctx.require(params is not None, "this chain has no microchain committee")
    assert params is not None
    number, phase = phase_of(params, ctx.height)
    ctx.require(phase == "ticket", f"tickets are taken in the ticket phase, not the {phase} phase")
    ctx.require(arg(args, "dynasty", int) == number + 1, f"tickets are for dynasty {number + 1}")
    ctx.require(ctx.get(f"candidate/{ctx.sender.hex()}") is not None, "sender is not a validator candidate")
    ctx.require(not ctx.get(f"jailed/{ctx.sender.hex()}"), "sender is jailed")
    ctx.require(ctx.get(f"ticket/{number + 1}/{ctx.sender.hex()}") is None, "ticket already posted")
    from fedledger.consensus.microchain.beacon import seed_for

    seed = seed_for(ctx.state, number)
    try:
        beta = vrf.verify(ctx.sender, ticket_alpha(ctx.chain_id, number + 1, seed), arg(args, "proof", bytes))
    except InvalidSignature as exc:
        raise ContractError(f"bad sortition proof: {exc}") from None
    ctx.put(f"ticket/{number + 1}/{ctx.sender.hex()}", beta)
    return {"dynasty": number + 1}


def ticket_duty(state: State, key: SigningKey, chain_id: str, height: int) -> list[tuple[str, dict[str, Any]]]:
    """The ticket call a candidate should make at ``height`` (empty if none is due)."""
    params = params_of(state)
    if params is None or read(state, f"candidate/{key.public_key.hex()}") is None:
        return []
    number, phase = phase_of(params, height)
    if phase != "ticket" or read(state, f"ticket/{number + 1}/{key.public_key.hex()}") is not None:
        return []
    if read(state, f"jailed/{key.public_key.hex()}"):
        return []
    from fedledger.consensus.microchain.beacon import seed_for

    proof = vrf.prove(key, ticket_alpha(chain_id, number + 1, seed_for(state, number)))
    return [("ticket", {"dynasty": number + 1, "proof": proof})]
