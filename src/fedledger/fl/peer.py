"""A device's own global model in decentralised rounds (seed 002 §5.2.2 steps 15–17).

Without an aggregator every device downloads the local models its peers
recorded for a round, validates each one, votes on its quality and averages
the valid ones itself. This module is the pure part of that: given the round's
closed set of updates (``fl.close_round``, in its order), their on-chain
records and each update's opened weights (or why it would not open), it
returns the device's view: FedAvg by sample count over the valid updates in
the closed set's order, and which updates it accepted or rejected, and why.

The result depends only on the chain's records and the blobs' contents, never
on the order in which records were fetched or on who computes it, so honest
devices reach the same view and the same rejection reasons.

Validation of one update (step 16's VERIFY of the local model against its
record): the record is in the closed set, it is the only update of its
device, the sender is a registered device, it is for this round and was
trained from the agreed starting model, it counts samples, its blob opens to
the recorded model hash, and the model has the expected tensor layout.

Scores for ``fl.vote`` are basis points (0..10 000): 0 for a rejected update,
otherwise a caller-supplied quality function, by default the accuracy of the
peer's model on the voter's own local data (``accuracy_score``; torch is only
imported when it runs).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from fedledger.errors import VerificationFailed
from fedledger.fl.aggregate import fedavg
from fedledger.fl.weights import Weights, layout_problem, weights_hash

MAX_SCORE = 10_000  # basis points, as ``fl.vote`` expects

Opened = Weights | str  # an update's weights, or why its blob would not open
Scorer = Callable[[Weights], int]


def _bytes(value: Any) -> bytes:
    """A hash or key from chain state: bytes as stored, or hex as the HTTP API renders it."""
    return value if isinstance(value, bytes) else bytes.fromhex(value)


@dataclass(frozen=True)
class UpdateRecord:
    """The on-chain record of one ``fl.submit_update`` (``update_tx/<tx>``)."""

    tx: bytes
    device: bytes  # the sender's public key
    round: int
    sub_round: int
    base: bytes
    model: bytes
    blob: bytes
    samples: int

    @classmethod
    def from_state(cls, obj: Mapping[str, Any]) -> UpdateRecord:
        """From the contract's stored value (bytes, or hex strings when read over HTTP)."""
        return cls(tx=_bytes(obj["tx"]), device=_bytes(obj["device"]), round=int(obj["round"]),
                   sub_round=int(obj.get("sub_round", 1)), base=_bytes(obj["base"]), model=_bytes(obj["model"]),
                   blob=_bytes(obj["blob"]), samples=int(obj["samples"]))


@dataclass(frozen=True)
class Rejection:
    tx: bytes
    device: bytes | None
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {"tx": self.tx.hex(), "device": None if self.device is None else self.device.hex(),
                "reason": self.reason}


@dataclass(frozen=True)
class PeerView:
    """One device's view of the global model after a round, and how it was formed."""

    round: int
    weights: Weights
    model: bytes  # H(encoded weights): what ``fl.record_view`` records
    samples: int
    accepted: tuple[UpdateRecord, ...]
    rejected: tuple[Rejection, ...]
    updates: Mapping[bytes, Weights] = field(repr=False)  # accepted tx -> weights, for scoring

    def is_rejected(self, tx: bytes) -> bool:
        return any(r.tx == tx for r in self.rejected)


def check_update(rec: UpdateRecord, round_: int, *, devices: Collection[bytes], base: bytes | None) -> str | None:
    """Why a record cannot count for ``round_`` before its blob is looked at, or ``None``."""
    if rec.device not in devices:
        return "the sender is not a registered device of this chain"
    if (rec.round, rec.sub_round) != (round_, 1):
        return f"the update is for round {rec.round}.{rec.sub_round}, not {round_}"
    if base is not None and rec.base != base:
        return f"the update was trained from {rec.base.hex()[:16]}…, not the agreed model {base.hex()[:16]}…"
    if rec.samples <= 0:
        return "the update counts no samples"
    return None


def _validate(rec: UpdateRecord, round_: int, opened: Callable[[UpdateRecord], Opened], *,
              devices: Collection[bytes], base: bytes | None, like: Weights | None,
              seen: Collection[bytes]) -> Opened:
    """The update's weights, or the first reason it cannot count."""
    problem = check_update(rec, round_, devices=devices, base=base)
    if problem is None and rec.device in seen:
        problem = "the device already contributed an update to this round"
    if problem is not None:
        return problem
    got = opened(rec)
    if isinstance(got, str) or like is None:
        return got
    return layout_problem(got, like) or got


def build_view(
    round_: int,
    closed: Sequence[bytes],
    records: Iterable[UpdateRecord],
    opened: Callable[[UpdateRecord], Opened],
    *,
    devices: Collection[bytes],
    base: bytes | None = None,
    like: Weights | None = None,
) -> PeerView:
    """Seed 002 §5.2.2 steps 16–17: validate a closed round's updates and average the valid ones.

    ``closed`` is ``closed/<round>``'s list of update tx hashes (its order is the averaging order);
    ``records`` the updates' on-chain records, in any order (records outside the closed set are
    reported as rejected); ``opened`` gives an update's weights from its blob, or why it would not open;
    ``devices`` the public keys of the chain's registered devices; ``base`` the model every update must
    have been trained from (the round's agreed starting model); ``like`` weights with the task model's
    layout. Raises :class:`VerificationFailed` when no update is valid.
    """
    by_tx: dict[bytes, UpdateRecord] = {}
    for record in records:
        by_tx.setdefault(record.tx, record)
    in_closed = set(closed)
    accepted: list[tuple[UpdateRecord, Weights]] = []
    rejected: list[Rejection] = []
    seen_tx: set[bytes] = set()
    seen_device: set[bytes] = set()
    for tx in closed:
        rec = by_tx.get(tx)
        if tx in seen_tx:
            rejected.append(Rejection(tx, None if rec is None else rec.device, "the update is listed twice"))
            continue
        seen_tx.add(tx)
        if rec is None:
            rejected.append(Rejection(tx, None, "the update has no record on chain"))
            continue
        got = _validate(rec, round_, opened, devices=devices, base=base, like=like, seen=seen_device)
        if isinstance(got, str):
            rejected.append(Rejection(tx, rec.device, got))
            continue
        seen_device.add(rec.device)
        accepted.append((rec, got))
    for tx in sorted(set(by_tx) - in_closed):
        rejected.append(Rejection(tx, by_tx[tx].device, f"the update is not in round {round_}'s closed set"))
    if not accepted:
        raise VerificationFailed(f"round {round_}: no valid update to aggregate ({len(rejected)} rejected)")
    weights = fedavg([(w, rec.samples) for rec, w in accepted])
    return PeerView(round=round_, weights=weights, model=weights_hash(weights),
                    samples=sum(rec.samples for rec, _ in accepted),
                    accepted=tuple(rec for rec, _ in accepted), rejected=tuple(rejected),
                    updates={rec.tx: w for rec, w in accepted})


def vote_scores(view: PeerView, closed: Sequence[bytes], voter: bytes, score: Scorer,
                owners: Mapping[bytes, bytes]) -> dict[bytes, int]:
    """Step 16's VoteReputation scores of one voter: tx -> basis points, for every peer update in ``closed``.

    A rejected update scores 0; an accepted one ``score(weights)``. The voter's own update
    (``owners[tx] == voter``) gets no score: the contract refuses self-votes.
    """
    out: dict[bytes, int] = {}
    for tx in dict.fromkeys(closed):
        if owners.get(tx) == voter:
            continue
        w = view.updates.get(tx)
        value = 0 if w is None else int(score(w))
        if not 0 <= value <= MAX_SCORE:
            raise ValueError(f"score {value} is outside 0..{MAX_SCORE} basis points")
        out[tx] = value
    return out


def accuracy_score(model_name: str, data: Any) -> Scorer:
    """Quality of a peer's model: its accuracy on ``data`` (the voter's own readings), in basis points."""

    def score(weights: Weights) -> int:
        from fedledger.fl.train import evaluate

        return round(evaluate(model_name, weights, data) * MAX_SCORE)

    return score
