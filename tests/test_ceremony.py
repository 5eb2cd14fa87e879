"""Distributed RSA modulus generation (seed 000 §IV-C; Boneh–Franklin 1997, "BF").

The in-memory tests see every party's secrets, so they can check the algebra the seed
states (``N_i`` broadcast, ``alpha(0) = N``, "a distributed primality test") against
the factors; the process tests run ``fedledger ceremony modulus`` for real. Reference
checks use ``gmpy2.is_prime`` and plain integer arithmetic on the pooled secrets.
"""

from __future__ import annotations

import itertools
import json
import math
import random
import socket
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import gmpy2
import pytest

from fedledger.cli.main import main
from fedledger.crypto.accumulator import AccumulatorParams
from fedledger.crypto.ceremony import (
    CeremonyParams,
    CeremonyParamsError,
    CeremonyParty,
    Outgoing,
    biprimality_base,
    biprimality_check,
    biprimality_share,
    constants,
    interpolate_at_zero,
    run_in_memory,
    shamir_share,
)
from fedledger.errors import UsageError
from fedledger.node.ceremony import party_rng, session_id

PY = sys.executable


def rngs(k: int, seed: int = 0) -> list[random.Random]:
    return [random.Random(seed * 100 + i) for i in range(k)]


class Recorder:
    """Pools every party's secrets and broadcasts at the products round of each batch."""

    def __init__(self, parties: list[CeremonyParty]) -> None:
        self.parties = parties
        self.batches: list[dict[str, Any]] = []

    def __call__(self, outs: Mapping[int, Outgoing]) -> None:
        if "n" in outs[1].public:  # the round in which every party broadcasts N_j
            shares = [p.secret_shares() for p in self.parties]
            self.batches.append({
                "p": [sum(s[0][c] for s in shares) for c in range(len(shares[0][0]))],
                "q": [sum(s[1][c] for s in shares) for c in range(len(shares[0][1]))],
                "p_i": [s[0] for s in shares],
                "q_i": [s[1] for s in shares],
                "n_j": [outs[j].public["n"] for j in sorted(outs)],
            })


Run = tuple[int, "Recorder", list[CeremonyParty]]


def record_run(params: CeremonyParams, seed: int = 0,
               party_type: type[CeremonyParty] = CeremonyParty) -> Run:
    parties = [party_type(params, i + 1, r) for i, r in enumerate(rngs(params.parties, seed))]
    rec = Recorder(parties)
    result = run_in_memory(params, [], observe=rec, parties=parties)
    return result.modulus, rec, parties


# --------------------------------------------------------------------------- parameters


@pytest.mark.parametrize("k", [0, 1, 2])
def test_fewer_than_three_parties_is_refused_with_the_reason(k: int) -> None:
    # the product polynomial has degree 2t <= k-1, so k = 2 forces t = 0: no privacy
    with pytest.raises(CeremonyParamsError, match="at least 3 parties") as exc:
        CeremonyParams(k, 256)
    assert "t = floor((k-1)/2) = 0" in str(exc.value)
    assert isinstance(exc.value, UsageError) and exc.value.exit_code == 2


@pytest.mark.parametrize("field,value", [("bits", 255), ("bits", 64), ("bits", 10_000),
                                         ("rounds", 10), ("batch_size", -1)])
def test_bad_sizes_are_refused(field: str, value: int) -> None:
    kwargs: dict[str, Any] = {"parties": 3, "bits": 256, field: value}
    with pytest.raises(CeremonyParamsError):
        CeremonyParams(**kwargs)


@pytest.mark.parametrize("k,t", [(3, 1), (4, 1), (5, 2), (7, 3)])
def test_threshold_is_the_largest_t_with_2t_at_most_k_minus_1(k: int, t: int) -> None:
    assert CeremonyParams(k, 256).threshold == t


def test_shared_constants_fit_the_protocol() -> None:
    c = constants(CeremonyParams(3, 2048))
    assert gmpy2.is_prime(c.field_prime) and c.field_prime > 2**2048  # P > any N
    assert min(c.sieve_primes) > 3 and c.sieve_modulus.bit_length() <= 512  # units for points 1..k
    assert c.sieve_modulus == math.prod(c.sieve_primes)


# --------------------------------------------------------------------------- Shamir privacy


class _Enumerate(random.Random):
    """A 'generator' that hands out fixed polynomial coefficients (exhaustive tests)."""

    def __init__(self, coefficients: tuple[int, ...]) -> None:
        super().__init__(0)
        self._it = iter(coefficients)

    def randrange(self, *args: Any, **kwargs: Any) -> int:  # type: ignore[override]
        return next(self._it)


@pytest.mark.parametrize("k", [3, 5])
def test_t_shares_are_consistent_with_every_secret_and_t_plus_1_reveal_it(k: int) -> None:
    """Seed 000 §IV-C "honest-but-curious": t = floor((k-1)/2) colluders learn nothing.

    Over a small field, enumerate every degree-t polynomial: for each secret, the views
    of a t-coalition (its t shares) are each hit exactly once, so the view is equally
    likely under every secret. With t+1 shares the secret is determined.
    """
    q, t = 11, (k - 1) // 2
    coalition = list(range(t))  # parties 1..t
    for secret in (0, 3, 7):
        views = []
        for coeffs in itertools.product(range(q), repeat=t):
            shares = shamir_share(secret, t, k, q, _Enumerate(coeffs))
            views.append(tuple(int(shares[j]) for j in coalition))
            assert interpolate_at_zero(shares[: t + 1], q, _lagrange_first(t + 1, q)) == secret
        assert sorted(views) == sorted(itertools.product(range(q), repeat=t))


def _lagrange_first(m: int, q: int) -> list[int]:
    """Lagrange weights at 0 for the points 1..m (computed independently with pow)."""
    out = []
    for j in range(1, m + 1):
        num = den = 1
        for x in range(1, m + 1):
            if x != j:
                num, den = num * x % q, den * (x - j) % q
        out.append(num * pow(den, -1, q) % q)
    return out


# --------------------------------------------------------------------------- the protocol


@pytest.mark.parametrize("k,bits", [(3, 128), (4, 256), (5, 256)])
def test_accepted_modulus_is_a_product_of_two_primes_of_half_size(k: int, bits: int) -> None:
    """Seed 000 §IV-C: N = (sum p_i)(sum q_i), and the primality test keeps only biprimes."""
    n, rec, parties = record_run(CeremonyParams(k, bits, b"t"), seed=k)
    last = rec.batches[-1]
    (c,) = [c for c in range(len(last["p"])) if last["p"][c] * last["q"][c] == n]
    p, q = last["p"][c], last["q"][c]
    assert gmpy2.is_prime(p) and gmpy2.is_prime(q) and p != q
    assert p.bit_length() == q.bit_length() == bits // 2 and n.bit_length() == bits
    assert p % 4 == q % 4 == 3  # BF: p = q = 3 (mod 4) ...
    assert last["p_i"][0][c] % 4 == last["q_i"][0][c] % 4 == 3  # ... party 1 holds 3 (mod 4)
    assert all(s[c] % 4 == 0 for s in last["p_i"][1:] + last["q_i"][1:])  # the others 0
    assert all(pt.result is not None and pt.result.modulus == n for pt in parties)
    stats = parties[0].stats
    assert stats.candidates == sum(len(b["p"]) for b in rec.batches)
    assert stats.biprimality_tests >= 64


@pytest.mark.parametrize("k", [3, 4])
def test_broadcast_products_interpolate_to_the_product_of_the_sums(k: int) -> None:
    """Seed 000 §IV-C: N_i = (sum_j p_ji)(sum_j q_ji) + sum_j h_ji and alpha(0) = N."""
    _, rec, _ = record_run(CeremonyParams(k, 256, b"t"), seed=10 + k)
    t = (k - 1) // 2
    P = constants(CeremonyParams(k, 256)).field_prime
    for batch in rec.batches:
        for c, (p, q) in enumerate(zip(batch["p"], batch["q"], strict=True)):
            points = [(j + 1, row[c]) for j, row in enumerate(batch["n_j"])]
            # every 2t+1 of the k broadcasts lie on the same degree-2t polynomial alpha
            for subset in itertools.combinations(points, 2 * t + 1):
                assert _interpolate(subset, P) == p * q


def test_broadcasts_are_masked_by_the_zero_sharing() -> None:
    """Seed 000 §IV-C's h_i (h_i(0) = 0) make alpha a random degree-2t polynomial through N.

    Without them alpha = F*G would always factor over Z_P (its roots are -p/a and -q/b,
    leaking those ratios); a random quadratic has roots only about half the time.
    """
    params = CeremonyParams(3, 256, b"t", batch_size=64, sieve=False)
    _, rec, _ = record_run(params, seed=21)
    P = int(constants(params).field_prime)
    roots = total = 0
    for batch in rec.batches:
        for a1, a2, a3 in zip(*batch["n_j"], strict=True):
            c2 = (a1 - 2 * a2 + a3) * pow(2, -1, P) % P
            c1 = (a2 - a1 - 3 * c2) % P
            c0 = (a1 - c1 - c2) % P
            disc = (c1 * c1 - 4 * c2 * c0) % P
            roots += pow(disc, (P - 1) // 2, P) != P - 1
            total += 1
    assert total >= 64 and 0.3 < roots / total < 0.7


def _interpolate(points: tuple[tuple[int, int], ...], modulus: int) -> int:
    acc = 0
    for xj, yj in points:
        num = den = 1
        for xm, _ in points:
            if xm != xj:
                num, den = num * xm % modulus, den * (xm - xj) % modulus
        acc += yj * num * pow(den, -1, modulus)
    return acc % modulus


def test_sieved_candidates_have_no_small_factors() -> None:
    """Distributed sieving: every p = sum p_i is a unit mod M, without anyone learning p mod M."""
    params = CeremonyParams(3, 256, b"t")
    _, rec, _ = record_run(params, seed=3)
    c = constants(params)
    candidates = [x for b in rec.batches for x in b["p"] + b["q"]]
    assert all(gmpy2.gcd(x, c.sieve_modulus) == 1 for x in candidates)
    # without sieving, a fifth of the candidates are multiples of 5
    _, plain, _ = record_run(CeremonyParams(3, 256, b"t", batch_size=256, sieve=False), seed=3)
    fives = sum(x % 5 == 0 for b in plain.batches for x in b["p"] + b["q"])
    assert fives > 0.1 * sum(len(b["p"]) * 2 for b in plain.batches)


def test_runs_are_reproducible_from_their_randomness() -> None:
    params = CeremonyParams(3, 192, b"same")
    assert run_in_memory(params, rngs(3, 1)).modulus == run_in_memory(params, rngs(3, 1)).modulus
    assert run_in_memory(params, rngs(3, 1)).modulus != run_in_memory(params, rngs(3, 2)).modulus


# --------------------------------------------------------------------------- biprimality test

_rng = random.Random(2024)


def _prime_mod_4(bits: int, residue: int = 3) -> int:
    while True:
        x = int(gmpy2.next_prime(_rng.getrandbits(bits) | (1 << (bits - 1))))
        if x % 4 == residue and x.bit_length() == bits:
            return x


def _split(x: int, k: int) -> list[int]:
    """BF's share pattern: party 1 = 3 (mod 4), the others = 0 (mod 4)."""
    rest = [4 * _rng.randrange(1 << 30) for _ in range(k - 1)]
    return [x - sum(rest), *rest]


def _test_passes(p: int, q: int, k: int, test: int, label: int = 0) -> bool:
    n = p * q
    g = biprimality_base(b"bf", n, label, test)
    ps, qs = _split(p, k), _split(q, k)
    return biprimality_check(
        [biprimality_share(i + 1, ps[i], qs[i], n, g) for i in range(k)], n)


def test_biprimality_test_accepts_every_biprime() -> None:
    """BF: for N = pq with p = q = 3 (mod 4) prime, g^(phi/4) = +-1 for every Jacobi-one g."""
    for trial in range(10):
        p, q = _prime_mod_4(96), _prime_mod_4(96)
        assert all(_test_passes(p, q, 3 + trial % 3, j, trial) for j in range(64))


@pytest.mark.parametrize("shape", ["3 primes", "4 primes"])
def test_biprimality_test_rejects_products_of_more_primes(shape: str) -> None:
    """BF: a non-biprime passes one test with probability <= 1/2, so 64 tests reject it.

    p must be 3 (mod 4) for the shares to have BF's form: p = r1 r2 with r1 = 3, r2 = 1
    (mod 4), or p = r1 r2 r3 with all three = 3 (mod 4); q is a prime = 3 (mod 4).
    """
    passes = tests = 0
    for trial in range(30):
        if shape == "3 primes":
            p = _prime_mod_4(64, 3) * _prime_mod_4(64, 1)
        else:
            p = _prime_mod_4(48, 3) * _prime_mod_4(48, 3) * _prime_mod_4(48, 3)
        q = _prime_mod_4(128)
        assert p % 4 == 3
        results = [_test_passes(p, q, 3, j, trial) for j in range(64)]
        assert not all(results), f"a product of {shape} survived 64 tests"
        passes, tests = passes + sum(results), tests + len(results)
    assert passes / tests <= 0.5 + 0.05


def _square_factor_false_positive(bits: int) -> tuple[int, int]:
    """p = r^3, q = s with s = 1 (mod r^2): N = r^3 s passes every BF test (see module doc)."""
    while True:
        r = _prime_mod_4(bits // 6)
        room = bits - (r**3).bit_length() - 2 * r.bit_length()
        for _ in range(4000):
            s = 1 + 2 * r * r * (_rng.getrandbits(room) | 1)
            if gmpy2.is_prime(s) and (r**3 * s).bit_length() == bits:
                return r**3, s


def test_square_factor_false_positive_needs_the_gcd_check() -> None:
    """BF's extra condition gcd(N, p + q - 1) = 1 is what rules out N = r^3 s."""
    p, q = _square_factor_false_positive(256)
    assert all(_test_passes(p, q, 3, j) for j in range(64))  # the plain test is fooled
    assert gmpy2.gcd(p * q, p + q - 1) > 1  # the gcd check is not


class _Planting(CeremonyParty):
    """A party whose first candidate of the first batch is the planted r^3 s (test only)."""

    planted: tuple[list[int], list[int]] = ([], [])

    def _draw_candidates(self, bp: Any, bq: Any) -> None:
        super()._draw_candidates(bp, bq)
        if self.stats.batches == 1:
            self._batch.p[0] = gmpy2.mpz(self.planted[0][self.index - 1])
            self._batch.q[0] = gmpy2.mpz(self.planted[1][self.index - 1])


def test_protocol_rejects_the_planted_false_positive_in_the_gcd_round() -> None:
    p, q = _square_factor_false_positive(256)
    _Planting.planted = (_split(p, 3), _split(q, 3))
    params = CeremonyParams(3, 256, b"plant", batch_size=16, sieve=False)
    n, _, parties = record_run(params, party_type=_Planting)
    stats = parties[0].stats
    assert stats.gcd_rejected >= 1  # it passed trial division and all 64 tests, then gcd
    assert n != p * q and stats.biprimality_tests >= 2 * 64 - 1


# --------------------------------------------------------------------------- processes


def _cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PY, "-m", "fedledger.cli.main", *args], capture_output=True,
                          text=True, timeout=timeout)


def test_parties_as_processes_agree_with_the_in_memory_protocol(tmp_path: Path) -> None:
    """Three OS processes over TCP produce the modulus the pure core computes."""
    out = tmp_path / "modulus.json"
    proc = _cli("ceremony", "modulus", "--parties", "3", "--bits", "256", "--seed", "fixed",
                "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    line = json.loads(proc.stdout.strip().splitlines()[-1])
    assert json.loads(out.read_text()) == line
    n = int(line["modulus"], 16)
    assert (line["bits"], line["parties"], n.bit_length()) == (256, 3, 256)
    assert line["candidates"] > 0 and line["biprimality_tests"] >= 64 and line["seconds"] > 0
    assert line["accumulator_ok"] is False  # below 2048 bits; tests may still use it:
    assert AccumulatorParams.from_modulus(n, allow_small=True).n == n
    params = CeremonyParams(3, 256, session_id(b"fixed"))
    assert run_in_memory(params, [party_rng(b"fixed", i) for i in (1, 2, 3)]).modulus == n
    assert "Traceback" not in proc.stderr


def test_two_parties_exit_with_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ceremony", "modulus", "--parties", "2", "--bits", "256"]) == 2
    err = capsys.readouterr().err
    assert "at least 3 parties" in err and "Traceback" not in err


def test_odd_bits_exit_with_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ceremony", "modulus", "--bits", "255"]) == 2
    assert "even number of bits" in capsys.readouterr().err


def test_port_in_use_is_a_clear_configuration_error() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = _cli("ceremony", "modulus", "--bits", "256", "--port", str(port - 1))
    assert proc.returncode == 2, proc.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_dying_party_stops_the_others_and_the_coordinator() -> None:
    """Party 2 dies in round 3; parties 1 and 3 notice, and nobody hangs."""
    proc = _cli("ceremony", "modulus", "--bits", "256", "--seed", "x", "--crash-party", "2", "3",
                timeout=40)
    assert proc.returncode == 10, proc.stderr
    assert "party 2 failed" in proc.stderr
    assert "party 1: lost the connection to party 2" in proc.stderr
    assert "party 3: lost the connection to party 2" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_bench_quick_prints_the_json_contract() -> None:
    proc = _cli("bench", "ceremony", "--quick", "--json")
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    assert r["bench"] == "ceremony" and (r["bits"], r["parties"]) == (512, 3)
    for key in ("ceremony_s", "baseline_dealer_s", "ratio", "candidates", "biprimality_tests"):
        assert isinstance(r[key], int | float) and r[key] > 0, key
    assert r["ratio"] == pytest.approx(r["ceremony_s"] / r["baseline_dealer_s"], rel=0.05)
    assert r["modulus_bits"] == 512
