"""RFC 6962 / RFC 9162 Merkle trees with inclusion proofs.

Blocks commit to their transactions (and receipts) with a Merkle Tree Hash so a
light client can check that one item is in a block from a short audit path
instead of downloading every item.

Hashing follows RFC 6962 §2.1 (RFC 9162 §2.1.1):

* a leaf hashes as ``SHA-256(0x00 || data)`` and an internal node as
  ``SHA-256(0x01 || left || right)``. The one-byte prefixes separate the two
  domains, so an internal node's preimage can never be presented as leaf data
  (the second-preimage attack on un-prefixed trees);
* an unbalanced tree splits at the largest power of two smaller than ``n``;
  built bottom-up that means the last node of an odd-length level is
  *promoted* unchanged to the next level. It is never paired with a copy of
  itself: Bitcoin's duplicate-the-last-node rule gives ``[a, b, c]`` and
  ``[a, b, c, c]`` the same root, which is CVE-2012-2459 (a block can be
  mutated into an invalid one with the same header hash).

Inclusion proofs are verified with the algorithm of RFC 9162 §2.1.3.2, which
uses both the leaf index and the tree size: the path must have exactly the shape
that ``(index, tree_size)`` implies.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fedledger.crypto.hashing import DIGEST_SIZE, sha256
from fedledger.errors import DecodeError

__all__ = [
    "EMPTY_ROOT",
    "InclusionProof",
    "MerkleTree",
    "leaf_hash",
    "merkle_root",
    "node_hash",
    "root_from_leaf_hashes",
    "verify_inclusion",
]

_LEAF_PREFIX = b"\x00"
_NODE_PREFIX = b"\x01"
_MAX_TREE_SIZE = 2**64 - 1  # RFC 9162 sizes and indices are uint64
_HEX_DIGEST = re.compile(rf"[0-9a-fA-F]{{{2 * DIGEST_SIZE}}}")

EMPTY_ROOT: bytes = sha256(b"")
"""MTH of the empty list: ``SHA-256()`` of the empty string (RFC 6962 §2.1)."""


def leaf_hash(data: bytes) -> bytes:
    """Hash of a leaf: ``SHA-256(0x00 || data)`` (RFC 6962 §2.1)."""
    return sha256(_LEAF_PREFIX + data)


def node_hash(left: bytes, right: bytes) -> bytes:
    """Hash of an internal node: ``SHA-256(0x01 || left || right)`` (RFC 6962 §2.1)."""
    return sha256(_NODE_PREFIX + left + right)


def _check_leaf(data: object, i: int) -> bytes:
    """Return ``data`` as bytes; reject anything that is not bytes-like.

    ``bytes(5)`` is five zero bytes, so blindly converting would silently hash
    the wrong thing for an int that slipped into the list.
    """
    if isinstance(data, bytes):
        return data
    if isinstance(data, bytearray | memoryview):
        return bytes(data)
    raise TypeError(f"Merkle leaf {i} must be bytes, not {type(data).__name__}")


def _next_level(level: list[bytes]) -> list[bytes]:
    """Pair adjacent nodes; an odd last node is promoted, never duplicated."""
    nxt = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
    if len(level) % 2:
        nxt.append(level[-1])
    return nxt


def merkle_root(leaves: Sequence[bytes]) -> bytes:
    """RFC 6962 Merkle Tree Hash of the raw leaf data (``EMPTY_ROOT`` for no leaves)."""
    return root_from_leaf_hashes([leaf_hash(_check_leaf(d, i)) for i, d in enumerate(leaves)])


def root_from_leaf_hashes(hashes: Sequence[bytes]) -> bytes:
    """The same root from already computed leaf hashes (for callers that cache them)."""
    level = list(hashes)
    if not level:
        return EMPTY_ROOT
    while len(level) > 1:
        level = _next_level(level)
    return level[0]


def _path_length(index: int, tree_size: int) -> int:
    """Number of hashes in the audit path of ``index`` in a tree of ``tree_size`` leaves."""
    length = 0
    while tree_size > 1:
        if index ^ 1 < tree_size:
            length += 1
        index >>= 1
        tree_size = (tree_size + 1) >> 1
    return length


@dataclass(frozen=True)
class InclusionProof:
    """Audit path proving that leaf ``index`` is in a tree of ``tree_size`` leaves.

    ``path`` lists sibling hashes from the leaf level upwards (RFC 6962 §2.1.1).
    Construction does not validate; :func:`verify_inclusion` rejects malformed
    proofs and :meth:`from_dict` rejects malformed input.
    """

    index: int
    tree_size: int
    path: tuple[bytes, ...]

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form: ints plus lowercase hex strings for the path."""
        return {
            "index": self.index,
            "tree_size": self.tree_size,
            "path": [h.hex() for h in self.path],
        }

    @classmethod
    def from_dict(cls, obj: object) -> InclusionProof:
        """Parse :meth:`to_dict` output (e.g. from JSON), raising ``DecodeError`` on bad input.

        Checks types, ``0 <= index < tree_size <= 2**64-1``, that each path entry
        is a 64-character hex string, and that the path has exactly the length
        ``(index, tree_size)`` requires. Unknown keys are rejected.
        """
        if not isinstance(obj, Mapping):
            raise DecodeError(f"inclusion proof must be an object, not {type(obj).__name__}")
        expected = {"index", "tree_size", "path"}
        keys = set(obj.keys())
        if keys != expected:
            missing = sorted(str(k) for k in expected - keys)
            extra = sorted(str(k) for k in keys - expected)
            raise DecodeError(
                f"inclusion proof must have keys index, tree_size, path"
                f" (missing: {missing or 'none'}, unexpected: {extra or 'none'})"
            )
        index, tree_size, path = obj["index"], obj["tree_size"], obj["path"]
        for name, value in (("index", index), ("tree_size", tree_size)):
            if not isinstance(value, int) or isinstance(value, bool):
                raise DecodeError(
                    f"inclusion proof {name} must be an integer, not {type(value).__name__}"
                )
        if not 1 <= tree_size <= _MAX_TREE_SIZE:
            raise DecodeError(f"inclusion proof tree_size {tree_size} is out of range")
        if not 0 <= index < tree_size:
            raise DecodeError(
                f"inclusion proof index {index} is out of range for tree_size {tree_size}"
            )
        if not isinstance(path, list | tuple):
            raise DecodeError(f"inclusion proof path must be a list, not {type(path).__name__}")
        want = _path_length(index, tree_size)
        if len(path) != want:
            raise DecodeError(
                f"inclusion proof path has {len(path)} hashes; index {index} in a tree of"
                f" {tree_size} needs {want}"
            )
        hashes: list[bytes] = []
        for i, h in enumerate(path):
            if not isinstance(h, str) or not _HEX_DIGEST.fullmatch(h):
                raise DecodeError(
                    f"inclusion proof path[{i}] must be a {2 * DIGEST_SIZE}-character hex string"
                )
            hashes.append(bytes.fromhex(h))
        return cls(index=index, tree_size=tree_size, path=tuple(hashes))


class MerkleTree:
    """An immutable RFC 6962 Merkle tree over raw leaf data.

    Built once, bottom-up, level by level with ``n - 1`` node hashes; every
    level is kept so :meth:`proof` is ``O(log n)``. An odd node at the end of a
    level is promoted, not duplicated (see the module docstring on
    CVE-2012-2459), which yields exactly the RFC 6962 split-at-largest-power-
    of-two tree.
    """

    __slots__ = ("_levels",)

    def __init__(self, leaves: Sequence[bytes]) -> None:
        level = [leaf_hash(_check_leaf(d, i)) for i, d in enumerate(leaves)]
        levels = [level]
        while len(level) > 1:
            level = _next_level(level)
            levels.append(level)
        self._levels: tuple[tuple[bytes, ...], ...] = tuple(tuple(lv) for lv in levels)

    @property
    def size(self) -> int:
        """Number of leaves."""
        return len(self._levels[0])

    @property
    def root(self) -> bytes:
        """The Merkle Tree Hash (``EMPTY_ROOT`` for an empty tree)."""
        return self._levels[-1][0] if self.size else EMPTY_ROOT

    def leaf_hash(self, index: int) -> bytes:
        """The leaf hash stored at ``index`` (``SHA-256(0x00 || data)``)."""
        self._check_index(index)
        return self._levels[0][index]

    def proof(self, index: int) -> InclusionProof:
        """Inclusion proof (audit path, RFC 6962 §2.1.1) for leaf ``index``.

        Raises ``ValueError`` if ``index`` is not in ``range(self.size)``.
        """
        self._check_index(index)
        path: list[bytes] = []
        i = index
        for level in self._levels[:-1]:
            sibling = i ^ 1
            if sibling < len(level):  # else this node is promoted: nothing to record
                path.append(level[sibling])
            i >>= 1
        return InclusionProof(index=index, tree_size=self.size, path=tuple(path))

    def _check_index(self, index: int) -> None:
        if not isinstance(index, int) or isinstance(index, bool):
            raise TypeError(f"leaf index must be an int, not {type(index).__name__}")
        if not 0 <= index < self.size:
            raise ValueError(f"leaf index {index} out of range for a tree of {self.size} leaves")

    def __repr__(self) -> str:
        return f"MerkleTree(size={self.size}, root={self.root.hex()})"


def verify_inclusion(leaf_data: bytes, proof: InclusionProof, root: bytes) -> bool:
    """Check that ``leaf_data`` is leaf ``proof.index`` of the tree with hash ``root``.

    RFC 9162 §2.1.3.2. Returns ``False`` (never raises) for any malformed input:
    wrong types, ``index >= tree_size``, a path of the wrong length or hashes of
    the wrong size.

    ``proof.tree_size`` is taken from the proof; the caller must check it
    equals the size it trusts (e.g. the transaction count in the signed block
    header). The root binds the leaf list, but the path shape alone does not
    always pin the size: leaf 0's proof in a 3-leaf tree also verifies against
    the same root when relabelled as a 4-leaf proof.
    """
    try:
        index, tree_size, path = proof.index, proof.tree_size, proof.path
    except AttributeError:
        return False
    if not isinstance(leaf_data, bytes | bytearray | memoryview):
        return False
    if not isinstance(root, bytes) or len(root) != DIGEST_SIZE:
        return False
    for value in (index, tree_size):
        if not isinstance(value, int) or isinstance(value, bool):
            return False
    if not isinstance(path, tuple | list):
        return False
    if not 0 <= index < tree_size <= _MAX_TREE_SIZE:
        return False
    # Step 2-4 of §2.1.3.2.
    fn, sn = index, tree_size - 1
    r = leaf_hash(bytes(leaf_data))
    for p in path:
        if not isinstance(p, bytes) or len(p) != DIGEST_SIZE:
            return False
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:  # promoted levels on the right edge
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    # Step 5: all levels consumed and the recomputed root matches.
    return sn == 0 and r == root


# --- Reference implementation (tests only) ------------------------------------------------
# Deliberately naive and recursive, transcribed from the RFC 6962 §2.1 definitions, so the
# property tests can check the fast iterative tree above against an independent version.


def _largest_power_of_two_below(n: int) -> int:
    """The ``k`` of RFC 6962 §2.1: largest power of two with ``k < n`` (requires ``n > 1``)."""
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def _reference_root(leaves: Sequence[bytes]) -> bytes:
    """MTH(D[n]) exactly as RFC 6962 §2.1 defines it (recursive, slow)."""
    n = len(leaves)
    if n == 0:
        return sha256(b"")
    if n == 1:
        return sha256(b"\x00" + leaves[0])
    k = _largest_power_of_two_below(n)
    return sha256(b"\x01" + _reference_root(leaves[:k]) + _reference_root(leaves[k:]))


def _reference_path(index: int, leaves: Sequence[bytes]) -> tuple[bytes, ...]:
    """PATH(m, D[n]) exactly as RFC 6962 §2.1.1 defines it (recursive, slow)."""
    n = len(leaves)
    if not 0 <= index < n:
        raise ValueError(f"index {index} out of range for {n} leaves")
    if n == 1:
        return ()
    k = _largest_power_of_two_below(n)
    if index < k:
        return _reference_path(index, leaves[:k]) + (_reference_root(leaves[k:]),)
    return _reference_path(index - k, leaves[k:]) + (_reference_root(leaves[:k]),)
