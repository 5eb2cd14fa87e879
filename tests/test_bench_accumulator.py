"""Tests for ``fedledger bench accumulator``: the output contract, never the speed.

The benchmark runs once (``--quick``) through the real entry point; the other tests
check the helpers it is built from.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import time
from dataclasses import dataclass
from typing import Any

import pytest

from fedledger.cli import bench_accumulator as ba
from fedledger.cli.main import main
from fedledger.crypto import accumulator
from fedledger.crypto.accumulator import DEFAULT_PRIME_BITS, hash_to_prime
from fedledger.errors import UsageError

CONTRACT = (
    "bench",
    "updates_per_s",
    "updates_per_s_warm",
    "proofs_generated_per_s",
    "proofs_generated_per_s_prove_all",
    "proofs_verified_per_s",
    "proofs_verified_per_s_warm",
    "batch_speedup_t1",
    "batch_speedup_t8",
    "batch_speedup_t64",
    "seed_claim_fraction_t8",
    "measured_fraction_t8",
    "goal_speedup_t8",
    "batch_proofgen_speedup_t8",
    "batch_proofgen_speedup_t64",
    "proof_bytes",
    "ed25519_verify_per_s",
    "updates_ratio_to_sig_verify",
    "cross_chain_verify_ms",
)
RATES = (
    "updates_per_s",
    "updates_per_s_warm",
    "proofs_generated_per_s",
    "proofs_generated_per_s_prove_all",
    "proofs_verified_per_s",
    "proofs_verified_per_s_warm",
    "ed25519_verify_per_s",
)


@dataclass(frozen=True)
class Run:
    result: dict[str, Any]
    stdout: str
    stderr: str


@pytest.fixture(scope="module")
def quick() -> Run:
    """One ``fedledger bench accumulator --quick`` through the CLI entry point."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["bench", "accumulator", "--quick"])
    assert code == 0, err.getvalue()
    lines = out.getvalue().strip().splitlines()
    assert lines, err.getvalue()
    result = json.loads(lines[-1])
    assert isinstance(result, dict)
    return Run(result, out.getvalue(), err.getvalue())


def test_last_stdout_line_is_the_json_contract(quick: Run) -> None:
    r = quick.result
    for key in CONTRACT:
        assert key in r, key
    assert r["bench"] == "accumulator"
    assert r["modulus"] == "rsa-2048-challenge" and r["modulus_bits"] == 2048
    assert r["prime_bits"] == DEFAULT_PRIME_BITS
    assert r["chain_length"] == ba.QUICK_CHAIN and r["quick"] is True
    assert r["cross_chain_verify_ms"] > 0 and r["cross_chain_baseline_light_client_ms"] > 0
    assert r["cross_chain_ratio_to_light_client"] == pytest.approx(
        r["cross_chain_verify_ms"] / r["cross_chain_baseline_light_client_ms"], rel=0.02)
    assert r["seed_claim_fraction_t8"] == 0.124 and r["goal_speedup_t8"] == 4
    assert isinstance(r["goal_met_t8"], bool)
    for key in RATES:
        assert isinstance(r[key], int | float) and r[key] > 0, key
    assert len(quick.stdout.strip().splitlines()) == 1  # the human table goes to stderr
    assert "accumulator" in quick.stderr


def test_ratios_match_the_timings_they_come_from(quick: Run) -> None:
    r = quick.result
    approx = pytest.approx
    assert r["updates_ratio_to_sig_verify"] == approx(
        r["updates_per_s"] / r["ed25519_verify_per_s"], rel=1e-2
    )
    assert r["prove_all_speedup"] == approx(
        r["proofs_generated_per_s_prove_all"] / r["proofs_generated_per_s"], rel=1e-2
    )
    for t in ba.BATCH_SIZES:
        row = r["batch_verify"][f"t{t}"]
        assert row["t"] == t
        for state in ba.STATES:
            for kind in ("individual", "poe", "plain", "seed_protocol3"):
                assert row[f"{kind}_ms"][state] > 0
            for kind in ("poe", "plain", "seed_protocol3"):
                expected = row["individual_ms"][state] / row[f"{kind}_ms"][state]
                assert row[f"speedup_{kind}"][state] == approx(expected, rel=2e-2), (t, kind, state)
        assert r[f"batch_speedup_t{t}"] == row["speedup_poe"]["cold"]
        assert r[f"batch_speedup_t{t}_warm"] == row["speedup_poe"]["warm"]
        gen = r["batch_proofgen"][f"t{t}"]
        assert min(gen[f"{k}_ms"] for k in ("individual", "protocol2", "plain", "poe")) > 0
        assert r[f"batch_proofgen_speedup_t{t}"] == approx(
            gen["individual_ms"] / gen["protocol2_ms"], rel=2e-2
        )
    assert r["measured_fraction_t8"] == approx(1 / r["batch_speedup_t8"], rel=2e-2)
    assert r["goal_met_t8"] == (r["batch_speedup_t8"] >= r["goal_speedup_t8"])


def test_proof_sizes(quick: Run) -> None:
    r = quick.result
    assert r["proof_bytes_individual"] == r["proof_bytes"]["witness"] == 256
    for t in ba.BATCH_SIZES:
        sizes = r["proof_bytes"][f"t{t}"]
        assert sizes == {"individual": 256 * t, "poe": 512, "plain": 256}
    assert (r["proof_bytes_individual_t8"], r["proof_bytes_batch_t8"]) == (2048, 512)


def test_rsa_2048_challenge_number_is_transcribed_exactly() -> None:
    digits = str(accumulator.RSA_2048)
    assert len(digits) == 617 and accumulator.RSA_2048.bit_length() == 2048
    assert digits.startswith("2519590847565789349402718324") and digits.endswith("2120720357")
    assert hashlib.sha256(digits.encode()).hexdigest() == (
        "b3c2468add10e2a0c4a251d9d2bac4ba04d4b3527156ceead43a1305e03f1fc0"
    )


def test_options() -> None:
    full = ba.options(2048, False, None, None, False)
    assert (full.chain_length, full.prime_bits, full.dealer, full.min_seconds) == (
        1024,
        128,
        False,
        0.2,
    )
    small = ba.options(2048, False, 256, None, True)
    assert (small.chain_length, small.prime_bits) == (ba.QUICK_CHAIN, 256)
    assert ba.options(1024, False, None, 100, True).dealer  # only RSA-2048 has a public modulus
    with pytest.raises(UsageError):
        ba.options(2048, False, None, max(ba.BATCH_SIZES), True)  # a batch needs t < n


def test_small_dealer_modulus_is_labelled_test_size() -> None:
    params, label = ba.make_params(ba.options(512, False, None, None, True))
    assert label == "trusted-dealer-test-size" and params.modulus_bits == 512


def test_time_variants_honours_minimum_reps_and_budget() -> None:
    calls = {"prep": 0, "run": 0}

    def prep() -> None:
        calls["prep"] += 1

    def run() -> None:
        calls["run"] += 1

    opts = ba.Options(2048, False, 128, 100, True, min_seconds=0.0, min_reps=5, budget_s=10.0)
    stats = ba.TimingStats()
    medians = ba.time_variants({"a": ba.Variant(run, prep)}, opts, stats)
    assert calls == {"prep": 5, "run": 5} and medians["a"] >= 0
    assert stats.reps == 5 + stats.disturbed
    opts = ba.Options(2048, False, 128, 100, True, min_seconds=10.0, min_reps=1, budget_s=0.0)
    ba.time_variants({"a": ba.Variant(run)}, opts)  # budget exhausted: exactly one repetition
    assert calls["run"] == 6


def test_time_variants_skips_repetitions_that_lost_the_core() -> None:
    sleeps = iter([0.05, 0.0, 0.0, 0.0])

    def run() -> None:
        delay = next(sleeps, 0.0)
        if delay:
            time.sleep(delay)  # wall time without CPU time: what another process does to us
        else:
            sum(range(20_000))

    opts = ba.Options(2048, False, 128, 100, True, min_seconds=0.0, min_reps=3, budget_s=10.0)
    stats = ba.TimingStats()
    median = ba.time_variants({"a": ba.Variant(run)}, opts, stats)["a"]
    assert stats.disturbed >= 1 and stats.reps == 3 + stats.disturbed and stats.fallbacks == 0
    assert median < 0.04


def test_cold_state_really_clears_the_prime_cache() -> None:
    params, _ = ba.make_params(ba.options(2048, False, None, None, True))
    x = ba.chain_element(3)
    hash_to_prime(x)
    ba.prime_state(params, [], warm=False)()
    assert accumulator._h2p.cache_info().currsize == 0
    ba.prime_state(params, [x], warm=True)()
    assert accumulator._h2p.cache_info().currsize == 1
