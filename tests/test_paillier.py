"""Tests for threshold Paillier (crypto.paillier) and DeepChain aggregation (fl.paillier_agg).

Seed 003 §4.2.4: parameters ``PK_model = (n, g, theta, V = (v, {v_i}))``, encrypted
updates ``C(dW)``, the update rule ``C(W_i) = C(W_{i-1}) * 1/N * prod_j C(-dW_{i,j})``, and
collaborative decryption (Algorithm 4) where each share ``C_j`` carries a proof
``Proof_CD_j`` checked by ``fsver_2`` (here :func:`paillier.verify_share`). Keys are
512-bit toy keys made once per module (``insecure_for_tests=True``) to keep this fast.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from fedledger.crypto import paillier
from fedledger.crypto.paillier import (
    DecryptionShare,
    InvalidDecryptionShare,
    KeyShare,
    PaillierPublicKey,
)
from fedledger.errors import UsageError, VerificationFailed
from fedledger.fl.paillier_agg import (
    FixedPointCodec,
    InsufficientShares,
    SharePosting,
    collaborative_decrypt,
    decode_aggregate,
    deepchain_aggregate,
    encrypt_array,
    paillier_round_seconds,
    post_decryption_shares,
)

BITS = 512
PARTIES = 5
THRESHOLD = 3


@pytest.fixture(scope="module")
def keys() -> tuple[PaillierPublicKey, list[KeyShare]]:
    return paillier.generate_keys(
        BITS, parties=PARTIES, threshold=THRESHOLD, insecure_for_tests=True
    )


def _open(pk: PaillierPublicKey, ks: list[KeyShare], c: int, who: tuple[int, ...]) -> int:
    """Decrypt ``c`` with the shares of the parties ``who`` (1-based)."""
    return paillier.combine(pk, c, [paillier.decryption_share(pk, ks[i - 1], c) for i in who])


def _signed(pk: PaillierPublicKey, m: int) -> int:
    return m - pk.n if m > pk.n // 2 else m


# --------------------------------------------------------------------------- keys


def test_key_shape(keys: tuple[PaillierPublicKey, list[KeyShare]]) -> None:
    pk, ks = keys
    assert pk.bits == BITS
    assert pk.g == pk.n + 1
    assert pk.delta == math.factorial(PARTIES)
    assert pk.theta == 4 * pk.delta**2 % pk.n  # the seed's theta for g = n + 1, d = 1 mod n
    assert [k.index for k in ks] == list(range(1, PARTIES + 1))
    assert len(pk.verification_keys) == PARTIES
    assert str(ks[0].secret) not in repr(ks[0])


def test_small_or_odd_moduli_are_refused() -> None:
    with pytest.raises(UsageError, match="insecure_for_tests"):
        paillier.generate_keys(BITS, parties=3, threshold=2)
    with pytest.raises(UsageError):
        paillier.generate_keys(128, parties=3, threshold=2, insecure_for_tests=True)
    with pytest.raises(UsageError, match="even"):
        paillier.generate_keys(513, parties=3, threshold=2, insecure_for_tests=True)
    with pytest.raises(UsageError):
        paillier.generate_keys(BITS, parties=3, threshold=4, insecure_for_tests=True)


# --------------------------------------------------------------------------- encryption and combining


def test_roundtrip_with_any_t_of_l(keys: tuple[PaillierPublicKey, list[KeyShare]]) -> None:
    """Any ``t`` of the ``l`` parties open a ciphertext; more than ``t`` also work."""
    pk, ks = keys
    m = 123456789
    c = paillier.encrypt(pk, m)
    shares = [paillier.decryption_share(pk, k, c) for k in ks]
    for subset in itertools.combinations(shares, THRESHOLD):
        assert paillier.combine(pk, c, list(subset)) == m
    assert paillier.combine(pk, c, shares) == m
    assert paillier.encrypt(pk, m) != c  # probabilistic encryption


def test_fewer_than_t_shares_cannot_decrypt(keys: tuple[PaillierPublicKey, list[KeyShare]]) -> None:
    pk, ks = keys
    c = paillier.encrypt(pk, 42)
    shares = [paillier.decryption_share(pk, k, c) for k in ks[: THRESHOLD - 1]]
    with pytest.raises(UsageError, match=f"need {THRESHOLD} decryption shares"):
        paillier.combine(pk, c, shares)
    with pytest.raises(UsageError, match="same party"):
        paillier.combine(pk, c, [shares[0], shares[0], shares[1]])
    postings = [post_decryption_shares(pk, k, [c]) for k in ks[: THRESHOLD - 1]]
    with pytest.raises(InsufficientShares, match=f"{THRESHOLD} needed"):
        collaborative_decrypt(pk, [c], postings)


def test_homomorphic_operations(keys: tuple[PaillierPublicKey, list[KeyShare]]) -> None:
    pk, ks = keys
    who = (1, 3, 5)
    a, b = 1000, -250
    ca, cb = paillier.encrypt(pk, a), paillier.encrypt(pk, b)
    assert _open(pk, ks, paillier.add(pk, ca, cb), who) == a + b
    assert _signed(pk, _open(pk, ks, paillier.negate(pk, ca), who)) == -a
    assert _signed(pk, _open(pk, ks, paillier.scalar_mul(pk, ca, -7), who)) == -7 * a
    assert _open(pk, ks, paillier.scalar_mul(pk, ca, 7), who) == 7 * a
    va, vb = paillier.encrypt_vector(pk, [1, 2, 3]), paillier.encrypt_vector(pk, [10, 20, 30])
    summed = paillier.add_vectors(pk, va, vb)
    assert [_open(pk, ks, c, who) for c in summed] == [11, 22, 33]
    tripled = paillier.scalar_mul_vector(pk, va, 3)
    assert [_open(pk, ks, c, who) for c in tripled] == [3, 6, 9]
    neg = paillier.negate_vector(pk, va)
    assert [_signed(pk, _open(pk, ks, c, who)) for c in neg] == [-1, -2, -3]
    with pytest.raises(UsageError):
        paillier.add_vectors(pk, va, vb[:2])
    with pytest.raises(UsageError):
        paillier.combine(pk, pk.n, [])  # not a unit mod n^2


# --------------------------------------------------------------------------- proofs (Algorithm 4, fsver_2)


def test_forged_share_is_rejected_and_sender_identified(
    keys: tuple[PaillierPublicKey, list[KeyShare]],
) -> None:
    """A share made with a wrong exponent fails ``fsver_2``; the honest rest still decrypt."""
    pk, ks = keys
    m = 987654321
    c = paillier.encrypt(pk, m)
    shares = [paillier.decryption_share(pk, k, c) for k in ks]
    cheater = 2
    forged = paillier.decryption_share(pk, KeyShare(cheater, ks[cheater - 1].secret + 1), c)
    assert forged.value != shares[cheater - 1].value
    with pytest.raises(InvalidDecryptionShare) as err:
        paillier.verify_share(pk, c, forged)
    assert err.value.party == cheater
    assert isinstance(err.value, VerificationFailed)
    assert f"party {cheater}" in str(err.value)

    # a right-looking proof attached to a tampered value fails too
    n2 = pk.n_square
    tampered = DecryptionShare(
        cheater, shares[cheater - 1].value * 4 % n2, shares[cheater - 1].challenge,
        shares[cheater - 1].response,
    )
    assert not paillier.share_is_valid(pk, c, tampered)

    mixed = shares[:cheater - 1] + [forged] + shares[cheater:]
    with pytest.raises(InvalidDecryptionShare) as err:
        paillier.combine(pk, c, mixed)
    assert err.value.party == cheater
    valid, bad = paillier.partition_shares(pk, c, mixed)
    assert bad == [cheater]
    assert len(valid) == PARTIES - 1 >= THRESHOLD
    assert paillier.combine(pk, c, valid) == m
    # skipping the proofs, the forged share makes the combination inconsistent
    first_t = sorted(mixed, key=lambda s: s.index)[:THRESHOLD]
    with pytest.raises(VerificationFailed, match="inconsistent"):
        paillier.combine(pk, c, first_t, verify=False)


def test_proof_for_another_ciphertext_is_rejected(
    keys: tuple[PaillierPublicKey, list[KeyShare]],
) -> None:
    pk, ks = keys
    c1, c2 = paillier.encrypt(pk, 5), paillier.encrypt(pk, 6)
    s1 = paillier.decryption_share(pk, ks[0], c1)
    s2 = paillier.decryption_share(pk, ks[0], c2)
    paillier.verify_share(pk, c1, s1)
    graft = DecryptionShare(s1.index, s1.value, s2.challenge, s2.response)
    with pytest.raises(InvalidDecryptionShare):
        paillier.verify_share(pk, c1, graft)
    with pytest.raises(InvalidDecryptionShare):
        paillier.verify_share(pk, c1, s2)  # the whole share of another ciphertext
    # the proof binds the sender index as well
    renamed = DecryptionShare(2, s1.value, s1.challenge, s1.response)
    assert not paillier.share_is_valid(pk, c1, renamed)
    unknown = DecryptionShare(PARTIES + 1, s1.value, s1.challenge, s1.response)
    with pytest.raises(InvalidDecryptionShare):
        paillier.verify_share(pk, c1, unknown)


# --------------------------------------------------------------------------- fixed point and the DeepChain rule


def test_encoding_error_bound(keys: tuple[PaillierPublicKey, list[KeyShare]]) -> None:
    pk, _ = keys
    codec = FixedPointCodec(pk.n, scale_bits=20)
    rng = np.random.default_rng(3)
    x = np.concatenate([rng.normal(0, 1, 500), rng.normal(0, 1e6, 100), [0.0, -0.0, 2**-25]])
    back = codec.decode(codec.encode(x))
    assert np.max(np.abs(back - x)) <= codec.error_bound() == 2.0**-21
    assert all(0 <= m < pk.n for m in codec.encode(x))
    assert codec.encode([-1.0]) == [pk.n - (1 << 20)]  # centred: negatives wrap to n - |X|
    with pytest.raises(UsageError):
        codec.encode([float("nan")])
    with pytest.raises(UsageError):
        codec.encode([float(2**500)])


def test_negative_values_roundtrip(keys: tuple[PaillierPublicKey, list[KeyShare]]) -> None:
    pk, ks = keys
    codec = FixedPointCodec(pk.n)
    x = np.array([-3.25, -1e-6, 0.0, 2.5, -123456.789])
    ct = encrypt_array(pk, codec, x)
    postings = [post_decryption_shares(pk, k, ct) for k in ks[2:]]
    out = collaborative_decrypt(pk, ct, postings)
    assert out.used == (3, 4, 5) and out.invalid == ()
    back = codec.decode(out.plaintexts)
    assert np.max(np.abs(back - x)) <= codec.error_bound()


def test_deepchain_update_rule(keys: tuple[PaillierPublicKey, list[KeyShare]]) -> None:
    """``W_i = W_{i-1} - (1/N) sum_j dW_{i,j}`` computed on ciphertexts equals the plaintext rule."""
    pk, ks = keys
    codec = FixedPointCodec(pk.n)
    rng = np.random.default_rng(7)
    n_parties, size = PARTIES, 6
    model = rng.normal(0, 0.5, size)
    updates = rng.normal(0, 0.05, (n_parties, size))
    enc_model = encrypt_array(pk, codec, model)
    enc_updates = [encrypt_array(pk, codec, u) for u in updates]
    enc_new = deepchain_aggregate(pk, enc_model, enc_updates)
    postings = [post_decryption_shares(pk, k, enc_new) for k in ks]
    out = collaborative_decrypt(pk, enc_new, postings)
    new_model = decode_aggregate(codec, out.plaintexts, n_parties)
    expected = model - updates.sum(axis=0) / n_parties
    bound = codec.error_bound(2 * n_parties, n_parties)
    assert bound == 2.0**-codec.scale_bits
    assert np.all(np.abs(new_model - expected) <= bound + np.abs(expected) * 2.0**-52)
    with pytest.raises(UsageError):
        deepchain_aggregate(pk, enc_model, [])
    with pytest.raises(UsageError):
        deepchain_aggregate(pk, enc_model, [enc_updates[0][:-1]])


def test_collaborative_decryption_reports_bad_parties(
    keys: tuple[PaillierPublicKey, list[KeyShare]],
) -> None:
    """Algorithm 4: bad postings are recorded, the rest decrypt if at least ``t`` are valid."""
    pk, ks = keys
    codec = FixedPointCodec(pk.n)
    x = np.array([0.5, -0.25, 8.0])
    ct = encrypt_array(pk, codec, x)
    honest = [post_decryption_shares(pk, k, ct) for k in ks]
    forged_key = KeyShare(1, ks[0].secret + 12345)
    forged = post_decryption_shares(pk, forged_key, ct)
    short = SharePosting(4, honest[3].shares[:-1])
    postings = [forged, honest[1], honest[2], short, honest[4]]
    out = collaborative_decrypt(pk, ct, postings)
    assert out.invalid == (1, 4)
    assert out.used == (2, 3, 5)
    assert np.array_equal(codec.decode(out.plaintexts), x)
    # a party posting twice is rejected as a whole
    out = collaborative_decrypt(pk, ct, [honest[0], honest[0], *honest[1:4]])
    assert out.invalid == (1,) and out.used == (2, 3, 4)
    with pytest.raises(InsufficientShares) as err:
        collaborative_decrypt(pk, ct, [forged, short, honest[2]])
    assert err.value.invalid == (1, 4)


# --------------------------------------------------------------------------- benchmark baseline


def test_round_timing_helper(keys: tuple[PaillierPublicKey, list[KeyShare]]) -> None:
    pk, ks = keys
    r = paillier_round_seconds(40, PARTIES, THRESHOLD, slice_size=4, keys=(pk, ks))
    assert r["scaled"] is True and r["slice_size"] == 4 and r["key_bits"] == BITS
    assert set(r["stages"]) == {"encrypt", "aggregate", "decrypt_shares", "verify", "combine"}
    assert r["seconds"] == pytest.approx(r["slice_seconds"] * 10)
    assert r["keygen_seconds"] is None
    assert r["max_abs_error"] <= 2.0**-32
    r = paillier_round_seconds(
        3, 3, 2, slice_size=8, key_bits=BITS, insecure_for_tests=True, rng_seed=1
    )
    assert r["scaled"] is False and r["slice_size"] == 3
    assert r["seconds"] == pytest.approx(r["slice_seconds"])
    assert r["keygen_seconds"] is not None
    with pytest.raises(UsageError):
        paillier_round_seconds(10, 3, 4, slice_size=2, key_bits=BITS, insecure_for_tests=True)
