"""Seed 001's verifiable collaborative learning, one pure step per function.

The parties and their steps (seed 001 §III, "Working Principle"):

1. **Local training** (:func:`deal`). Device ``D_ij`` with update ``g`` draws its
   DP noise η and a hiding pad ``p`` from ``noise_key`` — in a deployment the
   device's VRF output on the round's on-chain randomness, so the device cannot
   choose η, the edge cannot predict it, and an auditor shown the VRF proof can
   recompute it (:func:`noise_vectors`). It shares the secret ``x = (g ‖ p)``
   with every participant and sends the edge a :class:`Packet`: the masked
   update ``g + η``, the digest of its noise vector ``y = (η ‖ −p)`` and the
   digest of each share. Sharing happens before the edge's check so that every
   vector is bound by a digest before the challenge exists (see
   :mod:`fedledger.fl.secagg.sketch`).
2. **Challenge** (:func:`round_challenge`): Fiat–Shamir over all packets, which
   fixes the sketch matrix ``R``. Each device then sends :class:`Sketches`:
   ``COM(a_k) = R·a_k`` for its polynomial's coefficients (``a_0 = x``, so
   ``COM(a_0) = COM(g)``) and ``COM(η) = R·y``.
3. **Verification by fog** (:func:`check_packet`, :func:`accept`). The edge
   checks ``COM(g + η) = COM(g) · COM(η)`` (additively: ``R·(m ‖ 0) = COM(a_0) +
   COM(y)``) and discards inconsistent packets, keeps the top ``n`` masked
   updates by mean and standard deviation, and signs the accepted commitments
   (:class:`Acceptance`).
4. **Secret sharing** (:func:`share_sum`). Each participant verifies the
   edge's signature, checks each accepted dealer's share against the digest
   and the sketches (the witness: ``R·f(x_j) = Σ_k x_j^k COM(a_k)``), adds the
   shares into ``S_Dj`` (weighted by the public sample counts) and records
   ``H(S_Dj)``. A share that fails yields a :class:`Complaint` that anyone can
   check (:func:`check_complaint`); its dealer is penalised and excluded.
5. **Computation by fog** (:func:`reconstruct`). The edge checks each share
   sum against its recorded hash and its expected sketch (which identifies a
   participant that sent a wrong sum), and reconstructs ``c_i`` from any ``t``
   valid ones: up to ``n − t`` participants may drop out.
6. **Aggregation and result verification** (:func:`cloud_sum`,
   :func:`verify_cloud_sum`). The cloud adds the edges' sums. After it has
   committed to ``H(c)``, a second challenge fixes ``R'``; each edge records
   ``COM(c_i) = R'·c_i`` and checks ``COM(c) = Σ_i COM(c_i)``. A forged sum
   fails at every edge.

Everything here is deterministic given its inputs and touches no network,
clock or chain; :mod:`fedledger.fl.secagg.session` runs the steps for a set
of parties and records what seed 001 puts on chain.
"""

from __future__ import annotations

import functools
import hashlib
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import blake3
import numpy as np

from fedledger.crypto.keys import SigningKey, is_valid
from fedledger.errors import UsageError, VerificationFailed
from fedledger.fl.secagg import shamir
from fedledger.fl.secagg.field import (
    BLOCK,
    HALF,
    Q,
    add_into,
    capacity,
    decode,
    dot_mod,
    encode_into,
    neg,
    to_bytes,
)
from fedledger.fl.secagg.prg import normal_blocks, standard_normal, uniform_field
from fedledger.fl.secagg.sketch import ROWS, SketchMatrix, challenge_seed, poly_at

ACCEPT_DOMAIN = "secagg-accept"


def digest(v: np.ndarray) -> bytes:
    """BLAKE3-256 of a field vector's wire form: what binds it before the challenge.

    BLAKE3 (the reference implementation's binding) rather than SHA-256 because
    every share of every update is hashed twice per round, by its dealer and by
    its receiver; it is about five times faster here at the same 128-bit
    collision resistance.
    """
    if v.dtype == np.dtype("<u4") and v.flags.c_contiguous:
        return blake3.blake3(v.view(np.uint8).data).digest()
    if v.ndim != 1:
        return blake3.blake3(to_bytes(v)).digest()
    h = blake3.blake3()
    for start in range(0, v.shape[0], BLOCK):  # the wire form a block at a time: no full-size copy
        h.update(to_bytes(v[start:start + BLOCK]))
    return h.digest()


@dataclass(frozen=True)
class Params:
    """Public parameters of one secure-aggregation round.

    ``threshold`` t: share sums needed to reconstruct (tolerates n − t dropouts).
    ``noise_sigma``: standard deviation of η per coordinate (0: no masking noise).
    ``keep``: seed 001's top-n filter (None keeps every consistent packet).
    ``weight_budget``: upper bound on the total weight summed in the field
    (across all edges), which fixes the largest encodable update coordinate.
    """

    threshold: int
    frac_bits: int = 16
    noise_sigma: float = 0.0
    keep: int | None = None
    weight_budget: int = 1 << 12
    rows: int = ROWS

    def __post_init__(self) -> None:
        if isinstance(self.threshold, bool) or not isinstance(self.threshold, int) or self.threshold < 1:
            raise UsageError(f"threshold must be an int >= 1, got {self.threshold!r}")
        if not (math.isfinite(self.noise_sigma) and self.noise_sigma >= 0):
            raise UsageError(f"noise_sigma must be finite and >= 0, got {self.noise_sigma!r}")
        if self.keep is not None and self.keep < 1:
            raise UsageError(f"keep must be >= 1, got {self.keep!r}")
        if self.weight_budget < 1:
            raise UsageError(f"weight_budget must be >= 1, got {self.weight_budget!r}")

    @property
    def limit(self) -> float:
        """Largest |coordinate| a device may encode so that no sum can wrap."""
        return capacity(self.frac_bits) / self.weight_budget


def threshold_of(fraction: float, participants: int) -> int:
    """t = ⌈fraction · n⌉ (at least 1), exact for decimal fractions: 0.28 · 25 gives 7, not 8."""
    from fractions import Fraction

    if not 0 < float(fraction) <= 1:
        raise UsageError(f"threshold fraction must be in (0, 1], got {fraction!r}")
    return max(1, math.ceil(Fraction(str(fraction)) * participants))


@dataclass(frozen=True, eq=False)
class Packet:
    """Device → edge, step 1: ``(g + η, COM-binding of η, binding of each share)``."""

    device: str
    point: int
    weight: int
    masked: np.ndarray
    noise_digest: bytes
    share_digests: tuple[bytes, ...]

    @functools.cached_property
    def _digest(self) -> bytes:
        h = hashlib.sha256(b"fedledger/secagg-packet\x00")
        h.update(self.device.encode() + b"\x00")
        h.update(self.point.to_bytes(8, "big") + self.weight.to_bytes(8, "big"))
        h.update(digest(self.masked) + self.noise_digest + b"".join(self.share_digests))
        return h.digest()

    def digest(self) -> bytes:
        """What the challenge and the edge's signature bind (computed once)."""
        return self._digest


@dataclass(frozen=True, eq=False)
class Dealing:
    """What a device keeps private after step 1: its secret, noise vector and shares."""

    secret: np.ndarray
    noise: np.ndarray
    coeffs: np.ndarray
    shares: np.ndarray


@dataclass(frozen=True, eq=False)
class Sketches:
    """Device → edge, step 2: ``COM(a_k)`` for k = 0..t−1 (``(t, rows)``) and ``COM(η ‖ −p)``."""

    device: str
    coeffs: np.ndarray
    noise: np.ndarray

    def digest(self) -> bytes:
        return hashlib.sha256(to_bytes(self.coeffs.ravel()) + to_bytes(self.noise)).digest()


@dataclass(frozen=True, eq=False)
class Acceptance:
    """Edge-signed result of step 3: which dealers' commitments were accepted."""

    context: bytes
    challenge: bytes
    accepted: tuple[str, ...]
    weights: tuple[int, ...]
    commitments: tuple[bytes, ...]  # per accepted dealer: packet digest ‖ sketches digest
    rejected: tuple[tuple[str, str], ...]
    edge_key: bytes
    signature: bytes

    def message(self) -> bytes:
        return acceptance_message(self.context, self.challenge, self.accepted, self.weights,
                                  self.commitments)


def acceptance_message(context: bytes, challenge: bytes, accepted: Sequence[str],
                       weights: Sequence[int], commitments: Sequence[bytes]) -> bytes:
    h = hashlib.sha256(context + challenge)
    for name, w, c in zip(accepted, weights, commitments, strict=True):
        h.update(name.encode() + b"\x00" + int(w).to_bytes(8, "big") + c)
    return h.digest()


@dataclass(frozen=True, eq=False)
class Complaint:
    """A participant's evidence that ``dealer``'s share at ``point`` does not match its sketches."""

    accuser: str
    dealer: str
    point: int
    share: np.ndarray
    reason: str


# -- step 1: local training ---------------------------------------------------------------


def noise_vectors(noise_key: bytes, params: Params, length: int) -> tuple[np.ndarray, np.ndarray]:
    """η (float, length ``length``) and the pad ``p`` (field, ``params.rows``) from ``noise_key``."""
    eta = params.noise_sigma * standard_normal(noise_key, "dp-noise", length) if params.noise_sigma \
        else np.zeros(length)
    pad = uniform_field(noise_key, "hiding-pad", (params.rows,))
    return eta, pad


def deal(device: str, update: np.ndarray, weight: int, *, params: Params, points: Mapping[str, int],
         noise_key: bytes, share_key: bytes) -> tuple[Packet, Dealing]:
    """Step 1: mask, bind and share ``update`` (a float vector) for every participant in ``points``."""
    if device not in points:
        raise UsageError(f"{device!r} is not a participant of the round")
    if isinstance(weight, bool) or not isinstance(weight, int) or weight < 1:
        raise UsageError(f"{device}: weight must be an int >= 1, got {weight!r}")
    secret, noise, masked = _mask(np.asarray(update, dtype=np.float64), noise_key, params)
    order = sorted(points, key=lambda n: points[n])
    coeffs = shamir.coefficients(share_key, params.threshold, secret.shape[0])
    shares = shamir.evaluate(secret, coeffs, [points[n] for n in order])
    packet = Packet(device, points[device], weight, masked, digest(noise),
                    tuple(digest(s) for s in shares))
    return packet, Dealing(secret, noise, coeffs, shares)


def _mask(update: np.ndarray, noise_key: bytes, params: Params) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(x = g ‖ p, y = η ‖ −p, g + η)``, each encoded straight into its final buffer.

    The three share one allocation: fresh memory costs a page fault per page,
    and one large block is mapped in fewer, larger pages than three smaller ones.
    """
    if update.ndim != 1:
        raise UsageError(f"an update is a vector, got shape {update.shape}")
    d = update.shape[0]
    secret, noise, masked = np.empty((3, d + params.rows), dtype=np.int64)
    encode_into(update, params.frac_bits, secret[:d], params.limit)
    _encode_noise(noise_key, params, noise[:d])
    pad = uniform_field(noise_key, "hiding-pad", (params.rows,))
    secret[d:] = pad
    noise[d:] = neg(pad)
    return secret, noise, add_into(secret[:d], noise[:d], masked[:d])


def _encode_noise(noise_key: bytes, params: Params, out: np.ndarray) -> None:
    """``encode(η)`` of :func:`noise_vectors` into ``out``, drawn and encoded a block at a time."""
    if not params.noise_sigma:
        out[:] = 0
        return
    try:
        for start, z in normal_blocks(noise_key, "dp-noise", out.shape[0]):
            encode_into(params.noise_sigma * z, params.frac_bits, out[start:start + z.size])
    except UsageError:  # out of range: report it as the whole-vector encoding does
        encode_into(noise_vectors(noise_key, params, out.shape[0])[0], params.frac_bits, out)
        raise


# -- step 2: challenge and sketches ---------------------------------------------------------


def round_challenge(context: bytes, packets: Sequence[Packet]) -> bytes:
    """Fiat–Shamir seed of ``R``: every packet of the round, in point order, is bound first."""
    ordered = sorted(packets, key=lambda p: p.point)
    return challenge_seed("round", context, *(p.digest() for p in ordered))


def sketch_dealing(device: str, dealing: Dealing, matrix: SketchMatrix) -> Sketches:
    """Step 2: ``COM(a_0 = g ‖ p), COM(a_1) … COM(a_{t−1})`` and ``COM(η ‖ −p)``."""
    sk = matrix.apply_groups([dealing.secret[None, :], dealing.coeffs, dealing.noise[None, :]])
    return Sketches(device, sk[:-1], sk[-1])


# -- step 3: verification by fog ------------------------------------------------------------


def check_packet(packet: Packet, sketches: Sketches | None, matrix: SketchMatrix, params: Params,
                 participants: int, *, masked_sketch: np.ndarray | None = None) -> str | None:
    """Why the edge must discard ``packet`` (None if it is consistent).

    ``masked_sketch`` is ``R·(m ‖ 0)`` if already computed (:func:`accept` sketches
    every packet's masked update in one pass over ``R``).
    """
    reason = _packet_shape(packet, sketches, matrix, params, participants)
    if reason is not None or sketches is None:
        return reason
    lhs = matrix.apply(packet.masked) if masked_sketch is None else masked_sketch
    if not np.array_equal(lhs, (sketches.coeffs[0] + sketches.noise) % Q):
        return "COM(g + η) != COM(g) · COM(η)"
    return None


def _packet_shape(packet: Packet, sketches: Sketches | None, matrix: SketchMatrix, params: Params,
                  participants: int) -> str | None:
    """The checks of :func:`check_packet` that need no sketch of the masked update."""
    if sketches is None:
        return "sent no sketches after the challenge"
    if sketches.coeffs.shape != (params.threshold, matrix.rows) or sketches.noise.shape != (matrix.rows,):
        return "sketches have the wrong shape"
    if len(packet.share_digests) != participants:
        return f"bound {len(packet.share_digests)} shares for {participants} participants"
    if packet.masked.ndim != 1 or packet.masked.shape[0] + matrix.rows != matrix.length:
        return "masked update has the wrong length"
    return None


Selector = Callable[[np.ndarray], np.ndarray]
"""Chooses rows of the masked updates (``(n, D)`` floats) to keep: indices, ascending."""


def accept(key: SigningKey, context: bytes, challenge: bytes, packets: Sequence[Packet],
           sketches: Mapping[str, Sketches], matrix: SketchMatrix, params: Params,
           participants: int, select: Selector | None = None) -> Acceptance:
    """Step 3: check every packet, keep the top ``params.keep`` by mean/std, sign the result.

    ``select`` replaces seed 001's filter by another plaintext rule (Krum,
    Multi-Krum …) applied to the masked updates the edge sees.
    """
    from fedledger.fl.robust import statistical_top_n

    rejected: list[tuple[str, str]] = []
    ok: list[Packet] = []
    ordered = sorted(packets, key=lambda p: p.point)
    well_formed = [p for p in ordered if _packet_shape(p, sketches.get(p.device), matrix, params, participants) is None]
    lhs = dict(zip((p.device for p in well_formed), _sketch_vectors([p.masked for p in well_formed], matrix),
                   strict=True))
    for p in ordered:
        reason = check_packet(p, sketches.get(p.device), matrix, params, participants,
                              masked_sketch=lhs.get(p.device))
        if reason is None:
            ok.append(p)
        else:
            rejected.append((p.device, reason))
    rule = None
    if select is not None and ok:
        rule, why = select, "not selected by the edge's robust rule"
    elif params.keep is not None and len(ok) > params.keep:
        keep = params.keep

        def rule(u: np.ndarray) -> np.ndarray:
            return statistical_top_n(u, keep)

        why = "outside the top n by mean and standard deviation"
    if rule is not None:
        masked = np.vstack([decode(p.masked, params.frac_bits) for p in ok])
        kept = {int(i) for i in rule(masked)}
        rejected += [(p.device, why) for i, p in enumerate(ok) if i not in kept]
        ok = [p for i, p in enumerate(ok) if i in kept]
    names = tuple(p.device for p in ok)
    weights = tuple(p.weight for p in ok)
    commitments = tuple(p.digest() + sketches[p.device].digest() for p in ok)
    sig = key.sign(ACCEPT_DOMAIN, acceptance_message(context, challenge, names, weights, commitments))
    return Acceptance(context, challenge, names, weights, commitments, tuple(rejected),
                      key.public_key, sig)


def exclude(acc: Acceptance, key: SigningKey, guilty: Mapping[str, str]) -> Acceptance:
    """The acceptance re-signed without the dealers in ``guilty`` (name → reason), which join ``rejected``.

    What the edge signs after complaints prove dealers wrong (step 4), so the sharing repeats without them.
    """
    keep = [i for i, d in enumerate(acc.accepted) if d not in guilty]
    names = tuple(acc.accepted[i] for i in keep)
    weights = tuple(acc.weights[i] for i in keep)
    comms = tuple(acc.commitments[i] for i in keep)
    sig = key.sign(ACCEPT_DOMAIN, acceptance_message(acc.context, acc.challenge, names, weights, comms))
    return Acceptance(acc.context, acc.challenge, names, weights, comms, acc.rejected + tuple(guilty.items()),
                      key.public_key, sig)


def check_acceptance(acc: Acceptance, edge_key: bytes, packets: Mapping[str, Packet],
                     sketches: Mapping[str, Sketches]) -> None:
    """A participant's check of the edge's signature and of the signed commitments."""
    if acc.edge_key != edge_key or not is_valid(edge_key, ACCEPT_DOMAIN, acc.message(), acc.signature):
        raise VerificationFailed("the acceptance is not signed by the edge")
    for name, c in zip(acc.accepted, acc.commitments, strict=True):
        if name not in packets or name not in sketches:
            raise VerificationFailed(f"accepted dealer {name} has no packet or sketches")
        if packets[name].digest() + sketches[name].digest() != c:
            raise VerificationFailed(f"dealer {name}'s commitments differ from what the edge signed")


# -- step 4: secret sharing -------------------------------------------------------------------


def share_ok(share: np.ndarray, packet: Packet, sketches: Sketches, index: int, point: int,
             matrix: SketchMatrix) -> str | None:
    """Why ``share`` (for the participant at ``point``, ``index`` in point order) is bad, or None."""
    if share.shape != (matrix.length,):
        return "share has the wrong length"
    if digest(share) != packet.share_digests[index]:
        return "share does not match the digest the dealer bound"
    if not np.array_equal(matrix.apply(share), poly_at(sketches.coeffs, point)):
        return "share does not match the dealer's committed polynomial"
    return None


def check_complaint(c: Complaint, packet: Packet, sketches: Sketches, index: int,
                    matrix: SketchMatrix) -> bool:
    """True if the complaint proves its dealer misbehaved (a share bound by the dealer that fails)."""
    if c.share.shape != (matrix.length,) or digest(c.share) != packet.share_digests[index]:
        return False  # not the share the dealer bound: the accuser's evidence is worthless
    return not np.array_equal(matrix.apply(c.share), poly_at(sketches.coeffs, c.point))


def weighted_sum(rows: Sequence[np.ndarray], weights: Sequence[int]) -> np.ndarray:
    """``Σ w_i · rows_i mod Q``."""
    if len(rows) != len(weights):
        raise UsageError(f"{len(weights)} weights for {len(rows)} vectors")
    return dot_mod(np.array([int(w) % Q for w in weights], dtype=np.int64), rows)


def expected_sum_sketch(acc: Acceptance, sketches: Mapping[str, Sketches], point: int) -> np.ndarray:
    """The sketch a correct share sum at ``point`` must have: ``Σ_i w_i Σ_k x^k COM(a_ik)``."""
    total = np.zeros(next(iter(sketches.values())).coeffs.shape[1], dtype=np.int64)
    for name, w in zip(acc.accepted, acc.weights, strict=True):
        total = (total + w * poly_at(sketches[name].coeffs, point)) % Q
    return total


def share_sum(me: str, point: int, index: int, acc: Acceptance, received: Mapping[str, np.ndarray],
              packets: Mapping[str, Packet], sketches: Mapping[str, Sketches],
              matrix: SketchMatrix) -> tuple[np.ndarray | None, list[Complaint]]:
    """Step 4 at the participant ``me``: ``S_Dj`` over the accepted dealers, or complaints.

    The cheap path checks the sum's sketch once; only if it fails is every
    share checked on its own, to name the dealers at fault.
    """
    missing = [d for d in acc.accepted if d not in received]
    complaints = [Complaint(me, d, point, np.zeros(0, dtype=np.int64), "no share received")
                  for d in missing]
    if missing:
        return None, complaints
    rows = [received[d] for d in acc.accepted]
    if any(r.shape != (matrix.length,) for r in rows):
        bad = [d for d in acc.accepted if received[d].shape != (matrix.length,)]
        return None, [Complaint(me, d, point, received[d], "share has the wrong length") for d in bad]
    total = weighted_sum(rows, acc.weights)
    if np.array_equal(matrix.apply(total), expected_sum_sketch(acc, sketches, point)) and all(
            digest(received[d]) == packets[d].share_digests[index] for d in acc.accepted):
        return total, []
    for d in acc.accepted:
        reason = share_ok(received[d], packets[d], sketches[d], index, point, matrix)
        if reason is not None:
            complaints.append(Complaint(me, d, point, received[d], reason))
    return (None, complaints) if complaints else (total, [])


# -- step 5: computation by fog -------------------------------------------------------------


def reconstruct(acc: Acceptance, sums: Mapping[int, np.ndarray], recorded: Mapping[int, bytes],
                sketches: Mapping[str, Sketches], matrix: SketchMatrix,
                params: Params) -> tuple[np.ndarray, list[tuple[int, str]]]:
    """Step 5: ``c_i`` (field vector, pad removed) from any ``t`` valid share sums.

    ``sums`` maps evaluation points to the share sums received, ``recorded`` to
    the hashes recorded on chain. Returns ``c_i`` and the points whose sums were
    refused, with the reason (the participant there is to be penalised).
    """
    bad: list[tuple[int, str]] = []
    good: list[int] = []
    hashed = [p for p in sorted(sums) if recorded.get(p) == digest(sums[p])]
    coms = dict(zip(hashed, _sketch_vectors([sums[p] for p in hashed], matrix), strict=True))
    for point in sorted(sums):
        if point not in coms:
            bad.append((point, "share sum does not match the hash recorded on chain"))
        elif not np.array_equal(coms[point], expected_sum_sketch(acc, sketches, point)):
            bad.append((point, "share sum does not match the accepted commitments"))
        else:
            good.append(point)
    if len(good) < params.threshold:
        raise VerificationFailed(
            f"{len(good)} valid share sums, reconstruction needs t = {params.threshold}"
            + (f" ({len(bad)} refused)" if bad else ""))
    chosen = good[:params.threshold]
    full = shamir.reconstruct(chosen, [sums[p] for p in chosen], params.threshold)
    return full[: matrix.length - matrix.rows], bad


def _sketch_vectors(vectors: Sequence[np.ndarray], matrix: SketchMatrix) -> list[np.ndarray]:
    """``R·v`` for each vector: one pass over ``R`` for all vectors of the commonest length, the rest one by one."""
    lengths = [v.shape[0] if v.ndim == 1 else -1 for v in vectors]
    common = max(set(lengths), key=lengths.count) if vectors else -1
    batch = iter(matrix.apply_groups([v[None, :] for v, n in zip(vectors, lengths, strict=True) if n == common])
                 if common >= 0 else [])
    return [next(batch) if n == common else matrix.apply(v) for v, n in zip(vectors, lengths, strict=True)]


# -- step 6: aggregation and result verification -------------------------------------------


def cloud_sum(edge_sums: Sequence[np.ndarray]) -> np.ndarray:
    """The cloud's ``c = Σ c_i mod Q``."""
    return weighted_sum(list(edge_sums), [1] * len(edge_sums))


def result_challenge(context: bytes, edge_digests: Sequence[bytes], total_digest: bytes) -> bytes:
    """Seed of ``R'``, fixed only once the cloud has committed to ``H(c)``."""
    return challenge_seed("result", context, total_digest, *edge_digests)


def verify_cloud_sum(total: np.ndarray, recorded_total: bytes, edge_coms: Sequence[np.ndarray],
                     matrix: SketchMatrix) -> str | None:
    """An edge's check of the cloud's ``c``: its recorded hash and ``COM(c) = Σ_i COM(c_i)``."""
    if digest(total) != recorded_total:
        return "the sum differs from the hash the cloud recorded"
    expected = np.zeros(matrix.rows, dtype=np.int64)
    for com in edge_coms:
        expected = (expected + com) % Q
    if not np.array_equal(matrix.apply(total), expected):
        return "COM(c) != Π COM(c_i): the cloud forged the sum"
    return None


def in_range(total: np.ndarray, frac_bits: int, bound: float) -> bool:
    """True if every decoded coordinate of ``total`` has magnitude at most ``bound``."""
    centred = np.where(total > HALF, total - Q, total)
    return bool(np.max(np.abs(centred), initial=0) <= bound * (1 << frac_bits))
