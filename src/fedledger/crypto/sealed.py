"""Blobs encrypted at rest for a set of authorised parties (seed 004, stage 2).

A sealed blob is a model (or any payload) encrypted with AES-256-GCM under a
fresh random data key. The data key is wrapped once per authorised party
with a libsodium sealed box (X25519 + XSalsa20-Poly1305) addressed to that
party's Ed25519 identity key converted to X25519, so a party needs no second
key pair. Only the holders of a listed identity key can recover the data key;
the store, the network and everyone else see ciphertext. The header (which
plaintext hash the blob claims, who may read it, the nonce and the context)
is readable without any key.

Byte format (version 1)::

    MAGIC (8 bytes, b"FLSEALv1")
    header length (4 bytes, big-endian unsigned)
    header: canonical CBOR map
        "plaintext_hash": SHA-256 of the plaintext (32 bytes)
        "nonce":          AES-GCM nonce (12 bytes)
        "context":        caller-chosen binding, e.g. b"fedledger/model/<chain>/<round>"
        "recipients":     [[Ed25519 public key (32), sealed data key (80)], ...]
                          sorted by public key, no duplicates, at least one
    body: AES-256-GCM ciphertext followed by its 16-byte tag

Associated data. The AES-GCM associated data is
``MAGIC || canonical CBOR {"context", "nonce", "plaintext_hash"}``: the whole
header *except the recipient list*. This is what lets :func:`rewrap` add
readers without touching the body, and it is safe because a recipient entry
is only a wrapped copy of the one data key:

* Confidentiality does not depend on the list. Editing it cannot reveal the
  data key; adding a working entry requires already knowing the data key.
* Integrity of the plaintext does not depend on it either. A reader accepts
  the plaintext only if the GCM tag verifies under the key it unwrapped *and*
  the decrypted bytes hash to the authenticated ``plaintext_hash``. A swapped
  entry carrying a different key fails the tag; and because the hash is bound
  as associated data and re-checked, even a crafted body that decrypts under
  two keys (AES-GCM is not key-committing) cannot yield two different
  accepted plaintexts.
* What an editor of the list *can* do is drop entries (deny access, which
  deleting the blob does as well) or add entries that unwrap to nothing
  useful. Both change the blob's bytes and therefore its content address, so
  a blob whose address is recorded on chain cannot be edited unnoticed.

Binding the list too would force a fresh encryption of the body on every
grant, and would still only stop non-readers (any reader could re-encrypt
under a list of its choosing), so the list is left out of the associated data
and :func:`rewrap` keeps the body and nonce byte for byte. It does decrypt the
body once, to check the data key before handing it out.

Sealing does not authenticate the sender: anyone holding the recipients'
public keys can seal a blob for them. What a blob must contain comes from the
ledger, so pass the hash committed on chain as ``expect_hash`` to
:func:`open_sealed` (or compare the sealed blob's store address with the one
recorded on chain). Access cannot be revoked by rewrapping: a party that has
read the data key keeps it; to revoke, seal the plaintext again.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from nacl.bindings import crypto_sign_ed25519_pk_to_curve25519, crypto_sign_ed25519_sk_to_curve25519
from nacl.exceptions import CryptoError
from nacl.public import PrivateKey, PublicKey, SealedBox

from fedledger.codec import cbor
from fedledger.crypto.hashing import DIGEST_SIZE, sha256
from fedledger.crypto.keys import PUBLIC_KEY_SIZE, SigningKey
from fedledger.errors import DecodeError, UsageError, VerificationFailed

__all__ = [
    "MAGIC",
    "SealedHeader",
    "is_sealed",
    "open_sealed",
    "rewrap",
    "seal",
    "sealed_header",
]

MAGIC = b"FLSEALv1"
DATA_KEY_SIZE = 32  # AES-256
NONCE_SIZE = 12  # the AES-GCM standard nonce
TAG_SIZE = 16
WRAPPED_KEY_SIZE = 32 + 16 + DATA_KEY_SIZE  # sealed box: ephemeral X25519 key, MAC, data key
MAX_RECIPIENTS = 4096
MAX_CONTEXT_SIZE = 1024
MAX_HEADER_SIZE = 64 + MAX_RECIPIENTS * (PUBLIC_KEY_SIZE + WRAPPED_KEY_SIZE + 8) + MAX_CONTEXT_SIZE
MAX_PLAINTEXT_SIZE = 2**31 - 1 - TAG_SIZE  # the limit of the AES-GCM binding, minus the tag
_LENGTH_SIZE = 4
_PREFIX_SIZE = len(MAGIC) + _LENGTH_SIZE
_HEADER_FIELDS = frozenset({"plaintext_hash", "nonce", "context", "recipients"})


@dataclass(frozen=True)
class SealedHeader:
    """What a sealed blob says about itself; readable without any key.

    ``recipients`` are the Ed25519 public keys of the parties who may open the
    blob, in ascending byte order.
    """

    plaintext_hash: bytes
    recipients: tuple[bytes, ...]
    nonce: bytes
    context: bytes


def is_sealed(data: bytes) -> bool:
    """True if ``data`` starts with the sealed-blob magic (a quick check, not validation)."""
    return isinstance(data, bytes | bytearray | memoryview) and bytes(data[: len(MAGIC)]) == MAGIC


def seal(plaintext: bytes, recipients: Sequence[bytes], *, context: bytes = b"") -> bytes:
    """Encrypt ``plaintext`` for the holders of ``recipients`` (Ed25519 public keys) only.

    A fresh random data key and nonce are drawn for every call, so sealing the
    same plaintext twice gives different bytes with the same ``plaintext_hash``.
    ``context`` is bound into the ciphertext: :func:`open_sealed` must be given
    the same value. Raises :class:`UsageError` for an empty or malformed
    recipient list, an oversized context or an oversized plaintext.
    """
    plaintext = _bytes_arg(plaintext, "plaintext")
    context = _context_arg(context)
    if len(plaintext) > MAX_PLAINTEXT_SIZE:
        raise UsageError(
            f"plaintext is {len(plaintext)} bytes, over the {MAX_PLAINTEXT_SIZE}-byte limit"
        )
    public_keys = _recipients_arg(recipients)
    if not public_keys:
        raise UsageError("a sealed blob needs at least one recipient")
    data_key = AESGCM.generate_key(bit_length=8 * DATA_KEY_SIZE)
    nonce = os.urandom(NONCE_SIZE)
    plaintext_hash = sha256(plaintext)
    body = AESGCM(data_key).encrypt(nonce, plaintext, _aad(plaintext_hash, nonce, context))
    entries = {pk: _wrap(data_key, pk) for pk in public_keys}
    return _assemble(plaintext_hash, nonce, context, entries, body)


def open_sealed(
    sealed: bytes,
    key: SigningKey,
    *,
    context: bytes = b"",
    expect_hash: bytes | None = None,
) -> bytes:
    """Decrypt a sealed blob with a recipient's identity key and return the plaintext.

    Raises :class:`DecodeError` if ``sealed`` is not a well-formed sealed blob,
    and :class:`VerificationFailed` if the blob was sealed for another context,
    ``key`` is not among its recipients, the key's entry does not unwrap, the
    body or the authenticated header fields were altered, the plaintext does
    not match the header's hash, or (when given) the header's hash is not
    ``expect_hash``, e.g. the hash recorded on chain.
    """
    if not isinstance(key, SigningKey):
        raise UsageError(f"expected a SigningKey, got {type(key).__name__}")
    context = _context_arg(context)
    if expect_hash is not None:
        expect_hash = _bytes_arg(expect_hash, "expect_hash")
    header, entries, body = _parse(sealed)
    data_key = _unwrap_own(header, entries, key, context)
    if expect_hash is not None and header.plaintext_hash != expect_hash:
        raise VerificationFailed(
            f"blob claims plaintext hash {header.plaintext_hash.hex()[:16]}…, "
            f"expected {expect_hash.hex()[:16]}…"
        )
    return _decrypt(header, data_key, body)


def sealed_header(sealed: bytes) -> SealedHeader:
    """The header of a sealed blob, read without any key; :class:`DecodeError` if malformed."""
    return _parse(sealed)[0]


def rewrap(
    sealed: bytes,
    key: SigningKey,
    new_recipients: Sequence[bytes],
    *,
    context: bytes = b"",
) -> bytes:
    """Grant more parties access to a sealed blob; ``key`` must be an existing recipient.

    The holder unwraps the data key, decrypts the body to prove the key and
    body are intact (so it never hands out a key that opens nothing), and
    wraps the same key for each new public key. Existing entries, the nonce
    and the body are kept byte for byte; keys already listed are left as they
    are. The recipient list is not part of the associated data (see the module
    docstring), so the body needs no re-encryption. Errors are those of
    :func:`open_sealed` and, for malformed ``new_recipients``, :class:`UsageError`.
    """
    if not isinstance(key, SigningKey):
        raise UsageError(f"expected a SigningKey, got {type(key).__name__}")
    context = _context_arg(context)
    additions = _recipients_arg(new_recipients)
    header, entries, body = _parse(sealed)
    data_key = _unwrap_own(header, entries, key, context)
    _decrypt(header, data_key, body)
    merged = dict(entries)
    for pk in additions:
        if pk not in merged:
            merged[pk] = _wrap(data_key, pk)
    if len(merged) > MAX_RECIPIENTS:
        raise UsageError(f"more than {MAX_RECIPIENTS} recipients")
    return _assemble(header.plaintext_hash, header.nonce, header.context, merged, body)


# --------------------------------------------------------------------------- internals


def _bytes_arg(value: Any, name: str) -> bytes:
    if not isinstance(value, bytes | bytearray | memoryview):
        raise UsageError(f"{name} must be bytes, got {type(value).__name__}")
    return bytes(value)


def _context_arg(context: Any) -> bytes:
    context = _bytes_arg(context, "context")
    if len(context) > MAX_CONTEXT_SIZE:
        raise UsageError(f"context is {len(context)} bytes, over the {MAX_CONTEXT_SIZE}-byte limit")
    return context


def _recipients_arg(recipients: Any) -> list[bytes]:
    """Validated, sorted, de-duplicated Ed25519 public keys."""
    if isinstance(recipients, bytes | bytearray | memoryview | str):
        raise UsageError("recipients must be a list of public keys, not a single byte string")
    try:
        items = list(recipients)
    except TypeError:
        raise UsageError(
            f"recipients must be a list of public keys, got {type(recipients).__name__}"
        ) from None
    keys: set[bytes] = set()
    for i, pk in enumerate(items):
        if not isinstance(pk, bytes | bytearray | memoryview):
            raise UsageError(f"recipient {i} must be bytes, got {type(pk).__name__}")
        pk = bytes(pk)
        if len(pk) != PUBLIC_KEY_SIZE:
            raise UsageError(
                f"recipient {i} is {len(pk)} bytes; an Ed25519 public key is {PUBLIC_KEY_SIZE}"
            )
        _to_x25519_public(pk, i)
        keys.add(pk)
    if len(keys) > MAX_RECIPIENTS:
        raise UsageError(f"more than {MAX_RECIPIENTS} recipients")
    return sorted(keys)


@functools.lru_cache(maxsize=4096)
def _x25519(public_key: bytes) -> PublicKey:
    """A reader's Ed25519 key as X25519 (cached: the same readers get every blob of a job)."""
    return PublicKey(crypto_sign_ed25519_pk_to_curve25519(public_key))


def _to_x25519_public(public_key: bytes, index: int | None = None) -> PublicKey:
    try:
        return _x25519(bytes(public_key))
    except CryptoError:
        which = "a recipient" if index is None else f"recipient {index}"
        raise UsageError(
            f"{which} ({public_key.hex()[:16]}…) is not a valid Ed25519 public key"
        ) from None


def _wrap(data_key: bytes, public_key: bytes) -> bytes:
    return bytes(SealedBox(_to_x25519_public(public_key)).encrypt(data_key))


def _aad(plaintext_hash: bytes, nonce: bytes, context: bytes) -> bytes:
    return MAGIC + cbor.encode(
        {"context": context, "nonce": nonce, "plaintext_hash": plaintext_hash}
    )


def _assemble(
    plaintext_hash: bytes,
    nonce: bytes,
    context: bytes,
    entries: dict[bytes, bytes],
    body: bytes | memoryview,
) -> bytes:
    header = cbor.encode(
        {
            "context": context,
            "nonce": nonce,
            "plaintext_hash": plaintext_hash,
            "recipients": [[pk, entries[pk]] for pk in sorted(entries)],
        }
    )
    return MAGIC + len(header).to_bytes(_LENGTH_SIZE, "big") + header + body


def _parse(sealed: Any) -> tuple[SealedHeader, dict[bytes, bytes], memoryview]:
    """Strictly split a sealed blob into header, recipient entries and body."""
    if not isinstance(sealed, bytes | bytearray | memoryview):
        raise DecodeError(f"expected bytes, got {type(sealed).__name__}")
    view = memoryview(sealed).cast("B")
    if len(view) < _PREFIX_SIZE or bytes(view[: len(MAGIC)]) != MAGIC:
        raise DecodeError("not a sealed blob (missing FLSEALv1 magic)")
    header_size = int.from_bytes(view[len(MAGIC) : _PREFIX_SIZE], "big")
    if header_size > MAX_HEADER_SIZE:
        raise DecodeError(
            f"sealed header claims {header_size} bytes, over the {MAX_HEADER_SIZE}-byte limit"
        )
    body_start = _PREFIX_SIZE + header_size
    if len(view) < body_start + TAG_SIZE:
        raise DecodeError("sealed blob is truncated (header or authentication tag missing)")
    obj = cbor.decode(bytes(view[_PREFIX_SIZE:body_start]))
    if not isinstance(obj, dict) or set(obj) != _HEADER_FIELDS:
        raise DecodeError(
            f"sealed header must be a map with exactly the fields {sorted(_HEADER_FIELDS)}"
        )
    plaintext_hash = _field(obj, "plaintext_hash", DIGEST_SIZE)
    nonce = _field(obj, "nonce", NONCE_SIZE)
    context = obj["context"]
    if not isinstance(context, bytes) or len(context) > MAX_CONTEXT_SIZE:
        raise DecodeError(f"sealed header: context must be at most {MAX_CONTEXT_SIZE} bytes")
    raw = obj["recipients"]
    if not isinstance(raw, list) or not 1 <= len(raw) <= MAX_RECIPIENTS:
        raise DecodeError(
            f"sealed header: recipients must be a list of 1 to {MAX_RECIPIENTS} entries"
        )
    entries: dict[bytes, bytes] = {}
    previous = b""
    for i, entry in enumerate(raw):
        if (
            not isinstance(entry, list)
            or len(entry) != 2
            or not isinstance(entry[0], bytes)
            or not isinstance(entry[1], bytes)
            or len(entry[0]) != PUBLIC_KEY_SIZE
            or len(entry[1]) != WRAPPED_KEY_SIZE
        ):
            raise DecodeError(
                f"sealed header: recipient {i} must be [{PUBLIC_KEY_SIZE}-byte public key, "
                f"{WRAPPED_KEY_SIZE}-byte wrapped key]"
            )
        if entry[0] <= previous:
            raise DecodeError("sealed header: recipients not in strictly ascending key order")
        previous = entry[0]
        entries[entry[0]] = entry[1]
    header = SealedHeader(plaintext_hash, tuple(entries), nonce, context)
    return header, entries, view[body_start:]


def _field(obj: dict[str, Any], name: str, size: int) -> bytes:
    value = obj[name]
    if not isinstance(value, bytes) or len(value) != size:
        raise DecodeError(f"sealed header: {name} must be {size} bytes")
    return value


def _unwrap_own(
    header: SealedHeader, entries: dict[bytes, bytes], key: SigningKey, context: bytes
) -> bytes:
    """The data key from ``key``'s entry, after checking the context."""
    if header.context != context:
        raise VerificationFailed(
            f"blob was sealed for context {header.context[:64]!r}, not {context[:64]!r}"
        )
    public_key = key.public_key
    wrapped = entries.get(public_key)
    if wrapped is None:
        raise VerificationFailed(
            f"this key ({public_key.hex()[:16]}…) is not among the blob's recipients "
            f"({len(entries)} listed)"
        )
    secret = crypto_sign_ed25519_sk_to_curve25519(key.seed() + public_key)
    try:
        data_key = SealedBox(PrivateKey(secret)).decrypt(wrapped)
    except CryptoError:
        raise VerificationFailed(
            "this key's wrapped data key does not unwrap (recipient entry altered)"
        ) from None
    if len(data_key) != DATA_KEY_SIZE:
        raise VerificationFailed("this key's wrapped data key has the wrong size")
    return bytes(data_key)


def _decrypt(header: SealedHeader, data_key: bytes, body: memoryview) -> bytes:
    aad = _aad(header.plaintext_hash, header.nonce, header.context)
    try:
        plaintext = AESGCM(data_key).decrypt(header.nonce, body, aad)
    except InvalidTag:
        raise VerificationFailed("ciphertext or header altered (AES-GCM tag mismatch)") from None
    if sha256(plaintext) != header.plaintext_hash:
        raise VerificationFailed("decrypted plaintext does not match the header's plaintext hash")
    return plaintext
