"""Deterministic cryptographic randomness for secure aggregation: AES-256-CTR keystreams.

Secret-sharing coefficients, hiding pads and the DP noise η must be
unpredictable to everyone but their owner, so they come from a keystream of
AES-256 in counter mode (the ``cryptography`` library) under a 32-byte key, with
a label so that one key never yields the same stream for two purposes. The
same key and label always give the same output: η derived from a device's VRF
output can be recomputed by an auditor who is shown the VRF proof.
"""

from __future__ import annotations

import hashlib

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from fedledger.fl.secagg.field import Q


def _stream(key: bytes, label: str, nbytes: int) -> bytes:
    sub = hashlib.sha256(b"fedledger/secagg-prg\x00" + label.encode() + b"\x00" + key).digest()
    enc = Cipher(algorithms.AES(sub), modes.CTR(bytes(16))).encryptor()
    return enc.update(bytes(nbytes)) + enc.finalize()


def uniform_field(key: bytes, label: str, shape: tuple[int, ...]) -> np.ndarray:
    """Uniform elements of Z_Q (``int64``): 31-bit words, the rare word equal to Q redrawn."""
    n = int(np.prod(shape))
    words = np.frombuffer(_stream(key, label, 4 * n), dtype="<u4") & np.uint32(Q)
    out = words.astype(np.int64)
    bad = np.flatnonzero(out == Q)
    extra = 0
    while bad.size:
        more = np.frombuffer(_stream(key, f"{label}/redraw{extra}", 4 * bad.size), dtype="<u4")
        out[bad] = (more & np.uint32(Q)).astype(np.int64)
        bad = bad[out[bad] == Q]
        extra += 1
    return out.reshape(shape)


def uniform_u16(key: bytes, label: str, shape: tuple[int, ...]) -> np.ndarray:
    """Uniform integers in [0, 2^16) as ``float64`` (sketch matrices)."""
    n = int(np.prod(shape))
    return np.frombuffer(_stream(key, label, 2 * n), dtype="<u2").astype(np.float64).reshape(shape)


def standard_normal(key: bytes, label: str, n: int) -> np.ndarray:
    """``n`` independent N(0, 1) samples (Box–Muller over the keystream's 53-bit uniforms)."""
    pairs = (n + 1) // 2
    words = np.frombuffer(_stream(key, label, 16 * pairs), dtype="<u8").reshape(2, pairs)
    u1 = ((words[0] >> np.uint64(11)).astype(np.float64) + 1.0) * 2.0**-53  # (0, 1]
    u2 = (words[1] >> np.uint64(11)).astype(np.float64) * 2.0**-53  # [0, 1)
    r = np.sqrt(-2.0 * np.log(u1)).astype(np.float32)
    theta = (2.0 * np.pi * u2).astype(np.float32)  # the trigonometry in single precision: 2× faster
    out = np.empty(2 * pairs, dtype=np.float64)
    out[0::2] = r * np.cos(theta)
    out[1::2] = r * np.sin(theta)
    return out[:n]
