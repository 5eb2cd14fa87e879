"""Tests for fedledger.codec: deterministic CBOR (RFC 8949 §4.2) and typed records.

Everything fedledger signs or hashes goes through this encoding, so two honest
nodes must produce byte-identical encodings of the same value, and a decoder
must accept exactly one encoding per value (otherwise one transaction could
have several hashes: transaction malleability).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedledger.codec import Record, cbor
from fedledger.crypto.keys import SigningKey
from fedledger.errors import DecodeError
from fedledger.ledger import Identity, Transaction, make_tx


@dataclass(frozen=True)
class Sample(Record):
    """A small record using every supported field type."""

    count: int
    flag: bool
    blob: bytes
    name: str
    tags: tuple[str, ...]
    extra: dict[str, int]
    note: str | None


SAMPLE = Sample(-3, True, b"\x00\xff", "µ", ("a", "bb"), {"z": 1, "aa": 2**32}, None)
SAMPLE_OBJ = SAMPLE.to_obj()
ZERO_KEY = SigningKey.from_seed(bytes(32))
UPDATE_ARGS = {
    "round": 1,
    "base": bytes(32),
    "model": b"\x01" * 32,
    "samples": 5,
    "data": b"\x02" * 32,
}


def golden_tx() -> Transaction:
    return make_tx(ZERO_KEY, "sub-1", 7, "fl", "submit_update", UPDATE_ARGS, 1_700_000_000)


# -- golden vectors ------------------------------------------------------------
# These hex strings are the canonical encodings, computed once and pasted here.
# They are consensus-critical: tx hashes, block hashes, Merkle roots and
# signatures are all taken over these bytes, so ANY change to them (field
# names, key order, integer widths, the codec library's output) forks every
# existing chain. If one of these tests fails, the change is a consensus-
# breaking change and needs a deliberate migration, not an updated vector.

GOLDEN_SAMPLE = (
    "a764626c6f624200ff64666c6167f5646e616d6562c2b5646e6f7465f6647461677382616162626265636f"
    "756e7422656578747261a2617a016261611b0000000100000000"
)
ZERO_KEY_PUBLIC = "3b6a27bcceb6a42d62a3a8d02a6f0d73653215771de243a63ac048a18b59da29"
GOLDEN_IDENTITY = (
    "a4646e616d65686465766963652d3064726f6c65666465766963656a686f6d655f636861696e657375622d"
    "316a7075626c69635f6b657958203b6a27bcceb6a42d62a3a8d02a6f0d73653215771de243a63ac048a18b"
    "59da29"
)
GOLDEN_TX = (
    "a7646b696e646463616c6c656e6f6e6365076673656e64657258203b6a27bcceb6a42d62a3a8d02a6f0d73"
    "653215771de243a63ac048a18b59da29677061796c6f6164a36461726773a5646261736558200000000000"
    "000000000000000000000000000000000000000000000000000000646461746158200202020202020202020"
    "202020202020202020202020202020202020202020202656d6f64656c582001010101010101010101010101"
    "0101010101010101010101010101010101010165726f756e64016773616d706c657305666d6574686f646d73"
    "75626d69745f75706461746568636f6e747261637462666c68636861696e5f6964657375622d3169736967"
    "6e61747572655840c85ac42c782e5f7a779eb12af9d0b82429eb535a0b89f72b92891b7ef16e5fd6a57c3d"
    "1a4cdb196c68e1ed1f035139c9606cc25c529a6a2a0af168c3c533840a6974696d657374616d701a6553f100"
)
GOLDEN_TX_HASH = "f46c8ae9a895a50dfdcc0770532ca9a0c61f6dbbf5cfb9e4b9299456225c39c5"


def test_golden_sample_record() -> None:
    """RFC 8949 §4.2.1: shortest forms, definite lengths, map keys sorted (shorter key first)."""
    assert SAMPLE.encode().hex() == GOLDEN_SAMPLE
    assert Sample.decode(bytes.fromhex(GOLDEN_SAMPLE)) == SAMPLE


def test_golden_identity_record() -> None:
    """seed 004 §IV-A: a_i = H(pk_i); the registry stores the key itself, canonically encoded."""
    assert ZERO_KEY.public_key.hex() == ZERO_KEY_PUBLIC
    ident = Identity(ZERO_KEY.public_key, "device", "device-0", "sub-1")
    assert ident.encode().hex() == GOLDEN_IDENTITY
    assert Identity.decode(bytes.fromhex(GOLDEN_IDENTITY)) == ident


def test_golden_transaction() -> None:
    """seed 004 §IV-A: tx = {tx_hash, a_i, T_stamp, data, σ_i}; Ed25519 signing is deterministic (RFC 8032 §5.1.6)."""
    tx = golden_tx()
    assert tx.encode().hex() == GOLDEN_TX
    assert tx.tx_hash.hex() == GOLDEN_TX_HASH
    decoded = Transaction.decode(bytes.fromhex(GOLDEN_TX))
    assert decoded == tx and decoded.tx_hash == tx.tx_hash


def test_tx_hash_excludes_only_the_signature() -> None:
    """tx_hash = H(a_i, T_stamp, data) (seed 004 §IV-A): every field but σ is covered."""
    tx = golden_tx()
    fields = {k: v for k, v in tx.__dict__.items() if k in tx.__dataclass_fields__}
    assert Transaction(**{**fields, "signature": bytes(64)}).tx_hash == tx.tx_hash
    assert Transaction(**{**fields, "timestamp": tx.timestamp + 1}).tx_hash != tx.tx_hash
    assert Transaction(**{**fields, "nonce": tx.nonce + 1}).tx_hash != tx.tx_hash


# -- round trip over the data model --------------------------------------------
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**64), max_value=2**64 - 1)  # CBOR major types 0 and 1
    | st.binary(max_size=64)
    | st.text(max_size=32)
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=8), inner, max_size=6)
    ),
    max_leaves=30,
)


def same(a: Any, b: Any) -> bool:
    """Equality that also tells ``True`` from ``1`` (Python's ``==`` does not)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return bool(a == b)


@settings(max_examples=300, deadline=None)
@given(values)
def test_round_trip(value: Any) -> None:
    data = cbor.encode(value)
    assert same(cbor.decode(data), value)
    assert cbor.encode(cbor.decode(data)) == data


@settings(max_examples=200, deadline=None)
@given(values)
def test_only_the_canonical_encoding_is_accepted(value: Any) -> None:
    """A plain (insertion-ordered) encoding is accepted only if it equals the canonical one."""
    plain = cbor2.dumps(value)
    if plain == cbor.encode(value):
        assert same(cbor.decode(plain), value)
    else:
        with pytest.raises(DecodeError):
            cbor.decode(plain)


@settings(max_examples=100, deadline=None)
@given(
    st.builds(
        Sample,
        count=st.integers(min_value=-(2**63), max_value=2**63),
        flag=st.booleans(),
        blob=st.binary(max_size=40),
        name=st.text(max_size=10),
        tags=st.lists(st.text(max_size=4), max_size=4).map(tuple),
        extra=st.dictionaries(st.text(max_size=4), st.integers(-(2**64), 2**64 - 1), max_size=4),
        note=st.none() | st.text(max_size=6),
    )
)
def test_record_round_trip(sample: Sample) -> None:
    assert Sample.decode(sample.encode()) == sample


# -- uniqueness: hand-built non-canonical encodings ------------------------------
def text(s: str) -> bytes:
    """A short CBOR text string (major type 3, length < 24)."""
    assert len(s) < 24
    return bytes([0x60 + len(s)]) + s.encode()


NON_CANONICAL = {
    # value 1 as a one-byte-argument integer (0x18 0x01); canonical is 0x01 (RFC 8949 §4.2.1)
    "non-minimal integer": bytes.fromhex("1801"),
    # 23 in two bytes of argument
    "non-minimal integer (uint16)": bytes.fromhex("190017"),
    # a one-byte bytes string whose length is itself in a non-minimal form
    "non-minimal length": bytes.fromhex("5801ff"),
    # {"b": 1, "a": 2}: keys must be sorted
    "unsorted map keys": b"\xa2" + text("b") + b"\x01" + text("a") + b"\x02",
    # {"aa": 1, "b": 2}: the shorter key sorts first (bytewise on the encoded key)
    "longer key first": b"\xa2" + text("aa") + b"\x01" + text("b") + b"\x02",
    # [1, 2] with an indefinite length (0x9f ... 0xff)
    "indefinite-length array": bytes.fromhex("9f0102ff"),
    "indefinite-length map": b"\xbf" + text("a") + b"\x01\xff",
    "indefinite-length bytes": bytes.fromhex("5f41014102ff"),
    # {"a": 1, "a": 2} and {"a": 1, "a": 1}
    "duplicate keys": b"\xa2" + text("a") + b"\x01" + text("a") + b"\x02",
    "duplicate keys, same value": b"\xa2" + text("a") + b"\x01" + text("a") + b"\x01",
    # the integer 1 followed by a stray 0x00
    "trailing bytes": bytes.fromhex("0100"),
    # 1.0 as half, double
    "float16": bytes.fromhex("f93c00"),
    "float64": bytes.fromhex("fb3ff0000000000000"),
    # tag 1 (epoch time), tag 0 (date string)
    "tag 1": bytes.fromhex("c11a514b67b0"),
    "tag 0": bytes.fromhex("c074") + b"2013-03-21T20:04:00Z",
    # bignum 1 (tag 2): 1 has a shorter encoding
    "bignum for a small integer": bytes.fromhex("c24101"),
    "undefined": bytes.fromhex("f7"),
    "simple value 16": bytes.fromhex("f0"),
    "integer map key": bytes.fromhex("a10101"),
    "invalid UTF-8": bytes.fromhex("62c328"),
    "truncated array": bytes.fromhex("8201"),
    "empty input": b"",
}


@pytest.mark.parametrize("data", NON_CANONICAL.values(), ids=NON_CANONICAL.keys())
def test_non_canonical_or_outside_model_is_rejected(data: bytes) -> None:
    with pytest.raises(DecodeError):
        cbor.decode(data)


def test_rejection_reasons_are_specific() -> None:
    with pytest.raises(DecodeError, match="trailing"):
        cbor.decode(bytes.fromhex("0100"))
    with pytest.raises(DecodeError, match="float"):
        cbor.decode(bytes.fromhex("f93c00"))
    with pytest.raises(DecodeError, match="canonical"):
        cbor.decode(bytes.fromhex("9f0102ff"))


def test_the_canonical_forms_of_the_same_values_are_accepted() -> None:
    """Controls for the table above: each value's canonical encoding decodes."""
    assert cbor.decode(b"\x01") == 1
    assert cbor.decode(bytes.fromhex("17")) == 23
    assert cbor.decode(bytes.fromhex("41ff")) == b"\xff"
    assert cbor.decode(b"\xa2" + text("a") + b"\x02" + text("b") + b"\x01") == {"a": 2, "b": 1}
    assert cbor.decode(b"\xa2" + text("b") + b"\x02" + text("aa") + b"\x01") == {"aa": 1, "b": 2}
    assert cbor.decode(bytes.fromhex("820102")) == [1, 2]


def test_size_limit_is_enforced_before_parsing() -> None:
    data = cbor.encode(b"x" * 100)
    assert cbor.decode(data, max_size=len(data)) == b"x" * 100
    with pytest.raises(DecodeError, match="limit"):
        cbor.decode(data, max_size=len(data) - 1)


@pytest.mark.parametrize("value", [1.5, {1: "int key"}, {"s": {1, 2}}, [object()]])
def test_encode_refuses_values_outside_the_model(value: Any) -> None:
    with pytest.raises(TypeError):
        cbor.encode(value)


def test_nesting_depth_is_bounded() -> None:
    deep: Any = 0
    for _ in range(cbor.MAX_DEPTH + 2):
        deep = [deep]
    with pytest.raises(TypeError, match="nesting"):
        cbor.encode(deep)
    with pytest.raises(DecodeError, match="nesting"):
        cbor.decode(cbor2.dumps(deep, canonical=True))


# -- record schema errors name the field ------------------------------------------
def sample_with(**changes: Any) -> bytes:
    return cbor.encode({**SAMPLE_OBJ, **changes})


def test_record_unknown_field() -> None:
    with pytest.raises(DecodeError, match=r"Sample: unknown field\(s\) bogus"):
        Sample.decode(sample_with(bogus=1))


def test_record_missing_field() -> None:
    obj = {k: v for k, v in SAMPLE_OBJ.items() if k != "name"}
    with pytest.raises(DecodeError, match=r"Sample: missing field\(s\) name"):
        Sample.decode(cbor.encode(obj))


def test_record_bool_where_int_expected() -> None:
    with pytest.raises(DecodeError, match=r"Sample\.count: expected an integer, got bool"):
        Sample.decode(sample_with(count=True))


def test_record_int_where_bytes_expected() -> None:
    with pytest.raises(DecodeError, match=r"Sample\.blob: expected bytes, got int"):
        Sample.decode(sample_with(blob=5))


def test_record_int_where_bool_expected() -> None:
    with pytest.raises(DecodeError, match=r"Sample\.flag: expected a bool, got int"):
        Sample.decode(sample_with(flag=1))


def test_record_nested_errors_name_the_position() -> None:
    with pytest.raises(DecodeError, match=r"Sample\.tags\[1\]: expected a text string"):
        Sample.decode(sample_with(tags=["a", b"b"]))
    with pytest.raises(DecodeError, match=r"Sample\.extra\.k: expected an integer"):
        Sample.decode(sample_with(extra={"k": "v"}))
    with pytest.raises(DecodeError, match=r"Sample\.note: expected a text string"):
        Sample.decode(sample_with(note=7))
    with pytest.raises(DecodeError, match="Sample: expected a map"):
        Sample.decode(cbor.encode([1, 2]))


def test_transaction_field_errors_name_the_field() -> None:
    obj = golden_tx().to_obj()
    with pytest.raises(DecodeError, match=r"Transaction\.nonce: expected an integer, got bool"):
        Transaction.decode(cbor.encode({**obj, "nonce": False}))
    with pytest.raises(DecodeError, match=r"Transaction\.sender: expected bytes, got int"):
        Transaction.decode(cbor.encode({**obj, "sender": 1}))


def test_to_json_hexes_bytes() -> None:
    assert SAMPLE.to_json()["blob"] == "00ff"
    assert golden_tx().to_json()["tx_hash"] == GOLDEN_TX_HASH


@pytest.mark.parametrize(
    "value",
    [2**64, -(2**64) - 1, 2**20000, [1, 2**70], {"k": -(2**65)}],
    ids=["2^64", "-2^64-1", "2^20000", "nested-list", "nested-map"],
)
def test_integers_outside_64_bits_are_rejected(value: object) -> None:
    """Bignums (CBOR tags 2/3) and huge ints would let validators disagree (int-to-str limits)."""
    with pytest.raises(TypeError, match="64 bits"):
        cbor.encode(value)


def test_bignum_tag_is_rejected_on_decode() -> None:
    data = bytes.fromhex("c249010000000000000000")  # tag 2, 2**64
    with pytest.raises(DecodeError):
        cbor.decode(data)


def test_64_bit_bounds_are_accepted() -> None:
    for v in (2**64 - 1, -(2**64)):
        assert cbor.decode(cbor.encode(v)) == v
