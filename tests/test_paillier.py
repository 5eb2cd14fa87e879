"""Tests for threshold Paillier (crypto.paillier) and DeepChain aggregation (fl.paillier_agg).

Seed 003 §4.2.4: parameters ``PK_model = (n, g, theta, V = (v, {v_i}))``, encrypted
updates ``C(dW)``, the update rule ``C(W_i) = C(W_{i-1}) * 1/N * prod_j C(-dW_{i,j})``, and
collaborative decryption (Algorithm 4) where each share ``C_j`` carries a proof
``Proof_CD_j`` checked by ``fsver_2`` (here :func:`paillier.verify_share`), and the
proof of plaintext knowledge ``Proof_PK`` that Algorithm 3 checks with ``fsver_1``
(here :func:`paillier.verify_plaintext_proof`). Keys are
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
    InvalidPlaintextProof,
    KeyShare,
    PaillierPublicKey,
    PlaintextProof,
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


# --------------------------------------------------------------------------- proof of plaintext knowledge (Algorithm 3, fsver_1)


def _context(party: str, round_: int) -> bytes:
    return f"party={party};round={round_}".encode()


def test_plaintext_proof_accepts_honest_provers(keys: tuple[PaillierPublicKey, list[KeyShare]]) -> None:
    """Seed 003, Algorithm 3: ``fsver_1(C(dW), Proof_PK)`` accepts an honest party's proof."""
    pk, ks = keys
    ctx = _context("alice", 7)
    for m in (0, 1, -1, 123456789, pk.n - 1, -(pk.n // 2)):
        c, proof = paillier.encrypt_proven(pk, m, ctx)
        paillier.verify_plaintext_proof(pk, c, proof, ctx)
        assert paillier.plaintext_proof_is_valid(pk, c, proof, ctx)
        assert 0 <= proof.challenge < 1 << paillier.plaintext_challenge_bits(pk)
        assert 0 <= proof.z < pk.n and 0 < proof.w < pk.n
        assert _signed(pk, _open(pk, ks, c, (1, 2, 3))) == _signed(pk, m % pk.n)
    c, r = paillier.encrypt_with_nonce(pk, 42)
    proof = paillier.prove_plaintext_knowledge(pk, c, 42, r, ctx)
    paillier.verify_plaintext_proof(pk, c, proof, ctx)
    assert paillier.prove_plaintext_knowledge(pk, c, 42, r, ctx) != proof  # fresh randomness
    assert paillier.plaintext_challenge_bits(pk) == BITS // 2 - 1
    big = PaillierPublicKey(n=(1 << 2047) + 1, threshold=1, parties=1, v=4, verification_keys=(4,))
    assert paillier.plaintext_challenge_bits(big) == paillier.CHALLENGE_BITS


def test_plaintext_proof_for_another_ciphertext_is_rejected(
    keys: tuple[PaillierPublicKey, list[KeyShare]],
) -> None:
    """Seed 003, fsver_1: a proof never transfers to another ciphertext, not even a mauled copy."""
    pk, _ = keys
    ctx = _context("alice", 1)
    c1, p1 = paillier.encrypt_proven(pk, 5, ctx)
    c2, _ = paillier.encrypt_proven(pk, 5, ctx)  # same plaintext, other randomness
    for other in (
        c2,
        paillier.add(pk, c1, paillier.encrypt(pk, 0)),  # re-randomised copy
        paillier.scalar_mul(pk, c1, 2),  # homomorphically doubled
        paillier.add(pk, c1, paillier.encrypt(pk, 1000)),  # shifted
    ):
        with pytest.raises(InvalidPlaintextProof, match="does not verify"):
            paillier.verify_plaintext_proof(pk, other, p1, ctx)
    with pytest.raises(InvalidPlaintextProof, match="not a unit"):
        paillier.verify_plaintext_proof(pk, pk.n, p1, ctx)
    with pytest.raises(InvalidPlaintextProof, match="must be an int"):
        paillier.verify_plaintext_proof(pk, str(c1), p1, ctx)  # type: ignore[arg-type]


def test_plaintext_proof_replayed_under_another_context_is_rejected(
    keys: tuple[PaillierPublicKey, list[KeyShare]],
) -> None:
    """Seed 003, fsver_1 with a context: a copied ``(C(dW), Proof_PK)`` fails for another party or round."""
    pk, _ = keys
    c, proof = paillier.encrypt_proven(pk, 99, _context("alice", 3))
    paillier.verify_plaintext_proof(pk, c, proof, _context("alice", 3))
    for ctx in (_context("mallory", 3), _context("alice", 4), b""):
        with pytest.raises(InvalidPlaintextProof, match="does not verify"):
            paillier.verify_plaintext_proof(pk, c, proof, ctx)
    # a key other than the one the proof was made under
    other = PaillierPublicKey(pk.n + 2, pk.threshold, pk.parties, pk.v, pk.verification_keys)
    assert not paillier.plaintext_proof_is_valid(other, c, proof, _context("alice", 3))


def test_tampered_plaintext_proof_is_rejected(keys: tuple[PaillierPublicKey, list[KeyShare]]) -> None:
    """Seed 003, fsver_1: every field of the proof is checked; out-of-range responses are refused."""
    pk, _ = keys
    ctx = _context("alice", 1)
    c, p = paillier.encrypt_proven(pk, -17, ctx)
    k = paillier.plaintext_challenge_bits(pk)
    tampered = [
        (PlaintextProof(p.challenge, (p.z + 1) % pk.n, p.w), "does not verify"),
        (PlaintextProof(p.challenge, p.z, p.w * 2 % pk.n), "does not verify"),
        (PlaintextProof(p.challenge ^ 1, p.z, p.w), "does not verify"),
        (PlaintextProof(p.challenge, p.z + pk.n, p.w), "response out of range"),  # same value mod n
        (PlaintextProof(p.challenge, p.z, p.w + pk.n), "response out of range"),
        (PlaintextProof(p.challenge, -1, p.w), "response out of range"),
        (PlaintextProof(p.challenge, p.z, 0), "response out of range"),
        (PlaintextProof(1 << k, p.z, p.w), "challenge out of range"),
        (PlaintextProof(p.challenge, True, p.w), "must be ints"),
    ]
    for bad, reason in tampered:
        with pytest.raises(InvalidPlaintextProof, match=reason) as err:
            paillier.verify_plaintext_proof(pk, c, bad, ctx)
        assert isinstance(err.value, VerificationFailed)
    paillier.verify_plaintext_proof(pk, c, p, ctx)


def test_prover_refuses_a_wrong_witness(keys: tuple[PaillierPublicKey, list[KeyShare]]) -> None:
    pk, _ = keys
    c, r = paillier.encrypt_with_nonce(pk, 10)
    with pytest.raises(UsageError, match="do not open"):
        paillier.prove_plaintext_knowledge(pk, c, 11, r, b"ctx")
    with pytest.raises(UsageError, match="do not open"):
        paillier.prove_plaintext_knowledge(pk, c, 10, r + 1, b"ctx")
    with pytest.raises(UsageError, match="unit"):
        paillier.prove_plaintext_knowledge(pk, c, 10, 0, b"ctx")
    with pytest.raises(UsageError, match="bytes"):
        paillier.prove_plaintext_knowledge(pk, c, 10, r, "ctx")  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="bytes"):
        paillier.encrypt_proven(pk, 10, "ctx")  # type: ignore[arg-type]


def test_plaintext_proof_sigma_protocol_is_special_sound_and_hiding(
    keys: tuple[PaillierPublicKey, list[KeyShare]],
) -> None:
    """Seed 003 fsver_1, the arguments of :func:`paillier.prove_plaintext_knowledge` checked.

    Special soundness: two answers to one commitment yield ``(M, r)`` by the stated formula.
    Zero knowledge: a transcript built backwards from uniform ``(e, z, w)`` satisfies the
    verification equation, so honest ``(z, w)``, uniform mod ``n``, reveal nothing.
    """
    pk, _ = keys
    n, n2 = pk.n, pk.n_square
    m = 31337
    c, r = paillier.encrypt_with_nonce(pk, m)
    x, s, a = paillier._commit(pk)
    e1, e2 = 12345, 67890
    z1, w1 = paillier._respond(pk, x, s, e1, m, r)
    z2, w2 = paillier._respond(pk, x, s, e2, m, r)
    for e, z, w in ((e1, z1, w1), (e2, z2, w2)):
        assert (1 + z * n) * pow(w, n, n2) % n2 == a * pow(c, e, n2) % n2
    delta = e1 - e2
    alpha = pow(delta, -1, n)
    beta = (1 - alpha * delta) // n
    assert (1 - alpha * delta) % n == 0
    assert alpha * (z1 - z2) % n == m
    r_ext = pow(w1 * pow(w2, -1, n) % n, alpha, n) * pow(c, beta, n) % n
    assert pow(r_ext, n, n2) == pow(r, n, n2)  # the same r^n: (m, r_ext) opens c
    # simulator: pick the answers, solve for the commitment
    e, z, w = 424242, 99 % n, 5
    a_sim = (1 + z * n) * pow(w, n, n2) * pow(c, -e, n2) % n2
    assert (1 + z * n) * pow(w, n, n2) % n2 == a_sim * pow(c, e, n2) % n2


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
