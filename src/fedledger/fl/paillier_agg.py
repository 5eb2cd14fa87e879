"""DeepChain's encrypted model update over threshold Paillier (seed 003 §4.2.4, Algorithms 3-4).

An alternative secure-aggregation backend and the benchmark baseline. Every party
encrypts its gradient update ``dW_{i,j}`` under the shared key of
:mod:`fedledger.crypto.paillier`; the aggregator (the seed's Processing Contract) only
multiplies ciphertexts; the new model is opened by collaborative decryption, where
every share carries a proof the combiner checks (Algorithm 4, ``fsver_2``).

Fixed-point encoding
--------------------
Paillier encrypts residues mod ``n``, so a float ``x`` becomes the integer
``X = rint(x * 2^f)`` (``f = scale_bits``, default 32) stored as ``X mod n``; a residue
above ``n/2`` decodes as the negative ``X - n`` (signed, centred). ``rint`` is exact on
float64, so one value decodes with error at most ``2^-(f+1)``. An integer combination
``sum_k a_k X_k`` divided by ``D`` after decryption is off by at most
``sum_k |a_k| * 2^-(f+1) / D`` (:meth:`FixedPointCodec.error_bound`), plus the final
float64 rounding (half an ulp of the result). To keep sums inside the centred range,
:meth:`FixedPointCodec.encode` refuses ``|X| > ((n - 1) / 2) / max_terms``: any integer
combination with ``sum |a_k| <= max_terms`` (default ``2^20``) cannot wrap around.
One value per plaintext (no packing): simple and obviously correct, at the price of
one 2|n|-bit ciphertext per coordinate.

The update rule and the 1/N factor
----------------------------------
The seed writes ``C(W_i) = C(W_{i-1}) * 1/N * prod_j C(-dW_{i,j})``, i.e. the new model is
``W_i = W_{i-1} - (1/N) sum_j dW_{i,j}``. ``1/N`` is not an integer and Paillier only
multiplies plaintexts by integers (raising ``C`` to ``N^-1 mod n`` would give
``N^-1 mod n`` times the fixed-point integer, which is a huge residue, not a scaled
float). So :func:`deepchain_aggregate` computes, with integer operations only,

    ``C(N*W_{i-1} - sum_j dW_{i,j}) = C(W_{i-1})^N * (prod_j C(dW_{i,j}))^-1 mod n^2``

(the parties post ``C(dW)`` as in Algorithm 3; the aggregator negates the product by
one inversion per coordinate), and :func:`decode_aggregate` divides the decrypted,
centred integer by ``N * 2^f``. The division happens on the public, already-decrypted
result, so nothing secret is revealed beyond ``W_i`` itself; the error is at most
``2N * 2^-(f+1) / N = 2^-f`` per coordinate. The aggregation uses no randomness, so any
auditor can recompute it from the posted ciphertexts. The next round's ``C(W_i)`` is
a fresh encryption of the decoded ``W_i``.

Collaborative decryption
------------------------
Each decrypting party posts a :class:`SharePosting` (one share with proof per
coordinate, :func:`post_decryption_shares`). :func:`verify_postings` checks every proof
of a posting; a posting with any bad share, a wrong length or a wrong sender index is
invalid as a whole and its party is reported. :func:`combine_postings` opens every
coordinate from the first ``t`` valid postings. :func:`collaborative_decrypt` does both
and returns the plaintexts together with the parties used and the parties rejected;
fewer than ``t`` valid postings raise :class:`InsufficientShares` (a
:class:`~fedledger.errors.VerificationFailed` that lists the rejected parties).
Proofs of plaintext knowledge for the posted ``C(dW)`` (the seed's ``fsver_1``) are not
implemented here.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from fedledger.crypto import paillier
from fedledger.crypto.paillier import DecryptionShare, KeyShare, PaillierPublicKey
from fedledger.errors import UsageError, VerificationFailed

__all__ = [
    "DEFAULT_MAX_TERMS",
    "DEFAULT_SCALE_BITS",
    "CollaborativeDecryption",
    "FixedPointCodec",
    "InsufficientShares",
    "SharePosting",
    "collaborative_decrypt",
    "combine_postings",
    "decode_aggregate",
    "deepchain_aggregate",
    "encrypt_array",
    "paillier_round_seconds",
    "post_decryption_shares",
    "verify_postings",
]

DEFAULT_SCALE_BITS = 32
"""Fractional bits ``f`` of the fixed-point encoding (resolution ``2^-32``)."""
DEFAULT_MAX_TERMS = 1 << 20
"""Largest ``sum |a_k|`` of an integer combination of encoded values that cannot overflow."""


# --------------------------------------------------------------------------- encoding


@dataclass(frozen=True)
class FixedPointCodec:
    """Signed, centred fixed-point encoding of floats into ``Z_n`` with ``scale_bits`` fractional bits."""

    n: int
    scale_bits: int = DEFAULT_SCALE_BITS
    max_terms: int = DEFAULT_MAX_TERMS

    def __post_init__(self) -> None:
        if self.n < 3:
            raise UsageError("modulus too small")
        if not 0 <= self.scale_bits <= 512:
            raise UsageError("scale_bits must be in 0..512")
        if self.max_terms < 1:
            raise UsageError("max_terms must be positive")
        if self.max_abs_int < 1:
            raise UsageError("modulus too small for max_terms")

    @property
    def scale(self) -> int:
        """``2^scale_bits``."""
        return 1 << self.scale_bits

    @property
    def max_abs_int(self) -> int:
        """Largest ``|X|`` :meth:`encode` accepts: ``((n - 1) // 2) // max_terms``."""
        return (self.n - 1) // 2 // self.max_terms

    def encode(self, values: npt.ArrayLike) -> list[int]:
        """``rint(x * 2^f) mod n`` for every element of ``values`` (flattened, C order).

        Raises :class:`~fedledger.errors.UsageError` on a non-finite value or one too
        large for the modulus and ``max_terms``.
        """
        x = np.asarray(values, dtype=np.float64).ravel()
        scaled = np.rint(x * float(self.scale))
        if not np.all(np.isfinite(scaled)):
            raise UsageError("cannot encode a non-finite value")
        out: list[int] = []
        limit = self.max_abs_int
        for v in scaled.tolist():
            X = int(v)
            if abs(X) > limit:
                raise UsageError(f"value {v / self.scale!r} is too large for the encoding")
            out.append(X % self.n)
        return out

    def centre(self, residue: int) -> int:
        """The signed integer of a residue: ``residue - n`` when ``residue > n/2``."""
        r = int(residue) % self.n
        return r - self.n if r > self.n // 2 else r

    def decode(self, plaintexts: Sequence[int], divisor: int = 1) -> npt.NDArray[np.float64]:
        """``centre(M) / (divisor * 2^f)`` per element, correctly rounded to float64."""
        if divisor < 1:
            raise UsageError("divisor must be a positive integer")
        den = divisor * self.scale
        return np.array([self.centre(m) / den for m in plaintexts], dtype=np.float64)

    def error_bound(self, weight: int = 1, divisor: int = 1) -> float:
        """Encoding error of ``sum a_k X_k / divisor`` with ``weight = sum |a_k|``: ``weight * 2^-(f+1) / divisor``.

        The final float64 rounding (half an ulp of the result) comes on top.
        """
        return weight / (2.0 * divisor * self.scale)


def encrypt_array(
    pk: PaillierPublicKey, codec: FixedPointCodec, values: npt.ArrayLike
) -> list[int]:
    """Encode ``values`` with ``codec`` and encrypt every coordinate (fresh randomness each)."""
    if codec.n != pk.n:
        raise UsageError("codec modulus differs from the public key")
    return paillier.encrypt_vector(pk, codec.encode(values))


# --------------------------------------------------------------------------- aggregation


def deepchain_aggregate(
    pk: PaillierPublicKey, enc_model: Sequence[int], enc_updates: Sequence[Sequence[int]]
) -> list[int]:
    """``C(N*W_{i-1} - sum_j dW_{i,j}) = C(W_{i-1})^N * (prod_j C(dW_{i,j}))^-1`` per coordinate.

    ``enc_model`` is ``C(W_{i-1})``; ``enc_updates`` holds the ``N`` parties' ``C(dW_{i,j})``.
    Decrypt the result and pass it to :func:`decode_aggregate` with ``n_parties = N`` to
    get ``W_i = W_{i-1} - (1/N) sum_j dW_{i,j}``.
    """
    n_parties = len(enc_updates)
    if n_parties == 0:
        raise UsageError("no encrypted updates to aggregate")
    for j, u in enumerate(enc_updates):
        if len(u) != len(enc_model):
            raise UsageError(f"update {j} has {len(u)} coordinates, the model {len(enc_model)}")
    out: list[int] = []
    for k, cw in enumerate(enc_model):
        total = enc_updates[0][k]
        for u in enc_updates[1:]:
            total = paillier.add(pk, total, u[k])
        out.append(paillier.add(pk, paillier.scalar_mul(pk, cw, n_parties), paillier.negate(pk, total)))
    return out


def decode_aggregate(
    codec: FixedPointCodec, plaintexts: Sequence[int], n_parties: int
) -> npt.NDArray[np.float64]:
    """``W_i`` from the decrypted ``N*W_{i-1} - sum_j dW_{i,j}``: divide by ``N * 2^f``.

    The error against the exact ``W_{i-1} - (1/N) sum_j dW_{i,j}`` of the float inputs is
    at most ``codec.error_bound(2 * N, N) = 2^-f`` plus half an ulp of the result.
    """
    return codec.decode(plaintexts, divisor=n_parties)


# --------------------------------------------------------------------------- collaborative decryption


@dataclass(frozen=True)
class SharePosting:
    """What party ``party`` posts in Algorithm 4: one proven decryption share per coordinate."""

    party: int
    shares: tuple[DecryptionShare, ...]


@dataclass(frozen=True)
class CollaborativeDecryption:
    """Outcome of :func:`collaborative_decrypt`: plaintexts in ``[0, n)``, parties used and rejected."""

    plaintexts: tuple[int, ...]
    used: tuple[int, ...]
    invalid: tuple[int, ...]


class InsufficientShares(VerificationFailed):
    """Fewer than ``t`` valid share postings; ``invalid`` lists the rejected parties."""

    def __init__(self, valid: int, needed: int, invalid: Sequence[int]) -> None:
        super().__init__(
            f"only {valid} valid decryption-share postings, {needed} needed; "
            f"invalid parties: {sorted(invalid)}"
        )
        self.invalid = tuple(sorted(invalid))


def post_decryption_shares(
    pk: PaillierPublicKey, key: KeyShare, ciphertexts: Sequence[int]
) -> SharePosting:
    """Party ``key.index``'s decryption share with proof for every ciphertext."""
    return SharePosting(
        party=key.index,
        shares=tuple(paillier.decryption_share(pk, key, c) for c in ciphertexts),
    )


def _posting_is_valid(pk: PaillierPublicKey, ciphertexts: Sequence[int], post: SharePosting) -> bool:
    if len(post.shares) != len(ciphertexts):
        return False
    for c, s in zip(ciphertexts, post.shares, strict=True):
        if s.index != post.party or not paillier.share_is_valid(pk, c, s):
            return False
    return True


def verify_postings(
    pk: PaillierPublicKey,
    ciphertexts: Sequence[int],
    postings: Sequence[SharePosting],
    *,
    check_all: bool = True,
) -> tuple[list[SharePosting], list[int]]:
    """Valid postings (by party index) and the sorted indices of parties whose posting is invalid.

    A posting is invalid when its party index is unknown or repeated, its length differs
    from ``ciphertexts``, a share names another sender, or any proof fails. With
    ``check_all=False`` checking stops once ``t`` valid postings are found (later ones are
    neither used nor reported).
    """
    for c in ciphertexts:
        paillier.check_ciphertext(pk, c)
    counts: dict[int, int] = {}
    for p in postings:
        counts[p.party] = counts.get(p.party, 0) + 1
    valid: list[SharePosting] = []
    invalid: set[int] = set()
    for post in sorted(postings, key=lambda p: p.party):
        if not check_all and len(valid) >= pk.threshold:
            break
        ok = (
            1 <= post.party <= pk.parties
            and counts[post.party] == 1
            and _posting_is_valid(pk, ciphertexts, post)
        )
        if ok:
            valid.append(post)
        else:
            invalid.add(post.party)
    return valid, sorted(invalid)


def combine_postings(
    pk: PaillierPublicKey, ciphertexts: Sequence[int], valid: Sequence[SharePosting]
) -> list[int]:
    """Open every coordinate from the first ``t`` of ``valid`` (already verified) postings."""
    if len(valid) < pk.threshold:
        raise InsufficientShares(len(valid), pk.threshold, [])
    chosen = list(valid)[: pk.threshold]
    return [
        paillier.combine(pk, c, [p.shares[k] for p in chosen], verify=False)
        for k, c in enumerate(ciphertexts)
    ]


def collaborative_decrypt(
    pk: PaillierPublicKey,
    ciphertexts: Sequence[int],
    postings: Sequence[SharePosting],
    *,
    check_all: bool = True,
) -> CollaborativeDecryption:
    """Algorithm 4: verify every posting, decrypt with ``t`` valid ones, report the invalid parties.

    Raises :class:`InsufficientShares` when fewer than ``t`` postings are valid.
    """
    valid, invalid = verify_postings(pk, ciphertexts, postings, check_all=check_all)
    if len(valid) < pk.threshold:
        raise InsufficientShares(len(valid), pk.threshold, invalid)
    plaintexts = combine_postings(pk, ciphertexts, valid)
    used = tuple(p.party for p in valid[: pk.threshold])
    return CollaborativeDecryption(tuple(plaintexts), used, tuple(invalid))


# --------------------------------------------------------------------------- benchmark baseline


def paillier_round_seconds(
    params: int,
    devices: int,
    threshold: int,
    *,
    slice_size: int,
    key_bits: int = paillier.DEFAULT_MODULUS_BITS,
    rng_seed: int = 0,
    insecure_for_tests: bool = False,
    keys: tuple[PaillierPublicKey, Sequence[KeyShare]] | None = None,
    scale_bits: int = DEFAULT_SCALE_BITS,
) -> dict[str, Any]:
    """Time one DeepChain round on ``slice_size`` coordinates and scale linearly to ``params``.

    The round: each of ``devices`` parties encrypts its update slice, the aggregator runs
    :func:`deepchain_aggregate`, ``threshold`` parties post proven decryption shares, the
    combiner verifies every proof and combines. Stages run one after another on one
    core, so ``stages`` are total CPU seconds; ``parallel_seconds`` assumes the devices
    encrypt and the decrypting parties make shares concurrently. The result is checked
    against the plaintext computation. Key generation (``devices`` key holders,
    ``threshold`` needed) is not part of the round; its time is ``keygen_seconds``
    (``None`` when ``keys`` are given). ``rng_seed`` seeds the synthetic model and
    updates only; all cryptographic randomness comes from :mod:`secrets`.

    Returned keys: ``params``, ``devices``, ``threshold``, ``key_bits``, ``slice_size``
    (coordinates actually timed), ``scaled`` (whether ``slice_size < params``),
    ``slice_seconds``, ``seconds`` (scaled to ``params``), ``parallel_seconds`` (scaled),
    ``stages`` (per-stage slice seconds: ``encrypt``, ``aggregate``, ``decrypt_shares``,
    ``verify``, ``combine``), ``stages_scaled``, ``keygen_seconds``, ``max_abs_error``.
    """
    for name, value in (("params", params), ("devices", devices), ("slice_size", slice_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UsageError(f"{name} must be a positive int")
    if isinstance(threshold, bool) or not isinstance(threshold, int) or not 1 <= threshold <= devices:
        raise UsageError("threshold must be an int in 1..devices")
    keygen_seconds: float | None = None
    if keys is None:
        t0 = time.perf_counter()
        pk, key_shares = paillier.generate_keys(
            key_bits, parties=devices, threshold=threshold, insecure_for_tests=insecure_for_tests
        )
        keygen_seconds = time.perf_counter() - t0
    else:
        pk, key_shares = keys[0], list(keys[1])
        if pk.parties != devices or pk.threshold != threshold:
            raise UsageError("keys do not match devices/threshold")
    size = min(slice_size, params)
    factor = params / size
    codec = FixedPointCodec(pk.n, scale_bits)
    rng = np.random.default_rng(rng_seed)
    model = rng.normal(0.0, 0.1, size)
    updates = rng.normal(0.0, 0.01, (devices, size))
    enc_model = encrypt_array(pk, codec, model)  # C(W_{i-1}): output of the previous round

    stages: dict[str, float] = {}
    t0 = time.perf_counter()
    enc_updates = [encrypt_array(pk, codec, u) for u in updates]
    stages["encrypt"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    enc_new = deepchain_aggregate(pk, enc_model, enc_updates)
    stages["aggregate"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    postings = [post_decryption_shares(pk, k, enc_new) for k in key_shares[:threshold]]
    stages["decrypt_shares"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    valid, invalid = verify_postings(pk, enc_new, postings)
    stages["verify"] = time.perf_counter() - t0
    if invalid:
        raise VerificationFailed(f"honest decryption shares rejected: parties {invalid}")

    t0 = time.perf_counter()
    plaintexts = combine_postings(pk, enc_new, valid)
    stages["combine"] = time.perf_counter() - t0

    result = decode_aggregate(codec, plaintexts, devices)
    expected = model - updates.sum(axis=0) / devices
    max_err = float(np.max(np.abs(result - expected)))
    if max_err > codec.error_bound(2 * devices, devices) + 1e-12:
        raise VerificationFailed(f"decrypted aggregate is off by {max_err}")

    slice_seconds = sum(stages.values())
    parallel = (
        stages["encrypt"] / devices
        + stages["aggregate"]
        + stages["decrypt_shares"] / threshold
        + stages["verify"]
        + stages["combine"]
    )
    return {
        "params": params,
        "devices": devices,
        "threshold": threshold,
        "key_bits": pk.bits,
        "slice_size": size,
        "scaled": size < params,
        "slice_seconds": slice_seconds,
        "seconds": slice_seconds * factor,
        "parallel_seconds": parallel * factor,
        "stages": stages,
        "stages_scaled": {k: v * factor for k, v in stages.items()},
        "keygen_seconds": keygen_seconds,
        "max_abs_error": max_err,
    }
