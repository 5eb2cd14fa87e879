"""Tests for fedledger.crypto.vrf (RFC 9381 §5, ECVRF-EDWARDS25519-SHA512-TAI)."""

from __future__ import annotations

import hashlib

import pytest
from nacl.bindings import (
    crypto_core_ed25519_add,
    crypto_core_ed25519_sub,
    crypto_scalarmult_ed25519_base_noclamp,
    crypto_scalarmult_ed25519_noclamp,
)

from fedledger.crypto import vrf
from fedledger.crypto.keys import SigningKey
from fedledger.errors import InvalidSignature

L = 2**252 + 27742317777372353535851937790883648493
IDENTITY = (1).to_bytes(32, "little")
ORDER_8 = bytes.fromhex("26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05")
ORDER_4 = bytes(32)  # (sqrt(-1), 0)
ORDER_2 = bytes.fromhex("ec" + "ff" * 30 + "7f")  # (0, -1)

# RFC 9381 Appendix B.3, Examples 16-18: SK, PK, alpha, pi, beta.
VECTORS = [
    (
        "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
        "",
        "8657106690b5526245a92b003bb079ccd1a92130477671f6fc01ad16f26f723f"
        "26f8a57ccaed74ee1b190bed1f479d9727d2d0f9b005a6e456a35d4fb0daab12"
        "68a1b0db10836d9826a528ca76567805",
        "90cf1df3b703cce59e2a35b925d411164068269d7b2d29f3301c03dd757876ff"
        "66b71dda49d2de59d03450451af026798e8f81cd2e333de5cdf4f3e140fdd8ae",
    ),
    (
        "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
        "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
        "72",
        "f3141cd382dc42909d19ec5110469e4feae18300e94f304590abdced48aed593"
        "3bf0864a62558b3ed7f2fea45c92a465301b3bbf5e3e54ddf2d935be3b67926d"
        "a3ef39226bbc355bdc9850112c8f4b02",
        "eb4440665d3891d668e7e0fcaf587f1b4bd7fbfe99d0eb2211ccec90496310eb"
        "5e33821bc613efb94db5e5b54c70a848a0bef4553a41befc57663b56373a5031",
    ),
    (
        "c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
        "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025",
        "af82",
        "9bc0f79119cc5604bf02d23b4caede71393cedfbb191434dd016d30177ccbf80"
        "96bb474e53895c362d8628ee9f9ea3c0e52c7a5c691b6c18c9979866568add7a"
        "2d41b00b05081ed0f58ee5e31b3a970e",
        "645427e5d00c62a23fb703732fa5d892940935942101e456ecca7bb217c61c45"
        "2118fec1219202a0edcf038bb6373241578be7217ba85a2687f7a0310b2df19f",
    ),
]

KEY = SigningKey.from_seed(bytes(range(32)))
OTHER = SigningKey.from_seed(bytes(range(32, 64)))
ALPHA = b"fedledger/poc\x00slot-7"


@pytest.mark.parametrize(("sk", "pk", "alpha", "pi", "beta"), VECTORS)
def test_rfc9381_vectors(sk: str, pk: str, alpha: str, pi: str, beta: str) -> None:
    """RFC 9381 Appendix B.3: keys (§5.5), prove (§5.1), verify (§5.3), proof_to_hash (§5.2)."""
    key = SigningKey.from_seed(bytes.fromhex(sk))
    assert key.public_key.hex() == pk  # the VRF key is the Ed25519 key (§5.5, RFC 8032 §5.1.5)
    proof = vrf.prove(key, bytes.fromhex(alpha))
    assert proof.hex() == pi
    assert vrf.verify(bytes.fromhex(pk), bytes.fromhex(alpha), proof).hex() == beta
    assert vrf.proof_to_hash(proof).hex() == beta
    assert (len(proof), len(bytes.fromhex(beta))) == (vrf.PROOF_SIZE, vrf.OUTPUT_SIZE)


def test_rejects_other_alpha_and_other_key() -> None:
    """RFC 9381 §5.3 step 11: the challenge binds both alpha and the public key."""
    proof = vrf.prove(KEY, ALPHA)
    with pytest.raises(InvalidSignature, match="does not verify"):
        vrf.verify(KEY.public_key, ALPHA + b"!", proof)
    with pytest.raises(InvalidSignature, match="does not verify"):
        vrf.verify(OTHER.public_key, ALPHA, proof)


@pytest.mark.parametrize("bit", [0, 7, 100, 254, 255, 256, 300, 383, 384, 500, 636, 639])
def test_rejects_flipped_bit(bit: int) -> None:
    """RFC 9381 §5.3/§5.4.4: any change to Gamma, c or s makes the proof invalid."""
    proof = bytearray(vrf.prove(KEY, ALPHA))
    proof[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(InvalidSignature):
        vrf.verify(KEY.public_key, ALPHA, bytes(proof))


def test_rejects_wrong_lengths() -> None:
    """RFC 9381 §5.4.4 (pi is ptLen + cLen + qLen = 80 bytes) and §5.5 (ptLen = 32)."""
    proof = vrf.prove(KEY, ALPHA)
    for bad in (proof[:-1], proof + b"\x00", b""):
        with pytest.raises(InvalidSignature, match="80 bytes"):
            vrf.verify(KEY.public_key, ALPHA, bad)
        with pytest.raises(InvalidSignature, match="80 bytes"):
            vrf.proof_to_hash(bad)
    for bad_key in (KEY.public_key[:31], KEY.public_key + b"\x00"):
        with pytest.raises(InvalidSignature, match="32 bytes"):
            vrf.verify(bad_key, ALPHA, proof)


def test_rejects_s_not_below_order() -> None:
    """RFC 9381 §5.4.4 step 8: s >= q is INVALID although (s + q)*B = s*B."""
    proof = vrf.prove(KEY, ALPHA)
    s = int.from_bytes(proof[48:], "little")
    forged = proof[:48] + (s + L).to_bytes(32, "little")
    with pytest.raises(InvalidSignature, match="group order"):
        vrf.verify(KEY.public_key, ALPHA, forged)
    with pytest.raises(InvalidSignature, match="group order"):
        vrf.proof_to_hash(forged)


@pytest.mark.parametrize("small", [IDENTITY, ORDER_2, ORDER_4, ORDER_8])
def test_rejects_small_order_key(small: bytes) -> None:
    """RFC 9381 §5.4.5 (validate_key): a key Y with cofactor*Y = identity is INVALID."""
    with pytest.raises(InvalidSignature, match="small order"):
        vrf.verify(small, ALPHA, vrf.prove(KEY, ALPHA))


def test_rejects_bad_point_encodings() -> None:
    """RFC 9381 §5.5 string_to_point = RFC 8032 §5.1.3: off-curve and non-canonical (y >= p) fail."""
    proof = vrf.prove(KEY, ALPHA)
    off_curve = (2).to_bytes(32, "little")  # y = 2 has no x on the curve
    non_canonical = (2**255 - 19 + 3).to_bytes(32, "little")  # y = p + 3 (y = 3 is on the curve)
    for bad in (off_curve, non_canonical):
        with pytest.raises(InvalidSignature, match="public key is not a valid"):
            vrf.verify(bad, ALPHA, proof)
        with pytest.raises(InvalidSignature, match="Gamma is not a valid"):
            vrf.verify(KEY.public_key, ALPHA, bad + proof[32:])


def test_deterministic() -> None:
    """RFC 9381 §5.4.2.2: the nonce is derived from SK and H, so proving is deterministic."""
    again = SigningKey.from_seed(KEY.seed())
    assert vrf.prove(KEY, ALPHA) == vrf.prove(again, ALPHA)


def test_outputs_differ() -> None:
    """RFC 9381 §3 (pseudorandomness) smoke test: distinct alphas and keys give distinct betas."""
    betas = {
        vrf.verify(KEY.public_key, a, vrf.prove(KEY, a)) for a in (bytes([i]) for i in range(32))
    }
    betas.add(vrf.verify(OTHER.public_key, b"\x00", vrf.prove(OTHER, b"\x00")))
    assert len(betas) == 33


def _small_multiple(j: int, point: bytes) -> bytes:
    acc = IDENTITY
    for _ in range(j):
        acc = crypto_core_ed25519_add(acc, point)
    return acc


def _prove_with_torsion(
    seed: bytes, alpha: bytes, key_torsion: bytes, gamma_torsion: bytes
) -> tuple[bytes, bytes]:
    """RFC 9381 §5.1 for Y' = Y + T_Y and Gamma' = x*H + T_G, grinding k until c mod 8 is as guessed."""
    digest = bytearray(hashlib.sha512(seed).digest()[:32])
    digest[0] &= 248
    digest[31] = (digest[31] & 127) | 64
    x = int.from_bytes(digest, "little") % L
    pk = crypto_core_ed25519_add(
        crypto_scalarmult_ed25519_base_noclamp(x.to_bytes(32, "little")), key_torsion
    )
    h = vrf._encode_to_curve(pk, alpha)
    gamma = crypto_core_ed25519_add(
        crypto_scalarmult_ed25519_noclamp(x.to_bytes(32, "little"), h), gamma_torsion
    )
    for k in range(1, 1000):
        kb = k.to_bytes(32, "little")
        for j in range(8):  # the verifier will see U = kB - (c mod 8)T_Y and V = kH - (c mod 8)T_G
            u = crypto_core_ed25519_sub(
                crypto_scalarmult_ed25519_base_noclamp(kb), _small_multiple(j, key_torsion)
            )
            v = crypto_core_ed25519_sub(
                crypto_scalarmult_ed25519_noclamp(kb, h), _small_multiple(j, gamma_torsion)
            )
            c = hashlib.sha512(b"\x03\x02" + pk + h + gamma + u + v + b"\x00").digest()[:16]
            if int.from_bytes(c, "little") % 8 == j:
                s = (k + int.from_bytes(c, "little") * x) % L
                return pk, gamma + c + s.to_bytes(32, "little")
    raise AssertionError("no nonce found")


def test_small_order_components_follow_the_rfc() -> None:
    """RFC 9381 §5.3/§5.4.5: arithmetic is on the whole curve; validate_key only rejects small order.

    libsodium's scalarmult refuses points outside the prime-order subgroup, so this
    checks the decomposition in ``vrf._mul``. A torsion component in Gamma changes pi
    but not beta (§5.2 multiplies Gamma by the cofactor): only beta is unique.
    """
    seed = KEY.seed()
    pk, malleated = _prove_with_torsion(seed, ALPHA, IDENTITY, ORDER_8)
    assert pk == KEY.public_key and malleated != vrf.prove(KEY, ALPHA)
    assert vrf.verify(pk, ALPHA, malleated) == vrf.verify(pk, ALPHA, vrf.prove(KEY, ALPHA))
    mixed_pk, proof = _prove_with_torsion(seed, ALPHA, ORDER_8, ORDER_4)
    assert vrf.verify(mixed_pk, ALPHA, proof) == vrf.proof_to_hash(proof)
    with pytest.raises(InvalidSignature, match="does not verify"):
        vrf.verify(KEY.public_key, ALPHA, proof)
