"""Content-addressed blob store for off-chain data (model weights, datasets).

Chains record only a blob's SHA-256; the bytes live here, under
``root/<first two hex chars>/<full 64-char address>``. Every read re-hashes the
content, so a flipped bit on disk surfaces as :class:`BlobCorrupted` instead of
silently feeding a wrong model into aggregation.

Writes are atomic: a uniquely named temp file in the destination directory is
written, fsynced and ``os.replace``-d into place, then the directory is fsynced.
Concurrent writers of the same blob (threads or processes) each use their own
temp file and the final rename is atomic, so readers only ever see a missing
file or a complete one; no locks are needed.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

from fedledger.errors import BlobCorrupted, DecodeError, NotFound

__all__ = ["BlobStore", "blob_address"]

_ADDRESS = re.compile(r"[0-9a-f]{64}")
_TMP_PREFIX = ".tmp-"
_CHUNK = 1 << 20


def blob_address(data: bytes | bytearray | memoryview) -> str:
    """The address of ``data``: lowercase hex SHA-256 (64 characters)."""
    return hashlib.sha256(data).hexdigest()


def _fsync_dir(directory: Path) -> None:
    """Make a rename/creation in ``directory`` durable (no-op where unsupported)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


def _hash_file(path: Path) -> str:
    """Streaming SHA-256 of a file, hex."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


class BlobStore:
    """A directory of immutable blobs addressed by the SHA-256 of their content."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def __repr__(self) -> str:
        return f"BlobStore({str(self.root)!r})"

    # -- addressing -------------------------------------------------------------------

    @staticmethod
    def _check_address(address: object) -> str:
        if not isinstance(address, str) or not _ADDRESS.fullmatch(address):
            shown = repr(address) if len(repr(address)) <= 80 else repr(address)[:77] + "..."
            raise DecodeError(
                f"malformed blob address {shown}: expected 64 lowercase hex characters"
            )
        return address

    def path(self, address: str) -> Path:
        """Where the blob with ``address`` lives (whether or not it exists)."""
        address = self._check_address(address)
        return self.root / address[:2] / address

    # -- writing ----------------------------------------------------------------------

    def put(self, data: bytes | bytearray | memoryview) -> str:
        """Store ``data`` and return its address.

        Idempotent: if an intact copy is already stored nothing is written. A
        stored copy that no longer matches its address is replaced, so putting
        good bytes also repairs a corrupted blob.
        """
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError(f"blob data must be bytes, not {type(data).__name__}")
        data = bytes(data)
        address = blob_address(data)
        self._write(address, data)
        return address

    def put_verified(self, address: str, data: bytes | bytearray | memoryview) -> None:
        """Store bytes fetched from a peer, but only if they hash to ``address``.

        Raises :class:`BlobCorrupted` (and stores nothing) on a mismatch.
        """
        address = self._check_address(address)
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError(f"blob data must be bytes, not {type(data).__name__}")
        data = bytes(data)
        actual = blob_address(data)
        if actual != address:
            raise BlobCorrupted(
                f"received data for blob {address} hashes to {actual}; refusing to store it"
            )
        self._write(address, data)

    def _write(self, address: str, data: bytes) -> None:
        target = self.path(address)
        if self._is_intact(target, address):
            return
        directory = target.parent
        if not directory.is_dir():
            directory.mkdir(parents=True, exist_ok=True)
            _fsync_dir(self.root)
        fd, tmp_name = tempfile.mkstemp(prefix=_TMP_PREFIX, dir=directory)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp_name, 0o644)
            os.replace(tmp_name, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp_name)
            raise
        _fsync_dir(directory)

    @staticmethod
    def _is_intact(path: Path, address: str) -> bool:
        try:
            return _hash_file(path) == address
        except FileNotFoundError:
            return False

    # -- reading ----------------------------------------------------------------------

    def get(self, address: str) -> bytes:
        """Return the blob's bytes, re-verified against ``address``.

        Raises :class:`DecodeError` for a malformed address, :class:`NotFound` if
        absent and :class:`BlobCorrupted` if the stored bytes no longer match.
        """
        target = self.path(address)
        try:
            data = target.read_bytes()
        except FileNotFoundError:
            raise NotFound(f"blob {address} not found in {self.root}") from None
        actual = blob_address(data)
        if actual != address:
            raise BlobCorrupted(
                f"blob {address} at {target} is corrupted: content hashes to {actual}"
            )
        return data

    def has(self, address: str) -> bool:
        """Whether a file for ``address`` exists (content is checked on :meth:`get`)."""
        return self.path(address).is_file()

    def size(self, address: str) -> int:
        """Stored size in bytes; raises :class:`NotFound` if absent."""
        target = self.path(address)
        try:
            return target.stat().st_size
        except FileNotFoundError:
            raise NotFound(f"blob {address} not found in {self.root}") from None

    def addresses(self) -> Iterator[str]:
        """All stored addresses in sorted order (temp files and stray files are skipped)."""
        try:
            fanouts = sorted(
                d
                for d in self.root.iterdir()
                if d.is_dir() and re.fullmatch(r"[0-9a-f]{2}", d.name)
            )
        except FileNotFoundError:
            return
        for d in fanouts:
            try:
                names = sorted(p.name for p in d.iterdir())
            except FileNotFoundError:
                continue
            for name in names:
                if _ADDRESS.fullmatch(name) and name.startswith(d.name):
                    yield name

    def verify_all(self) -> list[str]:
        """Re-hash every stored blob; return the addresses whose content is corrupted."""
        bad: list[str] = []
        for address in self.addresses():
            try:
                if _hash_file(self.path(address)) != address:
                    bad.append(address)
            except FileNotFoundError:
                continue  # removed while we were scanning
            except OSError:
                bad.append(address)  # unreadable counts as corrupted for fsck
        return bad
