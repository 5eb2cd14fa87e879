"""Chain state: a key-value map whose root hash is computed from the data.

The root is the RFC 6962 Merkle root over the canonical encodings of the
``[key, value]`` pairs in key order (:func:`state_root_reference`). ``State``
keeps the encoded leaves cached so that only changed keys are re-encoded per
block; a property test checks it against the reference. Changes are
transactional: ``begin`` / ``commit`` / ``rollback`` nest, and a failed
contract call rolls back exactly its own writes.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Iterator, Mapping

from fedledger.codec import cbor
from fedledger.crypto.merkle import leaf_hash, merkle_root, root_from_leaf_hashes

_MISSING = object()


def state_leaf(key: bytes, value: bytes) -> bytes:
    return cbor.encode([key, value])


def state_root_reference(items: Mapping[bytes, bytes]) -> bytes:
    """The definition of the state root: simple, slow, obviously right."""
    return merkle_root([state_leaf(k, items[k]) for k in sorted(items)])


class State:
    """Mutable key-value state with nested journaled transactions and a derived root."""

    def __init__(self, items: Mapping[bytes, bytes] | None = None) -> None:
        self._data: dict[bytes, bytes] = dict(items or {})
        self._keys: list[bytes] = sorted(self._data)
        self._leaves: dict[bytes, bytes] = {}  # key -> leaf hash
        self._root: bytes | None = None
        self._journal: list[dict[bytes, object]] = []
        self._dirty: dict[bytes, bytes | None] = {}

    # -- reads -------------------------------------------------------------
    def get(self, key: bytes) -> bytes | None:
        return self._data.get(key)

    def __contains__(self, key: bytes) -> bool:
        return key in self._data

    def __len__(self) -> int:
        return len(self._data)

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        for k in self._keys:
            yield k, self._data[k]

    def keys_with_prefix(self, prefix: bytes) -> Iterator[bytes]:
        i = bisect_left(self._keys, prefix)
        while i < len(self._keys) and self._keys[i].startswith(prefix):
            yield self._keys[i]
            i += 1

    def root(self) -> bytes:
        if self._root is None:
            hashes = []
            for k in self._keys:
                h = self._leaves.get(k)
                if h is None:
                    h = self._leaves[k] = leaf_hash(state_leaf(k, self._data[k]))
                hashes.append(h)
            self._root = root_from_leaf_hashes(hashes)
        return self._root

    # -- writes ------------------------------------------------------------
    def set(self, key: bytes, value: bytes) -> None:
        self._record(key)
        if key not in self._data:
            insort(self._keys, key)
        self._data[key] = value
        self._leaves.pop(key, None)
        self._root = None
        self._dirty[key] = value

    def delete(self, key: bytes) -> None:
        if key not in self._data:
            return
        self._record(key)
        del self._data[key]
        self._keys.pop(bisect_left(self._keys, key))
        self._leaves.pop(key, None)
        self._root = None
        self._dirty[key] = None

    def _record(self, key: bytes) -> None:
        if self._journal and key not in self._journal[-1]:
            self._journal[-1][key] = self._data.get(key, _MISSING)

    # -- transactions ------------------------------------------------------
    def begin(self) -> None:
        self._journal.append({})

    def commit(self) -> None:
        undo = self._journal.pop()
        if self._journal:
            outer = self._journal[-1]
            for key, old in undo.items():
                outer.setdefault(key, old)

    def rollback(self) -> None:
        undo = self._journal.pop()
        for key, old in undo.items():
            if old is _MISSING:
                if key in self._data:
                    del self._data[key]
                    self._keys.pop(bisect_left(self._keys, key))
            else:
                if key not in self._data:
                    insort(self._keys, key)
                self._data[key] = old  # type: ignore[assignment]
            self._leaves.pop(key, None)
            self._root = None
            self._dirty[key] = self._data.get(key)

    def detach(self) -> dict[bytes, object]:
        """End the innermost transaction keeping its writes; return its undo record for :meth:`revert`."""
        return self._journal.pop()

    def revert(self, undo: Mapping[bytes, object]) -> None:
        """Restore the values an undo record from :meth:`detach` saved."""
        for key, old in undo.items():
            if old is _MISSING:
                self.delete(key)
            else:
                self.set(key, old)  # type: ignore[arg-type]

    def apply(self, changes: Mapping[bytes, bytes | None]) -> None:
        """Replay changes from :meth:`take_changes` (``None`` deletes)."""
        for key, value in changes.items():
            if value is None:
                self.delete(key)
            else:
                self.set(key, value)

    @property
    def in_transaction(self) -> bool:
        return bool(self._journal)

    def take_changes(self) -> dict[bytes, bytes | None]:
        """Keys written since the last call (``None`` = deleted), for persistence."""
        changes, self._dirty = self._dirty, {}
        return changes

    def copy(self) -> State:
        return State(self._data)
