"""The training program's identity: what the authenticator binds a model to.

The program names everything that decides what local training produces from a
global model and a device's data: the model (name, input shape, classes,
parameter count, architecture), the optimiser and its settings, the local
epochs and batch size, the loss and the training code version. A device that
would run anything else gets a different hash and refuses the round.

Floats are carried as their decimal strings (``repr``), so the encoding is exact
and the same on every platform. This module is torch-free: edge validators
compute the hash too.
"""

from __future__ import annotations

import math
from typing import Any

from fedledger.codec import cbor
from fedledger.crypto.hashing import tagged_hash
from fedledger.errors import UsageError
from fedledger.fl.specs import model_spec

__all__ = ["LOSS", "OPTIMIZERS", "TRAINING_PROGRAM_VERSION", "program_hash", "training_program"]

TRAINING_PROGRAM_VERSION = "2"
"""Bump whenever the training procedure changes in a way that changes its output."""

OPTIMIZERS = ("sgd",)
"""Optimisers a training program may name (minibatch SGD, as run by ``train_local``)."""

LOSS = "cross-entropy"
"""The loss of every training program: softmax cross-entropy over the model's logits."""


def _bad(name: str, bounds: str, value: object) -> UsageError:
    return UsageError(f"training program: {name} must be {bounds}, got {value!r}")


def _real(name: str, value: float) -> float:
    """``value`` as a finite float (``-0.0`` becomes ``0.0``); UsageError otherwise."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _bad(name, "a finite number", value)
    return float(value) + 0.0


def _count(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _bad(name, "an int >= 1", value)
    return value


def training_program(
    model: str,
    epochs: int,
    batch_size: int,
    lr: float,
    momentum: float,
    *,
    optimizer: str = "sgd",
    weight_decay: float = 0.0,
) -> dict[str, Any]:
    """The canonical description of a training program (the input of :func:`program_hash`).

    Raises UsageError for an unknown model or optimiser, or a setting out of range.
    """
    spec = model_spec(model)
    if optimizer not in OPTIMIZERS:
        raise UsageError(
            f"unknown optimizer {optimizer!r}; known optimizers: {', '.join(OPTIMIZERS)}"
        )
    lr_, momentum_, weight_decay_ = (
        _real("lr", lr),
        _real("momentum", momentum),
        _real("weight_decay", weight_decay),
    )
    if lr_ <= 0:
        raise _bad("lr", "> 0", lr)
    if not 0 <= momentum_ < 1:
        raise _bad("momentum", "in [0, 1)", momentum)
    if weight_decay_ < 0:
        raise _bad("weight_decay", ">= 0", weight_decay)
    return {
        "version": TRAINING_PROGRAM_VERSION,
        "model": {
            "name": spec.name,
            "input_shape": list(spec.input_shape),
            "num_classes": spec.num_classes,
            "num_parameters": spec.num_parameters,
            "architecture": spec.architecture,
        },
        "optimizer": {
            "name": optimizer,
            "lr": repr(lr_),
            "momentum": repr(momentum_),
            "weight_decay": repr(weight_decay_),
        },
        "local": {
            "epochs": _count("epochs", epochs),
            "batch_size": _count("batch_size", batch_size),
        },
        "loss": LOSS,
    }


def program_hash(program: dict[str, Any]) -> bytes:
    """Tagged hash of the program's canonical CBOR encoding."""
    return tagged_hash("fedledger/program", cbor.encode(program))
