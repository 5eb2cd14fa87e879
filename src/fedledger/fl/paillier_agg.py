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

The aggregation backend: :class:`PaillierAggregation`
----------------------------------------------------
A :class:`~fedledger.fl.strategy.StrategyWrapper` that replaces the plaintext average of
its inner strategy by seed 003's encrypted gradient collection, the same way
:class:`~fedledger.fl.secagg.strategy.SecureAggregation` does with seed 001. Per round:

1. each result becomes the update ``g = w - w_global`` (flattened, float64);
2. the device packs ``g`` (:class:`SlotPacking`), encrypts every plaintext and attaches a
   proof of plaintext knowledge bound to ``(session, device, round, index)``
   (:func:`encrypt_update`; Algorithm 3's ``C(dW), Proof_PK``);
3. the aggregator runs ``fsver_1`` on every ciphertext (:func:`verify_update`); a device
   with any bad proof, a copied ciphertext, the wrong round or the wrong length is
   rejected and named in the metrics (``rejected``);
4. the accepted ciphertexts are combined with the public weights ``a_k`` (sample counts,
   or 1 each): ``C(sum a_k g_k) = prod C(g_k)^(a_k)`` (:func:`weighted_sum`);
5. the key holders post proven decryption shares; any ``t`` valid postings open the sum
   (Algorithm 4); a forged share is rejected and its party named
   (``key_holders_rejected``); fewer than ``t`` valid postings raise
   :class:`InsufficientShares`;
6. the result is ``w_global + (sum a_k g_k) / sum a_k``: FedAvg's model.

Slot packing
------------
A coordinate ``x`` is quantised to ``X = rint(x * 2^f)`` with ``|X| < 2^(i+f)``
(``f = frac_bits``, ``i = int_bits``: honest updates satisfy ``|x| < 2^i``). A weighted sum
of such values with total weight ``W <= 2^h`` (``h = weight_bits``, the headroom, from
``max_clients * max_samples``) satisfies ``|S| < 2^(h+i+f)``, so a slot of
``s = 1 + h + i + f`` bits holds it as a signed digit in ``[-2^(s-1), 2^(s-1))``. A
plaintext packs ``k = floor((|n| - 1) / s)`` slots, ``P = sum_j X_j * 2^(s*j)``, stored as
``P mod n``, so a negative ``P`` is ``n - |P|``. Packing is linear, so the weighted sum of
packed plaintexts is the packing of the weighted slot sums, and because
``|P| < 2^(s*k - 1) <= (n - 1)/2`` no sum wraps mod ``n``: the decryptor centres the
residue and peels off signed digits (:meth:`SlotPacking.unpack`). With the defaults
``f = 24``, ``i = 8`` and ``h = 22`` (64 clients of up to ``2^16`` samples) a slot is 55
bits: 37 coordinates per 2048-bit ciphertext, 18 per 1024-bit and 9 per 512-bit one.

Error: each ``|X/2^f - x| <= 2^-(f+1)``, so the decoded weighted mean
``S / (W * 2^f)`` (an exactly rounded division of integers) is within ``2^-(f+1)`` of
the true weighted mean of the float64 updates, plus half an ulp; the model is then
rounded to float32 like FedAvg's (:meth:`SlotPacking.error_bound`).

What the proofs do not cover: ``fsver_1`` shows that a device knows its plaintext, not
that the plaintext is in range. A device can still contribute any update (as it can in
plaintext FedAvg) and, by overflowing its slots, spoil the neighbouring coordinates;
when the decrypted sum does not unpack into slots (a non-zero remainder above the top
slot or in the padding) the round fails with :class:`~fedledger.errors.VerificationFailed`
rather than return a wrong model. Robust selection rules need plaintext updates and do
not compose with this backend.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from fedledger.crypto import paillier
from fedledger.crypto.paillier import DecryptionShare, KeyShare, PaillierPublicKey, PlaintextProof
from fedledger.errors import UsageError, VerificationFailed
from fedledger.fl.strategy import (
    Aggregate,
    Failure,
    FedAvg,
    NotEnoughResults,
    Strategy,
    StrategyWrapper,
    TrainIns,
    TrainRes,
)
from fedledger.fl.weights import Weights, layout_problem
from fedledger.fl.weights import flatten as flat
from fedledger.fl.weights import unflatten as unflat

__all__ = [
    "DEFAULT_INT_BITS",
    "DEFAULT_MAX_CLIENTS",
    "DEFAULT_MAX_SAMPLES",
    "DEFAULT_MAX_TERMS",
    "DEFAULT_PACK_FRAC_BITS",
    "DEFAULT_SCALE_BITS",
    "CollaborativeDecryption",
    "EncryptedUpdate",
    "FixedPointCodec",
    "InsufficientShares",
    "InvalidUpdate",
    "PaillierAggregation",
    "PaillierBehaviour",
    "SharePosting",
    "SlotPacking",
    "collaborative_decrypt",
    "combine_postings",
    "decode_aggregate",
    "deepchain_aggregate",
    "encrypt_array",
    "encrypt_update",
    "paillier_round_seconds",
    "post_decryption_shares",
    "update_context",
    "verify_postings",
    "verify_update",
    "weighted_sum",
]

DEFAULT_SCALE_BITS = 32
"""Fractional bits ``f`` of the fixed-point encoding (resolution ``2^-32``)."""
DEFAULT_MAX_TERMS = 1 << 20
"""Largest ``sum |a_k|`` of an integer combination of encoded values that cannot overflow."""
DEFAULT_PACK_FRAC_BITS = 24
"""Fractional bits ``f`` of :class:`SlotPacking` (a weighted mean is off by at most ``2^-25``)."""
DEFAULT_INT_BITS = 8
"""Integer bits ``i`` of :class:`SlotPacking`: update coordinates must satisfy ``|x| < 2^8``."""
DEFAULT_MAX_CLIENTS = 64
"""Most results one :class:`PaillierAggregation` round sums (sets the slot headroom)."""
DEFAULT_MAX_SAMPLES = 1 << 16
"""Largest sample count (weight) of one result under ``weighting="samples"``."""


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


# --------------------------------------------------------------------------- slot packing


def _check_int(name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise UsageError(f"{name} must be an int >= {low}, got {value!r}")
    return value


@dataclass(frozen=True)
class SlotPacking:
    """Signed fixed-point values, ``slots`` per Paillier plaintext, with headroom for weighted sums.

    ``frac_bits`` (``f``) and ``int_bits`` (``i``) fix the encodable range
    ``|rint(x * 2^f)| < 2^(i+f)``; ``weight_bits`` (``h``) is the headroom: any weighted sum
    with non-negative integer weights totalling at most ``2^h`` fits its slot. The slot
    width and the no-wrap argument are in the module docstring.
    """

    n: int
    frac_bits: int = DEFAULT_PACK_FRAC_BITS
    int_bits: int = DEFAULT_INT_BITS
    weight_bits: int = (DEFAULT_MAX_CLIENTS * DEFAULT_MAX_SAMPLES - 1).bit_length()

    def __post_init__(self) -> None:
        _check_int("n", self.n, 3)
        _check_int("frac_bits", self.frac_bits, 0)
        _check_int("int_bits", self.int_bits, 0)
        _check_int("weight_bits", self.weight_bits, 0)
        if self.frac_bits + self.int_bits > 62:
            raise UsageError("frac_bits + int_bits must be at most 62 (quantised values are int64)")
        if self.slots < 1:
            raise UsageError(
                f"a {self.n.bit_length()}-bit modulus cannot hold one {self.slot_bits}-bit slot"
            )

    @classmethod
    def for_clients(
        cls,
        n: int,
        *,
        max_clients: int,
        max_samples: int = 1,
        frac_bits: int = DEFAULT_PACK_FRAC_BITS,
        int_bits: int = DEFAULT_INT_BITS,
    ) -> SlotPacking:
        """Headroom for ``max_clients`` values weighted by at most ``max_samples`` each."""
        budget = _check_int("max_clients", max_clients, 1) * _check_int("max_samples", max_samples, 1)
        return cls(n, frac_bits, int_bits, (budget - 1).bit_length())

    @property
    def slot_bits(self) -> int:
        """``s = 1 + h + i + f``: sign, headroom, integer and fractional bits."""
        return 1 + self.weight_bits + self.int_bits + self.frac_bits

    @property
    def slots(self) -> int:
        """Values per plaintext: ``floor((|n| - 1) / s)``, so that ``|P| < 2^(s*k-1) <= (n-1)/2``."""
        return (self.n.bit_length() - 1) // self.slot_bits

    @property
    def max_weight(self) -> int:
        """Largest total weight ``2^h`` a sum may carry without overflowing a slot."""
        return 1 << self.weight_bits

    @property
    def limit(self) -> float:
        """Values must satisfy ``|x| < 2^i`` (more precisely ``|rint(x * 2^f)| < 2^(i+f)``)."""
        return float(1 << self.int_bits)

    def plaintexts_for(self, length: int) -> int:
        """Number of plaintexts (ciphertexts) that carry ``length`` values."""
        return -(-_check_int("length", length, 0) // self.slots)

    def error_bound(self) -> float:
        """``2^-(f+1)``: bound on the error of a decoded weighted mean (before the final float rounding)."""
        return 2.0 ** -(self.frac_bits + 1)

    def quantise(self, values: npt.ArrayLike) -> npt.NDArray[np.int64]:
        """``rint(x * 2^f)`` per value; UsageError for a non-finite or out-of-range value."""
        x = np.asarray(values, dtype=np.float64).ravel()
        if not np.all(np.isfinite(x)):
            raise UsageError("cannot encode a non-finite value")
        scaled = np.rint(x * float(1 << self.frac_bits))
        bound = float(1 << (self.int_bits + self.frac_bits))
        if scaled.size and float(np.max(np.abs(scaled))) >= bound:
            raise UsageError(
                f"value {float(np.max(np.abs(x))):.6g} is outside the encoding range "
                f"|x| < 2^{self.int_bits}; clip the update or raise int_bits"
            )
        return scaled.astype(np.int64)

    def pack(self, values: npt.ArrayLike) -> list[int]:
        """Quantise and pack: plaintext ``q`` is ``sum_j X_(q*k+j) * 2^(s*j) mod n`` (zero-padded)."""
        quantised = self.quantise(values).tolist()
        k, s = self.slots, self.slot_bits
        out: list[int] = []
        for start in range(0, len(quantised), k):
            packed = 0
            for j, v in enumerate(quantised[start : start + k]):
                packed += v << (s * j)
            out.append(packed % self.n)
        return out

    def _digits(self, residue: int) -> tuple[list[int], int]:
        """The ``k`` signed base-``2^s`` digits of the centred residue, and what is left above them."""
        rest = int(residue) % self.n
        if rest > self.n // 2:
            rest -= self.n
        s = self.slot_bits
        half, mask = 1 << (s - 1), (1 << s) - 1
        digits: list[int] = []
        for _ in range(self.slots):
            d = rest & mask
            if d >= half:
                d -= 1 << s
            digits.append(d)
            rest = (rest - d) >> s
        return digits, rest

    def unpack(self, plaintexts: Sequence[int], length: int) -> list[int]:
        """The ``length`` signed slot values of decrypted plaintexts.

        Raises :class:`~fedledger.errors.VerificationFailed` when a plaintext does not
        decompose into in-range slots or a padding slot is not zero: some contribution
        was outside the encoding range, and the sum cannot be trusted.
        """
        if len(plaintexts) != self.plaintexts_for(length):
            raise UsageError(f"{len(plaintexts)} plaintexts cannot carry exactly {length} values")
        out: list[int] = []
        for q, m in enumerate(plaintexts):
            digits, rest = self._digits(m)
            if rest:
                raise VerificationFailed(
                    f"decrypted plaintext {q} does not unpack into {self.slots} slots of "
                    f"{self.slot_bits} bits: a contribution was outside the encoding range"
                )
            out.extend(digits)
        if any(out[length:]):
            raise VerificationFailed(
                "padding slots of the decrypted sum are not zero: a contribution was "
                "outside the encoding range"
            )
        return out[:length]

    def decode(self, plaintexts: Sequence[int], length: int, weight: int = 1) -> npt.NDArray[np.float64]:
        """``S_j / (weight * 2^f)`` per slot: the weighted mean when ``weight`` is the total weight."""
        _check_int("weight", weight, 1)
        den = weight << self.frac_bits
        return np.array([v / den for v in self.unpack(plaintexts, length)], dtype=np.float64)


# --------------------------------------------------------------------------- devices' encrypted updates


@dataclass(frozen=True)
class EncryptedUpdate:
    """What a device posts (Algorithm 3): its packed ``C(g)`` with one proof per ciphertext.

    ``client`` is the sender as the transport authenticated it; the proofs are checked
    against that name, so a device cannot post ciphertexts proven by another.
    """

    client: str
    round: int
    ciphertexts: tuple[int, ...]
    proofs: tuple[PlaintextProof, ...]


class InvalidUpdate(VerificationFailed):
    """A device's encrypted update is refused; ``client`` names the device."""

    def __init__(self, client: str, reason: str) -> None:
        super().__init__(f"encrypted update of {client!r} is invalid: {reason}")
        self.client = client
        self.reason = reason


def update_context(session: str, client: str, round_: int, index: int) -> bytes:
    """The context a device's proof for ciphertext ``index`` is bound to.

    It names the aggregation ``session`` (e.g. the edge), the device, the round and the
    ciphertext's position, length-prefixed so that no two tuples encode alike: a proof
    is valid for one device, one round, one aggregator and one position only.
    """
    if not isinstance(session, str) or not isinstance(client, str):
        raise UsageError("session and client must be strings")
    _check_int("round", round_, 0)
    _check_int("index", index, 0)
    parts = [
        b"fedledger/paillier-agg/update/v1",
        session.encode(),
        client.encode(),
        round_.to_bytes(8, "big"),
        index.to_bytes(8, "big"),
    ]
    return b"".join(len(p).to_bytes(4, "big") + p for p in parts)


def encrypt_update(
    pk: PaillierPublicKey,
    packing: SlotPacking,
    values: npt.ArrayLike,
    *,
    session: str,
    client: str,
    round_: int,
) -> EncryptedUpdate:
    """The device side: pack ``values``, encrypt each plaintext and prove knowledge of it."""
    if packing.n != pk.n:
        raise UsageError("packing modulus differs from the public key")
    ciphertexts: list[int] = []
    proofs: list[PlaintextProof] = []
    for q, m in enumerate(packing.pack(values)):
        c, proof = paillier.encrypt_proven(pk, m, update_context(session, client, round_, q))
        ciphertexts.append(c)
        proofs.append(proof)
    return EncryptedUpdate(client, round_, tuple(ciphertexts), tuple(proofs))


def verify_update(
    pk: PaillierPublicKey, update: EncryptedUpdate, *, session: str, round_: int, count: int
) -> None:
    """``fsver_1`` over a whole posting: raise :class:`InvalidUpdate` naming the device on any fault.

    ``count`` is the number of ciphertexts the model needs. Every proof is checked
    against the context of ``update.client``, this ``round_`` and this ``session``.
    """
    who = update.client
    if update.round != round_:
        raise InvalidUpdate(who, f"posted for round {update.round}, not {round_}")
    if len(update.ciphertexts) != count or len(update.proofs) != count:
        raise InvalidUpdate(
            who, f"{len(update.ciphertexts)} ciphertexts and {len(update.proofs)} proofs, {count} expected"
        )
    for q, (c, proof) in enumerate(zip(update.ciphertexts, update.proofs, strict=True)):
        try:
            paillier.verify_plaintext_proof(pk, c, proof, update_context(session, who, round_, q))
        except paillier.InvalidPlaintextProof as exc:
            raise InvalidUpdate(who, f"ciphertext {q}: {exc}") from None


def weighted_sum(
    pk: PaillierPublicKey, ciphertexts: Sequence[Sequence[int]], weights: Sequence[int]
) -> list[int]:
    """``prod_k C_k^(a_k)`` per position: an encryption of ``sum_k a_k P_k`` (weights are public)."""
    if not ciphertexts or len(ciphertexts) != len(weights):
        raise UsageError("need one weight per ciphertext vector, and at least one vector")
    for a in weights:
        _check_int("weight", a, 0)
    width = len(ciphertexts[0])
    if any(len(v) != width for v in ciphertexts):
        raise UsageError("ciphertext vectors differ in length")
    out: list[int] = []
    for q in range(width):
        acc = paillier.scalar_mul(pk, ciphertexts[0][q], weights[0])
        for vec, a in zip(ciphertexts[1:], weights[1:], strict=True):
            acc = paillier.add(pk, acc, paillier.scalar_mul(pk, vec[q], a))
        out.append(acc)
    return out


# --------------------------------------------------------------------------- the strategy


@dataclass(frozen=True)
class PaillierBehaviour:
    """Deviations from the protocol, for attack tests (empty: everyone honest).

    ``bad_proofs``: devices that change their ciphertexts after proving them (they add
    an encryption of a poison value), so the posted proofs do not match.
    ``replayed``: device → victim; the device posts the victim's ciphertexts and proofs
    as its own.
    ``forged_shares``: key holders (1-based indices) whose decryption shares are made
    with a wrong secret.
    ``offline``: key holders who post no decryption shares.
    """

    bad_proofs: Sequence[str] = ()
    replayed: Mapping[str, str] = field(default_factory=dict)
    forged_shares: Sequence[int] = ()
    offline: Sequence[int] = ()


class PaillierAggregation(StrategyWrapper):
    """Seed 003's encrypted gradient collection at one aggregator (see the module docstring).

    ``keys``: the threshold key ``(pk, key_shares)`` of the key holders; without it a
    trusted dealer makes a fresh ``threshold``-of-``key_holders`` key of ``key_bits`` bits
    (below 2048 only with ``insecure_for_tests=True``). ``threshold`` defaults to the
    key's, or a majority of ``key_holders``. ``frac_bits``, ``int_bits``, ``max_clients``
    and ``max_samples`` fix the :class:`SlotPacking`. ``weighting``: ``"samples"``
    (FedAvg) or ``"uniform"``. ``session`` names the aggregator in every proof context.

    In this in-memory form the wrapper plays the devices (encrypt and prove) and the
    key holders (proven decryption shares) itself; in a deployment each keeps its own
    secret and posts the same objects (:class:`EncryptedUpdate`, :class:`SharePosting`).
    A device whose update cannot be encoded (layout mismatch, non-finite or
    ``|g| >= 2^int_bits``) is rejected like one whose proofs fail.
    """

    def __init__(
        self,
        inner: Strategy | None = None,
        *,
        keys: tuple[PaillierPublicKey, Sequence[KeyShare]] | None = None,
        threshold: int | None = None,
        key_holders: int = 3,
        key_bits: int = paillier.DEFAULT_MODULUS_BITS,
        insecure_for_tests: bool = False,
        frac_bits: int = DEFAULT_PACK_FRAC_BITS,
        int_bits: int = DEFAULT_INT_BITS,
        max_clients: int = DEFAULT_MAX_CLIENTS,
        max_samples: int = DEFAULT_MAX_SAMPLES,
        weighting: str = "samples",
        session: str = "edge",
        behaviour: PaillierBehaviour | None = None,
    ) -> None:
        super().__init__(inner if inner is not None else FedAvg())
        if weighting not in ("samples", "uniform"):
            raise UsageError(f"weighting must be 'samples' or 'uniform', got {weighting!r}")
        self.pk, self.key_shares = _resolve_keys(keys, threshold, key_holders, key_bits, insecure_for_tests)
        self.max_clients = _check_int("max_clients", max_clients, 1)
        self.max_samples = _check_int("max_samples", max_samples, 1) if weighting == "samples" else 1
        self.packing = SlotPacking.for_clients(
            self.pk.n, max_clients=self.max_clients, max_samples=self.max_samples,
            frac_bits=frac_bits, int_bits=int_bits,
        )
        self.weighting = weighting
        self.session = session
        self.behaviour = behaviour or PaillierBehaviour()
        self._global: dict[int, Weights] = {}

    @property
    def threshold(self) -> int:
        """Decryption shares needed to open the sum (``t`` of the key)."""
        return self.pk.threshold

    def configure(self, round_: int, weights: Weights, clients: Sequence[str]) -> list[TrainIns]:
        self._global[round_] = weights
        return self.inner.configure(round_, weights, clients)

    def aggregate(
        self, round_: int, results: Sequence[TrainRes], failures: Sequence[Failure]
    ) -> Aggregate:
        """Steps 1-6 of the module docstring; the model is ``w_global`` plus the decrypted weighted mean."""
        if round_ not in self._global:
            raise UsageError(f"{self.session}: round {round_} was never configured, so its global model is unknown")
        ordered = self._check_results(round_, results)
        base = self._global[round_]
        g0 = flat(base)
        rejected: dict[str, str] = {}
        posted = self._device_posts(round_, self._updates(ordered, base, g0, rejected))
        accepted = self._verified(round_, ordered, posted, rejected, self.packing.plaintexts_for(g0.size))
        weights = self._weights(round_, accepted)
        enc_sum = weighted_sum(self.pk, [posted[r.client].ciphertexts for r in accepted], weights)
        opened = collaborative_decrypt(self.pk, enc_sum, self._key_holder_posts(enc_sum))
        mean = self.packing.decode(opened.plaintexts, g0.size, sum(weights))
        del self._global[round_]
        used = tuple(r.client for r in accepted)
        metrics: dict[str, Any] = {
            "results": len(used),
            "failures": len(failures),
            "rejected": sorted(rejected),
            "rejected_reasons": dict(sorted(rejected.items())),
            "key_holders_rejected": list(opened.invalid),
            "decrypted_by": list(opened.used),
            "paillier_ciphertexts": len(enc_sum),
            "paillier_slots": self.packing.slots,
            "paillier_slot_bits": self.packing.slot_bits,
            "paillier_frac_bits": self.packing.frac_bits,
            "paillier_weight": sum(weights),
            "paillier_error_bound": self.packing.error_bound(),
        }
        samples = sum(r.num_samples for r in accepted)
        return Aggregate(unflat(g0 + mean, base), samples, metrics, used)

    # ----------------------------------------------------------------- steps of a round

    def _check_results(self, round_: int, results: Sequence[TrainRes]) -> list[TrainRes]:
        """Results in client-name order (FedAvg's canonical order); duplicates and empty weights refused."""
        if not results:
            raise NotEnoughResults(f"round {round_}: no results to aggregate")
        ordered = sorted(results, key=lambda r: r.client)
        names = [r.client for r in ordered]
        if len(set(names)) != len(names):
            raise VerificationFailed(f"round {round_}: more than one result from a client")
        for r in ordered:
            if isinstance(r.num_samples, bool) or not isinstance(r.num_samples, int) or r.num_samples < 1:
                raise VerificationFailed(f"round {round_}: result of {r.client!r} reports no samples")
        return ordered

    def _verified(
        self, round_: int, ordered: Sequence[TrainRes], posted: Mapping[str, EncryptedUpdate],
        rejected: dict[str, str], count: int,
    ) -> list[TrainRes]:
        """The results whose posting (``count`` ciphertexts) passes :func:`verify_update`.

        The others go to ``rejected``. Raises :class:`NotEnoughResults` (listing the
        rejections) when fewer than the inner strategy's ``min_results`` remain.
        """
        accepted: list[TrainRes] = []
        for r in ordered:
            if r.client not in posted:
                continue
            try:
                verify_update(self.pk, posted[r.client], session=self.session, round_=round_, count=count)
            except InvalidUpdate as exc:
                rejected[r.client] = exc.reason
                continue
            accepted.append(r)
        min_results = max(1, getattr(self.inner, "min_results", 1))
        if len(accepted) < min_results:
            shown = "; ".join(f"{c}: {why}" for c, why in sorted(rejected.items()))
            raise NotEnoughResults(
                f"round {round_}: {len(accepted)} accepted encrypted updates, at least "
                f"{min_results} needed (rejected: {shown or 'none'})"
            )
        return accepted

    def _weights(self, round_: int, accepted: Sequence[TrainRes]) -> list[int]:
        """The public weights ``a_k``; UsageError when they exceed the packing's headroom."""
        weights = [r.num_samples if self.weighting == "samples" else 1 for r in accepted]
        total = sum(weights)
        if total > self.packing.max_weight or len(accepted) > self.max_clients:
            raise UsageError(
                f"round {round_}: {len(accepted)} results of total weight {total} exceed the packing's "
                f"headroom ({self.max_clients} clients, weight {self.packing.max_weight}); "
                "raise max_clients or max_samples"
            )
        return weights

    def _updates(
        self, ordered: Sequence[TrainRes], base: Weights, g0: npt.NDArray[np.float64],
        rejected: dict[str, str],
    ) -> dict[str, npt.NDArray[np.float64]]:
        """``g = w - w_global`` per device; a device whose weights cannot be encoded is rejected."""
        out: dict[str, npt.NDArray[np.float64]] = {}
        for r in ordered:
            problem = layout_problem(r.weights, base)
            if problem is not None:
                rejected[r.client] = problem
                continue
            try:
                g = flat(r.weights) - g0
                self.packing.quantise(g)
            except (ValueError, UsageError) as exc:
                rejected[r.client] = str(exc)
                continue
            out[r.client] = g
        return out

    def _device_posts(
        self, round_: int, updates: Mapping[str, npt.NDArray[np.float64]]
    ) -> dict[str, EncryptedUpdate]:
        """What each device posts: an honest :func:`encrypt_update`, or the deviation of ``behaviour``."""
        posts = {
            name: encrypt_update(self.pk, self.packing, g, session=self.session, client=name, round_=round_)
            for name, g in updates.items()
        }
        bad = self.behaviour
        for name in bad.bad_proofs:
            if name in posts:
                posts[name] = _poisoned(self.pk, posts[name])
        for name, victim in bad.replayed.items():
            if name in posts and victim in posts:
                v = posts[victim]
                posts[name] = EncryptedUpdate(name, round_, v.ciphertexts, v.proofs)
        return posts

    def _key_holder_posts(self, ciphertexts: Sequence[int]) -> list[SharePosting]:
        """Every online key holder's proven decryption shares (forged ones per ``behaviour``)."""
        posts: list[SharePosting] = []
        for key in self.key_shares:
            if key.index in self.behaviour.offline:
                continue
            if key.index in self.behaviour.forged_shares:
                key = KeyShare(key.index, key.secret + 1)
            posts.append(post_decryption_shares(self.pk, key, ciphertexts))
        return posts


def _poisoned(pk: PaillierPublicKey, post: EncryptedUpdate) -> EncryptedUpdate:
    """``post`` with a poison value added to every ciphertext after the proofs were made."""
    shifted = tuple(paillier.add(pk, c, paillier.encrypt(pk, 1 << 40)) for c in post.ciphertexts)
    return EncryptedUpdate(post.client, post.round, shifted, post.proofs)


def _resolve_keys(
    keys: tuple[PaillierPublicKey, Sequence[KeyShare]] | None,
    threshold: int | None,
    key_holders: int,
    key_bits: int,
    insecure_for_tests: bool,
) -> tuple[PaillierPublicKey, tuple[KeyShare, ...]]:
    """The given key material (checked against ``threshold``) or a fresh trusted-dealer key."""
    if keys is None:
        _check_int("key_holders", key_holders, 1)
        t = key_holders // 2 + 1 if threshold is None else threshold
        fresh = paillier.generate_keys(
            key_bits, parties=key_holders, threshold=t, insecure_for_tests=insecure_for_tests
        )
        return fresh[0], tuple(fresh[1])
    pk, shares = keys
    if not isinstance(pk, PaillierPublicKey):
        raise UsageError("keys must be (PaillierPublicKey, key shares)")
    if threshold is not None and threshold != pk.threshold:
        raise UsageError(f"threshold {threshold} differs from the key's threshold {pk.threshold}")
    indices = [k.index for k in shares]
    if not all(isinstance(k, KeyShare) for k in shares) or len(set(indices)) != len(indices):
        raise UsageError("key shares must be distinct KeyShare objects")
    if any(not 1 <= i <= pk.parties for i in indices):
        raise UsageError(f"key share indices must be in 1..{pk.parties}")
    return pk, tuple(sorted(shares, key=lambda k: k.index))
