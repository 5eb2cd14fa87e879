"""Seed 001's messages as JSON between node processes, and models from field sums.

The vectors (masked updates, shares, share sums, ``c_i``, ``c``) travel as
blobs of little-endian uint32 field elements, named by their store address;
what is small (digests, sketches, the acceptance) travels inline as hex.
:func:`model_from_sum` is the one place a field sum becomes a model, so an
edge, the cloud and an auditor who recomputes ``c_i`` from the devices'
updates (:func:`field_sum`) all reach the same bytes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from fedledger.errors import UsageError
from fedledger.fl.secagg import protocol as P
from fedledger.fl.secagg.field import Q, decode, encode
from fedledger.fl.weights import Weights, flatten, unflatten


def vector_bytes(v: np.ndarray) -> bytes:
    """A field vector's wire form (little-endian uint32)."""
    return np.asarray(v).astype("<u4").tobytes()


def vector_from(data: bytes, length: int | None = None) -> np.ndarray:
    """Parse a field vector; refuses a wrong length or an element outside Z_Q."""
    if len(data) % 4:
        raise UsageError("a field vector is a whole number of 4-byte elements")
    v = np.frombuffer(data, dtype="<u4")
    if length is not None and v.shape[0] != length:
        raise UsageError(f"field vector has {v.shape[0]} elements, expected {length}")
    if v.size and int(v.max()) >= Q:
        raise UsageError("field vector holds an element outside Z_Q")
    return v.astype(np.int64)


def _hex_list(items: Sequence[bytes]) -> list[str]:
    return [b.hex() for b in items]


def packet_json(p: P.Packet, masked_blob: str) -> dict[str, Any]:
    return {"device": p.device, "point": p.point, "weight": p.weight, "masked": masked_blob,
            "noise_digest": p.noise_digest.hex(), "share_digests": _hex_list(p.share_digests)}


def packet_from(obj: Mapping[str, Any], masked: np.ndarray) -> P.Packet:
    try:
        return P.Packet(str(obj["device"]), int(obj["point"]), int(obj["weight"]), masked,
                        bytes.fromhex(obj["noise_digest"]),
                        tuple(bytes.fromhex(d) for d in obj["share_digests"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise UsageError(f"bad packet: {exc}") from None


def sketches_json(s: P.Sketches) -> dict[str, Any]:
    return {"device": s.device, "coeffs": [vector_bytes(r).hex() for r in s.coeffs],
            "noise": vector_bytes(s.noise).hex()}


def sketches_from(obj: Mapping[str, Any], rows: int) -> P.Sketches:
    try:
        coeffs = np.vstack([vector_from(bytes.fromhex(r), rows) for r in obj["coeffs"]])
        return P.Sketches(str(obj["device"]), coeffs, vector_from(bytes.fromhex(obj["noise"]), rows))
    except (KeyError, TypeError, ValueError) as exc:
        raise UsageError(f"bad sketches: {exc}") from None


def acceptance_json(a: P.Acceptance) -> dict[str, Any]:
    return {"context": a.context.hex(), "challenge": a.challenge.hex(), "accepted": list(a.accepted),
            "weights": list(a.weights), "commitments": _hex_list(a.commitments),
            "rejected": [list(r) for r in a.rejected], "edge_key": a.edge_key.hex(),
            "signature": a.signature.hex()}


def acceptance_from(obj: Mapping[str, Any]) -> P.Acceptance:
    try:
        return P.Acceptance(bytes.fromhex(obj["context"]), bytes.fromhex(obj["challenge"]),
                            tuple(str(n) for n in obj["accepted"]), tuple(int(w) for w in obj["weights"]),
                            tuple(bytes.fromhex(c) for c in obj["commitments"]),
                            tuple((str(n), str(why)) for n, why in obj["rejected"]),
                            bytes.fromhex(obj["edge_key"]), bytes.fromhex(obj["signature"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise UsageError(f"bad acceptance: {exc}") from None


def update_vector(weights: Weights, base: Weights) -> np.ndarray:
    """A device's update ``g = w − w_global`` as one float vector."""
    return flatten(weights) - flatten(base)


def field_sum(base: Weights, results: Sequence[tuple[Weights, int]], params: P.Params) -> np.ndarray:
    """``c_i = Σ n_j · encode(g_j) mod Q``: what an edge reconstructs, recomputed from plaintext updates."""
    rows = [encode(update_vector(w, base), params.frac_bits, params.limit) for w, _ in results]
    return P.weighted_sum(rows, [n for _, n in results])


def model_from_sum(base: Weights, total: np.ndarray, weight: int, frac_bits: int) -> Weights:
    """``w_global + decode(c) / Σ n``: FedAvg's model from a field sum, up to the encoding bound."""
    if weight < 1:
        raise UsageError("a secure sum needs a positive total weight")
    return unflatten(flatten(base) + decode(total, frac_bits) / weight, base)


def round_context(chain_id: str, label: str, base: bytes) -> bytes:
    """What binds a device round's challenge and acceptance: the sub-chain, the stage and the base model."""
    return f"fedledger/secagg/{chain_id}/{label}\x00".encode() + base


def result_context(chain_id: str, round_: int) -> bytes:
    """What binds step 6's challenge: the main chain and the round."""
    return f"fedledger/secagg/{chain_id}/result/{round_}".encode()
