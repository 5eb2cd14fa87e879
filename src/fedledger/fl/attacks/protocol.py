"""Attacks on the secure-aggregation protocol itself (seed 001), as :class:`Behaviour` values.

Each builder returns the deviation for :func:`fedledger.fl.secagg.session.run_edge`
/ :func:`~fedledger.fl.secagg.session.run_cloud` (or the strategies wrapping
them), so an attack runs through exactly the code an honest round runs. What
each one meets:

* :func:`malicious_share` — a dealer gives some participants shares off its
  committed polynomial. The share's sketch fails the witness check (seed 001
  step 4(b)); the complaint carries the share the dealer bound by digest, so
  anyone can check it; the dealer is penalised and excluded, and the round
  completes without it.
* :func:`inconsistent_packet` — a device sends a poisoned masked update with the
  commitments of another one. ``COM(g + η) ≠ COM(g) · COM(η)``: discarded (step 3).
* :func:`wrong_share_sum` — a participant records and sends a wrong ``S_Dij``.
  The edge's sketch check refuses it and names the sender (step 5).
* :func:`dropout` — participants vanish before sending their share sums. Up to
  ``n − t`` are survived; beyond that the round fails with a clear error.
* :func:`forged_aggregate` — the cloud returns ``c + δ``. Every edge's check
  ``COM(c) = Π COM(c_i)`` fails, whatever ``δ`` is (step 6); the cloud is penalised.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from fedledger.fl.secagg.session import Behaviour

__all__ = ["dropout", "forged_aggregate", "inconsistent_packet", "malicious_share", "wrong_share_sum"]


def malicious_share(dealer: str, victims: Iterable[str]) -> Behaviour:
    return Behaviour(bad_shares={dealer: list(victims)})


def inconsistent_packet(*devices: str) -> Behaviour:
    return Behaviour(inconsistent=list(devices))


def wrong_share_sum(*participants: str) -> Behaviour:
    return Behaviour(wrong_sums=list(participants))


def dropout(*participants: str) -> Behaviour:
    return Behaviour(dropouts=list(participants))


def forged_aggregate(delta: np.ndarray) -> Behaviour:
    return Behaviour(forge=np.asarray(delta, dtype=np.float64))
