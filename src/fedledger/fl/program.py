"""The training program's identity: what the authenticator binds a model to.

The hash covers the model architecture name, the local-training settings and
the training code version; a device that would run anything else refuses the
round. Floats are carried as their decimal strings so the encoding is exact.
"""

from __future__ import annotations

from typing import Any

from fedledger.codec import cbor
from fedledger.crypto.hashing import tagged_hash

TRAINING_PROGRAM_VERSION = "1"
"""Bump whenever the training procedure changes in a way that changes its output."""


def training_program(model: str, epochs: int, batch_size: int, lr: float, momentum: float) -> dict[str, Any]:
    return {
        "model": model,
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": repr(float(lr)),
        "momentum": repr(float(momentum)),
        "version": TRAINING_PROGRAM_VERSION,
    }


def program_hash(program: dict[str, Any]) -> bytes:
    return tagged_hash("fedledger/program", cbor.encode(program))
