"""Seed 001's verifiable collaborative learning: field encoding, Shamir, sketches, every protocol step.

Each protocol test names the step of seed 001 §III ("Working Principle") it checks.
"""

from __future__ import annotations

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
