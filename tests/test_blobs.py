"""Tests for fedledger.storage.blobs (content-addressed, verify-on-read blob store)."""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedledger.errors import BlobCorrupted, DecodeError, NotFound, StoreCorrupted
from fedledger.storage.blobs import BlobStore, blob_address


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


@pytest.fixture
def store(tmp_path: Path) -> BlobStore:
    return BlobStore(tmp_path / "blobs")


def test_creates_root_directory(tmp_path: Path) -> None:
    root = tmp_path / "a" / "b"
    BlobStore(root)
    assert root.is_dir()


def test_put_get_round_trip(store: BlobStore) -> None:
    data = b"model weights \x00\xff" * 1000
    address = store.put(data)
    assert address == hashlib.sha256(data).hexdigest() == blob_address(data)
    assert len(address) == 64 and address == address.lower()
    assert store.get(address) == data
    assert store.has(address)
    assert store.size(address) == len(data)
    assert store.path(address) == store.root / address[:2] / address
    assert store.path(address).read_bytes() == data
    assert list(store.addresses()) == [address]


def test_empty_blob(store: BlobStore) -> None:
    address = store.put(b"")
    assert address == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert store.get(address) == b""
    assert store.size(address) == 0


@settings(max_examples=40, deadline=None)
@given(st.lists(st.binary(max_size=300), max_size=8))
def test_round_trip_many(blobs: list[bytes]) -> None:
    with tempfile.TemporaryDirectory() as d:
        store = BlobStore(Path(d))
        addresses = [store.put(b) for b in blobs]
        for a, b in zip(addresses, blobs, strict=True):
            assert store.get(a) == b
        assert list(store.addresses()) == sorted(set(addresses))
        assert store.verify_all() == []


def test_put_is_idempotent(store: BlobStore) -> None:
    a1 = store.put(b"same")
    path = store.path(a1)
    before = path.stat()
    a2 = store.put(b"same")
    assert a1 == a2
    after = path.stat()
    assert (before.st_ino, before.st_mtime_ns) == (after.st_ino, after.st_mtime_ns)
    assert files_under(store.root) == [path]


def test_accepts_bytes_like(store: BlobStore) -> None:
    assert store.put(bytearray(b"abc")) == store.put(memoryview(b"abc")) == blob_address(b"abc")
    with pytest.raises(TypeError):
        store.put("abc")  # type: ignore[arg-type]


def test_flipped_byte_detected_on_get(store: BlobStore) -> None:
    data = b"x" * 4096
    address = store.put(data)
    path = store.path(address)
    raw = bytearray(path.read_bytes())
    raw[1234] ^= 0x01
    path.write_bytes(bytes(raw))
    with pytest.raises(BlobCorrupted) as info:
        store.get(address)
    msg = str(info.value)
    assert address in msg
    assert str(path) in msg
    assert hashlib.sha256(bytes(raw)).hexdigest() in msg
    assert isinstance(info.value, StoreCorrupted)
    assert store.verify_all() == [address]


def test_truncated_blob_detected(store: BlobStore) -> None:
    good = store.put(b"keep me")
    address = store.put(b"0123456789")
    store.path(address).write_bytes(b"01234")
    with pytest.raises(BlobCorrupted):
        store.get(address)
    assert store.verify_all() == [address]
    assert store.get(good) == b"keep me"


def test_put_repairs_corrupted_copy(store: BlobStore) -> None:
    address = store.put(b"payload")
    store.path(address).write_bytes(b"garbage")
    assert store.put(b"payload") == address
    assert store.get(address) == b"payload"
    assert store.verify_all() == []


def test_put_verified_accepts_matching(store: BlobStore) -> None:
    data = b"from a peer"
    store.put_verified(blob_address(data), data)
    assert store.get(blob_address(data)) == data


def test_put_verified_rejects_mismatch_and_stores_nothing(store: BlobStore) -> None:
    claimed = blob_address(b"what the chain says")
    with pytest.raises(BlobCorrupted) as info:
        store.put_verified(claimed, b"what the peer sent")
    assert claimed in str(info.value)
    assert not store.has(claimed)
    assert not store.has(blob_address(b"what the peer sent"))
    assert files_under(store.root) == []
    assert list(store.addresses()) == []


def test_put_verified_rejects_malformed_address(store: BlobStore) -> None:
    with pytest.raises(DecodeError):
        store.put_verified("abc", b"abc")


def test_absent_blob_not_found(store: BlobStore) -> None:
    missing = blob_address(b"never stored")
    assert not store.has(missing)
    with pytest.raises(NotFound, match=missing):
        store.get(missing)
    with pytest.raises(NotFound):
        store.size(missing)


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "abc",
        "A" * 64,  # uppercase is not canonical
        "g" * 64,
        "0" * 63,
        "0" * 65,
        "0" * 64 + "\n",
        "../" + "0" * 61,
        "00/" + "0" * 61,
        None,
        b"0" * 64,
        123,
    ],
)
def test_malformed_address_is_decode_error(store: BlobStore, bad: object) -> None:
    for op in (store.get, store.has, store.path, store.size):
        with pytest.raises(DecodeError):
            op(bad)  # type: ignore[arg-type]


def test_addresses_skip_temp_and_stray_files(store: BlobStore) -> None:
    address = store.put(b"real")
    fan = store.path(address).parent
    (fan / ".tmp-leftover").write_bytes(b"partial")
    (store.root / "README").write_text("not a blob")
    other = blob_address(b"other")
    (fan / other).write_bytes(b"other")  # valid name but in the wrong fan-out directory
    (store.root / "zz").mkdir()
    assert list(store.addresses()) == [address]
    assert store.verify_all() == []


def test_no_temp_files_left_after_put(store: BlobStore) -> None:
    addresses = {store.put(os.urandom(100) + bytes([i])) for i in range(20)}
    store.put(b"dup")
    store.put(b"dup")
    names = [p.name for p in files_under(store.root)]
    assert not [n for n in names if n.startswith(".tmp")]
    assert len(names) == len(addresses) + 1


def test_failed_write_leaves_no_temp_file(
    store: BlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        store.put(b"never lands")
    monkeypatch.undo()
    assert files_under(store.root) == []


def test_concurrent_puts_of_same_content(store: BlobStore) -> None:
    data = os.urandom(256 * 1024)
    address = blob_address(data)
    barrier = threading.Barrier(8)
    results: list[str] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            barrier.wait()
            for _ in range(5):
                results.append(store.put(data))
                assert store.get(address) == data
        except BaseException as e:  # surfaced by the assertion below
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert results == [address] * 40
    assert files_under(store.root) == [store.path(address)]
    assert store.get(address) == data
    assert store.verify_all() == []


def test_concurrent_stores_share_directory(tmp_path: Path) -> None:
    # Two BlobStore objects on one directory (as two processes would have) agree.
    a, b = BlobStore(tmp_path), BlobStore(tmp_path)
    address = a.put(b"shared")
    assert b.get(address) == b"shared"
    assert b.put(b"shared") == address
