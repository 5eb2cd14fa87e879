"""Flower SecAgg+ baseline for ``fedledger bench secagg`` (needs the ``bench`` extra)."""

from __future__ import annotations

import sys
from typing import Any

import pytest

from fedledger.errors import ConfigError
from fedledger.sim import flower_secagg
from fedledger.sim.flower_secagg import flower_available, flower_secaggplus_round


def test_missing_flower_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "flwr", None)  # makes ``import flwr`` raise ImportError
    with pytest.raises(ConfigError, match=r"pip install 'fedledger\[bench\]'"):
        flower_secaggplus_round(5, 100, 3)


def test_flower_available_matches_import() -> None:
    try:
        import flwr  # noqa: F401
    except ImportError:
        assert not flower_available()
    else:
        assert flower_available()


def test_small_round_is_correct_and_honours_sizes() -> None:
    flwr = pytest.importorskip("flwr")
    r = flower_secaggplus_round(5, 1_000, 3, seed=1, repeat=2)
    assert r["flwr_version"] == flwr.__version__
    assert (r["clients"], r["params"], r["num_shares"], r["threshold"]) == (5, 1_000, 5, 3)
    assert len(r["round_times_s"]) == 2
    assert 0.0 < r["round_s"] < 30.0
    assert 0.0 <= r["transport_s"] < r["round_s"]
    assert 0.0 < r["plain_s"] < r["round_s"]
    assert r["max_abs_error"] <= r["tolerance"]
    # Within a few quantisation levels of the plain sum, not merely bounded.
    assert r["tolerance"] < 1e-4


def test_sparse_neighbourhood_and_threshold_reach_flower() -> None:
    pytest.importorskip("flwr")
    from flwr.server.workflow import SecAggPlusWorkflow

    seen: list[tuple[int, int]] = []
    original = SecAggPlusWorkflow.setup_stage

    def spy(self: Any, grid: Any, context: Any, state: Any) -> bool:
        ok: bool = original(self, grid, context, state)
        seen.append((state.num_shares, state.threshold))
        # Each client's neighbourhood (itself included) has num_shares members.
        assert {len(nb) for nb in state.nid_to_neighbours.values()} == {state.num_shares}
        return ok

    mp = pytest.MonkeyPatch()
    mp.setattr(SecAggPlusWorkflow, "setup_stage", spy)
    try:
        r = flower_secaggplus_round(6, 200, 2, num_shares=3, seed=2, with_fedavg=True)
    finally:
        mp.undo()
    assert seen == [(3, 2)]
    assert (r["clients"], r["num_shares"], r["threshold"]) == (6, 3, 2)
    assert r["max_abs_error"] <= r["tolerance"]
    assert r["fedavg_s"] > 0.0


@pytest.mark.parametrize(
    ("clients", "threshold", "shares"),
    [(2, 2, None), (5, 5, None), (5, 1, None), (5, 2, 6), (5, 2, 2), (6, 2, 4)],
)
def test_invalid_sizes_are_rejected(clients: int, threshold: int, shares: int | None) -> None:
    pytest.importorskip("flwr")
    with pytest.raises(ConfigError):
        flower_secaggplus_round(clients, 10, threshold, num_shares=shares)


def test_pin_is_recorded() -> None:
    assert flower_secagg.FLOWER_PIN == "1.41.0"
