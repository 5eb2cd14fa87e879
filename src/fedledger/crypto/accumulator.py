"""RSA accumulator with hash-to-prime exponents (seed 000 §II-B, §IV-A, §IV-D, §IV-E).

A blockchain is compressed into one group element ``acc = g^(p_1 * ... * p_n) mod N``,
where ``p_i = hash_to_prime(x_i)`` and ``N`` is an RSA modulus nobody can factor. A
*membership witness* for ``x_i`` is ``w_i = g^(prod_{j != i} p_j)``; it verifies when
``w_i^(p_i) == acc (mod N)``. The four algorithms of seed 000 §II-B map onto this module
as Setup → :func:`setup_trusted_dealer` / :meth:`AccumulatorParams.from_modulus`,
Update → :func:`add` / :func:`add_many`, ProofGen → :func:`prove_membership` (and the
batched :func:`prove_all`, :func:`prove_batch`, :func:`prove_batch_seed`), ProofVerf →
:func:`verify_membership` (and :func:`verify_batch`, :func:`verify_batch_poe`,
:func:`verify_batch_seed`). Non-membership (and deletion) is not provided: like the
seed, the ledger is append-only.

Why the exponents must be primes
--------------------------------
Seed 000 §IV-A uses ``hash(blk_i || i)`` directly as the exponent. That is the flaw this
module fixes. With an arbitrary (composite) exponent map ``e``, ``acc = g^P`` with
``P = prod e(x_i)`` certifies much more than the set ``{x_i}``: *every divisor of P* has
a publicly computable witness. If ``f`` divides ``e(x_1)`` then ``w_1^(e(x_1)/f)`` is
``g^(P/f)``, which verifies for any ``x*`` with ``e(x*) = f``; if ``e(x*) = e(x_1)e(x_2)``
then the (public) witness for the pair ``{x_1, x_2}`` verifies for ``x*``. So the
security of a plain-hash accumulator rests on nobody finding an ``x*`` whose hash
divides (a product of) the accumulated hashes, a smoothness/hash-inversion problem
with no reduction to a standard assumption (the test suite shows the structural
flaw with a transparent exponent map). With *distinct primes* the only divisors of
``P`` are products of the ``p_i`` themselves. If a cheater produces ``w`` with
``w^e == g^P`` for a prime ``e`` not among the ``p_i``, then ``gcd(e, P) = 1``; with
Bezout ``a*e + b*P = 1`` we get ``g = (g^a * w^b)^e``, an ``e``-th root of ``g``, which
breaks the strong RSA assumption (Barić–Pfitzmann 1997; Boneh–Bünz–Fisch 2019).

Hash-to-prime collisions are the remaining way to cheat: ``x* != x_i`` with
``hash_to_prime(x*) == hash_to_prime(x_i)``. With the default 128-bit primes a second
preimage costs about ``2^120`` work, but a *collision between two elements the attacker
inserts himself* costs only about ``2^60`` (birthday bound). Deployments where the same
party may both insert and later claim elements should use
``prime_bits=256`` (in :meth:`AccumulatorParams.from_modulus` or
:func:`setup_trusted_dealer`); the 128-bit default keeps proofs and
verification cheap.

Setup and the trapdoor
----------------------
Whoever knows ``p, q`` with ``N = p*q`` knows the group order and can take any root,
i.e. forge any membership proof (seed 000 §IV-C). :func:`setup_trusted_dealer` is a
trusted dealer for tests and single-operator demos; production must use the
distributed RSA modulus generation ceremony of seed 000 §IV-C (``crypto/ceremony.py``), so
that nobody ever knows ``p, q``. :meth:`AccumulatorParams.from_modulus` derives ``g``
from ``N`` by hashing, so a ceremony only has to publish ``N``.

Costs (|N| = 2048, 128-bit primes)
----------------------------------
Measured on one core of the development VM with gmpy2 2.3 / GMP 6.3; "warm" means the
element primes are already in the hash-to-prime cache, "cold" means they are not
(one hash-to-prime costs ~0.2 ms, about as much as one verification).

* :func:`setup_trusted_dealer`: ~30 ms median (two random 1024-bit primes).
* :func:`verify_membership`: one 128-bit exponentiation, ~0.2 ms warm / ~0.36 ms cold.
* :func:`verify_batch` for ``t`` elements: one exponentiation by a ``128*t``-bit
  product, i.e. the same number of squarings as ``t`` single verifications, so only
  ~15-20% faster (t=8: 1.25 ms vs 1.45 ms; t=64: 9.5 ms vs 11.8 ms, warm). The real gain
  is the proof size: one group element instead of ``t``.
* :func:`verify_batch_poe`: two 128-bit exponentiations whatever ``t`` is, plus ``t``
  hash-to-prime evaluations (Wesolowski proof of exponentiation): t=8 0.35 ms, t=64
  0.41 ms warm (2.0 ms / 12.5 ms cold, dominated by hash-to-prime). The prover pays
  about one extra exponentiation by the batch product.
* :func:`prove_all`: ``O(n log n)`` exponentiation work (RootFactor) instead of
  ``O(n^2)`` for ``n`` separate :func:`prove_membership` calls (n=256: 0.34 s vs 9.3 s).

Everything here is deterministic and pure (ints and bytes in, ints out); the only
randomness is :func:`setup_trusted_dealer` without a seed.
"""

from __future__ import annotations

import functools
import itertools
import random
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeGuard

import gmpy2

from fedledger.crypto.hashing import tagged_hash

__all__ = [
    "DEFAULT_PRIME_BITS",
    "H2P_DOMAIN",
    "MIN_MODULUS_BITS",
    "RSA_2048",
    "POE_CHALLENGE_BITS",
    "AccumulatorParams",
    "accumulate",
    "add",
    "add_many",
    "element_prime",
    "hash_to_prime",
    "hash_to_prime_with_counter",
    "prove_all",
    "prove_batch",
    "prove_batch_poe",
    "prove_batch_seed",
    "prove_membership",
    "setup_trusted_dealer",
    "verify_batch",
    "verify_batch_poe",
    "verify_batch_seed",
    "verify_membership",
]

H2P_DOMAIN = "fedledger/h2p"
"""Domain tag of :func:`hash_to_prime`."""
_GENERATOR_DOMAIN = "fedledger/acc-generator"
_POE_DOMAIN = "fedledger/acc-poe"
_PARAMS_DOMAIN = "fedledger/acc-params"

DEFAULT_PRIME_BITS = 128
"""Bit length of element primes (see the collision note in the module docstring)."""
MIN_MODULUS_BITS = 2048
"""Smallest modulus accepted without ``allow_small=True``."""
RSA_2048 = int(
    "25195908475657893494027183240048398571429282126204032027777137836043662020707595556264018525880784"
    "4069182906412495150821892985591491761845028084891200728449926873928072877767359714183472702618963750149718246911"
    "6507761337985909570009733045974880842840179742910064245869181719511874612151517265463228221686998754918242243363"
    "7259085141865462043576798423387184774447920739934236584823824281198163815010674810451660377306056201619676256133"
    "8441436038339044149526344321901146575444541784240209246165157233507787077498171257724679629263863563732899121548"
    "31438167899885040445364023527381951378636564391212010397122822120720357"
)
"""The RSA-2048 challenge number (RSA Laboratories, 1991), the modulus a chain uses when no
ceremony ran: its factors were destroyed when it was made and nobody has found them."""
POE_CHALLENGE_BITS = 128
"""Bit length of the Fiat–Shamir challenge prime ``l`` of the proof of exponentiation."""
MR_ROUNDS = 50
"""Miller–Rabin rounds of :func:`hash_to_prime` (error <= 4^-50 = 2^-100 per composite)."""

_MIN_PRIME_BITS = 64
_MAX_PRIME_BITS = 4096
_TOY_MIN_MODULUS_BITS = 64  # floor even with allow_small=True
_STRAUS_WINDOW = 8  # seed 000 §IV-E precomputes 2^t products; we cap t per table at 8


# --------------------------------------------------------------------------- hash to prime


def _is_bytes(x: object) -> bool:
    return isinstance(x, bytes | bytearray)


def _is_int(x: object) -> TypeGuard[int]:
    return (isinstance(x, int) and not isinstance(x, bool)) or isinstance(x, gmpy2.mpz)


@functools.lru_cache(maxsize=1 << 16)
def _h2p(data: bytes, bits: int) -> tuple[int, int]:
    nbytes = (bits + 7) // 8
    nblocks = (nbytes + 31) // 32
    prefix = bits.to_bytes(2, "big")
    top_and_low = gmpy2.mpz((1 << (bits - 1)) | 1)
    for counter in itertools.count():
        # fixed-width prefix (bits, counter, block) || data: an injective encoding
        head = prefix + counter.to_bytes(4, "big")
        stream = b"".join(
            tagged_hash(H2P_DOMAIN, head + blk.to_bytes(4, "big") + data) for blk in range(nblocks)
        )
        c = gmpy2.mpz(int.from_bytes(stream[:nbytes], "big") >> (8 * nbytes - bits)) | top_and_low
        if gmpy2.is_prime(c, MR_ROUNDS) and gmpy2.is_strong_bpsw_prp(c):
            return int(c), counter
    raise AssertionError("unreachable")  # pragma: no cover


def hash_to_prime_with_counter(data: bytes, bits: int = DEFAULT_PRIME_BITS) -> tuple[int, int]:
    """:func:`hash_to_prime` together with the counter of the first accepted candidate.

    Candidate ``k`` is ``tagged_hash("fedledger/h2p", bits || k || block || data)``
    (``bits`` 2 bytes, ``k`` and ``block`` 4 bytes, big-endian), expanded block by block
    to ``bits`` bits, with the top bit (exact bit length) and the low bit (odd) forced to
    1. The first candidate that passes ``gmpy2.is_prime(c, 50)`` and the strong BPSW test
    is returned. 50 Miller–Rabin rounds bound the error for any fixed composite by
    ``2^-100``; GMP (>= 6.2) also runs BPSW inside ``is_prime``, and we run BPSW again
    explicitly: no BPSW pseudoprime is known, so a composite exponent (which would make
    its factors "members", see the module docstring) is not a practical concern. The
    expected number of candidates is about ``ln(2^bits) / 2`` (~44 for 128 bits).
    """
    if not _is_bytes(data):
        raise TypeError(f"hash_to_prime needs bytes, got {type(data).__name__}")
    if not _is_int(bits) or not 2 <= bits <= _MAX_PRIME_BITS:
        raise ValueError(f"bits must be in [2, {_MAX_PRIME_BITS}], got {bits!r}")
    return _h2p(bytes(data), int(bits))


def hash_to_prime(data: bytes, bits: int = DEFAULT_PRIME_BITS) -> int:
    """Deterministic prime of exactly ``bits`` bits derived from ``data`` (random-oracle style).

    See :func:`hash_to_prime_with_counter` for the construction and error bound.
    """
    return hash_to_prime_with_counter(data, bits)[0]


# --------------------------------------------------------------------------- parameters


def _int_bytes(x: int) -> bytes:
    """Length-prefixed big-endian encoding of a non-negative int (for transcripts)."""
    raw = int(x).to_bytes((int(x).bit_length() + 7) // 8, "big")
    return len(raw).to_bytes(4, "big") + raw


def _expand(tag: str, seed: bytes, bits: int) -> int:
    nblocks = (bits + 255) // 256
    stream = b"".join(tagged_hash(tag, seed + i.to_bytes(4, "big")) for i in range(nblocks))
    return int.from_bytes(stream, "big") >> (256 * nblocks - bits)


def _derive_generator(n: int) -> int:
    """``g = h^2 mod N`` for ``h`` hashed from ``N``: a quadratic residue coprime to ``N``.

    ``h`` is expanded to ``|N| + 128`` bits before reduction so it is statistically close
    to uniform in ``Z_N``; squaring puts ``g`` in the subgroup of quadratic residues, so
    ``g`` is not the obviously-low-order ``-1`` and has no known roots.
    """
    nz = gmpy2.mpz(n)
    for counter in itertools.count():
        h = (
            gmpy2.mpz(
                _expand(
                    _GENERATOR_DOMAIN,
                    _int_bytes(n) + counter.to_bytes(4, "big"),
                    n.bit_length() + 128,
                )
            )
            % nz
        )
        g = h * h % nz
        if g > 1 and gmpy2.gcd(g, nz) == 1:
            return int(g)
    raise AssertionError("unreachable")  # pragma: no cover


def _check_modulus_size(bits: int, allow_small: bool) -> None:
    if bits < MIN_MODULUS_BITS and not allow_small:
        raise ValueError(
            f"RSA modulus of {bits} bits is below {MIN_MODULUS_BITS}; "
            "pass allow_small=True only in tests"
        )
    if bits < _TOY_MIN_MODULUS_BITS:
        raise ValueError(f"RSA modulus of {bits} bits is too small even for tests")


@dataclass(frozen=True)
class AccumulatorParams:
    """Public parameters ``(N, g)`` of one accumulator (seed 000 §IV-A Setup).

    ``prime_bits`` is the bit length of the element primes (128 by default; 256 gives
    128-bit collision resistance, see the module docstring). Construct with
    :meth:`from_modulus` (which enforces the 2048-bit floor) or
    :func:`setup_trusted_dealer`; the constructor itself checks only well-formedness.
    """

    n: int
    g: int
    prime_bits: int = DEFAULT_PRIME_BITS

    def __post_init__(self) -> None:
        if not (_is_int(self.n) and _is_int(self.g) and _is_int(self.prime_bits)):
            raise TypeError("AccumulatorParams fields must be ints")
        object.__setattr__(self, "n", int(self.n))
        object.__setattr__(self, "g", int(self.g))
        object.__setattr__(self, "prime_bits", int(self.prime_bits))
        if self.n < 15 or self.n % 2 == 0:
            raise ValueError("modulus must be an odd composite")
        if not 1 < self.g < self.n or gmpy2.gcd(self.g, self.n) != 1:
            raise ValueError("generator must be a unit of Z_N other than 1")
        if not _MIN_PRIME_BITS <= self.prime_bits <= _MAX_PRIME_BITS:
            raise ValueError(f"prime_bits must be in [{_MIN_PRIME_BITS}, {_MAX_PRIME_BITS}]")

    @classmethod
    def from_modulus(
        cls, n: int, *, allow_small: bool = False, prime_bits: int = DEFAULT_PRIME_BITS
    ) -> AccumulatorParams:
        """Parameters for a published modulus, with ``g`` derived deterministically from ``n``.

        This is how the output of the distributed modulus ceremony (seed 000 §IV-C) becomes
        an accumulator: everybody derives the same ``g`` and nobody chose it.
        Rejects moduli under 2048 bits unless ``allow_small`` (tests use 512 bits).
        """
        if not _is_int(n):
            raise TypeError("modulus must be an int")
        _check_modulus_size(int(n).bit_length(), allow_small)
        return cls(int(n), _derive_generator(int(n)), prime_bits)

    @property
    def modulus_bits(self) -> int:
        return self.n.bit_length()

    def fingerprint(self) -> bytes:
        """32-byte commitment to ``(N, g, prime_bits)``, used to bind Fiat–Shamir transcripts."""
        return tagged_hash(
            _PARAMS_DOMAIN, _int_bytes(self.n) + _int_bytes(self.g) + _int_bytes(self.prime_bits)
        )


def _random_prime(rng: random.Random, bits: int) -> Any:
    while True:
        # top two bits set: the product of two such numbers has exactly bits_p + bits_q bits
        start = gmpy2.mpz(rng.getrandbits(bits)) | (3 << (bits - 2))
        p = gmpy2.next_prime(start)
        if p.bit_length() == bits:
            return p


def setup_trusted_dealer(
    bits: int = MIN_MODULUS_BITS,
    seed: bytes | None = None,
    *,
    allow_small: bool = False,
    prime_bits: int = DEFAULT_PRIME_BITS,
) -> tuple[AccumulatorParams, tuple[int, int]]:
    """Seed 000 §IV-A Setup run by a trusted dealer: ``N = p*q`` of exactly ``bits`` bits.

    Returns the public parameters and the trapdoor ``(p, q)``, which the dealer must
    destroy: anyone holding it can forge every proof. ``p`` and ``q`` are ordinary random
    primes (``gmpy2.next_prime`` over random integers), as in the seed; they are not safe
    primes, which the membership proofs here do not need because ``g`` is a hashed
    quadratic residue. ``seed`` makes the run reproducible (``random.Random(seed)``, for
    tests only); without it the primes come from ``secrets``. Production deployments use
    the distributed modulus generation of seed 000 §IV-C instead, so nobody knows ``p, q``.
    """
    if not _is_int(bits):
        raise TypeError("bits must be an int")
    _check_modulus_size(int(bits), allow_small)
    rng: random.Random = secrets.SystemRandom() if seed is None else random.Random(bytes(seed))
    pbits = bits // 2
    qbits = bits - pbits
    p = _random_prime(rng, pbits)
    q = _random_prime(rng, qbits)
    while q == p:
        q = _random_prime(rng, qbits)
    params = AccumulatorParams.from_modulus(
        int(p * q), allow_small=allow_small, prime_bits=prime_bits
    )
    return params, (int(p), int(q))


# --------------------------------------------------------------------------- helpers


def _product(xs: Sequence[Any]) -> Any:
    """Balanced product tree (much faster than a left fold for many big factors)."""
    if not xs:
        return gmpy2.mpz(1)
    layer = [gmpy2.mpz(x) for x in xs]
    while len(layer) > 1:
        nxt = [layer[i] * layer[i + 1] for i in range(0, len(layer) - 1, 2)]
        if len(layer) % 2:
            nxt.append(layer[-1])
        layer = nxt
    return layer[0]


def element_prime(params: AccumulatorParams, element: bytes) -> int:
    """The exponent of ``element`` under ``params``: ``hash_to_prime(element, prime_bits)``.

    Elements are opaque bytes and the accumulator is a multiset with order-independent
    value; to bind a block to its height, as seed 000 §IV-A does with ``blk_i || i``,
    put the height into the element bytes.
    """
    return hash_to_prime(element, params.prime_bits)


def _primes(params: AccumulatorParams, elements: Iterable[bytes]) -> list[Any]:
    out = []
    for e in elements:
        if not _is_bytes(e):
            raise TypeError(f"elements must be bytes, got {type(e).__name__}")
        out.append(gmpy2.mpz(element_prime(params, e)))
    return out


def _check_params(params: object) -> AccumulatorParams:
    if not isinstance(params, AccumulatorParams):
        raise TypeError("params must be AccumulatorParams")
    return params


def _is_unit(params: AccumulatorParams, x: object) -> bool:
    """``x`` is an int in ``[1, N)`` coprime to ``N``."""
    return _is_int(x) and 1 <= x < params.n and gmpy2.gcd(x, params.n) == 1


def _require_unit(params: AccumulatorParams, x: object, what: str) -> Any:
    if not _is_unit(params, x):
        raise ValueError(f"{what} must be an int in [1, N) coprime to N")
    return gmpy2.mpz(x)


def _check_indices(indices: Iterable[int], size: int) -> list[int]:
    idx = list(indices)
    if not idx:
        raise ValueError("a batch needs at least one index")
    for i in idx:
        if not _is_int(i) or not 0 <= i < size:
            raise IndexError(f"index {i!r} out of range for {size} elements")
    if len(set(idx)) != len(idx):
        raise ValueError("batch indices must be distinct")
    return [int(i) for i in idx]


def _verifier_guard(params: object, acc: object, elements: object) -> bool:
    return (
        isinstance(params, AccumulatorParams)
        and _is_unit(params, acc)
        and isinstance(elements, Sequence)
        and not _is_bytes(elements)
        and len(elements) > 0
        and all(_is_bytes(e) for e in elements)
    )


# --------------------------------------------------------------------------- Update


def add(params: AccumulatorParams, acc: int, element: bytes) -> int:
    """Seed 000 §IV-A Update: ``acc' = acc^(hash_to_prime(element)) mod N``."""
    return add_many(params, acc, [element])


def add_many(params: AccumulatorParams, acc: int, elements: Iterable[bytes]) -> int:
    """Update with several elements at once: one exponentiation by the product of their primes.

    Equal to folding :func:`add`, in any order.
    """
    params = _check_params(params)
    a = _require_unit(params, acc, "accumulator")
    return int(gmpy2.powmod(a, _product(_primes(params, elements)), params.n))


def accumulate(params: AccumulatorParams, elements: Iterable[bytes]) -> int:
    """Accumulator of ``elements`` from scratch: ``g^(prod p_i) mod N`` (the empty value is ``g``)."""
    params = _check_params(params)
    return add_many(params, params.g, elements)


# --------------------------------------------------------------------------- ProofGen


def prove_membership(params: AccumulatorParams, elements: Sequence[bytes], index: int) -> int:
    """Seed 000 §IV-A ProofGen: ``w_i = g^(prod_{j != i} p_j) mod N`` for ``elements[index]``.

    ``elements`` is the full accumulated list (the prover knows the chain). One
    exponentiation by an ``(n-1)*prime_bits``-bit exponent.
    """
    params = _check_params(params)
    (i,) = _check_indices([index], len(elements))
    primes = _primes(params, elements)
    return int(gmpy2.powmod(params.g, _product(primes[:i] + primes[i + 1 :]), params.n))


def _root_factor(base: Any, primes: list[Any], n: Any, out: list[int]) -> None:
    """BBF'19 RootFactor: ``out += [base^(prod_{j != i} primes_j) for i]``.

    Each level of the recursion raises the base of each half by the product of the other
    half, so every element's exponent is covered exactly once: ``O(n log n)`` work.
    """
    if len(primes) == 1:
        out.append(int(base))
        return
    mid = len(primes) // 2
    left, right = primes[:mid], primes[mid:]
    _root_factor(gmpy2.powmod(base, _product(right), n), left, n, out)
    _root_factor(gmpy2.powmod(base, _product(left), n), right, n, out)


def prove_all(params: AccumulatorParams, elements: Sequence[bytes]) -> list[int]:
    """All membership witnesses at once with RootFactor (Boneh–Bünz–Fisch 2019, §3.1).

    ``prove_all(params, xs)[i] == prove_membership(params, xs, i)``, computed with
    ``O(n log n)`` instead of ``O(n^2)`` exponentiation work.
    """
    params = _check_params(params)
    primes = _primes(params, elements)
    out: list[int] = []
    if primes:
        _root_factor(gmpy2.mpz(params.g), primes, gmpy2.mpz(params.n), out)
    return out


def prove_batch(
    params: AccumulatorParams, elements: Sequence[bytes], indices: Iterable[int]
) -> int:
    """Aggregate witness for a subset ``S``: ``g^(prod_{j not in S} p_j) mod N``.

    This is exactly the value ``g_0`` that seed 000 §IV-D Protocol 2 computes in its lines
    1–4 (the accumulator before the batch, updated with every element after it). It
    verifies with :func:`verify_batch`; indices must be distinct and non-empty.
    """
    params = _check_params(params)
    idx = set(_check_indices(indices, len(elements)))
    primes = _primes(params, elements)
    rest = [p for j, p in enumerate(primes) if j not in idx]
    return int(gmpy2.powmod(params.g, _product(rest), params.n))


def prove_batch_seed(
    params: AccumulatorParams, elements: Sequence[bytes], indices: Iterable[int]
) -> list[int]:
    """Seed 000 §IV-D Protocol 2: the ``t`` individual witnesses of a subset, sharing work.

    Lines 1–4 compute the shared base ``g_0 = g^(prod_{j not in S} p_j)`` once (that is
    :func:`prove_batch`); lines 5–7 "update g_0 accordingly" to each ``g^(i)`` by raising
    it to the other ``t-1`` batch primes, done here with RootFactor over the batch. Returns
    one ordinary witness per index (in the order given), each accepted by
    :func:`verify_membership`, and the input that :func:`verify_batch_seed` consumes.
    """
    params = _check_params(params)
    idx = _check_indices(indices, len(elements))
    base = gmpy2.mpz(prove_batch(params, elements, idx))
    out: list[int] = []
    _root_factor(base, _primes(params, [elements[i] for i in idx]), gmpy2.mpz(params.n), out)
    return out


# --------------------------------------------------------------------------- ProofVerf


def verify_membership(params: AccumulatorParams, acc: int, element: bytes, witness: int) -> bool:
    """Seed 000 §IV-A ProofVerf: ``witness^(hash_to_prime(element)) == acc (mod N)``.

    Returns False, never raises, on malformed input (wrong types, ``acc`` or ``witness``
    outside ``[1, N)`` or sharing a factor with ``N``).
    """
    if not _verifier_guard(params, acc, [element]):
        return False
    assert isinstance(params, AccumulatorParams)
    if not _is_unit(params, witness):
        return False
    e = element_prime(params, element)
    return bool(gmpy2.powmod(witness, e, params.n) == acc)


def verify_batch(
    params: AccumulatorParams, acc: int, elements: Sequence[bytes], batch_witness: int
) -> bool:
    """Sound aggregate check: ``batch_witness^(prod_{x in S} hash_to_prime(x)) == acc (mod N)``.

    One exponentiation by the product instead of ``t`` exponentiations, and a single group
    element as the proof. Sound under strong RSA: if some ``x`` in ``S`` is not a member,
    ``w^(p_x * rest) == g^P`` with ``gcd(p_x, P) = 1`` yields a ``p_x``-th root of ``g``.
    (Elements are a multiset: listing a member twice needs it accumulated twice.) The
    empty batch proves nothing and is rejected. Returns False, never raises, on malformed
    input.
    """
    if not _verifier_guard(params, acc, elements):
        return False
    assert isinstance(params, AccumulatorParams)
    if not _is_unit(params, batch_witness):
        return False
    x = _product(_primes(params, elements))
    return bool(gmpy2.powmod(batch_witness, x, params.n) == acc)


def verify_batch_seed(
    params: AccumulatorParams,
    accumulators: Sequence[int],
    elements: Sequence[bytes],
    witnesses: Sequence[int],
) -> bool:
    """Seed 000 §IV-E Protocol 3, as published (typos fixed). **Unsound for t >= 2; do not use.**

    Protocol 3 checks the single product equation (1) of the seed,
    ``prod_m g_m^(x_m) == prod_m X_m (mod N)``, instead of the ``t`` equations
    ``g_m^(x_m) == X_m``, evaluating the left side with simultaneous (Straus/Shamir)
    exponentiation: a table of the ``2^t`` products of subsets of the proofs, then one
    square-and-multiply pass over the common bit length. Two typos of the published
    pseudocode are corrected here: line 5 must multiply the *proofs* ``g_m`` whose bit is
    set (it says ``x_{i_m}``, the exponents, which never verifies an honest batch), and
    line 1's initial value ``prod g_m`` accounts for the leading bit, so the loop runs
    over the remaining bits (our primes all have their top bit set, which is the seed's
    "same size" assumption). Tables are built per group of 8 proofs (the seed's ``t = 8``).

    Why it is unsound: equation (1) only constrains the product, and ``t`` separate
    unknowns ``g_m`` give the cheater ``t - 1`` degrees of freedom. Take *any* two
    non-members ``y_1, y_2`` with coprime exponents (distinct primes always are), Bezout
    ``a*e_1 + b*e_2 = 1`` and ``X = X_1*X_2``; then ``g_1 = X^a, g_2 = X^b`` satisfy
    ``g_1^(e_1) * g_2^(e_2) = X^(a e_1 + b e_2) = X``. No trapdoor, no member, no hash
    inversion needed: the attacker picks the fake transactions first and derives the
    proofs from their (honestly hashed) exponents. The seed's security argument
    (§IV-E, "if we assume the hash function works as an oracle ... he/she cannot generate
    corresponding fake transactions") assumes the attacker must find transactions for
    given exponents; he never has to. Errors can also be shifted between an honest and a
    fake proof in the same way. With ``t = 1`` it is ordinary ProofVerf and sound.

    Kept only to reproduce and benchmark the seed; use :func:`verify_batch` (one
    accumulator, aggregated witness) or separate :func:`verify_membership` calls
    (different accumulators). Returns False, never raises, on malformed input.
    """
    if not isinstance(params, AccumulatorParams):
        return False
    seqs = (accumulators, elements, witnesses)
    if not all(isinstance(s, Sequence) and not _is_bytes(s) for s in seqs):
        return False
    t = len(elements)
    if t == 0 or len(accumulators) != t or len(witnesses) != t:
        return False
    if not all(_is_bytes(e) for e in elements):
        return False
    if not all(_is_unit(params, v) for v in (*accumulators, *witnesses)):
        return False
    n = gmpy2.mpz(params.n)
    exps = _primes(params, elements)
    bits = params.prime_bits  # every exponent has exactly this many bits
    gs = [gmpy2.mpz(w) for w in witnesses]
    groups = [range(k, min(k + _STRAUS_WINDOW, t)) for k in range(0, t, _STRAUS_WINDOW)]
    tables = []
    for grp in groups:  # "For t verifications, 2^t values are generated" (§IV-E)
        table = [gmpy2.mpz(1)] * (1 << len(grp))
        for mask in range(1, len(table)):
            low = (mask & -mask).bit_length() - 1
            table[mask] = table[mask & (mask - 1)] * gs[grp[low]] % n
        tables.append(table)
    # line 1: g <- g_1 * ... * g_t  (the common leading 1-bit)
    y = _product([tbl[-1] for tbl in tables]) % n
    for j in range(bits - 2, -1, -1):  # lines 2-8
        y = y * y % n  # line 3
        for grp, tbl in zip(groups, tables, strict=True):
            mask = 0  # line 4: the bit vector v_j
            for pos, m in enumerate(grp):
                if gmpy2.bit_test(exps[m], j):
                    mask |= 1 << pos
            if mask:
                y = y * tbl[mask] % n  # lines 5-6 (product of the proofs g_m with bit set)
    x_all = _product([gmpy2.mpz(a) for a in accumulators]) % n  # line 9
    return bool(y == x_all)  # lines 10-14


# --------------------------------------------------------------------------- PoE


def _poe_challenge(params: AccumulatorParams, acc: int, witness: int, primes: Sequence[Any]) -> Any:
    """Fiat–Shamir challenge prime ``l`` binding params, statement and the batch primes."""
    transcript = b"".join(
        [
            params.fingerprint(),
            _int_bytes(acc),
            _int_bytes(witness),
            len(primes).to_bytes(8, "big"),
            *(_int_bytes(p) for p in primes),
        ]
    )
    return gmpy2.mpz(hash_to_prime(tagged_hash(_POE_DOMAIN, transcript), POE_CHALLENGE_BITS))


def prove_batch_poe(
    params: AccumulatorParams, elements: Sequence[bytes], indices: Iterable[int]
) -> tuple[int, int]:
    """Batch witness plus a Wesolowski proof of exponentiation (BBF'19 NI-PoE).

    Statement: ``w^x == acc`` for ``w`` = :func:`prove_batch` and ``x`` = product of the
    batch primes. With the challenge prime ``l = hash_to_prime(transcript)`` (transcript
    = params, ``acc``, ``w``, the batch primes), the proof is ``Q = w^(floor(x / l))``.
    Returns ``(w, Q)``; verify with :func:`verify_batch_poe` on the batch elements in the
    same order as ``indices``. Prover cost: about one extra exponentiation by ``x``.
    """
    params = _check_params(params)
    idx = _check_indices(indices, len(elements))
    w = gmpy2.mpz(prove_batch(params, elements, idx))
    primes = _primes(params, [elements[i] for i in idx])
    x = _product(primes)
    n = gmpy2.mpz(params.n)
    acc = gmpy2.powmod(w, x, n)
    ell = _poe_challenge(params, int(acc), int(w), primes)
    q = gmpy2.powmod(w, x // ell, n)
    return int(w), int(q)


def verify_batch_poe(
    params: AccumulatorParams,
    acc: int,
    elements: Sequence[bytes],
    batch_witness: int,
    poe: int,
) -> bool:
    """Check ``batch_witness^(prod p_x) == acc`` via the PoE: ``Q^l * w^(x mod l) == acc``.

    The verifier never exponentiates by the ``128*t``-bit product: it reduces the product
    modulo the 128-bit challenge ``l`` and does two 128-bit exponentiations, whatever
    ``t`` is (plus ``t`` hash-to-prime evaluations). Sound under the adaptive root
    assumption (Wesolowski 2019; BBF'19 Thm. 2) on top of strong RSA for the membership
    statement. In ``Z_N^*`` the element ``-1`` has known order 2, so an accepting proof
    only shows ``w^x == +-acc``; since ``x`` is odd, ``w^x == -acc`` means
    ``(-w)^x == acc``, so membership of every batch element still follows (other
    non-trivial low-order elements cannot be found without factoring ``N``). Returns
    False, never raises, on malformed input.
    """
    if not _verifier_guard(params, acc, elements):
        return False
    assert isinstance(params, AccumulatorParams)
    if not (_is_unit(params, batch_witness) and _is_unit(params, poe)):
        return False
    primes = _primes(params, elements)
    ell = _poe_challenge(params, acc, batch_witness, primes)
    r = gmpy2.mpz(1)
    for p in primes:
        r = r * p % ell
    n = params.n
    lhs = gmpy2.powmod(poe, ell, n) * gmpy2.powmod(batch_witness, r, n) % n
    return bool(lhs == acc)
