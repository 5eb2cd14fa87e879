"""Each chain's RSA accumulator over its blocks (seed 000 §IV-A Update, ProofGen, ProofVerf).

Every block header carries ``accumulator``, the chain's accumulator value
*after* that block: ``v_0 = g^(p_0)`` for the genesis block and
``v_i = v_(i-1)^(p_i) mod N``, where ``p_i`` is the hash-to-prime of the
block's *element* ``[chain_id, i, H(header without accumulator and signature)]``.
The seed's element is ``blk_i || i``; the height is in it, so a proof for a
block at another position fails, and its exponent is a prime (the seed's plain
hash exponents let anyone forge membership, see ``crypto/accumulator.py``).
The element leaves out the accumulator itself (it cannot contain its own
result) and the signature (the header hash covers both).

Because each header holds the previous value, a block's membership witness
against a later value ``v_n`` needs only the blocks after it:
``w_i = v_(i-1)^(p_(i+1) * ... * p_n)``, and ``w_i^(p_i) = v_n``.

Batches (seed 000 §IV-D, §IV-E): :func:`batch_proof` proves that several
blocks are members of one value with a single aggregate witness (Protocol 2's
``g_0``) and a Wesolowski proof of exponentiation, which
:func:`verify_blocks` checks with two short exponentiations whatever the
batch size (the seed's Protocol 3 is unsound; see ``crypto/accumulator.py``).

Parameters come from the genesis document (``params.accumulator``:
``{"modulus": bytes, "prime_bits": int}``); without them a chain uses the
RSA-2048 challenge modulus, whose factors nobody knows, and 256-bit primes
(a proposer both inserts elements and could later claim them, so primes get
the full 128-bit collision margin).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from typing import Any

import gmpy2

from fedledger.codec import cbor
from fedledger.crypto.accumulator import (
    RSA_2048,
    AccumulatorParams,
    element_prime,
    prove_batch_poe,
    verify_batch_poe,
)
from fedledger.crypto.hashing import tagged_hash
from fedledger.errors import ConfigError
from fedledger.ledger.block import BlockHeader

CHAIN_PRIME_BITS = 256
_EXCLUDE = frozenset({"accumulator", "signature"})


@lru_cache(maxsize=64)
def _params(modulus: int, prime_bits: int, allow_small: bool) -> AccumulatorParams:
    return AccumulatorParams.from_modulus(modulus, allow_small=allow_small, prime_bits=prime_bits)


def chain_params(genesis_params: Mapping[str, Any]) -> AccumulatorParams:
    """The accumulator parameters a genesis document sets (cached: ``g`` is derived by hashing)."""
    spec = genesis_params.get("accumulator") or {}
    if not isinstance(spec, Mapping):
        raise ConfigError("genesis parameter 'accumulator' must be a map")
    raw = spec.get("modulus", b"")
    bits = spec.get("prime_bits", CHAIN_PRIME_BITS)
    if not isinstance(raw, bytes) or not isinstance(bits, int):
        raise ConfigError("accumulator modulus must be bytes and prime_bits an int")
    modulus = int.from_bytes(raw, "big") if raw else RSA_2048
    try:
        return _params(modulus, bits, bool(spec.get("allow_small", False)))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"bad accumulator parameters in genesis: {exc}") from None


def acc_bytes(params: AccumulatorParams, value: int) -> bytes:
    """Fixed-width big-endian encoding of a group element."""
    return int(value).to_bytes((params.modulus_bits + 7) // 8, "big")


def acc_int(params: AccumulatorParams, raw: bytes) -> int:
    """Decode :func:`acc_bytes`; ``ValueError`` unless it is an element of ``Z_N`` of the right width."""
    if len(raw) != (params.modulus_bits + 7) // 8:
        raise ValueError(f"accumulator must be {(params.modulus_bits + 7) // 8} bytes, got {len(raw)}")
    value = int.from_bytes(raw, "big")
    if not 0 < value < params.n:
        raise ValueError("accumulator is not an element of Z_N")
    return value


def block_element(header: BlockHeader) -> bytes:
    """``blk_i || i`` of seed 000 §IV-A: chain, height and a hash of the rest of the header."""
    content = tagged_hash("fedledger/block-content", header.encode(exclude=_EXCLUDE))
    return cbor.encode([header.chain_id, header.height, content])


def block_prime(params: AccumulatorParams, header: BlockHeader) -> int:
    return element_prime(params, block_element(header))


def start_value(params: AccumulatorParams) -> bytes:
    """The value before the genesis block: the generator ``g``."""
    return acc_bytes(params, params.g)


def next_value(params: AccumulatorParams, previous: bytes, header: BlockHeader) -> bytes:
    """Update: ``v_i = v_(i-1)^(p_i) mod N``."""
    return acc_bytes(params, int(gmpy2.powmod(acc_int(params, previous), block_prime(params, header), params.n)))


def block_witness(params: AccumulatorParams, previous: bytes, later: Iterable[BlockHeader]) -> bytes:
    """ProofGen for block ``i``: ``v_(i-1)`` raised to the primes of the ``later`` blocks ``i+1..n``."""
    exponent = gmpy2.mpz(1)
    for header in later:
        exponent *= block_prime(params, header)
    return acc_bytes(params, int(gmpy2.powmod(acc_int(params, previous), exponent, params.n)))


def verify_block(params: AccumulatorParams, value: bytes, header: BlockHeader, witness: bytes) -> bool:
    """ProofVerf: ``witness^(p_i) == value``; false for anything malformed."""
    try:
        v, w = acc_int(params, value), acc_int(params, witness)
    except (TypeError, ValueError):
        return False
    return bool(gmpy2.powmod(w, block_prime(params, header), params.n) == v)


def batch_proof(params: AccumulatorParams, headers: Sequence[BlockHeader], heights: Iterable[int]) -> tuple[bytes, bytes]:
    """Aggregate witness and PoE for blocks ``heights`` in the value of ``headers[-1]`` (``headers`` = 0..n)."""
    elements = [block_element(h) for h in headers]
    w, q = prove_batch_poe(params, elements, list(heights))
    return acc_bytes(params, w), acc_bytes(params, q)


def verify_blocks(params: AccumulatorParams, value: bytes, members: Sequence[BlockHeader], witness: bytes,
                  poe: bytes) -> bool:
    """Batch ProofVerf: every header in ``members`` is at its height in ``value``; false if malformed."""
    try:
        v, w, q = acc_int(params, value), acc_int(params, witness), acc_int(params, poe)
    except (TypeError, ValueError):
        return False
    return verify_batch_poe(params, v, [block_element(h) for h in members], w, q)
