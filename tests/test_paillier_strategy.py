"""Seed 003 (DeepChain) as an aggregation backend: :class:`PaillierAggregation`.

Algorithm 3 (gradient collecting): every device posts ``C(dW)`` with ``Proof_PK``, which
the aggregator checks with ``fsver_1`` before multiplying ciphertexts; Algorithm 4
(collaborative decryption): the key holders post ``C_j`` with ``Proof_CD_j``, checked
with ``fsver_2``, and any ``t`` valid shares open the sum. The result must be FedAvg's
model within the packing's error bound. Keys are 512-bit toy keys made once per module.
"""

from __future__ import annotations

import numpy as np
import pytest

from fedledger.crypto import paillier
from fedledger.crypto.paillier import KeyShare, PaillierPublicKey
from fedledger.errors import UsageError, VerificationFailed
from fedledger.fl.hierarchy import HierarchyPlan, run_hierarchy
from fedledger.fl.paillier_agg import (
    EncryptedUpdate,
    InsufficientShares,
    InvalidUpdate,
    PaillierAggregation,
    PaillierBehaviour,
    SlotPacking,
    encrypt_update,
    verify_update,
    weighted_sum,
)
from fedledger.fl.strategy import Aggregate, FedAvg, NotEnoughResults, TrainIns, TrainRes
from fedledger.fl.weights import Weights

BITS = 512
HOLDERS = 4
THRESHOLD = 2
DEVICES = [f"d{i}" for i in range(5)]

Keys = tuple[PaillierPublicKey, list[KeyShare]]


@pytest.fixture(scope="module")
def keys() -> Keys:
    return paillier.generate_keys(BITS, parties=HOLDERS, threshold=THRESHOLD, insecure_for_tests=True)


def _init() -> Weights:
    rng = np.random.default_rng(0)
    return [("w", rng.normal(0, 1, (3, 4)).astype(np.float32)), ("b", rng.normal(0, 1, 15).astype(np.float32))]


def _results(base: Weights, names: list[str] = DEVICES, seed: int = 1) -> list[TrainRes]:
    """One trained model per device: the global model plus a device-specific step."""
    rng = np.random.default_rng(seed)
    out = []
    for i, name in enumerate(names):
        w = [(n, (a + rng.normal(0, 0.3, a.shape)).astype(np.float32)) for n, a in base]
        out.append(TrainRes(name, w, 10 + 7 * i, {}))
    return out


def _flat(w: Weights) -> np.ndarray:
    return np.concatenate([a.ravel() for _, a in w]).astype(np.float64)


def _round(strategy: PaillierAggregation, results: list[TrainRes], round_: int = 1) -> Aggregate:
    base = _init()
    strategy.configure(round_, base, [r.client for r in results])
    return strategy.aggregate(round_, results, [])


def _assert_fedavg(agg_weights: Weights, results: list[TrainRes], bound: float) -> None:
    """Within ``bound`` of FedAvg, allowing one float32 ulp for the two final roundings."""
    plain = _flat(FedAvg().aggregate(1, results, []).weights)
    got = _flat(agg_weights)
    ulp = np.spacing(np.abs(plain).astype(np.float32)).astype(np.float64)
    assert np.all(np.abs(got - plain) <= bound + ulp)


# --------------------------------------------------------------------------- packing


def test_slot_width_and_slots_per_ciphertext() -> None:
    """Slot = sign + headroom + integer + fractional bits; ``floor((|n| - 1) / s)`` slots per plaintext."""
    for bits, slots in ((512, 9), (1024, 18), (2048, 37)):
        p = SlotPacking.for_clients((1 << (bits - 1)) + 1, max_clients=64, max_samples=1 << 16)
        assert p.weight_bits == 22 and p.slot_bits == 1 + 22 + 8 + 24 == 55
        assert p.slots == slots
        assert p.plaintexts_for(100) == -(-100 // slots)
        assert p.max_weight == 1 << 22 >= 64 * (1 << 16)
    assert SlotPacking.for_clients(2**511 + 1, max_clients=5).weight_bits == 3  # 5 <= 2^3
    with pytest.raises(UsageError, match="cannot hold"):
        SlotPacking(2**40 + 1, frac_bits=24, int_bits=8, weight_bits=22)
    with pytest.raises(UsageError):
        SlotPacking(2**511 + 1, frac_bits=40, int_bits=30)


def test_packing_roundtrip_negatives_and_error_bound(keys: Keys) -> None:
    pk, _ = keys
    p = SlotPacking.for_clients(pk.n, max_clients=8, max_samples=100, frac_bits=20, int_bits=4)
    x = np.random.default_rng(2).uniform(-15.9, 15.9, 50)
    packed = p.pack(x)
    assert len(packed) == p.plaintexts_for(50) and all(0 <= m < pk.n for m in packed)
    assert np.max(np.abs(p.decode(packed, 50) - x)) <= p.error_bound() == 2.0**-21
    assert p.pack([-1.0]) == [pk.n - (1 << 20)]  # a negative plaintext is stored as n - |P|
    assert p.pack([1.0, -1.0]) == [((1 << 20) - (1 << (20 + p.slot_bits))) % pk.n]
    with pytest.raises(UsageError, match="encoding range"):
        p.pack([16.0])
    with pytest.raises(UsageError, match="non-finite"):
        p.pack([np.nan])


def test_extreme_weighted_sums_do_not_wrap(keys: Keys) -> None:
    """The no-wrap bound: ``max_weight`` copies of the extreme values still unpack exactly."""
    pk, _ = keys
    p = SlotPacking.for_clients(pk.n, max_clients=4, max_samples=4, frac_bits=8, int_bits=3)
    top = (2**p.int_bits) - 2.0**-p.frac_bits  # largest encodable magnitude
    x = np.array([top, -top] * p.slots)[: p.slots * 2 - 1]
    total = p.max_weight
    summed = [m * total % pk.n for m in p.pack(x)]  # what the weighted ciphertext sum decrypts to
    assert np.array_equal(p.decode(summed, x.size, total), x)
    exact = p.unpack(summed, x.size)
    assert max(abs(v) for v in exact) == total * (2 ** (p.int_bits + p.frac_bits) - 1) < 2 ** (p.slot_bits - 1)


def test_overflowing_sum_is_detected(keys: Keys) -> None:
    """A plaintext that does not unpack (out-of-range contribution) fails instead of decoding wrongly."""
    pk, _ = keys
    p = SlotPacking.for_clients(pk.n, max_clients=4)
    with pytest.raises(VerificationFailed, match="does not unpack"):
        p.unpack([1 << (p.slot_bits * p.slots)], 1)
    with pytest.raises(VerificationFailed, match="padding"):
        p.unpack([1 << p.slot_bits], 1)


# --------------------------------------------------------------------------- the strategy


def test_matches_fedavg_within_the_encoding_bound(keys: Keys) -> None:
    """Seed 003 Algorithms 3-4 end to end give FedAvg's sample-weighted model."""
    strategy = PaillierAggregation(keys=keys, threshold=THRESHOLD)
    results = _results(_init())
    agg = _round(strategy, results)
    _assert_fedavg(agg.weights, results, strategy.packing.error_bound())
    assert agg.used == tuple(DEVICES)
    assert agg.num_samples == sum(r.num_samples for r in results)
    m = agg.metrics
    assert m["rejected"] == [] and m["key_holders_rejected"] == []
    assert m["decrypted_by"] == [1, 2]
    assert m["paillier_ciphertexts"] == strategy.packing.plaintexts_for(27) == 3
    assert m["paillier_weight"] == agg.num_samples
    assert [n for n, _ in agg.weights] == ["w", "b"] and agg.weights[0][1].dtype == np.float32


def test_uniform_weighting_and_hierarchy(keys: Keys) -> None:
    """As the edges' device strategy in the in-memory hierarchy, with FedAvg at the cloud."""
    targets = {f"d{i}": float(i % 4) - 1.5 for i in range(6)}

    def train(ins: TrainIns) -> TrainRes:
        t = np.float32(targets[ins.client])
        out = [(n, (a + np.float32(0.5) * (t - a)).astype(np.float32)) for n, a in ins.weights]
        return TrainRes(ins.client, out, 10 + int(ins.client[1:]), {})

    plan = HierarchyPlan({"A": ["d0", "d1", "d2"], "B": ["d3", "d4", "d5"]}, cloud_rounds=2)
    plain = run_hierarchy(plan, _init(), train, device_strategy=FedAvg(), cloud_strategy=FedAvg())
    enc = PaillierAggregation(keys=keys, max_clients=8)
    secure = run_hierarchy(plan, _init(), train, device_strategy=enc, cloud_strategy=FedAvg())
    assert np.max(np.abs(_flat(secure.weights) - _flat(plain.weights))) < 1e-6

    uniform = PaillierAggregation(keys=keys, weighting="uniform", max_clients=8)
    results = _results(_init(), seed=4)
    agg = _round(uniform, results)
    flat_models = np.stack([_flat(r.weights) for r in results])
    assert np.max(np.abs(_flat(agg.weights) - flat_models.mean(axis=0))) < 1e-6
    assert agg.metrics["paillier_weight"] == len(results)


def test_device_with_a_bad_proof_is_rejected_and_the_rest_aggregate(keys: Keys) -> None:
    """Seed 003 Algorithm 3: a ciphertext failing ``fsver_1`` is refused and its device named."""
    strategy = PaillierAggregation(keys=keys, behaviour=PaillierBehaviour(bad_proofs=["d1"]))
    results = _results(_init())
    agg = _round(strategy, results)
    assert agg.metrics["rejected"] == ["d1"]
    reason = agg.metrics["rejected_reasons"]["d1"]
    assert "proof of plaintext knowledge is invalid" in reason and "does not verify" in reason
    assert agg.used == ("d0", "d2", "d3", "d4")
    honest = [r for r in results if r.client != "d1"]
    _assert_fedavg(agg.weights, honest, strategy.packing.error_bound())
    assert agg.num_samples == sum(r.num_samples for r in honest)


def test_copied_ciphertexts_are_rejected(keys: Keys) -> None:
    """Seed 003 fsver_1 with a context: re-posting another device's ``C(dW), Proof_PK`` fails."""
    strategy = PaillierAggregation(keys=keys, behaviour=PaillierBehaviour(replayed={"d3": "d0"}))
    results = _results(_init())
    agg = _round(strategy, results)
    assert agg.metrics["rejected"] == ["d3"]
    assert agg.used == ("d0", "d1", "d2", "d4")
    _assert_fedavg(agg.weights, [r for r in results if r.client != "d3"], strategy.packing.error_bound())


def test_forged_decryption_share_is_caught_and_named(keys: Keys) -> None:
    """Seed 003 Algorithm 4: a share failing ``fsver_2`` is dropped, its key holder named."""
    strategy = PaillierAggregation(keys=keys, behaviour=PaillierBehaviour(forged_shares=[1]))
    results = _results(_init())
    agg = _round(strategy, results)
    assert agg.metrics["key_holders_rejected"] == [1]
    assert agg.metrics["decrypted_by"] == [2, 3]
    _assert_fedavg(agg.weights, results, strategy.packing.error_bound())


def test_fewer_than_t_honest_key_holders_fail_clearly(keys: Keys) -> None:
    """Seed 003 Algorithm 4 needs ``t`` valid shares: one forged and two offline leave one."""
    bad = PaillierBehaviour(forged_shares=[1], offline=[2, 3])
    strategy = PaillierAggregation(keys=keys, behaviour=bad)
    with pytest.raises(InsufficientShares, match=f"only 1 valid .* {THRESHOLD} needed") as err:
        _round(strategy, _results(_init()))
    assert err.value.invalid == (1,)
    assert isinstance(err.value, VerificationFailed)
    pk, ks = keys
    few = PaillierAggregation(keys=(pk, ks[:1]))  # the aggregator can reach one key holder only
    with pytest.raises(InsufficientShares):
        _round(few, _results(_init()))


def test_unusable_results_are_rejected_or_refused(keys: Keys) -> None:
    base = _init()
    results = _results(base, ["a", "b", "c"])
    wrong_shape = TrainRes("b", [("w", np.zeros((4, 3), np.float32)), base[1]], 5, {})
    too_big = TrainRes("c", [(n, a + np.float32(1000)) for n, a in base], 5, {})
    strategy = PaillierAggregation(keys=keys)
    agg = _round(strategy, [results[0], wrong_shape, too_big])
    assert agg.metrics["rejected"] == ["b", "c"] and agg.used == ("a",)
    assert "shape" in agg.metrics["rejected_reasons"]["b"]
    assert "encoding range" in agg.metrics["rejected_reasons"]["c"]
    all_bad = PaillierAggregation(keys=keys, behaviour=PaillierBehaviour(bad_proofs=["a", "b", "c"]))
    with pytest.raises(NotEnoughResults, match="0 accepted"):
        _round(all_bad, results)
    with pytest.raises(UsageError, match="never configured"):
        strategy.aggregate(99, results, [])
    with pytest.raises(UsageError, match="headroom"):
        _round(PaillierAggregation(keys=keys, max_clients=2), results)
    twice = PaillierAggregation(keys=keys)
    twice.configure(1, base, ["a"])
    with pytest.raises(VerificationFailed, match="more than one result"):
        twice.aggregate(1, [results[0], results[0]], [])


def test_constructor_keys_and_threshold(keys: Keys) -> None:
    pk, ks = keys
    with pytest.raises(UsageError, match="differs"):
        PaillierAggregation(keys=keys, threshold=THRESHOLD + 1)
    with pytest.raises(UsageError, match="insecure_for_tests"):
        PaillierAggregation(key_bits=BITS)
    with pytest.raises(UsageError, match="weighting"):
        PaillierAggregation(keys=keys, weighting="median")
    with pytest.raises(UsageError, match="distinct"):
        PaillierAggregation(keys=(pk, [ks[0], ks[0]]))
    fresh = PaillierAggregation(key_bits=BITS, insecure_for_tests=True, key_holders=5)
    assert fresh.pk.bits == BITS and fresh.threshold == 3 and len(fresh.key_shares) == 5
    assert fresh.pk.n != pk.n
    own = PaillierAggregation(key_bits=BITS, insecure_for_tests=True, key_holders=3, threshold=3)
    agg = _round(own, _results(_init(), ["x", "y"]))
    assert agg.metrics["decrypted_by"] == [1, 2, 3]


# --------------------------------------------------------------------------- the device-side API


def test_verify_update_names_the_device(keys: Keys) -> None:
    """``fsver_1`` over a posting: bound to the session, the device, the round and the position."""
    pk, _ = keys
    packing = SlotPacking.for_clients(pk.n, max_clients=4)
    g = np.linspace(-1, 1, 20)
    count = packing.plaintexts_for(g.size)
    post = encrypt_update(pk, packing, g, session="edge-A", client="d0", round_=3)
    verify_update(pk, post, session="edge-A", round_=3, count=count)
    swapped = EncryptedUpdate("d0", 3, post.ciphertexts[::-1], post.proofs[::-1])
    cases: list[tuple[EncryptedUpdate, str, int, int, str]] = [
        (post, "edge-B", 3, count, "ciphertext 0"),  # another aggregator
        (EncryptedUpdate("d9", 3, post.ciphertexts, post.proofs), "edge-A", 3, count, "ciphertext 0"),
        (EncryptedUpdate("d0", 4, post.ciphertexts, post.proofs), "edge-A", 4, count, "ciphertext 0"),
        (post, "edge-A", 4, count, "posted for round 3"),
        (post, "edge-A", 3, count + 1, "expected"),
        (swapped, "edge-A", 3, count, "ciphertext 0"),  # proofs are bound to positions
    ]
    for update, session, round_, n_ct, reason in cases:
        with pytest.raises(InvalidUpdate, match=reason) as err:
            verify_update(pk, update, session=session, round_=round_, count=n_ct)
        assert err.value.client == update.client
    with pytest.raises(UsageError):
        encrypt_update(pk, SlotPacking.for_clients(pk.n + 2, max_clients=4), g, session="e", client="d0", round_=1)


def test_weighted_sum_of_packed_ciphertexts(keys: Keys) -> None:
    pk, ks = keys
    packing = SlotPacking.for_clients(pk.n, max_clients=4, max_samples=10)
    a, b = np.array([0.5, -0.25, 3.0]), np.array([-1.5, 0.125, -2.0])
    ca = encrypt_update(pk, packing, a, session="e", client="a", round_=0).ciphertexts
    cb = encrypt_update(pk, packing, b, session="e", client="b", round_=0).ciphertexts
    total = weighted_sum(pk, [ca, cb], [3, 7])
    opened = [paillier.combine(pk, c, [paillier.decryption_share(pk, k, c) for k in ks[:THRESHOLD]]) for c in total]
    assert np.array_equal(packing.decode(opened, 3, 10), (3 * a + 7 * b) / 10)
    with pytest.raises(UsageError):
        weighted_sum(pk, [ca, cb], [1])
    with pytest.raises(UsageError):
        weighted_sum(pk, [ca, cb], [1, -1])
