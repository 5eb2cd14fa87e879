"""Proof-of-Credit block proposal (seed 004 §V, Algorithm 1).

The seed's puzzle is ``TB(hc, ξ) < d_cond = (2^ξ − 1) · c_j / Σ c`` where
``TB`` takes the ξ low bits of a hash and ``c_j`` is the proposer's credit.
The seed hashes the candidate block itself (line 5: head hash, Merkle root,
transactions, address, credit, height), so a validator can re-order or
re-select its transactions until it wins: the lottery is grindable and the
credit weighting meaningless. Here ``hc`` is the output of the proposer's VRF
(RFC 9381) on ``(chain, dynasty seed, slot)``: one unique value per validator
and slot, which anyone can check with the proof carried in the header. The
comparison and ``d_cond`` are exactly the seed's, in integer arithmetic.
"""

from __future__ import annotations

from fedledger.codec import cbor


def poc_alpha(chain_id: str, seed: bytes, slot: int) -> bytes:
    """VRF input for the slot lottery."""
    return b"fedledger/poc\x00" + cbor.encode([chain_id, seed, slot])


def ticket_alpha(chain_id: str, dynasty: int, seed: bytes) -> bytes:
    """VRF input for the committee-sortition ticket of ``dynasty``."""
    return b"fedledger/ticket\x00" + cbor.encode([chain_id, dynasty, seed])


def tb(hc: bytes, xi: int) -> int:
    """``TB(hc, ξ)``: the ξ lower bits of the hash code (Definition 2)."""
    return int.from_bytes(hc, "big") & ((1 << xi) - 1)


def d_cond(xi: int, credit: int, total_credit: int) -> int:
    """``d_cond(ξ, p_j) = (2^ξ − 1) · c_j / Σc`` (equation 2), rounded down."""
    if total_credit <= 0:
        return 0
    return ((1 << xi) - 1) * credit // total_credit


def wins(hc: bytes, xi: int, credit: int, total_credit: int) -> bool:
    """Algorithm 1 line 9 (and line 26 negated): ``new_proof < d_cond``."""
    return tb(hc, xi) < d_cond(xi, credit, total_credit)
