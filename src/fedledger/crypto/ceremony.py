"""Distributed RSA modulus generation: the pure protocol core (seed 000 §IV-C).

The accumulator (:mod:`fedledger.crypto.accumulator`) is only as good as its modulus:
whoever knows ``N = p*q``'s factors can forge every membership proof. Seed 000 §IV-C
has ``k`` peers generate ``N`` so that none of them learns ``p`` or ``q``, following
Boneh and Franklin ("Efficient generation of shared RSA keys", CRYPTO 1997; J. ACM
2001), which we cite as BF below. This module is that protocol as a deterministic
state machine: a :class:`CeremonyParty` takes its randomness from the ``random.Random``
it is given and its input only as the messages of the previous round
(:meth:`CeremonyParty.step`), and returns the messages of the next round. It does no
I/O; :mod:`fedledger.node.ceremony` carries the messages between OS processes, and
:func:`run_in_memory` between objects (tests).

Threat model
------------
Honest majority, semi-honest ("honest-but-curious"): every party follows the protocol
but any coalition of at most ``t = floor((k-1)/2)`` parties pools what it sees and tries
to learn ``p`` or ``q``. The coalition learns nothing beyond ``N`` (and the public
values of rejected candidates). Nothing here defends against a party that *deviates*
(wrong shares, a broadcast that differs per recipient, biased ``p_i``): that needs
verifiable secret sharing and zero-knowledge proofs of the shares' form (Frederiksen
et al. 2018, Chen et al. 2020), which the seed does not ask for.

Why ``k >= 3``: the seed's ``alpha(x) = (sum f_j(x))(sum g_j(x)) + sum h_j(x)`` has degree
``2t``, and the ``k`` broadcast values ``N_i = alpha(i)`` determine ``alpha(0) = N`` only if
``2t <= k - 1``. With ``k = 2`` that forces ``t = 0``: constant polynomials, so every
"share" *is* the secret and the other party learns ``p_i`` and ``q_i``. ``k >= 3`` is the
smallest committee with ``t >= 1``.

One candidate batch, round by round
-----------------------------------
All arithmetic on shares is Shamir/BGW at the points ``x = 1..k`` (party ``i`` is point
``i``). A batch draws ``batch_size`` candidates at once, so each network round carries
many candidates.

1. *Distributed sieving* (optional, on by default; Malkin, Wu and Boneh 1999). ``M`` is
   the product of the primes ``r`` with ``k < r`` and ``M <= 2^(bits/4)``. Each party picks
   a random unit ``a_i`` of ``Z_M`` (one for ``p``, one for ``q``) and Shamir-shares it
   (degree ``t``). BGW multiplication with degree reduction (``k - 2`` resharing rounds)
   yields a degree-``2t`` sharing of ``a = prod a_i``, which each party turns into an
   additive share ``b_i = lambda_i * w_i mod M``. Then ``p = sum p_i`` with
   ``p_i = b_i + M*r_i`` is a unit mod ``M``: no prime factor up to the sieve bound,
   without anybody learning ``p mod M``. Shamir over the ring ``Z_M`` is sound because
   every prime factor of ``M`` exceeds ``k`` (the points and their differences are
   units). This cuts the candidates for a 2048-bit ``N`` from about 1.3e5 to about
   1e4. Primes ``<= k`` (3 for ``k = 3``) are left to trial division.
2. *Shares* (seed: ``f_i, g_i, h_i``). The candidate shares follow BF: party 1 holds
   ``p_1 = q_1 = 3 (mod 4)``, the others ``p_i = q_i = 0 (mod 4)``, so ``p = q = 3 (mod 4)``.
   Party 1 also carries the public offset ``3*2^(h-2)`` (``h = bits/2``) and every other
   part stays below ``2^(h-2)/k``, so ``p`` and ``q`` have exactly ``h`` bits with the top two
   set, and ``N`` exactly ``bits`` bits. Party ``i`` sends ``(f_i(j), g_i(j), h_i(j))`` to party
   ``j``: ``f_i, g_i`` of degree ``t`` with constant terms ``p_i, q_i``, ``h_i`` of degree
   ``2t`` with ``h_i(0) = 0``, all over ``Z_P`` for the prime ``P = next_prime(2^bits) > N``.
3. *Products.* Party ``j`` broadcasts ``N_j = (sum_i f_i(j))(sum_i g_i(j)) + sum_i h_i(j) mod P``;
   everybody interpolates ``alpha(0) = N``. The ``h_i`` make ``alpha`` a uniformly random
   polynomial of degree ``2t`` through ``(0, N)``, so the ``N_j`` reveal nothing but ``N``.
4. *Public trial division*: ``N`` must have no prime factor below ``2^16``
   (one ``gcd`` with the product of those primes). About 1 in 8 sieved candidates
   survive at 2048 bits.
5. *Biprimality test* (BF §3, "distributed primality test" of the seed). For a common
   ``g`` with Jacobi symbol ``(g/N) = +1`` (derived by hashing the session, ``N`` and the
   test index, so nobody chooses it), party 1 broadcasts ``v_1 = g^((N - p_1 - q_1 + 1)/4)``
   and the others ``v_i = g^((p_i + q_i)/4) mod N``; the test passes when
   ``v_1 = +-prod_{i>1} v_i (mod N)``, i.e. ``g^(phi/4) = +-1`` with ``phi = (p-1)(q-1)``.
   One test runs per surviving candidate; a candidate that passes it gets the
   remaining ``rounds - 1`` tests together with step 6 in the next round.
6. *The gcd check* (BF's extra condition): the parties compute ``z*(p + q - 1) mod N``
   for a jointly random ``z``, with the same BGW product (degree-``t`` shares of ``z`` and of
   ``p + q - 1`` over ``Z_N``, a degree-``2t`` zero sharing), broadcast and interpolate it,
   and require ``gcd(z*(p + q - 1), N) = 1``. The revealed value is a uniformly random unit
   when the check passes, so it leaks nothing.

Error bound
-----------
*Biprimes always pass.* If ``N = pq`` with ``p = q = 3 (mod 4)`` prime, ``g^(phi/4)`` is
``(g/p) = (g/q) = +-1`` for every ``g`` with ``(g/N) = 1``.

*Anything else fails each test with probability at least 1/2*, given the gcd check
(the accepted set of ``g`` is a subgroup of the Jacobi-one group ``G``, so it suffices to
exhibit one ``g`` in ``G`` that fails). Write ``e = phi/4``; ``p - 1 = q - 1 = 2 (mod 4)`` makes
``e`` odd. (a) If ``r^2 | N`` for a prime ``r``, ``Z_N^*`` has an element of odd order ``r`` with
Jacobi symbol 1; it passes only if ``r | e``, hence ``r | N - phi = p + q - 1``, which the gcd
check rules out. (b) If ``N`` is squarefree with at least three prime factors, take ``g``
that is a non-residue modulo two of them and 1 modulo a third: ``(g/N) = 1``, and ``g^e``
(``e`` odd) is still a non-residue modulo the first prime but 1 modulo the third, so it is
not ``+-1``. (c) A squarefree ``N`` with two prime factors and ``p, q > 1`` is a biprime.
Without step 6, case (a) is a real false positive: ``N = r^3 s`` with ``s = 1 (mod r^2)``
passes every test (the test suite builds one); BF handle it with the same gcd check.

So a non-biprime survives ``R`` tests with probability at most ``2^-R``; over a ceremony
that tests ``T`` candidates the chance of accepting a non-biprime is at most ``T * 2^-R``
(about ``1300 * 2^-64 < 2^-53`` at 2048 bits with the default ``R = 64``), assuming the
hash that derives ``g`` behaves as a random oracle. The factors are ordinary random
primes, as from a trusted dealer; they are not safe primes, which the accumulator does
not need (its generator is a hashed quadratic residue).
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any

import gmpy2

from fedledger.errors import UsageError, VerificationFailed

__all__ = [
    "DEFAULT_BITS",
    "DEFAULT_ROUNDS",
    "MAX_BITS",
    "MAX_PARTIES",
    "MIN_BITS",
    "MIN_PARTIES",
    "MIN_ROUNDS",
    "TRIAL_DIVISION_BOUND",
    "CeremonyParams",
    "CeremonyParamsError",
    "CeremonyParty",
    "CeremonyProtocolError",
    "CeremonyResult",
    "CeremonyStats",
    "Constants",
    "Incoming",
    "Outgoing",
    "biprimality_base",
    "biprimality_check",
    "biprimality_share",
    "constants",
    "default_batch_size",
    "expected_candidates",
    "interpolate_at_zero",
    "lagrange_at_zero",
    "route",
    "run_in_memory",
    "shamir_share",
    "trial_division_passes",
]

MIN_PARTIES = 3
MAX_PARTIES = 64
MIN_BITS = 128
MAX_BITS = 8192
DEFAULT_BITS = 2048
MIN_ROUNDS = 40
DEFAULT_ROUNDS = 64
MAX_BATCH = 4096
TRIAL_DIVISION_BOUND = 1 << 16
"""Public trial division removes every ``N`` with a prime factor below this bound."""

_BF_DOMAIN = b"fedledger/ceremony/biprimality\x00"


class CeremonyParamsError(UsageError):
    """The ceremony was asked for something it cannot do (too few parties, bad size)."""


class CeremonyProtocolError(VerificationFailed):
    """A party's messages do not fit the protocol (missing, malformed or inconsistent)."""


# --------------------------------------------------------------------------- parameters


@dataclass(frozen=True)
class CeremonyParams:
    """What every party must agree on before the first round.

    ``session`` names the run: it is hashed into every biprimality base, so two runs
    never share tests. ``batch_size = 0`` picks :func:`default_batch_size`. ``sieve``
    turns distributed sieving (step 1 of the module docstring) on or off.
    """

    parties: int
    bits: int = DEFAULT_BITS
    session: bytes = b""
    batch_size: int = 0
    rounds: int = DEFAULT_ROUNDS
    sieve: bool = True

    def __post_init__(self) -> None:
        k, bits = self.parties, self.bits
        if type(k) is not int or k < MIN_PARTIES:
            raise CeremonyParamsError(
                f"the ceremony needs at least {MIN_PARTIES} parties, got {k}: with k = 2 the "
                "threshold is t = floor((k-1)/2) = 0 and every share reveals its secret"
            )
        if k > MAX_PARTIES:
            raise CeremonyParamsError(f"at most {MAX_PARTIES} parties, got {k}")
        if type(bits) is not int or bits < MIN_BITS or bits > MAX_BITS or bits % 2:
            raise CeremonyParamsError(
                f"modulus size must be an even number of bits in [{MIN_BITS}, {MAX_BITS}], got {bits}"
            )
        if type(self.rounds) is not int or not MIN_ROUNDS <= self.rounds <= 256:
            raise CeremonyParamsError(
                f"biprimality rounds must be in [{MIN_ROUNDS}, 256], got {self.rounds}"
            )
        if type(self.batch_size) is not int or not 0 <= self.batch_size <= MAX_BATCH:
            raise CeremonyParamsError(f"batch size must be in [1, {MAX_BATCH}] (0: automatic)")
        if not isinstance(self.session, bytes) or len(self.session) > 64:
            raise CeremonyParamsError("session id must be at most 64 bytes")

    @property
    def threshold(self) -> int:
        """``t``: the largest coalition that learns nothing; ``2t <= k - 1``."""
        return (self.parties - 1) // 2

    @property
    def batch(self) -> int:
        """Candidates per batch (resolved)."""
        return self.batch_size or default_batch_size(self)


@dataclass(frozen=True)
class Constants:
    """Values derived from ``(parties, bits, sieve)`` that every party computes alike."""

    field_prime: Any  # P > N: shares of p, q and N live in Z_P
    sieve_modulus: Any  # M: product of the sieving primes (1 without sieving)
    sieve_primes: tuple[int, ...]
    trial_product: Any  # product of the odd primes below TRIAL_DIVISION_BOUND
    offset: int  # 3 * 2^(h-2), added by party 1 to p_1 and q_1
    span: int  # r_i in p_i = b_i + M*(4*r_i + c_i) is drawn below this
    lagrange: tuple[Any, ...]  # lambda_j at 0 mod P
    sieve_lagrange: tuple[Any, ...]  # lambda_j at 0 mod M


def _odd_primes_below(bound: int) -> list[int]:
    """Sieve of Eratosthenes (one-off, a few ms for the trial-division bound)."""
    is_prime = bytearray([1]) * bound
    is_prime[:2] = b"\x00\x00"
    for i in range(2, math.isqrt(bound - 1) + 1):
        if is_prime[i]:
            is_prime[i * i :: i] = bytes(len(range(i * i, bound, i)))
    return [i for i in range(3, bound, 2) if is_prime[i]]


@lru_cache(maxsize=16)
def _constants(parties: int, bits: int, sieve: bool) -> Constants:
    half = bits // 2
    primes: list[int] = []
    m = gmpy2.mpz(1)
    if sieve:
        r = gmpy2.next_prime(parties)
        while m * r <= gmpy2.mpz(1) << (half // 2):
            m *= r
            primes.append(int(r))
            r = gmpy2.next_prime(r)
    trial = gmpy2.mpz(1)
    for r in _odd_primes_below(TRIAL_DIVISION_BOUND):
        trial *= r
    field_prime = gmpy2.next_prime(gmpy2.mpz(1) << bits)
    span = int((gmpy2.mpz(1) << (half - 2)) // (4 * parties * m))
    return Constants(
        field_prime=field_prime,
        sieve_modulus=m,
        sieve_primes=tuple(primes),
        trial_product=trial,
        offset=3 << (half - 2),
        span=span,
        lagrange=lagrange_at_zero(parties, field_prime),
        sieve_lagrange=lagrange_at_zero(parties, m) if m > 1 else (),
    )


def constants(params: CeremonyParams) -> Constants:
    """The shared constants of ``params`` (cached: computing ``P`` takes a few ms)."""
    return _constants(params.parties, params.bits, params.sieve)


def expected_candidates(params: CeremonyParams) -> float:
    """Heuristic mean number of candidates until both ``p`` and ``q`` are prime.

    A random odd ``h``-bit integer coprime to the sieving primes is prime with probability
    about ``1 / (h ln 2 * prod_{r in {2} + sieve}(1 - 1/r))`` (prime number theorem; the
    ``3 (mod 4)`` condition does not change it); both factors must be.
    """
    c = constants(params)
    density = 0.5 * math.prod(1 - 1 / r for r in c.sieve_primes)
    prime_probability = 1 / ((params.bits // 2) * math.log(2) * density)
    return float(1 / prime_probability**2)


def default_batch_size(params: CeremonyParams) -> int:
    """About an eighth of the expected candidates, in multiples of 16, within [16, 1024]."""
    return max(16, min(1024, int(expected_candidates(params) / 8) // 16 * 16))


# --------------------------------------------------------------------------- arithmetic


def lagrange_at_zero(parties: int, modulus: Any) -> tuple[Any, ...]:
    """``lambda_j = prod_{m != j} m / (m - j) mod modulus`` for the points ``1..parties``.

    ``sum_j lambda_j * f(j) = f(0)`` for every polynomial of degree below ``parties``. The
    modulus may be composite as long as the differences of the points are units
    (all its prime factors exceed ``parties``); ``ZeroDivisionError`` otherwise.
    """
    modulus = gmpy2.mpz(modulus)
    out = []
    for j in range(1, parties + 1):
        num, den = gmpy2.mpz(1), gmpy2.mpz(1)
        for m in range(1, parties + 1):
            if m != j:
                num *= m
                den *= m - j
        out.append(num * gmpy2.invert(den % modulus, modulus) % modulus)
    return tuple(out)


def interpolate_at_zero(values: Sequence[Any], modulus: Any,
                        lagrange: Sequence[Any] | None = None) -> Any:
    """``f(0)`` from ``values[j-1] = f(j)``, ``j = 1..len(values)``."""
    lam = lagrange if lagrange is not None else lagrange_at_zero(len(values), modulus)
    acc = gmpy2.mpz(0)
    for lj, v in zip(lam, values, strict=True):
        acc += lj * v
    return acc % modulus


def shamir_share(secret: Any, degree: int, parties: int, modulus: Any,
                 rng: random.Random) -> list[Any]:
    """Evaluations at ``1..parties`` of a random polynomial of ``degree`` with ``f(0) = secret``."""
    coeffs = [gmpy2.mpz(secret)] + [gmpy2.mpz(rng.randrange(modulus)) for _ in range(degree)]
    out = []
    for x in range(1, parties + 1):
        acc = coeffs[-1]
        for c in reversed(coeffs[:-1]):
            acc = acc * x + c
        out.append(acc % modulus)
    return out


def _random_unit(modulus: Any, rng: random.Random) -> Any:
    while True:
        a = gmpy2.mpz(rng.randrange(1, modulus))
        if gmpy2.gcd(a, modulus) == 1:
            return a


def trial_division_passes(n: Any, trial_product: Any) -> bool:
    """True if ``n`` has no odd prime factor below :data:`TRIAL_DIVISION_BOUND` (step 4)."""
    return bool(gmpy2.gcd(n, trial_product) == 1)


def biprimality_base(session: bytes, n: Any, label: int, test: int) -> Any:
    """The common ``g`` of test number ``test`` on candidate ``label``: ``(g/N) = +1``.

    Derived by SHAKE-256 from the session, ``N`` and the indices, so every party gets the
    same value and nobody picks it (BF assume it uniform in the Jacobi-one group).
    """
    n = gmpy2.mpz(n)
    size = (n.bit_length() + 7) // 8
    head = _BF_DOMAIN + len(session).to_bytes(1, "big") + session + int(n).to_bytes(size, "big")
    counter = 0
    while True:
        tail = b"".join(x.to_bytes(8, "big") for x in (label, test, counter))
        g = gmpy2.mpz(int.from_bytes(hashlib.shake_256(head + tail).digest(size + 16), "big")) % n
        if gmpy2.jacobi(g, n) == 1:
            return g
        counter += 1


def biprimality_share(index: int, p_i: Any, q_i: Any, n: Any, g: Any) -> Any:
    """BF's ``v_1 = g^((N - p_1 - q_1 + 1)/4)`` for party 1, ``v_i = g^((p_i + q_i)/4)`` otherwise."""
    share = gmpy2.mpz(p_i) + q_i
    exponent = (n - share + 1) // 4 if index == 1 else share // 4
    return gmpy2.powmod(g, exponent, n)


def biprimality_check(values: Sequence[Any], n: Any) -> bool:
    """BF's test: ``v_1 = +-prod_{i>1} v_i (mod N)``; ``values[i-1]`` is party ``i``'s ``v_i``."""
    rhs = gmpy2.mpz(1)
    for v in values[1:]:
        rhs = rhs * v % n
    return bool(values[0] == rhs or values[0] == (n - rhs) % n)


# --------------------------------------------------------------------------- messages


Vectors = dict[str, list[int]]


@dataclass(frozen=True)
class Outgoing:
    """One party's messages for one round.

    ``public`` goes to every other party (a broadcast); ``private[j]`` goes to party ``j``
    only and must travel encrypted. ``private`` also holds the sender's own entry, which
    never leaves the party.
    """

    public: Vectors
    private: dict[int, Vectors]


@dataclass(frozen=True)
class Incoming:
    """What one sender sent this party in one round: its broadcast and our private part."""

    public: Mapping[str, Sequence[int]]
    private: Mapping[str, Sequence[int]]


Inbox = Mapping[int, Incoming]


@dataclass
class CeremonyStats:
    """Work counters, identical at every party."""

    batches: int = 0
    candidates: int = 0
    trial_division_passed: int = 0
    biprimality_tests: int = 0
    first_test_passed: int = 0
    gcd_rejected: int = 0
    rounds: int = 0


@dataclass(frozen=True)
class CeremonyResult:
    """The public outcome: ``N`` and the work it took."""

    modulus: int
    bits: int
    parties: int
    stats: CeremonyStats

    def as_dict(self) -> dict[str, Any]:
        s = self.stats
        return {
            "modulus": format(self.modulus, "x"),
            "bits": self.bits,
            "parties": self.parties,
            "candidates": s.candidates,
            "biprimality_tests": s.biprimality_tests,
            "batches": s.batches,
            "trial_division_passed": s.trial_division_passed,
            "first_test_passed": s.first_test_passed,
            "gcd_rejected": s.gcd_rejected,
            "rounds": s.rounds,
        }


# --------------------------------------------------------------------------- the party

Handler = Callable[[Inbox], "Next | None"]
Next = tuple[Outgoing, Handler]
"""A round's messages and the handler of the replies."""


@dataclass
class _Batch:
    """Per-batch private state (dropped when the batch ends)."""

    factors: list[list[list[Any]]] = field(default_factory=list)  # sieve: [p|q][party][cand]
    acc: list[list[Any]] = field(default_factory=list)  # sieve: running product shares
    step: int = 0  # sieve: how many a_i are multiplied in
    p: list[Any] = field(default_factory=list)  # additive shares p_i, per candidate
    q: list[Any] = field(default_factory=list)
    n: list[Any] = field(default_factory=list)  # public N per candidate
    alive: list[int] = field(default_factory=list)  # candidates past trial division
    passed: list[int] = field(default_factory=list)  # candidates past the first test
    confirmed: list[int] = field(default_factory=list)  # past all tests, awaiting gcd


class CeremonyParty:
    """Party ``index`` (1-based) of the ceremony; see the module docstring for the rounds.

    Call :meth:`start` once, then :meth:`step` with the other parties' messages of each
    round until it returns ``None``; :attr:`result` then holds ``N``. Every party ends in
    the same round with the same result.
    """

    def __init__(self, params: CeremonyParams, index: int, rng: random.Random) -> None:
        if type(index) is not int or not 1 <= index <= params.parties:
            raise CeremonyParamsError(f"party index must be in 1..{params.parties}, got {index}")
        self.params, self.index, self._rng = params, index, rng
        self._c = constants(params)
        self._k, self._t = params.parties, params.threshold
        self.stats = CeremonyStats()
        self.result: CeremonyResult | None = None
        self._batch = _Batch()
        self._last: Outgoing | None = None
        self._handler: Handler | None = None

    # -- driving ---------------------------------------------------------------

    def start(self) -> Outgoing:
        """The first round's messages."""
        if self._last is not None:
            raise RuntimeError("party already started")
        return self._emit(*self._new_batch())

    def step(self, inbox: Inbox) -> Outgoing | None:
        """Consume one round's messages from every other party; return the next round's."""
        if self._handler is None:
            raise RuntimeError("party not started or already finished")
        expected = set(range(1, self._k + 1)) - {self.index}
        if set(inbox) != expected:
            raise CeremonyProtocolError(
                f"party {self.index}: expected messages from parties {sorted(expected)}, "
                f"got {sorted(inbox)}"
            )
        self.stats.rounds += 1
        nxt = self._handler(inbox)
        if nxt is None:
            self._last, self._handler = None, None
            return None
        return self._emit(*nxt)

    def secret_shares(self) -> tuple[list[int], list[int]]:
        """This party's additive shares ``p_i, q_i`` of the current batch's candidates.

        Secret: nothing in the protocol sends them anywhere. Exposed so tests can check the
        algebra with every party's view at hand.
        """
        return [int(x) for x in self._batch.p], [int(x) for x in self._batch.q]

    def _emit(self, out: Outgoing, handler: Handler) -> Outgoing:
        self._last, self._handler = out, handler
        return out

    def _gather(self, inbox: Inbox, name: str, size: int, moduli: Sequence[Any],
                public: bool = False) -> list[list[Any]]:
        """``[party-1][i]``: field ``name`` from everyone (own value included), range-checked."""
        assert self._last is not None
        rows: list[list[Any]] = []
        for j in range(1, self._k + 1):
            if j == self.index:
                src: Mapping[str, Sequence[int]] = (
                    self._last.public if public else self._last.private[j]
                )
            else:
                msg = inbox[j]
                src = msg.public if public else msg.private
            values = src.get(name)
            if values is None or len(values) != size:
                raise CeremonyProtocolError(
                    f"party {j}: field {name!r} missing or not {size} values long"
                )
            row = [gmpy2.mpz(v) for v in values]
            for v, mod in zip(row, moduli, strict=True):
                if not 0 <= v < mod:
                    raise CeremonyProtocolError(f"party {j}: a value of {name!r} is out of range")
            rows.append(row)
        return rows

    def _share_vectors(self, names: Sequence[str],
                       sharings: Sequence[list[list[Any]]]) -> dict[int, Vectors]:
        """Turn per-candidate share lists into one message per recipient."""
        return {
            j: {name: [int(s[j - 1]) for s in shares]
                for name, shares in zip(names, sharings, strict=True)}
            for j in range(1, self._k + 1)
        }

    # -- step 1: distributed sieving -------------------------------------------

    def _new_batch(self) -> Next:
        self._batch = _Batch()
        self.stats.batches += 1
        self.stats.candidates += self.params.batch
        m = self._c.sieve_modulus
        if m == 1:
            zeros = [gmpy2.mpz(0)] * self.params.batch
            return self._share_candidates(zeros, zeros)
        sharings = [
            [shamir_share(_random_unit(m, self._rng), self._t, self._k, m, self._rng)
             for _ in range(self.params.batch)]
            for _ in ("p", "q")
        ]
        return Outgoing({}, self._share_vectors(("p", "q"), sharings)), self._on_sieve_shares

    def _on_sieve_shares(self, inbox: Inbox) -> Next:
        b, m = self._batch, self._c.sieve_modulus
        size, mods = self.params.batch, [m] * self.params.batch
        b.factors = [self._gather(inbox, name, size, mods) for name in ("p", "q")]
        b.acc = [list(f[0]) for f in b.factors]
        b.step = 1
        return self._sieve_multiply()

    def _sieve_multiply(self) -> Next:
        """Multiply in the next party's ``a_i``; reshare (degree reduction) unless it was the last."""
        b, m = self._batch, self._c.sieve_modulus
        products = [[x * y % m for x, y in zip(acc, f[b.step], strict=True)]
                    for acc, f in zip(b.acc, b.factors, strict=True)]
        b.step += 1
        if b.step == self._k:  # degree 2t <= k-1: convert to additive shares and go on
            lam = self._c.sieve_lagrange[self.index - 1]
            bp, bq = ([lam * w % m for w in ws] for ws in products)
            return self._share_candidates(bp, bq)
        sharings = [[shamir_share(w, self._t, self._k, m, self._rng) for w in ws] for ws in products]
        return Outgoing({}, self._share_vectors(("p", "q"), sharings)), self._on_sieve_reshare

    def _on_sieve_reshare(self, inbox: Inbox) -> Next:
        b, m = self._batch, self._c.sieve_modulus
        size, mods = self.params.batch, [m] * self.params.batch
        lam = self._c.sieve_lagrange
        for f, name in enumerate(("p", "q")):
            rows = self._gather(inbox, name, size, mods)
            b.acc[f] = [sum((lj * rows[j][c] for j, lj in enumerate(lam)), gmpy2.mpz(0)) % m
                        for c in range(size)]
        return self._sieve_multiply()

    # -- steps 2-3: shares of p, q and the product N ---------------------------

    def _candidate_share(self, b: Any) -> Any:
        """``p_i = [offset] + b + M*(4r + c)`` with ``p_i = 3 (mod 4)`` for party 1, ``0`` otherwise."""
        c, m = self._c, self._c.sieve_modulus
        if self.index == 1:
            b, target, offset = (b - c.offset) % m, 3, c.offset
        else:
            target, offset = 0, 0
        fix = (target - b) * m % 4  # m is odd, so m^-1 = m (mod 4)
        return offset + b + m * (4 * gmpy2.mpz(self._rng.randrange(c.span)) + fix)

    def _draw_candidates(self, bp: Sequence[Any], bq: Sequence[Any]) -> None:
        """Set this party's additive shares ``p_i, q_i`` from its sieved parts ``b_i``."""
        self._batch.p = [self._candidate_share(x) for x in bp]
        self._batch.q = [self._candidate_share(x) for x in bq]

    def _share_candidates(self, bp: Sequence[Any], bq: Sequence[Any]) -> Next:
        self._draw_candidates(bp, bq)
        b, k, t, P = self._batch, self._k, self._t, self._c.field_prime
        sharings = [
            [shamir_share(x, t, k, P, self._rng) for x in b.p],
            [shamir_share(x, t, k, P, self._rng) for x in b.q],
            [shamir_share(0, 2 * t, k, P, self._rng) for _ in b.p],
        ]
        return Outgoing({}, self._share_vectors(("p", "q", "h"), sharings)), self._on_shares

    def _on_shares(self, inbox: Inbox) -> Next:
        size, P = self.params.batch, self._c.field_prime
        mods = [P] * size
        fp, fq, fh = (self._gather(inbox, name, size, mods) for name in ("p", "q", "h"))
        n_j = []
        for c in range(size):
            sp = sum((row[c] for row in fp), gmpy2.mpz(0))
            sq = sum((row[c] for row in fq), gmpy2.mpz(0))
            sh = sum((row[c] for row in fh), gmpy2.mpz(0))
            n_j.append(int((sp * sq + sh) % P))
        return Outgoing({"n": n_j}, {self.index: {}}), self._on_products

    # -- steps 4-5: trial division and the first biprimality test --------------

    def _on_products(self, inbox: Inbox) -> Next:
        b, c, size = self._batch, self._c, self.params.batch
        rows = self._gather(inbox, "n", size, [c.field_prime] * size, public=True)
        b.n = [interpolate_at_zero([row[i] for row in rows], c.field_prime, c.lagrange)
               for i in range(size)]
        for n in b.n:
            if n.bit_length() != self.params.bits:
                raise CeremonyProtocolError(
                    f"party {self.index}: interpolated N has {n.bit_length()} bits, expected "
                    f"{self.params.bits}; the shares are inconsistent"
                )
        b.alive = [i for i, n in enumerate(b.n) if trial_division_passes(n, c.trial_product)]
        self.stats.trial_division_passed += len(b.alive)
        if not b.alive:
            return self._new_batch()
        self.stats.biprimality_tests += len(b.alive)
        values = [int(self._bf_value(i, 0)) for i in b.alive]
        return Outgoing({"v": values}, {self.index: {}}), self._on_first_test

    def _label(self, candidate: int) -> int:
        return self.stats.batches * MAX_BATCH + candidate

    def _bf_value(self, candidate: int, test: int) -> Any:
        b = self._batch
        n = b.n[candidate]
        g = biprimality_base(self.params.session, n, self._label(candidate), test)
        return biprimality_share(self.index, b.p[candidate], b.q[candidate], n, g)

    def _on_first_test(self, inbox: Inbox) -> Next:
        b = self._batch
        rows = self._gather(inbox, "v", len(b.alive), [b.n[i] for i in b.alive], public=True)
        b.passed = [i for col, i in enumerate(b.alive)
                    if biprimality_check([row[col] for row in rows], b.n[i])]
        self.stats.first_test_passed += len(b.passed)
        if not b.passed:
            return self._new_batch()
        return self._confirm()

    # -- step 6: remaining tests and the gcd check ------------------------------

    def _confirm(self) -> Next:
        b, k, t, rounds = self._batch, self._k, self._t, self.params.rounds
        self.stats.biprimality_tests += len(b.passed) * (rounds - 1)
        values = [int(self._bf_value(i, r)) for i in b.passed for r in range(1, rounds)]
        sharings: list[list[list[Any]]] = [[], [], []]
        for i in b.passed:
            n = b.n[i]
            psi = b.p[i] + b.q[i] - (1 if self.index == 1 else 0)
            sharings[0].append(shamir_share(self._rng.randrange(n), t, k, n, self._rng))
            sharings[1].append(shamir_share(psi % n, t, k, n, self._rng))
            sharings[2].append(shamir_share(0, 2 * t, k, n, self._rng))
        private = self._share_vectors(("z", "psi", "zero"), sharings)
        return Outgoing({"v": values}, private), self._on_confirm

    def _on_confirm(self, inbox: Inbox) -> Next:
        b, rounds = self._batch, self.params.rounds - 1
        mods = [b.n[i] for i in b.passed for _ in range(rounds)]
        tests = self._gather(inbox, "v", len(mods), mods, public=True)
        share_mods = [b.n[i] for i in b.passed]
        z, psi, zero = (self._gather(inbox, name, len(b.passed), share_mods)
                        for name in ("z", "psi", "zero"))
        b.confirmed, gammas = [], []
        for col, i in enumerate(b.passed):
            n = b.n[i]
            cells = range(col * rounds, (col + 1) * rounds)
            if all(biprimality_check([row[x] for row in tests], n) for x in cells):
                b.confirmed.append(col)
                sz = sum((row[col] for row in z), gmpy2.mpz(0))
                sp = sum((row[col] for row in psi), gmpy2.mpz(0))
                s0 = sum((row[col] for row in zero), gmpy2.mpz(0))
                gammas.append(int((sz * sp + s0) % n))
        if not b.confirmed:
            return self._new_batch()
        return Outgoing({"gcd": gammas}, {self.index: {}}), self._on_gcd

    def _on_gcd(self, inbox: Inbox) -> Next | None:
        b = self._batch
        candidates = [b.passed[col] for col in b.confirmed]
        rows = self._gather(inbox, "gcd", len(candidates), [b.n[i] for i in candidates],
                            public=True)
        for col, i in enumerate(candidates):
            n = b.n[i]
            value = interpolate_at_zero([row[col] for row in rows], n, lagrange_at_zero(self._k, n))
            if gmpy2.gcd(value, n) == 1:
                self.result = CeremonyResult(int(n), self.params.bits, self._k, replace(self.stats))
                return None
            self.stats.gcd_rejected += 1
        return self._new_batch()


# --------------------------------------------------------------------------- in memory


def route(outs: Mapping[int, Outgoing]) -> dict[int, dict[int, Incoming]]:
    """Deliver one round: ``inboxes[j][i]`` is what party ``i`` sent party ``j``."""
    return {
        j: {i: Incoming(out.public, out.private.get(j, {})) for i, out in outs.items() if i != j}
        for j in outs
    }


def run_in_memory(params: CeremonyParams, rngs: Sequence[random.Random],
                  observe: Callable[[Mapping[int, Outgoing]], None] | None = None,
                  parties: Sequence[CeremonyParty] | None = None) -> CeremonyResult:
    """Run all parties in this process (tests, simulations); ``observe`` sees every round.

    ``parties`` may supply the party objects (e.g. instrumented subclasses); by default
    party ``i`` uses ``rngs[i-1]``.
    """
    if parties is None:
        if len(rngs) != params.parties:
            raise CeremonyParamsError(f"need {params.parties} random generators, got {len(rngs)}")
        parties = [CeremonyParty(params, i + 1, rng) for i, rng in enumerate(rngs)]
    outs: dict[int, Outgoing] = {p.index: p.start() for p in parties}
    while True:
        if observe is not None:
            observe(outs)
        inboxes = route(outs)
        nxt = {p.index: p.step(inboxes[p.index]) for p in parties}
        finished = [i for i, out in nxt.items() if out is None]
        if finished and len(finished) != len(nxt):
            raise CeremonyProtocolError(f"parties {finished} finished before the others")
        if finished:
            break
        outs = {i: out for i, out in nxt.items() if out is not None}
    results = {p.result.modulus if p.result else None for p in parties}
    if len(results) != 1 or parties[0].result is None:
        raise CeremonyProtocolError("parties disagree on the modulus")
    return parties[0].result
