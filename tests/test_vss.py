"""Feldman VSS over Ed25519 (the beacon's building block, seed 004 §IV-B (4))."""

from __future__ import annotations

from itertools import combinations

import pytest

from fedledger.crypto import vss
from fedledger.crypto.keys import SigningKey


def _coefficients(t: int, tag: bytes = b"poly") -> list[bytes]:
    return [vss.random_scalar_from(tag + bytes([k])) for k in range(t)]


def test_any_t_of_n_shares_recover_the_secret() -> None:
    t, n = 3, 6
    coefficients = _coefficients(t)
    commitments, shares = vss.deal(coefficients, n)
    assert len(commitments) == t and len(shares) == n
    for j, s in enumerate(shares, start=1):
        assert vss.verify_share(commitments, j, s)
    for subset in combinations(range(1, n + 1), t):
        assert vss.recover({j: shares[j - 1] for j in subset}, t) == coefficients[0]
    assert vss.recover({j: shares[j - 1] for j in range(1, n + 1)}, t) == coefficients[0]
    assert vss.secret_matches(commitments, coefficients[0])
    assert not vss.secret_matches(commitments, coefficients[1])


def test_threshold_one_shares_are_the_secret() -> None:
    commitments, shares = vss.deal(_coefficients(1), 4)
    assert set(shares) == {shares[0]} and vss.secret_matches(commitments, shares[0])
    assert vss.recover({3: shares[2]}, 1) == shares[0]


def test_tampered_share_fails_verification() -> None:
    commitments, shares = vss.deal(_coefficients(2), 4)
    bumped = ((int.from_bytes(shares[1], "little") + 1) % vss.L).to_bytes(32, "little")
    assert not vss.verify_share(commitments, 2, bumped)
    assert not vss.verify_share(commitments, 3, shares[1])  # right share, wrong index
    assert not vss.verify_share(commitments, 0, shares[1])
    assert not vss.verify_share(commitments, 2, vss.L.to_bytes(32, "little"))  # not reduced
    assert not vss.verify_share(commitments, 2, shares[1][:31])
    assert not vss.verify_share([vss.IDENTITY, commitments[1]], 2, shares[1])
    assert not vss.verify_share([b"\xff" * 32, commitments[1]], 2, shares[1])
    assert not vss.verify_share([], 2, shares[1])


def test_recovery_with_fewer_than_t_shares_raises() -> None:
    _, shares = vss.deal(_coefficients(3), 5)
    with pytest.raises(ValueError):
        vss.recover({1: shares[0], 4: shares[3]}, 3)


def test_zero_and_malformed_coefficients_are_refused() -> None:
    good = vss.random_scalar_from(b"x")
    with pytest.raises(ValueError):
        vss.deal([good, bytes(32)], 3)
    with pytest.raises(ValueError):
        vss.deal([vss.L.to_bytes(32, "little")], 3)
    with pytest.raises(ValueError):
        vss.deal([good, good, good], 2)  # t > n
    assert vss.random_scalar_from(b"x") == good and any(good)
    assert not vss.secret_matches(vss.deal([good], 1)[0], bytes(32))


def test_encrypt_decrypt_round_trip_and_wrong_key() -> None:
    alice, bob = SigningKey.from_seed(b"\x01" * 32), SigningKey.from_seed(b"\x02" * 32)
    share = vss.random_scalar_from(b"share")
    box = vss.encrypt_share(alice.public_key, share)
    assert len(box) == vss.BOX_SIZE
    assert vss.decrypt_share(alice, box) == share
    with pytest.raises(ValueError):
        vss.decrypt_share(bob, box)
    with pytest.raises(ValueError):
        vss.decrypt_share(alice, box[:-1] + bytes([box[-1] ^ 1]))
    with pytest.raises(ValueError):
        vss.decrypt_share(alice, box[:10])
