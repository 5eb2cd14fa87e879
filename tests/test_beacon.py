"""The committee's epoch-randomness beacon (seed 004 §IV-B (1) and (4)).

The whole protocol runs through the ``beacon`` contract: members submit what
``duties`` tells them at a height inside each phase; misbehaving members skip
or alter calls.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from fedledger.codec import cbor
from fedledger.consensus.microchain import beacon
from fedledger.consensus.microchain.params import MicrochainParams
from fedledger.contracts import beacon as beacon_contract
from fedledger.contracts.base import Context, lookup
from fedledger.contracts.microchain import current_dynasty, phase_of, seed_microchain, write
from fedledger.crypto import vss
from fedledger.crypto.hashing import tagged_hash
from fedledger.crypto.keys import SigningKey
from fedledger.errors import ContractError
from fedledger.ledger.state import State

CHAIN = "sub-1"
GENESIS_SEED = b"\x07" * 32
PROTOCOL = ("deal", "complain", "justify", "reveal", "recover")
OUTSIDER = SigningKey.from_seed(b"\xee" * 32)
Edit = Callable[[SigningKey, str, dict[str, Any]], dict[str, Any]]

assert beacon_contract.beacon.name == "beacon"  # importing the module registers the contract


@dataclass
class Net:
    params: MicrochainParams
    keys: list[SigningKey]  # in committee order: keys[i] is member rank i
    replicas: list[State]  # one copy of the chain state per node; every call goes to all

    @property
    def state(self) -> State:
        return self.replicas[0]

    @property
    def t(self) -> int:
        return beacon.threshold(len(self.keys))


def make_net(n: int, replicas: int = 1) -> Net:
    keys = [SigningKey.from_seed(bytes([40 + i]) * 32) for i in range(n)]
    params = MicrochainParams(committee_size=n)
    states = []
    for _ in range(replicas):
        state = State()
        seed_microchain(state, params, [k.public_key for k in keys], GENESIS_SEED)
        states.append(state)
    members = current_dynasty(states[0]).members
    keys.sort(key=lambda k: members.index(k.public_key))
    return Net(params, keys, states)


def height(net: Net, phase: str, d: int = 0) -> int:
    length = net.params.dynasty_blocks
    return next(h for h in range(d * length, (d + 1) * length) if phase_of(net.params, h) == (d, phase))


def call_on(state: State, sender: bytes, method: str, args: Any, h: int) -> None:
    """Execute one call as the ledger does: a failed call rolls back its writes."""
    fn = lookup("beacon", method)
    assert fn is not None
    state.begin()
    try:
        fn(Context(state, "beacon", CHAIN, sender, h, 1_700_000_000 + h, bytes(32)), args)
    except Exception:
        state.rollback()
        raise
    state.commit()


def call(net: Net, sender: SigningKey, method: str, args: Any, phase: str) -> None:
    for state in net.replicas:
        call_on(state, sender.public_key, method, args, height(net, phase))


def run(net: Net, phase: str, skip: tuple[int, ...] = (), edit: Edit | None = None) -> list[str]:
    """Every member not in ``skip`` submits its duties, computed on its own replica."""
    made = []
    h = height(net, phase)
    for i, key in enumerate(net.keys):
        if i in skip:
            continue
        for method, args in beacon.duties(net.replicas[i % len(net.replicas)], key, CHAIN, h):
            call(net, key, method, edit(key, method, args) if edit else args, phase)
            made.append(method)
    return made


def run_all(net: Net, skip: dict[str, tuple[int, ...]] | None = None, edit: Edit | None = None) -> None:
    for phase in PROTOCOL:
        run(net, phase, (skip or {}).get(phase, ()), edit)


def secret_of(net: Net, i: int) -> bytes:
    return beacon.polynomial(net.keys[i], CHAIN, 0, net.t)[0]


def expected_seed(net: Net, qualified: list[int]) -> bytes:
    return tagged_hash("fedledger/beacon", cbor.encode([0, [secret_of(net, i) for i in qualified]]))


FALLBACK = tagged_hash("fedledger/beacon-fallback", cbor.encode([0, GENESIS_SEED]))


def bad_share_to(dealer: int, victim: int, net: Net) -> Edit:
    """Dealer ``dealer`` seals a wrong share to member ``victim``."""

    def edit(key: SigningKey, method: str, args: dict[str, Any]) -> dict[str, Any]:
        if method == "deal" and key is net.keys[dealer]:
            boxes = list(args["shares"])
            boxes[victim] = vss.encrypt_share(net.keys[victim].public_key, vss.random_scalar_from(b"junk"))
            args = {**args, "shares": boxes}
        return args

    return edit


# -- honest and faulty runs ----------------------------------------------------


@pytest.mark.parametrize("n", [4, 7])
def test_honest_run_gives_one_non_fallback_seed(n: int) -> None:
    net = make_net(n, replicas=n)
    assert run(net, "deal") == ["deal"] * n
    assert run(net, "complain") == [] and run(net, "justify") == []
    assert run(net, "reveal") == ["reveal"] * n
    assert run(net, "recover") == []
    seeds = {beacon.seed_for(state, 0) for state in net.replicas}
    assert seeds == {expected_seed(net, list(range(n)))}
    assert len({state.root() for state in net.replicas}) == 1
    assert beacon.beacon_status(net.state, 0) == {
        "qualified": list(range(n)), "revealed": list(range(n)), "recovered": [], "fallback": False}
    assert seeds != {FALLBACK}


@pytest.mark.parametrize("n", [4, 7])
def test_withheld_reveal_is_recovered_and_changes_nothing(n: int) -> None:
    net = make_net(n)
    withholder = n - 1
    run_all(net, skip={"reveal": (withholder,), "recover": (withholder,)})
    status = beacon.beacon_status(net.state, 0)
    assert status["recovered"] == [withholder] and not status["fallback"]
    assert len(beacon.public_shares(net.state, 0, withholder)) == net.t  # no more than needed
    assert beacon.seed_for(net.state, 0) == expected_seed(net, list(range(n)))  # as if it had revealed


def test_unjustified_bad_share_excludes_the_dealer() -> None:
    net = make_net(4)
    dealer, victim = 1, 2
    edit = bad_share_to(dealer, victim, net)
    run(net, "deal", edit=edit)
    assert run(net, "complain") == ["complain"]
    assert beacon.complaints(net.state, 0, dealer) == {victim: b""}
    run(net, "justify", skip=(dealer,))
    assert not beacon.qualified(net.state, 0, dealer)
    run(net, "reveal")
    with pytest.raises(ContractError, match="not a qualified dealer"):
        call(net, net.keys[dealer], "reveal", {"dynasty": 0, "secret": secret_of(net, dealer)}, "reveal")
    assert run(net, "recover") == []
    status = beacon.beacon_status(net.state, 0)
    assert status["qualified"] == [0, 2, 3] and not status["fallback"]
    assert beacon.seed_for(net.state, 0) == expected_seed(net, [0, 2, 3])


def test_justified_complaint_keeps_the_dealer() -> None:
    net = make_net(4)
    dealer, victim = 1, 2
    run_all(net, edit=bad_share_to(dealer, victim, net))
    assert beacon.complaints(net.state, 0, dealer)[victim] != b""  # the dealer published the share
    assert victim + 1 in beacon.public_shares(net.state, 0, dealer)
    assert beacon.beacon_status(net.state, 0)["qualified"] == [0, 1, 2, 3]
    assert beacon.seed_for(net.state, 0) == expected_seed(net, [0, 1, 2, 3])


def test_false_complaint_is_answered_and_changes_nothing() -> None:
    net = make_net(4)
    run(net, "deal")
    call(net, net.keys[3], "complain", {"dynasty": 0, "dealer": net.keys[0].public_key}, "complain")
    assert run(net, "justify") == ["justify"]
    run(net, "reveal")
    assert beacon.seed_for(net.state, 0) == expected_seed(net, [0, 1, 2, 3])


def test_justified_share_counts_towards_recovery() -> None:
    net = make_net(4)  # t = 2
    dealer, victim = 1, 2
    run_all(net, skip={"reveal": (dealer,), "recover": (dealer,)}, edit=bad_share_to(dealer, victim, net))
    assert beacon.beacon_status(net.state, 0)["recovered"] == [dealer]
    assert len(beacon.public_shares(net.state, 0, dealer)) == 2  # the justified share and one posted
    assert beacon.seed_for(net.state, 0) == expected_seed(net, [0, 1, 2, 3])


def test_more_than_f_withholding_members_force_the_fallback() -> None:
    net = make_net(4)  # f = 1, t = 2: three withholders leave one honest share per secret
    quiet = (1, 2, 3)
    run_all(net, skip={"reveal": quiet, "recover": quiet})
    assert beacon.seed_for(net.state, 0) == FALLBACK
    assert beacon.beacon_status(net.state, 0) == {
        "qualified": [0, 1, 2, 3], "revealed": [0], "recovered": [], "fallback": True}


def test_no_dealer_means_fallback() -> None:
    net = make_net(4)
    assert beacon.seed_for(net.state, 0) == FALLBACK
    assert beacon.beacon_status(net.state, 0)["fallback"]


def test_seed_for_is_a_pure_function_of_state() -> None:
    net = make_net(4)
    run_all(net, skip={"reveal": (0,)})
    root = net.state.root()
    seed = beacon.seed_for(net.state, 0)
    assert beacon.seed_for(net.state, 0) == seed and net.state.root() == root
    assert beacon.seed_for(State(dict(net.state.items())), 0) == seed
    # still readable once the chain has moved to the next dynasty
    write(net.state, "dynasty_prev", current_dynasty(net.state).to_obj())
    nxt = current_dynasty(net.state).to_obj() | {"number": 1, "start": net.params.dynasty_blocks}
    write(net.state, "dynasty", nxt)
    assert beacon.seed_for(net.state, 0) == seed
    with pytest.raises(LookupError):
        beacon.seed_for(net.state, 5)


def test_duties_are_empty_for_outsiders_and_other_dynasties() -> None:
    net = make_net(4)
    assert beacon.duties(net.state, OUTSIDER, CHAIN, height(net, "deal")) == []
    assert beacon.duties(net.state, net.keys[0], CHAIN, height(net, "deal", d=1)) == []
    assert beacon.duties(net.state, net.keys[0], CHAIN, height(net, "ticket")) == []


def test_polynomial_is_deterministic_and_private() -> None:
    a, b = SigningKey.from_seed(b"\x01" * 32), SigningKey.from_seed(b"\x02" * 32)
    assert beacon.polynomial(a, CHAIN, 3, 2) == beacon.polynomial(a, CHAIN, 3, 2)
    assert beacon.polynomial(a, CHAIN, 3, 2) != beacon.polynomial(b, CHAIN, 3, 2)
    assert beacon.polynomial(a, CHAIN, 3, 2) != beacon.polynomial(a, CHAIN, 4, 2)
    assert beacon.polynomial(a, CHAIN, 3, 2) != beacon.polynomial(a, "other", 3, 2)
    assert [beacon.threshold(n) for n in (1, 3, 4, 6, 7, 10)] == [1, 1, 2, 2, 3, 4]


# -- rejected calls ------------------------------------------------------------


def _rejects(net: Net, sender: SigningKey, method: str, args: dict[str, Any], phase: str, reason: str) -> None:
    root = net.state.root()
    with pytest.raises(ContractError, match=reason):
        call(net, sender, method, args, phase)
    assert net.state.root() == root


def test_deal_rejections() -> None:
    net = make_net(4)
    k0 = net.keys[0]
    (_, args), = beacon.duties(net.state, k0, CHAIN, height(net, "deal"))
    _rejects(net, k0, "deal", args, "complain", "deal is not open")
    _rejects(net, k0, "deal", args | {"dynasty": 1}, "deal", "dynasty must be the current one")
    _rejects(net, OUTSIDER, "deal", args, "deal", "not a member")
    _rejects(net, k0, "deal", args | {"commitments": args["commitments"][:1]}, "deal", "exactly t = 2")
    identity = [vss.IDENTITY, args["commitments"][1]]
    _rejects(net, k0, "deal", args | {"commitments": identity}, "deal", "not a valid group element")
    _rejects(net, k0, "deal", args | {"commitments": [b"\xff" * 32] * 2}, "deal", "not a valid group element")
    _rejects(net, k0, "deal", args | {"shares": args["shares"][:3]}, "deal", "exactly n = 4")
    _rejects(net, k0, "deal", args | {"shares": [b"x"] * 4}, "deal", "sealed share is not")
    _rejects(net, k0, "deal", {"commitments": args["commitments"]}, "deal", "missing argument 'dynasty'")
    call(net, k0, "deal", args, "deal")
    _rejects(net, k0, "deal", args, "deal", "already dealt")


def test_complain_and_justify_rejections() -> None:
    net = make_net(4)
    run(net, "deal", skip=(3,))
    k0, k1, k2, k3 = net.keys
    about = {"dynasty": 0, "dealer": k0.public_key}
    _rejects(net, k1, "complain", about, "deal", "complain is not open")
    _rejects(net, k0, "complain", about, "complain", "your own deal")
    _rejects(net, k1, "complain", about | {"dealer": k3.public_key}, "complain", "has not dealt")
    _rejects(net, k1, "complain", about | {"dealer": OUTSIDER.public_key}, "complain", "dealer is not a member")
    _rejects(net, OUTSIDER, "complain", about, "complain", "sender is not a member")
    call(net, k1, "complain", about, "complain")
    _rejects(net, k1, "complain", about, "complain", "already complained")

    shares = vss.deal(beacon.polynomial(k0, CHAIN, 0, net.t), 4)[1]
    answer = {"dynasty": 0, "complainer": k1.public_key, "share": shares[1]}
    _rejects(net, k0, "justify", answer | {"share": shares[2]}, "justify", "does not verify")
    _rejects(net, k0, "justify", answer | {"complainer": k2.public_key}, "justify", "no complaint")
    _rejects(net, k2, "justify", answer, "justify", "no complaint")
    _rejects(net, k0, "justify", answer, "reveal", "justify is not open")
    call(net, k0, "justify", answer, "justify")
    _rejects(net, k0, "justify", answer, "justify", "already justified")


def test_reveal_and_recover_rejections() -> None:
    net = make_net(4)
    run(net, "deal", skip=(3,))
    k0, k1, k2, k3 = net.keys
    reveal = {"dynasty": 0, "secret": secret_of(net, 0)}
    _rejects(net, k0, "reveal", reveal | {"secret": secret_of(net, 1)}, "reveal", "does not match")
    _rejects(net, k0, "reveal", reveal | {"secret": bytes(32)}, "reveal", "does not match")
    _rejects(net, k3, "reveal", {"dynasty": 0, "secret": secret_of(net, 3)}, "reveal", "not a qualified dealer")
    _rejects(net, k0, "reveal", reveal | {"secret": b"short"}, "reveal", "must be 32 bytes")
    call(net, k0, "reveal", reveal, "reveal")
    _rejects(net, k0, "reveal", reveal, "reveal", "already revealed")

    share_of_1 = vss.deal(beacon.polynomial(k1, CHAIN, 0, net.t), 4)[1]  # dealer 1 did not reveal
    post = {"dynasty": 0, "dealer": k1.public_key, "share": share_of_1[2]}
    _rejects(net, k2, "recover", post, "reveal", "recover is not open")
    _rejects(net, k2, "recover", post | {"share": share_of_1[3]}, "recover", "does not verify at your index")
    _rejects(net, k2, "recover", post | {"dealer": k0.public_key}, "recover", "already revealed")
    _rejects(net, k2, "recover", post | {"dealer": k3.public_key}, "recover", "not qualified")
    call(net, k2, "recover", post, "recover")
    _rejects(net, k2, "recover", post, "recover", "already on chain")
    call(net, k3, "recover", post | {"share": share_of_1[3]}, "recover")
    _rejects(net, k0, "recover", post | {"share": share_of_1[0]}, "recover", "enough shares")
    assert beacon.beacon_status(net.state, 0)["recovered"] == [1]
