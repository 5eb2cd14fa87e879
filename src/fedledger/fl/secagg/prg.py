"""Deterministic cryptographic randomness for secure aggregation: AES-256-CTR keystreams.

Secret-sharing coefficients, hiding pads and the DP noise η must be
unpredictable to everyone but their owner, so they come from a keystream of
AES-256 in counter mode (the ``cryptography`` library) under a 32-byte key, with
a label so that one key never yields the same stream for two purposes. The
same key and label always give the same output: η derived from a device's VRF
output can be recomputed by an auditor who is shown the VRF proof.

The keystream is written straight into NumPy buffers (``update_into``) in
chunks that stay in cache, rather than materialised as one ``bytes`` object:
a round draws tens of megabytes of it, and a fresh multi-megabyte buffer per
draw costs more in page faults and copies than AES itself.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, CipherContext, algorithms, modes

from fedledger.fl.secagg.field import Q

_CHUNK = 1 << 18  # keystream bytes per step: few enough calls that two threads overlap, small enough for L2
_SLACK = 16  # update_into wants block_size − 1 spare output bytes
_ZEROS = memoryview(bytes(_CHUNK))
_PAIRS = 1 << 14  # Box–Muller pairs per block: 8 · _PAIRS <= _CHUNK


def _encryptor(key: bytes, label: str, offset: int = 0) -> CipherContext:
    """The keystream of ``(key, label)``, positioned ``offset`` bytes in."""
    sub = hashlib.sha256(b"fedledger/secagg-prg\x00" + label.encode() + b"\x00" + key).digest()
    block, skip = divmod(offset, 16)  # CTR: the counter block is a 128-bit big-endian integer from 0
    enc = Cipher(algorithms.AES(sub), modes.CTR(block.to_bytes(16, "big"))).encryptor()
    if skip:
        enc.update(bytes(skip))
    return enc


def _chunks(key: bytes, label: str, nbytes: int) -> Iterator[np.ndarray]:
    """The keystream as consecutive ``uint8`` chunks of at most ``_CHUNK`` bytes.

    Every chunk is a view of one reused buffer: consume it before asking for the next.
    """
    enc = _encryptor(key, label)
    buf = np.empty(_CHUNK + _SLACK, dtype=np.uint8)
    out = buf.data
    for start in range(0, nbytes, _CHUNK):
        size = min(_CHUNK, nbytes - start)
        enc.update_into(_ZEROS[:size], out)
        yield buf[:size]


def _stream(key: bytes, label: str, nbytes: int) -> np.ndarray:
    """``nbytes`` of keystream as a ``uint8`` array (written in place, chunk by chunk)."""
    enc = _encryptor(key, label)
    buf = np.empty(nbytes + _SLACK, dtype=np.uint8)
    out = buf.data
    for start in range(0, nbytes, _CHUNK):
        size = min(_CHUNK, nbytes - start)
        enc.update_into(_ZEROS[:size], out[start:start + size + _SLACK])
    return buf[:nbytes]


def uniform_field(key: bytes, label: str, shape: tuple[int, ...]) -> np.ndarray:
    """Uniform elements of Z_Q (``int64``): 31-bit words, the rare word equal to Q redrawn."""
    n = int(np.prod(shape))
    out = np.empty(n, dtype=np.int64)
    mask = np.uint32(Q)
    found: list[np.ndarray] = []
    pos = 0
    for chunk in _chunks(key, label, 4 * n):
        dst = out[pos:pos + chunk.size // 4]
        np.bitwise_and(chunk.view("<u4"), mask, out=dst)
        if int(dst.max()) == Q:
            found.append(pos + np.flatnonzero(dst == Q))
        pos += dst.size
    bad = np.concatenate(found) if found else np.zeros(0, dtype=np.intp)
    extra = 0
    while bad.size:
        more = _stream(key, f"{label}/redraw{extra}", 4 * bad.size).view("<u4")
        out[bad] = (more & mask).astype(np.int64)
        bad = bad[out[bad] == Q]
        extra += 1
    return out.reshape(shape)


def uniform_u16(key: bytes, label: str, shape: tuple[int, ...]) -> np.ndarray:
    """Uniform integers in [0, 2^16) as ``uint16`` (sketch matrices)."""
    n = int(np.prod(shape))
    return _stream(key, label, 2 * n).view("<u2").reshape(shape)


def standard_normal(key: bytes, label: str, n: int) -> np.ndarray:
    """``n`` independent N(0, 1) samples (Box–Muller over the keystream's 53-bit uniforms)."""
    out = np.empty(n, dtype=np.float64)
    for start, block in normal_blocks(key, label, n):
        out[start:start + block.size] = block
    return out


def normal_blocks(key: bytes, label: str, n: int) -> Iterator[tuple[int, np.ndarray]]:
    """:func:`standard_normal` a block at a time: ``(offset, samples[offset : offset + len])``.

    The keystream holds the ``(n + 1) // 2`` words of the first uniforms, then
    as many of the second; a second cursor into the same keystream reads the
    latter alongside. Sample ``2i`` is ``r_i cos θ_i`` and ``2i + 1`` is ``r_i sin θ_i``.
    Every block is a view of one reused buffer: consume it before asking for the next.
    """
    pairs = (n + 1) // 2
    first, second = _encryptor(key, label), _encryptor(key, label, 8 * pairs)
    size = max(1, min(pairs, _PAIRS))
    words = np.empty((2, 8 * size + _SLACK), dtype=np.uint8)
    shifted = np.empty(size, dtype=np.uint64)
    uniform = np.empty(size)
    r, theta, trig = (np.empty(size, dtype=np.float32) for _ in range(3))
    out = np.empty(2 * size)
    for p0 in range(0, pairs, size):
        k = min(size, pairs - p0)
        first.update_into(_ZEROS[:8 * k], words[0].data)
        second.update_into(_ZEROS[:8 * k], words[1].data)
        u, sh = uniform[:k], shifted[:k]
        np.right_shift(words[0, :8 * k].view("<u8"), np.uint64(11), out=sh)
        np.copyto(u, sh, casting="unsafe")
        u += 1.0
        u *= 2.0**-53  # (0, 1]
        np.log(u, out=u)
        u *= -2.0
        np.sqrt(u, out=u)
        np.copyto(r[:k], u, casting="same_kind")
        np.right_shift(words[1, :8 * k].view("<u8"), np.uint64(11), out=sh)
        np.copyto(u, sh, casting="unsafe")
        u *= 2.0**-53  # [0, 1)
        u *= 2.0 * np.pi
        np.copyto(theta[:k], u, casting="same_kind")  # the trigonometry in single precision: 2× faster
        np.cos(theta[:k], out=trig[:k])
        trig[:k] *= r[:k]
        out[0:2 * k:2] = trig[:k]
        np.sin(theta[:k], out=trig[:k])
        trig[:k] *= r[:k]
        out[1:2 * k:2] = trig[:k]
        yield 2 * p0, out[: min(2 * k, n - 2 * p0)]
