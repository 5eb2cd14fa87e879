"""Tests for fedledger.crypto.merkle (RFC 6962 §2.1, RFC 9162 §2.1.3)."""

from __future__ import annotations

import hashlib
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedledger.crypto.merkle import (
    EMPTY_ROOT,
    InclusionProof,
    MerkleTree,
    _path_length,
    _reference_path,
    _reference_root,
    leaf_hash,
    merkle_root,
    node_hash,
    verify_inclusion,
)
from fedledger.errors import DecodeError


def h(x: str) -> bytes:
    return bytes.fromhex(x)


# The certificate-transparency reference inputs (also used by Trillian and other RFC 6962
# implementations) and the published MTH for each prefix of size 0..8.
CT_LEAVES = [
    h(x)
    for x in (
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    )
]
CT_ROOTS = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
# Published audit paths over CT_LEAVES: (0-based index, tree size, path).
CT_PATHS = [
    (
        0,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        5,
        8,
        [
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (2, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (
        1,
        5,
        [
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
    (0, 1, []),
]

leaf_lists = st.lists(st.binary(max_size=12), min_size=1, max_size=70)


def flip(b: bytes, i: int = 0) -> bytes:
    out = bytearray(b)
    out[i % len(out)] ^= 0x01
    return bytes(out)


# --- known vectors ---------------------------------------------------------------------


def test_empty_root_is_sha256_of_empty_string() -> None:
    # RFC 6962 §2.1: MTH({}) = SHA-256().
    assert hashlib.sha256(b"").digest() == EMPTY_ROOT
    assert merkle_root([]) == EMPTY_ROOT
    assert MerkleTree([]).root == EMPTY_ROOT
    assert MerkleTree([]).size == 0


def test_hash_prefixes_by_hand() -> None:
    # RFC 6962 §2.1: leaf = SHA-256(0x00 || d), node = SHA-256(0x01 || l || r).
    assert leaf_hash(b"") == hashlib.sha256(b"\x00").digest()
    assert leaf_hash(b"abc") == hashlib.sha256(b"\x00abc").digest()
    a, b = leaf_hash(b"a"), leaf_hash(b"b")
    assert node_hash(a, b) == hashlib.sha256(b"\x01" + a + b).digest()
    assert merkle_root([b""]) == hashlib.sha256(b"\x00").digest()


def test_three_leaf_shape_by_hand() -> None:
    # n=3: k=2, so MTH = node(node(l0, l1), l2) -- l2 is promoted, not paired with itself.
    l0, l1, l2 = (leaf_hash(x) for x in (b"a", b"b", b"c"))
    assert merkle_root([b"a", b"b", b"c"]) == node_hash(node_hash(l0, l1), l2)
    # n=5: k=4, so MTH = node(MTH(d0..d3), l4).
    ls = [leaf_hash(bytes([i])) for i in range(5)]
    left = node_hash(node_hash(ls[0], ls[1]), node_hash(ls[2], ls[3]))
    assert merkle_root([bytes([i]) for i in range(5)]) == node_hash(left, ls[4])


@pytest.mark.parametrize("n", range(len(CT_ROOTS)))
def test_ct_reference_roots(n: int) -> None:
    leaves = CT_LEAVES[:n]
    assert merkle_root(leaves).hex() == CT_ROOTS[n]
    assert MerkleTree(leaves).root.hex() == CT_ROOTS[n]
    assert _reference_root(leaves).hex() == CT_ROOTS[n]


@pytest.mark.parametrize(("index", "size", "path"), CT_PATHS)
def test_ct_reference_paths(index: int, size: int, path: list[str]) -> None:
    tree = MerkleTree(CT_LEAVES[:size])
    proof = tree.proof(index)
    assert [p.hex() for p in proof.path] == path
    assert proof.index == index and proof.tree_size == size
    assert verify_inclusion(CT_LEAVES[index], proof, h(CT_ROOTS[size]))


def test_duplicated_last_leaf_changes_root() -> None:
    # CVE-2012-2459: with Bitcoin-style duplication [a, b, c] and [a, b, c, c] share a root.
    assert merkle_root([b"a", b"b", b"c"]) != merkle_root([b"a", b"b", b"c", b"c"])
    assert merkle_root([b"a"]) != merkle_root([b"a", b"a"])


# --- fast tree == RFC definitions -------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(leaf_lists)
def test_tree_matches_reference(leaves: list[bytes]) -> None:
    tree = MerkleTree(leaves)
    assert tree.size == len(leaves)
    assert tree.root == _reference_root(leaves) == merkle_root(leaves)
    for i in range(len(leaves)):
        proof = tree.proof(i)
        assert proof.path == _reference_path(i, leaves)
        assert verify_inclusion(leaves[i], proof, tree.root)


def test_every_size_up_to_70_matches_reference() -> None:
    # Deterministic sweep so every unbalanced shape up to 70 is covered on every run.
    for n in range(1, 71):
        leaves = [i.to_bytes(2, "big") for i in range(n)]
        tree = MerkleTree(leaves)
        assert tree.root == _reference_root(leaves), n
        for i in range(n):
            assert tree.proof(i).path == _reference_path(i, leaves), (n, i)


# --- tampering fails ------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(st.lists(st.binary(max_size=12), min_size=1, max_size=70, unique=True), st.data())
def test_tampered_proofs_fail(leaves: list[bytes], data: st.DataObject) -> None:
    tree = MerkleTree(leaves)
    n = tree.size
    i = data.draw(st.integers(0, n - 1), label="index")
    proof = tree.proof(i)
    root = tree.root
    leaf = leaves[i]
    assert verify_inclusion(leaf, proof, root)

    # A different leaf value.
    assert not verify_inclusion(leaf + b"x", proof, root)
    if leaf:
        assert not verify_inclusion(flip(leaf, data.draw(st.integers(0, 100))), proof, root)

    # A flipped byte anywhere in the path.
    if proof.path:
        k = data.draw(st.integers(0, len(proof.path) - 1), label="path entry")
        pos = data.draw(st.integers(0, 31), label="byte")
        path = list(proof.path)
        path[k] = flip(path[k], pos)
        assert not verify_inclusion(leaf, InclusionProof(i, n, tuple(path)), root)
        # Truncated path (drop the top or the bottom hash).
        assert not verify_inclusion(leaf, InclusionProof(i, n, proof.path[:-1]), root)
        assert not verify_inclusion(leaf, InclusionProof(i, n, proof.path[1:]), root)
    # Extended path.
    assert not verify_inclusion(leaf, InclusionProof(i, n, (*proof.path, root)), root)

    # A wrong root.
    assert not verify_inclusion(leaf, proof, flip(root))

    # The proof for index i does not verify at any other index j (RFC 9162 §2.1.3.2 uses it).
    # Leaves are unique here: with equal data at i and j, j's own proof may coincide.
    for j in range(n):
        if j != i:
            assert not verify_inclusion(leaf, InclusionProof(j, n, proof.path), root), j
    assert not verify_inclusion(leaf, InclusionProof(n, n, proof.path), root)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.binary(max_size=8), min_size=2, max_size=70), st.data())
def test_proof_from_one_tree_size_does_not_verify_for_another(
    leaves: list[bytes], data: st.DataObject
) -> None:
    # A proof for leaf i in the tree of the first n leaves (e.g. an earlier block) cannot be
    # passed off as a proof in the tree of the first m != n leaves, even though both trees
    # share the leaf and every leaf before it.
    n = data.draw(st.integers(1, len(leaves)), label="n")
    m = data.draw(st.integers(1, len(leaves)).filter(lambda x: x != n), label="m")
    i = data.draw(st.integers(0, min(n, m) - 1), label="i")
    proof_n = MerkleTree(leaves[:n]).proof(i)
    root_m = MerkleTree(leaves[:m]).root
    relabelled = InclusionProof(i, m, proof_n.path)
    assert not verify_inclusion(leaves[i], relabelled, root_m)
    assert not verify_inclusion(leaves[i], proof_n, root_m)


def test_path_length_must_match_index_and_tree_size() -> None:
    # RFC 9162 §2.1.3.2 consumes exactly as many hashes as (index, tree_size) implies.
    leaves = [bytes([i]) for i in range(8)]
    tree = MerkleTree(leaves)
    proof = tree.proof(3)  # 3 hashes in a balanced tree of 8
    for other in (1, 2, 3, 4, 9, 16, 17, 2**40):
        if other > 3:
            assert _path_length(3, other) != 3
        assert not verify_inclusion(leaves[3], InclusionProof(3, other, proof.path), tree.root)


def test_relabelled_size_with_same_shape_is_why_callers_pin_tree_size() -> None:
    # Documents the RFC 9162 algorithm's boundary: leaf 0 of a 3-leaf tree has the same
    # left/right shape as leaf 0 of a 4-leaf tree, so relabelling tree_size alone still
    # verifies against the *same* root. Callers must take tree_size from the signed header.
    leaves = [b"a", b"b", b"c"]
    tree = MerkleTree(leaves)
    relabelled = InclusionProof(0, 4, tree.proof(0).path)
    assert verify_inclusion(b"a", relabelled, tree.root)
    # Likewise leaf 3 of 8 and leaf 3 of 5 both take three left/right steps.
    leaves8 = [bytes([i]) for i in range(8)]
    tree8 = MerkleTree(leaves8)
    assert _path_length(3, 5) == _path_length(3, 8) == 3
    assert verify_inclusion(leaves8[3], InclusionProof(3, 5, tree8.proof(3).path), tree8.root)


def test_leaf_node_confusion_is_rejected() -> None:
    # Second-preimage attack on un-prefixed trees: the 4-leaf tree's root is also the root of a
    # "2-leaf tree" whose leaves are the two internal nodes' preimages. With the 0x00/0x01
    # domain separation of RFC 6962 §2.1 this does not verify.
    leaves = [b"a", b"b", b"c", b"d"]
    tree = MerkleTree(leaves)
    ls = [leaf_hash(x) for x in leaves]
    n01, n23 = node_hash(ls[0], ls[1]), node_hash(ls[2], ls[3])
    assert tree.root == node_hash(n01, n23)

    # Present the internal node n01 as leaf data at index 0 of a 2-leaf tree.
    forged = InclusionProof(index=0, tree_size=2, path=(n23,))
    assert not verify_inclusion(n01, forged, tree.root)
    # Present the preimage of n01 (its two children) as leaf data.
    assert not verify_inclusion(ls[0] + ls[1], forged, tree.root)

    # Contrast: in an un-prefixed tree the same forgery verifies (the leaf "data" is the
    # preimage of an internal node), which is exactly what the prefixes prevent.
    def plain(b: bytes) -> bytes:
        return hashlib.sha256(b).digest()

    q = [plain(x) for x in leaves]
    q01, q23 = plain(q[0] + q[1]), plain(q[2] + q[3])
    plain_root = plain(q01 + q23)
    forged_leaf_data = q[0] + q[1]
    assert plain(plain(forged_leaf_data) + q23) == plain_root


# --- malformed input ---------------------------------------------------------------------


def test_verify_never_raises_on_malformed_proofs() -> None:
    leaves = [b"a", b"b", b"c"]
    tree = MerkleTree(leaves)
    p = tree.proof(1)
    root = tree.root
    bad = [
        InclusionProof(3, 3, p.path),  # index == tree_size
        InclusionProof(-1, 3, p.path),
        InclusionProof(0, 0, ()),
        InclusionProof(1, 3, (p.path[0][:31], p.path[1])),  # short hash
        InclusionProof(1, 3, (p.path[0] + b"\x00", p.path[1])),  # long hash
        InclusionProof(1, 3, ("00" * 32, p.path[1])),  # type: ignore[arg-type]
        InclusionProof(1, 3, None),  # type: ignore[arg-type]
        InclusionProof("1", 3, p.path),  # type: ignore[arg-type]
        InclusionProof(True, 3, p.path),  # bool is an int subclass, but not an index
        InclusionProof(1, 2**70, p.path),
    ]
    for proof in bad:
        assert verify_inclusion(b"b", proof, root) is False, proof
    assert verify_inclusion(b"b", p, root[:31]) is False
    assert verify_inclusion(b"b", p, root.hex()) is False  # type: ignore[arg-type]
    assert verify_inclusion("b", p, root) is False  # type: ignore[arg-type]
    assert verify_inclusion(b"b", {"index": 1}, root) is False  # type: ignore[arg-type]
    assert verify_inclusion(b"b", p, root) is True


def test_proof_index_out_of_range_raises_value_error() -> None:
    tree = MerkleTree([b"a", b"b"])
    for bad in (-1, 2, 100):
        with pytest.raises(ValueError):
            tree.proof(bad)
    with pytest.raises(ValueError):
        MerkleTree([]).proof(0)


def test_non_bytes_leaf_rejected() -> None:
    with pytest.raises(TypeError):
        MerkleTree([b"a", 5])  # type: ignore[list-item]
    with pytest.raises(TypeError):
        merkle_root(["a"])  # type: ignore[list-item]
    assert MerkleTree([bytearray(b"a")]).root == MerkleTree([b"a"]).root  # type: ignore[list-item]


# --- to_dict / from_dict -----------------------------------------------------------------


@settings(max_examples=50, deadline=None)
@given(leaf_lists, st.data())
def test_dict_round_trip_through_json(leaves: list[bytes], data: st.DataObject) -> None:
    tree = MerkleTree(leaves)
    i = data.draw(st.integers(0, tree.size - 1))
    proof = tree.proof(i)
    wire = json.loads(json.dumps(proof.to_dict()))
    back = InclusionProof.from_dict(wire)
    assert back == proof
    assert verify_inclusion(leaves[i], back, tree.root)


def _good_dict() -> dict[str, object]:
    return MerkleTree([b"a", b"b", b"c"]).proof(0).to_dict()


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.pop("path"), "missing"),
        (lambda d: d.update(extra=1), "unexpected"),
        (lambda d: d.update(index="0"), "index must be an integer"),
        (lambda d: d.update(index=True), "index must be an integer"),
        (lambda d: d.update(index=1.0), "index must be an integer"),
        (lambda d: d.update(tree_size=None), "tree_size must be an integer"),
        (lambda d: d.update(index=-1), "out of range"),
        (lambda d: d.update(index=3), "out of range"),
        (lambda d: d.update(tree_size=0, index=0), "out of range"),
        (lambda d: d.update(tree_size=2**64), "out of range"),
        (lambda d: d.update(path="ab" * 32), "must be a list"),
        (lambda d: d["path"].pop(), "needs 2"),
        (lambda d: d["path"].append("00" * 32), "needs 2"),
        (lambda d: d["path"].__setitem__(0, "zz" * 32), "hex string"),
        (lambda d: d["path"].__setitem__(0, "ab" * 31), "hex string"),
        (lambda d: d["path"].__setitem__(0, "ab" * 33), "hex string"),
        (lambda d: d["path"].__setitem__(0, " a" * 32), "hex string"),
        (lambda d: d["path"].__setitem__(0, 5), "hex string"),
    ],
)
def test_from_dict_rejects_malformed(mutate: object, message: str) -> None:
    d = _good_dict()
    mutate(d)  # type: ignore[operator]
    with pytest.raises(DecodeError, match=message):
        InclusionProof.from_dict(d)


@pytest.mark.parametrize("obj", [None, [], "proof", 3])
def test_from_dict_rejects_non_objects(obj: object) -> None:
    with pytest.raises(DecodeError, match="must be an object"):
        InclusionProof.from_dict(obj)


def test_from_dict_accepts_uppercase_hex() -> None:
    d = _good_dict()
    d["path"] = [p.upper() for p in d["path"]]  # type: ignore[attr-defined]
    assert InclusionProof.from_dict(d) == MerkleTree([b"a", b"b", b"c"]).proof(0)
