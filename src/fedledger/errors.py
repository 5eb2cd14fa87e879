"""One error tree for the whole project.

Every expected failure is a subclass of :class:`FedledgerError` carrying an
``exit_code``; only the CLI entry point (``fedledger.cli.main``) turns them into
process exit codes. The table :data:`EXIT_CODES` documents each code.
"""

from __future__ import annotations


class FedledgerError(Exception):
    """Root of every expected failure; ``exit_code`` is what the CLI exits with."""

    exit_code = 1


class UsageError(FedledgerError):
    """The caller asked for something malformed (bad flag, bad config file)."""

    exit_code = 2


class ConfigError(UsageError):
    """A node or demo configuration file is missing, unreadable or invalid."""


class DecodeError(FedledgerError):
    """Bytes do not decode to a valid object of the expected schema."""

    exit_code = 3


class InvalidSignature(FedledgerError):
    """A signature does not verify for the claimed key and message."""

    exit_code = 4


class InvalidTransaction(FedledgerError):
    """A transaction is rejected before execution (size, signature, nonce, chain)."""

    exit_code = 5


class InvalidBlock(FedledgerError):
    """A block does not extend the chain validly (link, roots, signature, proposer)."""

    exit_code = 6


class ContractError(FedledgerError):
    """A contract call failed; the state change is rolled back and a failed receipt kept."""

    exit_code = 7


class StoreCorrupted(FedledgerError):
    """A persisted record no longer matches its hash, or the database is damaged."""

    exit_code = 8


class BlobCorrupted(StoreCorrupted):
    """A stored blob's bytes no longer hash to its address."""


class NotFound(FedledgerError):
    """A block, transaction, receipt or blob that was asked for does not exist."""

    exit_code = 9


class NodeUnavailable(FedledgerError):
    """A peer node could not be reached or answered with an error."""

    exit_code = 10


class VerificationFailed(FedledgerError):
    """An audit or lineage check found a mismatch."""

    exit_code = 11


EXIT_CODES: dict[int, str] = {
    0: "success",
    1: "unexpected internal error (a bug: please report it)",
    2: "usage or configuration error",
    3: "malformed encoded object",
    4: "bad signature",
    5: "invalid transaction",
    6: "invalid block",
    7: "contract call failed",
    8: "stored data is corrupted",
    9: "not found",
    10: "peer node unavailable",
    11: "verification failed",
    130: "interrupted (Ctrl-C)",
}
