"""The BFT main chain in the simulator: Tendermint's properties over hundreds of seeds.

Each seed mixes asynchrony (delay up to 150 ms, loss, a partition, an honest
validator crashing and restarting from its store) with f = (n-1)//3 Byzantine
validators that equivocate as proposer, sign conflicting prevotes and
precommits, withhold every message, or send malformed ones; then the network
becomes synchronous (GST). Every run is checked for

* agreement: no two honest replicas decide different blocks at a height;
* validity: every honest store replays from genesis (``verify_chain``: every
  block passes ``apply_block``, certificates included) and holds only
  transactions the client submitted, or validators' double-sign reports;
* liveness: after GST every honest replica decides at least ``min_progress``
  more blocks;
* accountability: every validator that double-signed early enough is
  recorded faulty on every honest replica, and no honest validator is.

The negative control shows the checker is not vacuous: with f + 1 = 2 of 4
validators silent no value can gather 2f + 1 votes, and liveness must be
reported lost.
"""

from __future__ import annotations

import dataclasses
from concurrent.futures import ProcessPoolExecutor

import pytest

from fedledger.sim.scenario import SimConfig, SimResult, run_seed

SEEDS_N4 = 200
SEEDS_N7 = 6
CFG = SimConfig(engine="bft", async_slots=20, sync_slots=20)  # 2 s asynchronous, then 2 s synchronous


def _run(args: tuple[int, int]) -> SimResult:
    seed, n = args
    return run_seed(seed, dataclasses.replace(CFG, validators=n))


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_invariants_hold_over_hundreds_of_seeds() -> None:
    jobs = [(s, 4) for s in range(SEEDS_N4)] + [(20_000 + s, 7) for s in range(SEEDS_N7)]
    with ProcessPoolExecutor(2) as pool:
        results = list(pool.map(_run, jobs, chunksize=4))
    failed = {r.seed: r.violations for r in results if not r.ok}
    assert not failed
    # the runs really exercised the faults the invariants are about
    assert sum(1 for r in results if r.crashed) > 40
    assert sum(1 for r in results if r.partitioned) > 30
    behaviours = [b for r in results for b in r.byzantine.values()]
    assert all(behaviours.count(b) > 20 for b in ("equivocate", "double_vote", "withhold", "malformed"))
    assert sum(len(r.slashed) for r in results) > 50  # double signers recorded faulty
    assert sum(r.rounds for r in results) > 200  # rounds failed and were recovered from
    assert all(min(r.finalized.values()) >= CFG.min_progress for r in results)


@pytest.mark.parametrize("behaviour", ["double_vote", "equivocate"])
def test_double_signers_are_recorded_faulty_everywhere(behaviour: str) -> None:
    """Conflicting prevotes/precommits, or two proposals for one round: reported by the honest
    validators, decided in a block, and the offender recorded faulty on every honest replica."""
    result = run_seed(5, dataclasses.replace(CFG, behaviours=(behaviour,)))
    assert result.ok, result.violations
    assert list(result.byzantine.values()) == [behaviour]
    assert result.slashed == list(result.byzantine)


def test_beyond_f_silent_validators_liveness_is_lost_and_reported() -> None:
    """Negative control: 2 of 4 validators silent (f + 1 > f). No value gets 2f + 1 prevotes, nothing
    is decided, and the checker must say so; agreement and validity still hold."""
    result = run_seed(3, dataclasses.replace(CFG, byzantine=2, behaviours=("withhold",)))
    assert len(result.byzantine) == 2
    assert result.violations and all(v.startswith("liveness") for v in result.violations)
    assert max(result.finalized.values()) == 0
    control = run_seed(3, dataclasses.replace(CFG, byzantine=1, behaviours=("withhold",)))
    assert control.ok, control.violations  # one silent validator (f = 1) is tolerated


def test_a_seed_replays_identically() -> None:
    a = run_seed(11, dataclasses.replace(CFG, async_slots=10, sync_slots=10))
    b = run_seed(11, dataclasses.replace(CFG, async_slots=10, sync_slots=10))
    assert a.to_json() == b.to_json()
