"""Tests for fedledger.crypto.sealed (AES-256-GCM blobs with keys sealed to Ed25519 identities)."""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given, settings
from hypothesis import strategies as st
from nacl.bindings import crypto_sign_ed25519_sk_to_curve25519
from nacl.public import PrivateKey, SealedBox

from fedledger.codec import cbor
from fedledger.crypto.hashing import sha256
from fedledger.crypto.keys import SigningKey
from fedledger.crypto.sealed import (
    MAGIC,
    SealedHeader,
    is_sealed,
    open_sealed,
    rewrap,
    seal,
    sealed_header,
)
from fedledger.errors import DecodeError, UsageError, VerificationFailed
from fedledger.storage.blobs import BlobStore

CTX = b"fedledger/model/chain-7/round-3"
MODEL_PARAMS = 431_080  # float32 parameters of the reference model: 1,724,320 bytes
TAG_MISMATCH = "ciphertext or header altered (AES-GCM tag mismatch)"

KEYS = [SigningKey.from_seed(bytes([i]) * 32) for i in range(1, 6)]
ALICE, BOB, CAROL, DAVE, EVE = KEYS


def pks(*keys: SigningKey) -> list[bytes]:
    return [k.public_key for k in keys]


def flip(data: bytes, index: int, mask: int = 0x01) -> bytes:
    return data[:index] + bytes([data[index] ^ mask]) + data[index + 1 :]


def body_offset(sealed: bytes) -> int:
    return len(MAGIC) + 4 + int.from_bytes(sealed[len(MAGIC) : len(MAGIC) + 4], "big")


def unique_index(haystack: bytes, needle: bytes) -> int:
    assert haystack.count(needle) == 1
    return haystack.index(needle)


@pytest.fixture(scope="module")
def sealed_three() -> tuple[bytes, bytes]:
    plaintext = os.urandom(5000)
    return plaintext, seal(plaintext, pks(ALICE, BOB, CAROL), context=CTX)


# --------------------------------------------------------------------------- round trips


def test_round_trip_single_recipient() -> None:
    plaintext = b"model weights \x00\xff" * 100
    sealed = seal(plaintext, [ALICE.public_key], context=CTX)
    assert is_sealed(sealed)
    assert plaintext not in sealed
    assert open_sealed(sealed, ALICE, context=CTX) == plaintext


def test_round_trip_several_recipients(sealed_three: tuple[bytes, bytes]) -> None:
    plaintext, sealed = sealed_three
    for key in (ALICE, BOB, CAROL):
        assert open_sealed(sealed, key, context=CTX) == plaintext


def test_empty_plaintext_and_default_context() -> None:
    sealed = seal(b"", [BOB.public_key])
    assert open_sealed(sealed, BOB) == b""
    assert sealed_header(sealed).context == b""


def test_expect_hash_matches_the_chain_record() -> None:
    plaintext = b"aggregated model"
    sealed = seal(plaintext, [ALICE.public_key], context=CTX)
    assert open_sealed(sealed, ALICE, context=CTX, expect_hash=sha256(plaintext)) == plaintext
    with pytest.raises(VerificationFailed, match="expected"):
        open_sealed(sealed, ALICE, context=CTX, expect_hash=sha256(b"another model"))


def test_large_model_round_trip_and_timing() -> None:
    plaintext = os.urandom(4 * MODEL_PARAMS)
    assert len(plaintext) == 1_724_320
    recipients = pks(ALICE, BOB, CAROL)
    start = time.perf_counter()
    sealed = seal(plaintext, recipients, context=CTX)
    sealed_at = time.perf_counter()
    opened = open_sealed(sealed, BOB, context=CTX)
    done = time.perf_counter()
    assert opened == plaintext
    assert len(sealed) - len(plaintext) < 1024  # header + tag overhead only
    print(
        f"\nsealed 1.7 MB for 3 recipients in {(sealed_at - start) * 1e3:.2f} ms, "
        f"opened in {(done - sealed_at) * 1e3:.2f} ms"
    )
    assert done - start < 2.0


# --------------------------------------------------------------------------- access


def test_non_recipient_cannot_open(sealed_three: tuple[bytes, bytes]) -> None:
    _, sealed = sealed_three
    with pytest.raises(VerificationFailed, match="not among the blob's recipients"):
        open_sealed(sealed, EVE, context=CTX)


def test_wrong_context_fails(sealed_three: tuple[bytes, bytes]) -> None:
    _, sealed = sealed_three
    with pytest.raises(VerificationFailed, match="sealed for context"):
        open_sealed(sealed, ALICE, context=b"fedledger/model/chain-7/round-4")
    with pytest.raises(VerificationFailed, match="sealed for context"):
        open_sealed(sealed, ALICE)


def test_context_rewritten_in_header_fails_the_tag() -> None:
    """Passing a blob off in another context by editing its header breaks the AES-GCM tag."""
    sealed = seal(b"round 3 model", [ALICE.public_key], context=b"fedledger/model/round-3")
    forged = sealed.replace(b"round-3", b"round-4")
    assert sealed_header(forged).context == b"fedledger/model/round-4"
    with pytest.raises(
        VerificationFailed, match=TAG_MISMATCH.replace("(", r"\(").replace(")", r"\)")
    ):
        open_sealed(forged, ALICE, context=b"fedledger/model/round-4")


# --------------------------------------------------------------------------- tampering


def test_flipping_a_ciphertext_byte_fails(sealed_three: tuple[bytes, bytes]) -> None:
    _, sealed = sealed_three
    start = body_offset(sealed)
    for index in (start, start + 1234, len(sealed) - 17, len(sealed) - 1):  # body and tag
        with pytest.raises(VerificationFailed) as info:
            open_sealed(flip(sealed, index), ALICE, context=CTX)
        assert str(info.value) == TAG_MISMATCH


def test_flipping_a_nonce_byte_fails(sealed_three: tuple[bytes, bytes]) -> None:
    _, sealed = sealed_three
    start = unique_index(sealed, sealed_header(sealed).nonce)
    for offset in range(12):
        with pytest.raises(VerificationFailed) as info:
            open_sealed(flip(sealed, start + offset, 0x80), BOB, context=CTX)
        assert str(info.value) == TAG_MISMATCH


def test_flipping_a_plaintext_hash_byte_fails(sealed_three: tuple[bytes, bytes]) -> None:
    _, sealed = sealed_three
    start = unique_index(sealed, sealed_header(sealed).plaintext_hash)
    for offset in (0, 15, 31):
        with pytest.raises(VerificationFailed) as info:
            open_sealed(flip(sealed, start + offset), CAROL, context=CTX)
        assert str(info.value) == TAG_MISMATCH


def test_flipping_a_context_byte_fails(sealed_three: tuple[bytes, bytes]) -> None:
    _, sealed = sealed_three
    start = unique_index(sealed, CTX)
    for offset in range(len(CTX)):
        tampered = flip(sealed, start + offset)
        with pytest.raises(VerificationFailed, match="sealed for context"):
            open_sealed(tampered, ALICE, context=CTX)
        with pytest.raises(VerificationFailed) as info:  # the caller adopts the altered context
            open_sealed(tampered, ALICE, context=sealed_header(tampered).context)
        assert str(info.value) == TAG_MISMATCH


def test_flipping_the_holders_entry_fails() -> None:
    sealed = seal(b"weights", [ALICE.public_key], context=CTX)
    pk_at = unique_index(sealed, ALICE.public_key)
    with pytest.raises(VerificationFailed, match="not among the blob's recipients"):
        open_sealed(flip(sealed, pk_at + 5), ALICE, context=CTX)
    wrapped_at = pk_at + 32 + 2  # the CBOR byte-string head of the 80-byte wrapped key
    for offset in (0, 40, 79):
        with pytest.raises(VerificationFailed, match="does not unwrap"):
            open_sealed(flip(sealed, wrapped_at + offset), ALICE, context=CTX)


def test_swapped_entry_with_another_key_fails_the_tag() -> None:
    """An entry carrying another blob's data key does not open this body."""
    plaintext = b"same model, two seals"
    first = seal(plaintext, [ALICE.public_key], context=CTX)
    second = seal(plaintext, [ALICE.public_key], context=CTX)
    entry_len = 32 + 2 + 80
    a1 = unique_index(first, ALICE.public_key)
    a2 = unique_index(second, ALICE.public_key)
    grafted = first[:a1] + second[a2 : a2 + entry_len] + first[a1 + entry_len :]
    assert len(grafted) == len(first) and grafted != first
    with pytest.raises(VerificationFailed) as info:
        open_sealed(grafted, ALICE, context=CTX)
    assert str(info.value) == TAG_MISMATCH


def test_plaintext_not_matching_the_header_hash_fails() -> None:
    """A sealer who lies about the hash is caught even though the tag verifies."""
    plaintext, claimed = b"actual weights", sha256(b"claimed weights")
    data_key, nonce = AESGCM.generate_key(bit_length=256), os.urandom(12)
    aad = MAGIC + cbor.encode({"context": CTX, "nonce": nonce, "plaintext_hash": claimed})
    body = AESGCM(data_key).encrypt(nonce, plaintext, aad)
    forged = _assemble_by_hand(claimed, nonce, CTX, {ALICE: data_key}, body)
    with pytest.raises(VerificationFailed, match="does not match the header's plaintext hash"):
        open_sealed(forged, ALICE, context=CTX)


# --------------------------------------------------------------------------- header and format


def test_header_readable_without_key(sealed_three: tuple[bytes, bytes]) -> None:
    plaintext, sealed = sealed_three
    header = sealed_header(sealed)
    assert isinstance(header, SealedHeader)
    assert header.plaintext_hash == sha256(plaintext)
    assert header.recipients == tuple(sorted(pks(ALICE, BOB, CAROL)))
    assert header.context == CTX
    assert len(header.nonce) == 12


def test_recipients_sorted_and_deduplicated() -> None:
    sealed = seal(b"x", pks(CAROL, ALICE, CAROL, BOB, ALICE))
    assert sealed_header(sealed).recipients == tuple(sorted(pks(ALICE, BOB, CAROL)))


def test_two_seals_differ_but_claim_the_same_hash() -> None:
    plaintext = b"identical model" * 50
    a = seal(plaintext, [ALICE.public_key], context=CTX)
    b = seal(plaintext, [ALICE.public_key], context=CTX)
    assert a != b
    ha, hb = sealed_header(a), sealed_header(b)
    assert ha.nonce != hb.nonce
    assert a[body_offset(a) :] != b[body_offset(b) :]
    assert ha.plaintext_hash == hb.plaintext_hash == sha256(plaintext)


def test_format_opens_with_the_underlying_libraries() -> None:
    """The documented byte format, decrypted with PyNaCl and cryptography directly."""
    plaintext = b"documented format"
    sealed = seal(plaintext, pks(ALICE, BOB), context=CTX)
    assert sealed[:8] == MAGIC == b"FLSEALv1"
    header_len = int.from_bytes(sealed[8:12], "big")
    header = cbor.decode(sealed[12 : 12 + header_len])
    assert set(header) == {"plaintext_hash", "nonce", "context", "recipients"}
    entries = {pk: wrapped for pk, wrapped in header["recipients"]}
    x_secret = crypto_sign_ed25519_sk_to_curve25519(BOB.seed() + BOB.public_key)
    data_key = SealedBox(PrivateKey(x_secret)).decrypt(entries[BOB.public_key])
    aad = MAGIC + cbor.encode(
        {
            "context": header["context"],
            "nonce": header["nonce"],
            "plaintext_hash": header["plaintext_hash"],
        }
    )
    assert AESGCM(data_key).decrypt(header["nonce"], sealed[12 + header_len :], aad) == plaintext


def test_is_sealed_distinguishes_plain_blobs(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "blobs")
    plain = cbor.encode({"weights": b"\x00" * 64})
    sealed = seal(plain, [ALICE.public_key], context=CTX)
    plain_addr, sealed_addr = store.put(plain), store.put(sealed)
    assert not is_sealed(store.get(plain_addr))
    assert is_sealed(store.get(sealed_addr))
    assert open_sealed(store.get(sealed_addr), ALICE, context=CTX) == plain
    assert not is_sealed(b"") and not is_sealed(MAGIC[:-1])
    assert not is_sealed("FLSEALv1")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- rewrap


def test_rewrap_grants_access_and_keeps_the_body(sealed_three: tuple[bytes, bytes]) -> None:
    plaintext, sealed = sealed_three
    with pytest.raises(VerificationFailed, match="not among"):
        open_sealed(sealed, DAVE, context=CTX)
    granted = rewrap(sealed, BOB, [DAVE.public_key, ALICE.public_key], context=CTX)
    for key in (ALICE, BOB, CAROL, DAVE):
        assert open_sealed(granted, key, context=CTX) == plaintext
    with pytest.raises(VerificationFailed, match="not among"):
        open_sealed(granted, EVE, context=CTX)
    old, new = sealed_header(sealed), sealed_header(granted)
    assert new.recipients == tuple(sorted(pks(ALICE, BOB, CAROL, DAVE)))
    assert (new.plaintext_hash, new.nonce, new.context) == (
        old.plaintext_hash,
        old.nonce,
        old.context,
    )
    assert granted[body_offset(granted) :] == sealed[body_offset(sealed) :]
    for key in (ALICE, BOB, CAROL):  # existing entries are carried over byte for byte
        assert sealed[sealed.index(key.public_key) :][:114] in granted


def test_rewrap_needs_a_recipient_and_the_right_context(sealed_three: tuple[bytes, bytes]) -> None:
    _, sealed = sealed_three
    with pytest.raises(VerificationFailed, match="not among"):
        rewrap(sealed, EVE, [EVE.public_key], context=CTX)
    with pytest.raises(VerificationFailed, match="sealed for context"):
        rewrap(sealed, ALICE, [DAVE.public_key])
    with pytest.raises(VerificationFailed, match="tag mismatch"):
        rewrap(flip(sealed, len(sealed) - 1), ALICE, [DAVE.public_key], context=CTX)
    with pytest.raises(UsageError):
        rewrap(sealed, ALICE, [b"short"], context=CTX)
    assert rewrap(sealed, ALICE, [], context=CTX) == sealed


# --------------------------------------------------------------------------- malformed input


@pytest.mark.parametrize(
    "recipients",
    [
        [],
        [b"\x00" * 31],
        [b"\x00" * 33],
        [b"\x00" * 32],  # the identity point: small order, rejected by libsodium
        [b"\xff" * 32],  # not a point
        ["not bytes"],
        [ALICE.public_key, 7],
        ALICE.public_key,  # a single key instead of a list
        None,
    ],
)
def test_bad_recipients_are_usage_errors(recipients: object) -> None:
    with pytest.raises(UsageError):
        seal(b"x", recipients)  # type: ignore[arg-type]


def test_bad_arguments_are_usage_errors(sealed_three: tuple[bytes, bytes]) -> None:
    _, sealed = sealed_three
    with pytest.raises(UsageError):
        seal("text", [ALICE.public_key])  # type: ignore[arg-type]
    with pytest.raises(UsageError):
        seal(b"x", [ALICE.public_key], context=b"c" * 1025)
    with pytest.raises(UsageError):
        seal(b"x", [ALICE.public_key], context="ctx")  # type: ignore[arg-type]
    with pytest.raises(UsageError):
        open_sealed(sealed, ALICE.seed(), context=CTX)  # type: ignore[arg-type]
    with pytest.raises(UsageError):
        open_sealed(sealed, ALICE, context=CTX, expect_hash="00")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"FLSEAL",
        MAGIC,
        MAGIC + b"\x00\x00\x00",
        MAGIC + b"\xff\xff\xff\xff" + b"\x00" * 100,
        MAGIC + b"\x00\x00\x00\x01" + b"\xa0" + b"\x00" * 16,  # empty map
        MAGIC + b"\x00\x00\x00\x01" + b"\xa0",  # no tag
        b"plain blob bytes",
        "FLSEALv1",
        None,
    ],
)
def test_malformed_blobs_are_decode_errors(data: object) -> None:
    with pytest.raises(DecodeError):
        sealed_header(data)  # type: ignore[arg-type]
    with pytest.raises(DecodeError):
        open_sealed(data, ALICE)  # type: ignore[arg-type]


def test_malformed_header_fields_are_decode_errors() -> None:
    good = {
        "context": b"",
        "nonce": b"\x00" * 12,
        "plaintext_hash": b"\x00" * 32,
        "recipients": [[ALICE.public_key, b"\x00" * 80]],
    }
    variants = [
        {**good, "extra": 1},
        {k: v for k, v in good.items() if k != "nonce"},
        {**good, "nonce": b"\x00" * 11},
        {**good, "plaintext_hash": "00" * 32},
        {**good, "context": 5},
        {**good, "recipients": []},
        {**good, "recipients": [[ALICE.public_key, b"\x00" * 79]]},
        {**good, "recipients": [[ALICE.public_key]]},
        {**good, "recipients": [[ALICE.public_key, b"\x00" * 80]] * 2},  # duplicate
        {
            **good,
            "recipients": sorted([[pk, b"\x00" * 80] for pk in pks(ALICE, BOB)], reverse=True),
        },
        [1, 2, 3],
    ]
    for header in variants:
        encoded = cbor.encode(header)
        blob = MAGIC + len(encoded).to_bytes(4, "big") + encoded + b"\x00" * 16
        with pytest.raises(DecodeError):
            sealed_header(blob)
    encoded = cbor.encode(good)
    assert sealed_header(MAGIC + len(encoded).to_bytes(4, "big") + encoded + b"\x00" * 16)


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_mutated_blobs_fail_cleanly_or_open_correctly(data: st.DataObject) -> None:
    plaintext = b"small model" * 8
    sealed = _SEALED_FOR_FUZZ
    kind = data.draw(st.sampled_from(["flip", "truncate", "insert", "delete"]))
    index = data.draw(st.integers(0, len(sealed) - 1))
    if kind == "flip":
        mutated = flip(sealed, index, data.draw(st.integers(1, 255)))
    elif kind == "truncate":
        mutated = sealed[:index]
    elif kind == "insert":
        mutated = sealed[:index] + data.draw(st.binary(min_size=1, max_size=4)) + sealed[index:]
    else:
        mutated = sealed[:index] + sealed[index + 1 :]
    key = data.draw(st.sampled_from([ALICE, BOB, EVE]))
    with contextlib.suppress(DecodeError):  # the header alone parses or fails cleanly
        sealed_header(mutated)
    try:
        opened = open_sealed(mutated, key, context=CTX)
    except (DecodeError, VerificationFailed):
        return
    # Only an edit to another party's entry leaves the holder's own path intact.
    assert key is not EVE and opened == plaintext


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_after_magic_are_decode_errors(tail: bytes) -> None:
    with pytest.raises(DecodeError):
        sealed_header(MAGIC + tail)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.binary(min_size=30, max_size=34), min_size=1, max_size=3))
def test_arbitrary_recipient_bytes_seal_or_raise_usage_error(recipients: list[bytes]) -> None:
    try:
        sealed = seal(b"x", recipients)
    except UsageError:
        return
    assert set(sealed_header(sealed).recipients) == set(recipients)


_SEALED_FOR_FUZZ = seal(b"small model" * 8, pks(ALICE, BOB, CAROL), context=CTX)


def _assemble_by_hand(
    plaintext_hash: bytes, nonce: bytes, context: bytes, keys: dict[SigningKey, bytes], body: bytes
) -> bytes:
    from nacl.bindings import crypto_sign_ed25519_pk_to_curve25519
    from nacl.public import PublicKey

    entries = sorted(
        [
            k.public_key,
            bytes(
                SealedBox(PublicKey(crypto_sign_ed25519_pk_to_curve25519(k.public_key))).encrypt(dk)
            ),
        ]
        for k, dk in keys.items()
    )
    header = cbor.encode(
        {
            "context": context,
            "nonce": nonce,
            "plaintext_hash": plaintext_hash,
            "recipients": entries,
        }
    )
    return MAGIC + len(header).to_bytes(4, "big") + header + body
