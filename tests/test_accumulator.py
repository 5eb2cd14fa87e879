"""Tests for fedledger.crypto.accumulator (seed 000 §II-B, §IV-A, §IV-D, §IV-E).

Reference values are recomputed here with Python's built-in ``pow`` and ``math.gcd``
rather than with gmpy2, so the module is checked against an independent implementation.
"""

from __future__ import annotations

import math
import random

import gmpy2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedledger.crypto.accumulator import (
    DEFAULT_PRIME_BITS,
    H2P_DOMAIN,
    AccumulatorParams,
    accumulate,
    add,
    add_many,
    element_prime,
    hash_to_prime,
    hash_to_prime_with_counter,
    prove_all,
    prove_batch,
    prove_batch_poe,
    prove_batch_seed,
    prove_membership,
    setup_trusted_dealer,
    verify_batch,
    verify_batch_poe,
    verify_batch_seed,
    verify_membership,
)
from fedledger.crypto.hashing import sha256, tagged_hash

SMALL_BITS = 512  # test-only modulus size (allow_small=True), for speed
SLOW = settings(deadline=None, max_examples=25)


@pytest.fixture(scope="module")
def dealer() -> tuple[AccumulatorParams, tuple[int, int]]:
    return setup_trusted_dealer(SMALL_BITS, seed=b"fedledger/test-accumulator", allow_small=True)


@pytest.fixture(scope="module")
def params(dealer: tuple[AccumulatorParams, tuple[int, int]]) -> AccumulatorParams:
    return dealer[0]


ELEMENTS = [b"block-%d" % i for i in range(10)]


def ref_acc(params: AccumulatorParams, elements: list[bytes]) -> int:
    """g^(prod p_i) mod N, naively with built-in pow."""
    e = 1
    for x in elements:
        e *= element_prime(params, x)
    return pow(params.g, e, params.n)


def ref_witness(params: AccumulatorParams, elements: list[bytes], i: int) -> int:
    """Naive seed 000 §IV-A ProofGen for position i."""
    return ref_acc(params, elements[:i] + elements[i + 1 :])


def flip_bit(data: bytes, bit: int) -> bytes:
    b = bytearray(data)
    b[bit // 8] ^= 1 << (bit % 8)
    return bytes(b)


# --------------------------------------------------------------------------- hash_to_prime


@pytest.mark.parametrize("bits", [64, 128, 256, 521])
def test_hash_to_prime_is_prime_of_exact_bit_length(bits: int) -> None:
    for i in range(20):
        p = hash_to_prime(b"x%d" % i, bits)
        assert p.bit_length() == bits
        assert p % 2 == 1
        assert gmpy2.is_prime(p, 50)
        assert all(p % q for q in (3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37))


def test_hash_to_prime_matches_documented_construction() -> None:
    """Pin the spec: candidate k = tagged SHA-256 of bits||k||block||data, top+low bit set;
    the returned counter is the first candidate that is prime."""
    data, bits = b"fedledger", 128
    p, counter = hash_to_prime_with_counter(data, bits)

    def candidate(k: int) -> int:
        digest = tagged_hash(
            H2P_DOMAIN,
            bits.to_bytes(2, "big") + k.to_bytes(4, "big") + (0).to_bytes(4, "big") + data,
        )
        return int.from_bytes(digest[:16], "big") | (1 << 127) | 1

    assert candidate(counter) == p
    assert all(not gmpy2.is_prime(candidate(k), 50) for k in range(counter))
    assert hash_to_prime(data, bits) == p


@SLOW
@given(st.binary(max_size=64), st.binary(max_size=64))
def test_hash_to_prime_deterministic_and_injective_in_practice(a: bytes, b: bytes) -> None:
    assert hash_to_prime(a) == hash_to_prime(bytes(a))
    assert hash_to_prime(a) == hash_to_prime(bytearray(a))  # type: ignore[arg-type]
    if a != b:
        assert hash_to_prime(a) != hash_to_prime(b)


def test_hash_to_prime_domain_separates_bit_lengths() -> None:
    # the 256-bit prime is not an extension of the 128-bit one
    assert hash_to_prime(b"m", 256) >> 128 != hash_to_prime(b"m", 128)
    assert DEFAULT_PRIME_BITS == 128 and hash_to_prime(b"m") == hash_to_prime(b"m", 128)


def test_hash_to_prime_rejects_bad_input() -> None:
    with pytest.raises(TypeError):
        hash_to_prime("text")  # type: ignore[arg-type]
    for bits in (1, 0, -5, 5000):
        with pytest.raises(ValueError):
            hash_to_prime(b"x", bits)


# --------------------------------------------------------------------------- Setup (§IV-A)


def test_setup_trusted_dealer_outputs(dealer: tuple[AccumulatorParams, tuple[int, int]]) -> None:
    """seed 000 §IV-A Setup: N = p*q with the requested size, g a QR coprime to N."""
    params, (p, q) = dealer
    assert params.n == p * q and p != q
    assert params.n.bit_length() == SMALL_BITS
    assert gmpy2.is_prime(p, 50) and gmpy2.is_prime(q, 50)
    assert 1 < params.g < params.n and math.gcd(params.g, params.n) == 1
    # quadratic residue modulo both primes (Euler's criterion)
    assert pow(params.g, (p - 1) // 2, p) == 1 and pow(params.g, (q - 1) // 2, q) == 1
    # deterministic with a seed, and g is the one derived from N alone
    assert (
        setup_trusted_dealer(SMALL_BITS, seed=b"fedledger/test-accumulator", allow_small=True)
        == dealer
    )
    assert AccumulatorParams.from_modulus(params.n, allow_small=True) == params
    other, _ = setup_trusted_dealer(SMALL_BITS, seed=b"another seed", allow_small=True)
    assert other.n != params.n and other.g != params.g


def test_generator_is_quadratic_residue_for_many_moduli() -> None:
    """g = H(N)^2: a QR mod p and mod q (a random unit would be one with probability 1/4)."""
    for i in range(12):
        params, (p, q) = setup_trusted_dealer(256, seed=b"qr-%d" % i, allow_small=True)
        assert pow(params.g, (p - 1) // 2, p) == 1 and pow(params.g, (q - 1) // 2, q) == 1
        assert math.gcd(params.g, params.n) == 1 and params.g != 1


def test_setup_unseeded_uses_fresh_randomness() -> None:
    a, _ = setup_trusted_dealer(256, allow_small=True)
    b, _ = setup_trusted_dealer(256, allow_small=True)
    assert a.n != b.n


def test_setup_refuses_small_modulus_without_allow_small() -> None:
    with pytest.raises(ValueError, match="2048"):
        setup_trusted_dealer(SMALL_BITS, seed=b"s")
    with pytest.raises(ValueError, match="2048"):
        setup_trusted_dealer(2047, seed=b"s")
    small, _ = setup_trusted_dealer(SMALL_BITS, seed=b"s", allow_small=True)
    with pytest.raises(ValueError, match="2048"):
        AccumulatorParams.from_modulus(small.n)
    with pytest.raises(ValueError):
        setup_trusted_dealer(32, seed=b"s", allow_small=True)  # too small even for tests


def test_setup_2048_bits() -> None:
    params, (p, q) = setup_trusted_dealer(seed=b"full size")
    assert params.modulus_bits == 2048 and params.n == p * q
    assert AccumulatorParams.from_modulus(params.n) == params


def test_params_reject_malformed() -> None:
    with pytest.raises(ValueError):
        AccumulatorParams(n=1000, g=3)  # even
    with pytest.raises(ValueError):
        AccumulatorParams(n=35, g=1)
    with pytest.raises(ValueError):
        AccumulatorParams(n=35, g=7)  # not coprime
    with pytest.raises(ValueError):
        AccumulatorParams(n=35, g=4, prime_bits=8)
    with pytest.raises(TypeError):
        AccumulatorParams(n=35.0, g=4)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- Update (§IV-A)


def test_add_and_add_many_agree(params: AccumulatorParams) -> None:
    """seed 000 §IV-A Update: v_i = v_{i-1}^{h(x_i)}, one element at a time or in bulk."""
    acc = params.g
    for x in ELEMENTS:
        acc = add(params, acc, x)
    assert acc == add_many(params, params.g, ELEMENTS) == accumulate(params, ELEMENTS)
    assert acc == ref_acc(params, ELEMENTS)
    half = add_many(params, params.g, ELEMENTS[:4])
    assert add_many(params, half, ELEMENTS[4:]) == acc
    assert accumulate(params, []) == params.g
    assert add(params, params.g, b"x") != add(params, params.g, b"y")


@SLOW
@given(st.permutations(ELEMENTS))
def test_accumulator_is_order_independent(params: AccumulatorParams, perm: list[bytes]) -> None:
    assert accumulate(params, perm) == accumulate(params, ELEMENTS)


def test_update_rejects_malformed(params: AccumulatorParams) -> None:
    for bad_acc in (0, params.n, -1, params.n + 1):
        with pytest.raises(ValueError):
            add(params, bad_acc, b"x")
    with pytest.raises(TypeError):
        add(params, params.g, "x")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- membership (§IV-A)


def test_every_member_witness_verifies(params: AccumulatorParams) -> None:
    acc = accumulate(params, ELEMENTS)
    for i, x in enumerate(ELEMENTS):
        w = prove_membership(params, ELEMENTS, i)
        assert w == ref_witness(params, ELEMENTS, i)
        assert verify_membership(params, acc, x, w)


def test_non_member_fails_with_every_member_witness(params: AccumulatorParams) -> None:
    acc = accumulate(params, ELEMENTS)
    witnesses = prove_all(params, ELEMENTS)
    for outsider in (b"block-10", b"", b"not a block"):
        assert not any(verify_membership(params, acc, outsider, w) for w in witnesses)
        assert not verify_membership(params, acc, outsider, params.g)
        assert not verify_membership(params, acc, outsider, acc)


def test_witness_is_bound_to_its_position(params: AccumulatorParams) -> None:
    acc = accumulate(params, ELEMENTS)
    witnesses = prove_all(params, ELEMENTS)
    for i, w in enumerate(witnesses):
        for j, x in enumerate(ELEMENTS):
            assert verify_membership(params, acc, x, w) == (i == j)


def test_tampered_element_fails(params: AccumulatorParams) -> None:
    acc = accumulate(params, ELEMENTS)
    x = ELEMENTS[3]
    w = prove_membership(params, ELEMENTS, 3)
    assert verify_membership(params, acc, x, w)
    for bit in range(len(x) * 8):
        assert not verify_membership(params, acc, flip_bit(x, bit), w)
    assert not verify_membership(params, acc, x + b"\x00", w)


def test_stale_accumulator_rejects_new_witness(params: AccumulatorParams) -> None:
    """An accumulator from before x was added rejects x's witness, and old witnesses
    do not verify against the newer accumulator (they must be updated)."""
    old = accumulate(params, ELEMENTS[:-1])
    new = add(params, old, ELEMENTS[-1])
    w_last = prove_membership(params, ELEMENTS, len(ELEMENTS) - 1)
    assert verify_membership(params, new, ELEMENTS[-1], w_last)
    assert not verify_membership(params, old, ELEMENTS[-1], w_last)
    w0_old = prove_membership(params, ELEMENTS[:-1], 0)
    assert verify_membership(params, old, ELEMENTS[0], w0_old)
    assert not verify_membership(params, new, ELEMENTS[0], w0_old)
    assert verify_membership(params, new, ELEMENTS[0], add(params, w0_old, ELEMENTS[-1]))


def test_verify_membership_never_raises_on_malformed_input(
    dealer: tuple[AccumulatorParams, tuple[int, int]],
) -> None:
    params, (p, _) = dealer
    acc = accumulate(params, ELEMENTS)
    w = prove_membership(params, ELEMENTS, 0)
    x = ELEMENTS[0]
    assert verify_membership(params, acc, x, w)
    # out of range, sharing a factor with N (p), or not an int at all
    bad_witnesses: list[object] = [
        0,
        -w,
        params.n,
        w + params.n,
        p,
        None,
        "1",
        float(w),
        True,
        b"\x01",
    ]
    for bad in bad_witnesses:
        assert not verify_membership(params, acc, x, bad)  # type: ignore[arg-type]
    for bad_acc in (0, params.n, -acc, acc + params.n, None, "acc"):
        assert not verify_membership(params, bad_acc, x, w)  # type: ignore[arg-type]
    for bad_x in ("block-0", None, 0, [x]):
        assert not verify_membership(params, acc, bad_x, w)  # type: ignore[arg-type]
    assert not verify_membership(None, acc, x, w)  # type: ignore[arg-type]


def test_trapdoor_holder_can_forge(dealer: tuple[AccumulatorParams, tuple[int, int]]) -> None:
    """Why seed 000 §IV-C needs a distributed setup: knowing p, q gives e-th roots of acc
    for any e, i.e. a membership proof for any non-member."""
    params, (p, q) = dealer
    acc = accumulate(params, ELEMENTS)
    e = element_prime(params, b"never added")
    order = (p - 1) * (q - 1)
    forged = pow(acc, pow(e, -1, order), params.n)
    assert verify_membership(params, acc, b"never added", forged)


# --------------------------------------------------------------------------- why primes


def test_plain_exponents_allow_forgery_primes_do_not(params: AccumulatorParams) -> None:
    """The flaw of seed 000 §IV-A's plain ``hash(blk||i)`` exponent, and its fix.

    With a non-prime exponent map ``e``, ``acc = g^P`` (``P`` = product of the ``e(x_i)``)
    also "contains" every divisor of ``P``: from *public* witnesses one computes
    ``g^(P/f)`` for any such ``f``, which verifies for every ``x*`` with ``e(x*) = f``.
    SHA-256 output is a random 256-bit integer, so finding ``x*`` with a chosen small
    ``H(x*)`` is infeasible and the attack cannot be run on SHA-256 here; we therefore show
    the structural flaw with the transparent map ``e(x) = int(x)``: accumulating 6 and 11
    makes 2, 3 (divisors of 6) and 66 (= 6*11) provable although they were never added.
    We also show what the SHA-256 plain accumulator does certify: the divisor 2 of an
    even ``H(m)`` gets a valid witness, so its security rests on nobody finding a preimage
    of any divisor of the accumulated hashes, not on a standard assumption.

    Then the same attacks against hash-to-prime exponents: the members' primes have no
    non-trivial divisors, no outsider's prime divides ``P``, and every witness derivable
    by the same recipe is rejected.
    """
    n, g = params.n, params.g

    def e_plain(x: bytes) -> int:
        return int.from_bytes(x, "big")

    def toy_acc(xs: list[bytes]) -> int:
        return pow(g, math.prod(e_plain(x) for x in xs), n)

    def toy_verify(acc: int, x: bytes, w: int) -> bool:
        return pow(w, e_plain(x), n) == acc

    members = [b"\x06", b"\x0b"]
    acc = toy_acc(members)
    w6 = toy_acc([b"\x0b"])  # honest witness for 6, published as part of a proof
    w_pair = g  # honest batch witness for {6, 11}
    assert toy_verify(acc, b"\x06", w6)
    # forgeries from public data only:
    assert toy_verify(acc, b"\x02", pow(w6, 3, n))  # 2 | 6
    assert toy_verify(acc, b"\x03", pow(w6, 2, n))  # 3 | 6
    assert toy_verify(acc, b"\x42", w_pair)  # 66 = 6 * 11

    # plain SHA-256 exponents: an even H(m) certifies the divisor 2
    m = next(b"m%d" % i for i in range(100) if sha256(b"m%d" % i)[-1] % 2 == 0)
    h_m = int.from_bytes(sha256(m), "big")
    plain_acc = pow(g, h_m * int.from_bytes(sha256(b"other"), "big"), n)
    w_m = pow(g, int.from_bytes(sha256(b"other"), "big"), n)
    assert pow(w_m, h_m, n) == plain_acc
    assert pow(pow(w_m, h_m // 2, n), 2, n) == plain_acc  # "exponent 2 is a member"

    # the same attempts against hash-to-prime exponents
    acc = accumulate(params, members)
    big_p = math.prod(element_prime(params, x) for x in members)
    w6, w11 = prove_all(params, members)
    p6 = element_prime(params, b"\x06")
    candidates = [w6, w11, g, acc, pow(w6, 2, n), pow(w6, 3, n), pow(w11, 6, n)]
    for target in (b"\x02", b"\x03", b"\x42"):
        f = element_prime(params, target)
        assert big_p % f != 0  # no g^(P/f) exists to be found
        quotient = p6 // f  # the "divide the member's exponent" recipe
        candidates_t = [*candidates, pow(w6, max(quotient, 1), n)]
        assert not any(verify_membership(params, acc, target, w) for w in candidates_t)
    assert verify_batch(params, acc, members, g)  # the pair witness proves only the pair


# --------------------------------------------------------------------------- prove_all (BBF'19)


@SLOW
@given(st.lists(st.binary(max_size=12), min_size=1, max_size=12))
def test_prove_all_equals_naive_witnesses(params: AccumulatorParams, xs: list[bytes]) -> None:
    """RootFactor output equals seed 000 §IV-A ProofGen for every position (duplicates too)."""
    fast = prove_all(params, xs)
    assert fast == [ref_witness(params, xs, i) for i in range(len(xs))]
    assert fast == [prove_membership(params, xs, i) for i in range(len(xs))]
    acc = accumulate(params, xs)
    assert all(verify_membership(params, acc, x, w) for x, w in zip(xs, fast, strict=True))


def test_prove_all_empty_and_index_errors(params: AccumulatorParams) -> None:
    assert prove_all(params, []) == []
    with pytest.raises(IndexError):
        prove_membership(params, ELEMENTS, len(ELEMENTS))
    with pytest.raises(IndexError):
        prove_membership(params, ELEMENTS, -1)


# --------------------------------------------------------------------------- batch (§IV-D, §IV-E)

MANY = [b"tx-%03d" % i for i in range(40)]


@pytest.mark.parametrize("t", [1, 8])
def test_verify_batch_accepts_correct_batch(params: AccumulatorParams, t: int) -> None:
    acc = accumulate(params, MANY)
    idx = random.Random(t).sample(range(len(MANY)), t)
    w = prove_batch(params, MANY, idx)
    subset = [MANY[i] for i in idx]
    assert w == ref_acc(params, [x for j, x in enumerate(MANY) if j not in idx])
    assert verify_batch(params, acc, subset, w)
    assert verify_batch(params, acc, list(reversed(subset)), w)  # a set: order irrelevant
    if t == 1:
        assert verify_membership(params, acc, subset[0], w)


@pytest.mark.parametrize("t", [1, 8])
def test_verify_batch_rejects_non_member_or_wrong_subset(params: AccumulatorParams, t: int) -> None:
    acc = accumulate(params, MANY)
    idx = list(range(3, 3 + t))
    w = prove_batch(params, MANY, idx)
    subset = [MANY[i] for i in idx]
    for k in range(t):  # any one element replaced by a non-member
        forged = subset.copy()
        forged[k] = b"not-a-member"
        assert not verify_batch(params, acc, forged, w)
        assert not verify_batch(params, acc, subset[:k] + subset[k + 1 :] + [MANY[0]], w)
    assert not verify_batch(params, acc, subset + [b"extra"], w)
    if t > 1:
        assert not verify_batch(params, acc, subset[:-1], w)  # a proper subset
        assert not verify_batch(params, acc, subset + subset[:1], w)  # a duplicate
    other = prove_batch(params, MANY, [i + 10 for i in idx])  # witness for another subset
    assert not verify_batch(params, acc, subset, other)
    assert not verify_batch(params, accumulate(params, MANY[:-1]), subset, w)


def test_verify_batch_malformed_and_empty(params: AccumulatorParams) -> None:
    acc = accumulate(params, MANY)
    w = prove_batch(params, MANY, [0, 1])
    assert verify_batch(params, acc, MANY[:2], w)
    assert not verify_batch(params, acc, [], acc)  # the empty batch proves nothing
    assert not verify_batch(params, acc, MANY[0], w)  # type: ignore[arg-type]
    assert not verify_batch(params, acc, [MANY[0], "tx-001"], w)  # type: ignore[list-item]
    assert not verify_batch(params, acc, MANY[:2], 0)
    assert not verify_batch(params, acc, MANY[:2], w + params.n)
    assert not verify_batch(params, 0, MANY[:2], w)
    with pytest.raises(ValueError):
        prove_batch(params, MANY, [])
    with pytest.raises(ValueError):
        prove_batch(params, MANY, [1, 1])
    with pytest.raises(IndexError):
        prove_batch(params, MANY, [len(MANY)])


@pytest.mark.parametrize("t", [1, 3, 8, 11])
def test_protocol2_proofs_are_ordinary_witnesses(params: AccumulatorParams, t: int) -> None:
    """seed 000 §IV-D Protocol 2: t individual proofs sharing the work outside the batch."""
    acc = accumulate(params, MANY)
    idx = random.Random(100 + t).sample(range(len(MANY)), t)
    proofs = prove_batch_seed(params, MANY, idx)
    assert proofs == [prove_membership(params, MANY, i) for i in idx]
    assert all(verify_membership(params, acc, MANY[i], w) for i, w in zip(idx, proofs, strict=True))


@pytest.mark.parametrize("t", [1, 2, 8, 9, 17])
def test_protocol3_accepts_honest_proofs(params: AccumulatorParams, t: int) -> None:
    """seed 000 §IV-E Protocol 3 evaluates equation (1) correctly (across 8-proof tables),
    including proofs against different accumulators X_m."""
    idx = list(range(t))
    acc = accumulate(params, MANY)
    proofs = prove_batch_seed(params, MANY, idx)
    assert verify_batch_seed(params, [acc] * t, [MANY[i] for i in idx], proofs)
    # different accumulators: element m proven against a chain of the first 20 + m items
    accs, elems, ws = [], [], []
    for m in range(t):
        chain = MANY[: 20 + m]
        accs.append(accumulate(params, chain))
        elems.append(chain[m])
        ws.append(prove_membership(params, chain, m))
    assert verify_batch_seed(params, accs, elems, ws)
    # one wrong proof (an honest witness for another element) is caught
    ws[-1] = prove_membership(params, MANY[: 20 + t - 1], (t + 5) % (20 + t - 1))
    assert not verify_batch_seed(params, accs, elems, ws)


def test_protocol3_is_sound_for_t1_only(params: AccumulatorParams) -> None:
    """As documented in verify_batch_seed: for t = 1 Protocol 3 is ProofVerf; for t >= 2
    anybody forges proofs for two arbitrary non-members with no secret and no member
    witness (Bezout on the two exponents), and can shift a fake element's error onto an
    honest proof."""
    n = params.n
    acc = accumulate(params, MANY)
    y1, y2 = b"fake transaction 1", b"fake transaction 2"
    assert not verify_batch_seed(params, [acc], [y1], [prove_membership(params, MANY, 0)])

    e1, e2 = element_prime(params, y1), element_prime(params, y2)
    gcd, a, b = gmpy2.gcdext(e1, e2)
    assert gcd == 1
    big_x = acc * acc % n  # X_1 * X_2
    g1, g2 = int(gmpy2.powmod(big_x, a, n)), int(gmpy2.powmod(big_x, b, n))
    assert verify_batch_seed(params, [acc, acc], [y1, y2], [g1, g2])  # accepted!
    assert not verify_membership(params, acc, y1, g1)
    assert not verify_membership(params, acc, y2, g2)

    # an honest proof (x, w) plus a fake y: g_x^(e_x) * g_y^(e_y) = acc^2 with
    # g_x = w * acc^a', g_y = acc^b' where a' e_x + b' e_y = 1
    x, w = MANY[5], prove_membership(params, MANY, 5)
    ex = element_prime(params, x)
    _, a2, b2 = gmpy2.gcdext(ex, e1)
    gx = int(w * gmpy2.powmod(acc, a2, n) % n)
    gy = int(gmpy2.powmod(acc, b2, n))
    assert verify_batch_seed(params, [acc, acc], [x, y1], [gx, gy])
    # the sound aggregate check cannot be fooled the same way
    assert not verify_batch(params, acc, [y1, y2], g1 * g2 % n)
    assert not verify_batch(params, acc, [x, y1], gx)


def test_protocol3_malformed(params: AccumulatorParams) -> None:
    acc = accumulate(params, MANY)
    w = prove_membership(params, MANY, 0)
    assert verify_batch_seed(params, [acc], [MANY[0]], [w])
    assert not verify_batch_seed(params, [], [], [])
    assert not verify_batch_seed(params, [acc, acc], [MANY[0]], [w])
    assert not verify_batch_seed(params, [acc], [MANY[0]], [0])
    assert not verify_batch_seed(params, [params.n], [MANY[0]], [w])
    assert not verify_batch_seed(params, [acc], ["tx"], [w])  # type: ignore[list-item]
    assert not verify_batch_seed(None, [acc], [MANY[0]], [w])  # type: ignore[arg-type]


# --------------------------------------------------------------------------- PoE (BBF'19)


@pytest.mark.parametrize("t", [1, 8])
def test_poe_batch_accepts_and_rejects(params: AccumulatorParams, t: int) -> None:
    acc = accumulate(params, MANY)
    idx = list(range(7, 7 + t))
    subset = [MANY[i] for i in idx]
    w, q = prove_batch_poe(params, MANY, idx)
    assert w == prove_batch(params, MANY, idx)
    assert verify_batch_poe(params, acc, subset, w, q)
    assert verify_batch(params, acc, subset, w)

    forged = subset.copy()
    forged[-1] = b"not-a-member"
    assert not verify_batch_poe(params, acc, forged, w, q)
    assert not verify_batch_poe(params, acc, subset + [b"extra"], w, q)
    assert not verify_batch_poe(params, acc, subset, w, q * params.g % params.n)
    assert not verify_batch_poe(params, acc, subset, w * params.g % params.n, q)
    other_w, other_q = prove_batch_poe(params, MANY, [i + 20 for i in idx])
    assert not verify_batch_poe(params, acc, subset, other_w, other_q)
    assert not verify_batch_poe(params, acc, subset, w, other_q)
    assert not verify_batch_poe(params, accumulate(params, MANY[:-1]), subset, w, q)
    assert not verify_batch_poe(params, acc, subset, w, 0)
    assert not verify_batch_poe(params, acc, [], w, q)
    if t > 1:  # the transcript fixes the order of the batch
        assert not verify_batch_poe(params, acc, list(reversed(subset)), w, q)
