"""Seed 001's verifiable collaborative learning: field encoding, Shamir, sketches, every protocol step.

Each protocol test names the step of seed 001 §III ("Working Principle") it checks.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from fedledger.crypto.keys import SigningKey
from fedledger.errors import UsageError, VerificationFailed
from fedledger.fl.attacks import protocol as A
from fedledger.fl.secagg import protocol as P
from fedledger.fl.secagg import session as S
from fedledger.fl.secagg import shamir
from fedledger.fl.secagg.field import Q, capacity, decode, encode, from_bytes, to_bytes
from fedledger.fl.secagg.sketch import SketchMatrix, poly_at

EDGE = SigningKey.from_seed(bytes([7]) * 32)


# -- fixed-point encoding -----------------------------------------------------------------


@pytest.mark.parametrize("frac_bits", [8, 16, 20])
def test_encoding_error_bound_single_and_weighted_sum(frac_bits: int) -> None:
    rng = np.random.default_rng(frac_bits)
    xs = [rng.uniform(-3, 3, 5000) for _ in range(7)]
    ws = [1, 2, 3, 1, 5, 8, 13]
    for x in xs:
        assert np.max(np.abs(decode(encode(x, frac_bits), frac_bits) - x)) <= 2.0 ** -(frac_bits + 1)
    total = np.zeros(5000, dtype=np.int64)
    for x, w in zip(xs, ws, strict=True):
        total = (total + w * encode(x, frac_bits)) % Q
    err = np.max(np.abs(decode(total, frac_bits) - sum(w * x for x, w in zip(xs, ws, strict=True))))
    assert err <= sum(ws) * 2.0 ** -(frac_bits + 1)


def test_encoding_refuses_values_that_could_wrap() -> None:
    with pytest.raises(UsageError, match="fixed-point range"):
        encode(np.array([capacity(16) * 1.01]), 16)
    with pytest.raises(UsageError, match="fixed-point range"):
        encode(np.array([0.5, -2.0]), 16, limit=1.0)
    with pytest.raises(UsageError, match="non-finite"):
        encode(np.array([np.nan]), 16)
    v = encode(np.array([-1.5, 2.25]), 16)
    assert np.array_equal(from_bytes(to_bytes(v), 2), v)
    with pytest.raises(UsageError):
        from_bytes(np.array([Q], dtype="<u4").tobytes())


# -- Shamir over Z_Q ------------------------------------------------------------------------


def test_any_t_shares_reconstruct_fewer_do_not() -> None:
    rng = np.random.default_rng(1)
    secret = rng.integers(0, Q, 1000)
    points = list(range(1, 11))
    shares = shamir.share(secret, points, 6, b"k" * 32)
    assert shares.dtype == np.dtype("<u4") and int(shares.max()) < Q
    for subset in ([0, 1, 2, 3, 4, 5], [9, 7, 5, 3, 1, 0], [4, 5, 6, 7, 8, 9]):
        got = shamir.reconstruct([points[i] for i in subset], shares[subset], 6)
        assert np.array_equal(got, secret)
    wrong = shamir.reconstruct(points[:5], shares[:5], 5)  # t − 1 shares treated as enough
    assert not np.array_equal(wrong, secret)
    with pytest.raises(VerificationFailed, match="needs t = 6"):
        shamir.reconstruct(points[:5], shares[:5], 6)


def test_shares_match_big_integer_evaluation_with_large_points() -> None:
    rng = np.random.default_rng(2)
    secret = rng.integers(0, Q, 64)
    coeffs = rng.integers(0, Q, (4, 64))
    points = [1, 2, 1000, 2**20, Q - 1]
    got = shamir.evaluate(secret, coeffs, points)
    for row, x in enumerate(points):
        for i in range(64):
            want = (int(secret[i]) + sum(int(coeffs[k, i]) * pow(x, k + 1, Q) for k in range(4))) % Q
            assert int(got[row, i]) == want


# -- sketches (the homomorphic commitments) ---------------------------------------------------


def test_sketch_is_exact_and_linear() -> None:
    rng = np.random.default_rng(3)
    m = SketchMatrix.from_seed(b"s" * 32, 40000)
    a, b = rng.integers(0, Q, 40000), rng.integers(0, Q, 40000)
    ref = [sum(int(m.matrix[r, i]) * int(a[i]) for i in range(40000)) % Q for r in range(m.rows)]
    assert m.apply(a).tolist() == ref
    assert np.array_equal(m.apply((a + b) % Q), (m.apply(a) + m.apply(b)) % Q)
    c = a.copy()
    c[12345] = (c[12345] + 1) % Q
    assert not np.array_equal(m.apply(c), m.apply(a))


def test_share_sketch_is_the_polynomial_of_coefficient_sketches() -> None:
    """Seed 001 "Secret Sharing": the witness of a share is Σ_k x^k COM(a_k)."""
    rng = np.random.default_rng(4)
    secret = rng.integers(0, Q, 3000)
    coeffs = shamir.coefficients(b"c" * 32, 4, 3000)
    shares = shamir.evaluate(secret, coeffs, [1, 2, 3, 4, 5])
    m = SketchMatrix.from_seed(b"r" * 32, 3000)
    coms = m.apply(np.vstack([secret[None, :], coeffs]))
    for j, x in enumerate([1, 2, 3, 4, 5]):
        assert np.array_equal(m.apply(shares[j]), poly_at(coms, x))


# -- the protocol, step by step -----------------------------------------------------------------


def _updates(n: int, d: int = 2000, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {f"dev{i:02d}": rng.normal(0, 0.05, d) for i in range(n)}


def _edge(updates: dict[str, np.ndarray], params: P.Params, behaviour: S.Behaviour | None = None,
          ledger: S.MemoryLedger | None = None, weights: dict[str, int] | None = None) -> S.EdgeOutcome:
    names = sorted(updates)
    nk = S.simulation_keys(0, names, "noise")
    sk = S.simulation_keys(0, names, "share")
    return S.run_edge("edge-1", EDGE, b"ctx/1", updates, weights or {n: 1 for n in names}, params,
                      noise_keys=nk, share_key=sk.__getitem__, ledger=ledger, behaviour=behaviour)


def test_honest_round_sums_exactly_and_records_what_seed001_puts_on_chain() -> None:
    ups = _updates(8)
    weights = {n: i + 1 for i, n in enumerate(sorted(ups))}
    led = S.MemoryLedger()
    params = P.Params(threshold=5, noise_sigma=0.5)
    out = _edge(ups, params, ledger=led, weights=weights)
    want = sum(weights[n] * ups[n] for n in ups)
    assert np.max(np.abs(decode(out.total, 16) - want)) <= sum(weights.values()) * 2.0**-17
    assert out.used == tuple(sorted(ups)) and out.weight == sum(weights.values())
    assert not out.rejected and not out.penalised
    assert len(led.of("secagg.share_sum")) == 8  # step 4(d): every H(S_Dij) is recorded
    assert led.of("secagg.edge_sum")[0]["hash"] == P.digest(out.total)  # step 5: H(c_i)
    cloud = S.run_cloud(b"ctx/1", [out], params, ledger=led)
    assert cloud.accepted and led.of("secagg.verdict")[0]["ok"]


def test_masked_update_hides_g_and_is_consistent_with_the_commitments() -> None:
    """Step 1: the edge sees g + η, not g; step 3 checks COM(g + η) = COM(g)·COM(η)."""
    ups = _updates(3, 4000)
    params = P.Params(threshold=2, noise_sigma=1.0)
    points = {n: i + 1 for i, n in enumerate(sorted(ups))}
    name = sorted(ups)[0]
    packet, dealing = P.deal(name, ups[name], 1, params=params, points=points, noise_key=b"n" * 32,
                             share_key=b"s" * 32)
    seen = decode(packet.masked, 16)
    assert np.std(seen - ups[name]) > 0.9  # the noise dominates what the edge sees
    m = SketchMatrix.from_seed(P.round_challenge(b"c", [packet]), dealing.secret.shape[0])
    sk = P.sketch_dealing(name, dealing, m)
    assert P.check_packet(packet, sk, m, params, 3) is None
    # the same update with another pad gives another COM(g ‖ p): the commitment hides g
    _, other = P.deal(name, ups[name], 1, params=params, points=points, noise_key=b"m" * 32,
                      share_key=b"s" * 32)
    assert not np.array_equal(P.sketch_dealing(name, other, m).coeffs[0], sk.coeffs[0])


def test_inconsistent_packet_is_discarded() -> None:
    """Step 3: a poisoned g' + η sent with the commitments of g fails the homomorphic check."""
    ups = _updates(6)
    out = _edge(ups, P.Params(threshold=4), behaviour=A.inconsistent_packet("dev02"))
    assert "dev02" not in out.used and "COM(g + η)" in out.rejected["dev02"]
    want = sum(v for n, v in ups.items() if n != "dev02")
    assert np.max(np.abs(decode(out.total, 16) - want)) < 1e-3


def test_statistical_filter_keeps_the_top_n() -> None:
    """Step 3: the edge keeps the n best masked updates by mean and standard deviation."""
    ups = _updates(8)
    ups["dev05"] = ups["dev05"] * 40  # a scaled, poisoned update
    out = _edge(ups, P.Params(threshold=4, keep=7, noise_sigma=0.05, weight_budget=1024))
    assert "dev05" not in out.used and len(out.used) == 7
    assert "top n" in out.rejected["dev05"]


def test_malicious_share_identifies_and_penalises_its_dealer() -> None:
    """Step 4(b): a share off the committed polynomial names its sender, who is penalised."""
    ups = _updates(7)
    led = S.MemoryLedger()
    out = _edge(ups, P.Params(threshold=4), behaviour=A.malicious_share("dev03", ["dev00", "dev06"]),
                ledger=led)
    assert set(out.penalised) == {"dev03"} and "dev03" not in out.used
    assert [p["offender"] for p in led.of("secagg.penalty")] == ["dev03"]
    assert led.of("secagg.accept")[-1]["accepted"] == [n for n in sorted(ups) if n != "dev03"]
    want = sum(v for n, v in ups.items() if n != "dev03")
    assert np.max(np.abs(decode(out.total, 16) - want)) < 1e-3


def test_complaint_is_checkable_by_anyone_and_cannot_frame_an_honest_dealer() -> None:
    ups = _updates(4, 500)
    params = P.Params(threshold=3)
    points = {n: i + 1 for i, n in enumerate(sorted(ups))}
    packet, dealing = P.deal("dev01", ups["dev01"], 1, params=params, points=points, noise_key=b"n" * 32,
                             share_key=b"s" * 32)
    m = SketchMatrix.from_seed(b"r" * 32, dealing.secret.shape[0])
    sk = P.sketch_dealing("dev01", dealing, m)
    honest = P.Complaint("dev02", "dev01", 3, dealing.shares[2], "framing")
    assert not P.check_complaint(honest, packet, sk, 2, m)
    forged = dealing.shares[2].copy()
    forged[0] ^= 1
    assert not P.check_complaint(P.Complaint("dev02", "dev01", 3, forged, "x"), packet, sk, 2, m)


def test_wrong_share_sum_is_refused_and_its_sender_penalised() -> None:
    """Step 5: the edge checks each S_Dij against its hash and its expected commitment."""
    ups = _updates(6)
    out = _edge(ups, P.Params(threshold=4), behaviour=A.wrong_share_sum("dev01"))
    assert "dev01" in out.penalised and "commitments" in out.penalised["dev01"]
    assert np.max(np.abs(decode(out.total, 16) - sum(ups.values()))) < 1e-3


@pytest.mark.parametrize("n,t", [(10, 6), (7, 4), (5, 5)])
def test_dropouts_up_to_n_minus_t_are_survived(n: int, t: int) -> None:
    """Step 5: c_i is reconstructed from any t share sums, so n − t participants may drop out."""
    ups = _updates(n)
    names = sorted(ups)
    out = _edge(ups, P.Params(threshold=t), behaviour=A.dropout(*names[: n - t]))
    assert np.max(np.abs(decode(out.total, 16) - sum(ups.values()))) < 1e-3  # dropped devices' updates count
    with pytest.raises(VerificationFailed, match=f"needs t = {t}"):
        _edge(ups, P.Params(threshold=t), behaviour=A.dropout(*names[: n - t + 1]))


def test_forged_cloud_aggregate_is_rejected_by_every_edge_and_penalised() -> None:
    """Step 6: COM(c) = Π COM(c_i) fails for a forged c; the cloud is penalised."""
    params = P.Params(threshold=3)
    outs = [_edge(_updates(4, seed=s), params) for s in range(3)]
    outs = [S.EdgeOutcome(f"edge-{i}", o.total, o.weight, o.used, {}, {}, {}, 0) for i, o in enumerate(outs)]
    led = S.MemoryLedger()
    forge = np.zeros(2000)
    forge[17] = 0.001  # the smallest possible forgery: one coordinate, one unit
    cloud = S.run_cloud(b"ctx", outs, params, ledger=led, behaviour=A.forged_aggregate(forge))
    assert not cloud.accepted and all("forged" in v for v in cloud.verdicts.values() if v)
    assert len([v for v in led.of("secagg.verdict") if not v["ok"]]) == 3
    assert led.of("secagg.penalty")[-1]["offender"] == "cloud"
    honest = S.run_cloud(b"ctx", outs, params)
    assert honest.accepted


def test_acceptance_must_be_signed_by_the_edge() -> None:
    """Step 4(a): participants verify the edge's signature on the accepted commitments."""
    ups = _updates(3, 300)
    params = P.Params(threshold=2)
    points = {n: i + 1 for i, n in enumerate(sorted(ups))}
    dealt = {n: P.deal(n, ups[n], 1, params=params, points=points, noise_key=n.encode() * 8,
                       share_key=b"s" * 32) for n in ups}
    packets = {n: d[0] for n, d in dealt.items()}
    seed = P.round_challenge(b"c", list(packets.values()))
    m = SketchMatrix.from_seed(seed, 300 + params.rows)
    sketches = {n: P.sketch_dealing(n, d[1], m) for n, d in dealt.items()}
    acc = P.accept(EDGE, b"c", seed, list(packets.values()), sketches, m, params, 3)
    P.check_acceptance(acc, EDGE.public_key, packets, sketches)
    impostor = SigningKey.from_seed(bytes([9]) * 32)
    with pytest.raises(VerificationFailed, match="not signed by the edge"):
        P.check_acceptance(acc, impostor.public_key, packets, sketches)


def test_noise_comes_from_the_vrf_and_an_audit_catches_chosen_noise() -> None:
    """Step 1 NOTE: the device cannot choose η; an auditor shown the VRF proof recomputes it."""
    dev = SigningKey.from_seed(bytes([5]) * 32)
    params = P.Params(threshold=1, noise_sigma=0.3)
    key, proof = S.vrf_noise_key(dev, b"beacon-42", b"ctx/1")
    update = np.random.default_rng(0).normal(0, 0.1, 1000)
    honest, _ = P.deal("d", update, 1, params=params, points={"d": 1}, noise_key=key, share_key=b"s" * 32)
    assert S.audit_noise(dev.public_key, b"beacon-42", b"ctx/1", proof, honest, params)
    chosen, _ = P.deal("d", update, 1, params=params, points={"d": 1}, noise_key=b"mine" * 8,
                       share_key=b"s" * 32)
    assert not S.audit_noise(dev.public_key, b"beacon-42", b"ctx/1", proof, chosen, params)
    assert not S.audit_noise(dev.public_key, b"beacon-43", b"ctx/1", proof, honest, params)


# -- fast paths: each must agree bit for bit with the straightforward computation ----------------


def _reference_stream(key: bytes, label: str, nbytes: int) -> bytes:
    """The keystream as one AES-256-CTR encryption of zeros (what the chunked readers must reproduce)."""
    import hashlib

    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    sub = hashlib.sha256(b"fedledger/secagg-prg\x00" + label.encode() + b"\x00" + key).digest()
    enc = Cipher(algorithms.AES(sub), modes.CTR(bytes(16))).encryptor()
    return enc.update(bytes(nbytes)) + enc.finalize()


def _reference_normal(key: bytes, label: str, n: int) -> np.ndarray:
    """Box–Muller over the whole keystream at once."""
    pairs = (n + 1) // 2
    words = np.frombuffer(_reference_stream(key, label, 16 * pairs), dtype="<u8").reshape(2, pairs)
    u1 = ((words[0] >> np.uint64(11)).astype(np.float64) + 1.0) * 2.0**-53
    u2 = (words[1] >> np.uint64(11)).astype(np.float64) * 2.0**-53
    r = np.sqrt(-2.0 * np.log(u1)).astype(np.float32)
    theta = (2.0 * np.pi * u2).astype(np.float32)
    out = np.empty(2 * pairs, dtype=np.float64)
    out[0::2] = r * np.cos(theta)
    out[1::2] = r * np.sin(theta)
    return out[:n]


@pytest.mark.parametrize("n", [0, 1, 2, 3, 16383, 16384, 16385, 40001])
def test_keystream_readers_match_one_shot_encryption(n: int) -> None:
    from fedledger.fl.secagg import prg

    key = bytes(range(32))
    z = prg.standard_normal(key, "dp-noise", n)
    assert np.array_equal(z.view(np.uint64), _reference_normal(key, "dp-noise", n).view(np.uint64))
    words = np.frombuffer(_reference_stream(key, "u", 4 * 3 * n), dtype="<u4") & np.uint32(Q)
    if not np.any(words == Q):
        assert np.array_equal(prg.uniform_field(key, "u", (3, n)), words.astype(np.int64).reshape(3, n))
    u16 = np.frombuffer(_reference_stream(key, "m", 2 * 2 * n), dtype="<u2").reshape(2, n)
    assert np.array_equal(prg.uniform_u16(key, "m", (2, n)), u16)


def test_uniform_field_redraws_words_equal_to_q(monkeypatch: pytest.MonkeyPatch) -> None:
    """A word that masks to Q is redrawn from the label's redraw stream, in every chunk."""
    from fedledger.fl.secagg import prg

    def fake(label: str, nbytes: int) -> np.ndarray:
        seed = int.from_bytes(label.encode()[-4:], "big")
        words = np.random.default_rng(seed).integers(0, 1 << 32, -(-nbytes // 4), dtype=np.uint32)
        if not label.endswith("redraw1"):
            words[::9973] = 0xFFFFFFFF  # masks to Q
        return words.view(np.uint8)[:nbytes]

    def chunks(key: bytes, label: str, nbytes: int) -> Iterator[np.ndarray]:
        data = fake(label, nbytes)
        for start in range(0, nbytes, 1 << 16):
            yield data[start:start + (1 << 16)]

    monkeypatch.setattr(prg, "_chunks", chunks)
    monkeypatch.setattr(prg, "_stream", lambda key, label, nbytes: fake(label, nbytes))
    got = prg.uniform_field(b"k" * 32, "coeffs", (5, 20000))
    want = (fake("coeffs", 4 * 100000).view("<u4") & np.uint32(Q)).astype(np.int64)
    bad = np.flatnonzero(want == Q)
    extra = 0
    while bad.size:
        more = fake(f"coeffs/redraw{extra}", 4 * bad.size).view("<u4")
        want[bad] = (more & np.uint32(Q)).astype(np.int64)
        bad = bad[want[bad] == Q]
        extra += 1
    assert extra == 2 and np.array_equal(got.ravel(), want) and int(got.max()) < Q


def test_fast_encoding_matches_the_reference_encoding() -> None:
    from fedledger.fl.secagg.field import _encode_checked

    rng = np.random.default_rng(5)
    for frac_bits in (0, 8, 16, 28):
        top = capacity(frac_bits)
        ties = (np.floor(rng.uniform(-top / 2, top / 2, 5000) * 2**frac_bits) + 0.5) / 2**frac_bits
        x = np.concatenate([rng.uniform(-top, top, 70000), [top, -top, 0.0, -0.0, 0.5, -0.5, 1.5, -2.5],
                            ties])  # halfway between two encodings: rint rounds to even
        assert np.array_equal(encode(x, frac_bits), _encode_checked(x, frac_bits, top))
    grid = rng.normal(0, 1, (3, 50000))
    assert encode(grid, 16).shape == (3, 50000)
    assert np.array_equal(encode(grid, 16).ravel(), _encode_checked(grid.ravel(), 16, capacity(16)))
    wide = np.array([capacity(16) * 3, -capacity(16) * 3, 1.0])  # a limit above the capacity wraps, as before
    assert np.array_equal(encode(wide, 16, limit=capacity(16) * 4), _encode_checked(wide, 16, capacity(16) * 4))
    late = np.zeros(100000)
    late[-1] = np.inf  # the reference error, even when an earlier block fails another check first
    late[5] = capacity(16) * 2
    with pytest.raises(UsageError, match="non-finite"):
        encode(late, 16)
    with pytest.raises(UsageError):
        from fedledger.fl.secagg.field import encode_into

        encode_into(np.zeros(4), 16, np.zeros(4, dtype=np.int32))


def test_mersenne_reduction_matches_remainder() -> None:
    from fedledger.fl.secagg.field import add_into, reduce

    rng = np.random.default_rng(6)
    edges = [0, 1, Q - 1, Q, Q + 1, 2 * Q - 1, 2 * Q, 1 << 31, (1 << 62) - 1, 1 << 62, (1 << 63) - 1]
    v = np.concatenate([rng.integers(0, 1 << 63, 100000, dtype=np.int64), np.array(edges, dtype=np.int64),
                        rng.integers(-(1 << 62), 0, 10, dtype=np.int64)])
    assert np.array_equal(reduce(v.copy()), v % Q)
    a, b = rng.integers(0, Q, 70000), rng.integers(0, Q, 70000)
    a[:3], b[:3] = [Q - 1, Q - 1, 0], [Q - 1, 1, 0]
    assert np.array_equal(add_into(a, b, np.empty(70000, dtype=np.int64)), (a + b) % Q)


def _dot_reference(coeffs: list[int], rows: list[np.ndarray]) -> list[int]:
    return [sum(int(c) * int(r[i]) for c, r in zip(coeffs, rows, strict=True)) % Q for i in range(len(rows[0]))]


def test_dot_mod_is_exact_for_every_input_it_accepts() -> None:
    from fedledger.fl.secagg.field import dot_mod

    rng = np.random.default_rng(7)
    n = 40000
    wire = [rng.integers(0, 1 << 32, n, dtype=np.uint64).astype(np.uint32) for _ in range(32)]
    for w in wire:
        w[:2] = [0xFFFFFFFF, Q]  # non-canonical wire values count as the integers they are
    big = [Q - 1] * 32
    sample = slice(0, n, 997)
    for coeffs in ([1] * 10, big, list(rng.integers(0, Q, 32)), [5, 1 << 16, Q - 1]):
        rows = wire[: len(coeffs)]
        got = dot_mod(np.array(coeffs, dtype=np.int64), rows)
        assert got.tolist()[sample] == _dot_reference(coeffs, [r[sample] for r in rows])
    field_rows = np.stack([r.astype(np.int64) % Q for r in wire[:6]])  # int64 rows: checked, then float64
    assert np.array_equal(dot_mod(np.array(big[:6]), field_rows), dot_mod(np.array(big[:6]), wire[:6]))
    odd = field_rows.copy()
    odd[2, 123] = -5  # outside [0, 2^32): the integer path, with Python's modulo as before
    odd[3, 40] = 1 << 40
    small = [Q - 1, Q - 2, Q - 3, 3, 1, 2]
    assert dot_mod(np.array(small), odd).tolist() == _dot_reference(small, list(odd))
    many = [r % 1000 for r in wire] + [r % 7 for r in wire[:8]]  # more rows than float64 can sum exactly
    coeffs40 = list(rng.integers(0, Q, 40))
    got40 = dot_mod(np.array(coeffs40), many)
    assert got40.tolist()[sample] == _dot_reference(coeffs40, [r[sample] for r in many])


@pytest.mark.parametrize("n,t", [(10, 6), (18, 6), (19, 6), (5, 1), (30, 3), (12, 12)])
def test_float_shamir_evaluation_matches_horner(n: int, t: int) -> None:
    """The Vandermonde product in float64 where 2^53 bounds it; Horner's rule elsewhere."""
    rng = np.random.default_rng(n * 100 + t)
    secret = rng.integers(0, Q, 20000)
    coeffs = rng.integers(0, Q, (t - 1, 20000))
    secret[:4] = Q - 1
    coeffs[:, :4] = Q - 1  # the largest sums the bound must allow
    points = list(range(1, n + 1))
    assert shamir.exact_in_float(points, t) == (((1 << 32) - 1) * sum(n**k for k in range(t)) < 1 << 53)
    got = shamir.evaluate(secret, coeffs, points)
    assert np.array_equal(got, shamir._evaluate_horner(secret, coeffs, points))
    if t > 1:
        odd = coeffs.copy()
        odd[0, 7] = -3  # not a field element: Horner's rule, which reduces it as Python does
        got = shamir.evaluate(secret, odd, points)
        for row, x in enumerate(points):
            want = (int(secret[7]) + sum(int(odd[k, 7]) * x ** (k + 1) for k in range(t - 1))) % Q
            assert int(got[row, 7]) == want


def test_sketch_fast_path_matches_shift_and_mask(monkeypatch: pytest.MonkeyPatch) -> None:
    from fedledger.fl.secagg import sketch

    rng = np.random.default_rng(8)
    m = SketchMatrix.from_seed(b"f" * 32, 50000)
    assert m.matrix.dtype == np.uint16
    rows = rng.integers(0, Q, (9, 50000))
    rows[:, :3] = Q - 1
    wire = rng.integers(0, 1 << 32, (3, 50000), dtype=np.uint64).astype(np.uint32)  # beyond Q too
    for v in (rows, rows[:2], rows[4], wire, rows[:, :30001]):
        want = m._apply_shifted(np.atleast_2d(v).astype(np.int64))
        got = m.apply(v)
        assert np.array_equal(np.atleast_2d(got), want)
    assert np.array_equal(m.apply_groups([rows[:1], wire, rows[1:6]]),
                          m._apply_shifted(np.vstack([rows[:1], wire.astype(np.int64), rows[1:6]])))
    odd = rows[:3].copy()
    odd[1, 17] = -(1 << 20)  # outside [0, 2^32): the shift-and-mask path, exact as before
    odd[2, 4] = 1 << 35
    assert np.array_equal(m.apply(odd), m._apply_shifted(odd))
    monkeypatch.setattr(sketch, "_FLUSH", 1 << 15)  # the partial sums leave float64 every two blocks
    assert np.array_equal(m.apply(rows), m._apply_shifted(rows))
    with pytest.raises(UsageError):
        m.apply_groups([rows[:1], rows[:1, :100]])


def test_round_is_bit_identical_to_the_reference_implementation() -> None:
    """Golden values of the straightforward implementation: every fast path must reproduce them."""
    import hashlib

    rng = np.random.default_rng(11)
    names = [f"dev{i:02d}" for i in range(7)]
    ups = {n: rng.normal(0, 0.05, 40001) for n in names}
    params = P.Params(threshold=4, noise_sigma=0.5)
    led = S.MemoryLedger()
    points = {n: i + 1 for i, n in enumerate(names)}
    out = S.run_edge("edge-1", EDGE, b"ctx/golden", ups, points, params, ledger=led,
                     noise_keys=S.simulation_keys(0, names, "noise"),
                     share_key=S.simulation_keys(0, names, "share").__getitem__)
    assert P.digest(out.total).hex() == "b87c37b09cda2cc595f1ff096f0d90d4a7176788106688590b2565d421319d47"
    sums = hashlib.sha256(b"".join(r["hash"] for r in led.of("secagg.share_sum"))).hexdigest()
    assert sums == "08791d022aeb8894700d74192b2e8b0a312d0fb0b9ccfdfc017af3b77122b0c8"
    packet, dealing = P.deal("dev01", ups["dev01"], 2, params=params, points=points, noise_key=b"n" * 32,
                             share_key=b"s" * 32)
    assert packet.digest().hex() == "eedfc3c7e3d08f8495a97bba32bfcf0f16c65bfac8330d3a7d7e7361c1169e24"
    m = SketchMatrix.from_seed(b"r" * 32, 40001 + params.rows)
    assert P.sketch_dealing("dev01", dealing, m).digest().hex() == \
        "0e337d1b136383e9323c71a0bb37d9d27334bfeb564954ee82906150198a6734"


def test_sealed_shares_open_in_place_and_tampering_reads_as_empty(monkeypatch: pytest.MonkeyPatch) -> None:
    names = ["a", "b", "c"]
    keys = S.simulation_keys(0, names, "transport")
    shares = np.random.default_rng(9).integers(0, Q, (3, 1000)).astype("<u4")
    boxes = {"a": S._seal(shares, "a", names, keys)}
    monkeypatch.setattr(S, "_IN_PLACE", False)
    assert np.array_equal(S._seal(shares, "a", names, keys), boxes["a"])  # same boxes without encrypt_into
    for in_place in (True, False):
        monkeypatch.setattr(S, "_IN_PLACE", in_place)
        for i, n in enumerate(names):
            assert np.array_equal(S._deliver(boxes, ["a"], i, n, keys)["a"], shares[i])
        assert S._deliver(boxes, ["a"], 0, "b", keys)["a"].size == 0  # another receiver's box
    boxes["a"][1, 5] ^= 1
    assert S._deliver(boxes, ["a"], 1, "b", keys)["a"].size == 0


def test_rounds_run_with_single_threaded_blas_and_restore_it() -> None:
    threadpoolctl = pytest.importorskip("threadpoolctl")

    def blas_threads() -> list[int]:
        return [i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"]

    before = blas_threads()
    seen: list[list[int]] = []
    with S._single_threaded_blas:
        with S._single_threaded_blas:
            seen.append(blas_threads())
        seen.append(blas_threads())
    assert all(n == 1 for s in seen for n in s) and blas_threads() == before
    _edge(_updates(3, 300), P.Params(threshold=2))
    assert blas_threads() == before
