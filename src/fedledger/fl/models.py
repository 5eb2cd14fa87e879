"""Model registry and conversion between torch modules and :data:`Weights`.

Models are built inside a forked RNG so that construction never touches torch's
global random state, and initial weights are a pure function of ``(name, seed)``.
Every model returns logits of shape ``(n, num_classes)``; its torch-free
description (input shape, parameter count, architecture) is in
:data:`fedledger.fl.specs.MODEL_SPECS`, which has the same names as :data:`MODELS`.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import numpy as np
import torch
from torch import nn

from fedledger.errors import UsageError
from fedledger.fl.weights import Weights, as_float32

__all__ = [
    "MODELS",
    "DigitsCNN",
    "DigitsMLP",
    "LogisticRegression",
    "Mnist1dCNN",
    "MudflCNN",
    "build_model",
    "get_weights",
    "init_weights",
    "set_weights",
]


class DigitsMLP(nn.Module):
    """(n, 1, 8, 8) -> flatten -> 64 -> 64 ReLU -> 10 logits."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(64, 64)
        self.fc2 = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(torch.flatten(x, 1))))


class DigitsCNN(nn.Module):
    """(n, 1, 8, 8) -> conv 1->8 3x3 pad 1, ReLU, maxpool 2 -> 128 -> 32 ReLU -> 10 logits."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 8, kernel_size=3, padding=1)
        self.fc1 = nn.Linear(8 * 4 * 4, 32)
        self.fc2 = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.max_pool2d(torch.relu(self.conv(x)), 2)
        return self.fc2(torch.relu(self.fc1(torch.flatten(h, 1))))


class MudflCNN(nn.Module):
    """The CNN of seed 004 §VIII-A for 28x28 digits: 431,080 parameters.

    (n, 1, 28, 28) -> conv 1->20 5x5, ReLU, maxpool 2 -> conv 20->50 5x5, ReLU, maxpool 2
    -> flatten 800 -> 500 ReLU -> 10 logits. The seed's final softmax layer is not part
    of ``forward``: training applies it inside the cross-entropy loss and prediction
    takes the argmax of the logits, which softmax would not change.
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 20, kernel_size=5)
        self.conv2 = nn.Conv2d(20, 50, kernel_size=5)
        self.fc1 = nn.Linear(50 * 4 * 4, 500)
        self.fc2 = nn.Linear(500, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.max_pool2d(torch.relu(self.conv1(x)), 2)
        h = torch.max_pool2d(torch.relu(self.conv2(h)), 2)
        return self.fc2(torch.relu(self.fc1(torch.flatten(h, 1))))


class Mnist1dCNN(nn.Module):
    """(n, 1, 40) mnist1d signals -> three stride-2 1-D convs of 25 channels, ReLU -> 10 logits.

    Lengths 40 -> 19 -> 10 -> 5, then 125 -> 10: 5,210 parameters, small enough that a
    device trains an epoch of a hundred signals in milliseconds.
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(1, 25, kernel_size=5, stride=2, padding=1)
        self.conv2 = nn.Conv1d(25, 25, kernel_size=3, stride=2, padding=1)
        self.conv3 = nn.Conv1d(25, 25, kernel_size=3, stride=2, padding=1)
        self.fc = nn.Linear(25 * 5, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.conv1(x))
        h = torch.relu(self.conv2(h))
        h = torch.relu(self.conv3(h))
        return self.fc(torch.flatten(h, 1))


class LogisticRegression(nn.Module):
    """Multinomial logistic regression (seed 001): flatten -> one linear layer -> logits.

    The softmax is applied by the cross-entropy loss, as for the other models.
    """

    def __init__(self, in_features: int, num_classes: int = 10) -> None:
        super().__init__()
        self.fc = nn.Linear(in_features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(x, 1))


MODELS: dict[str, Callable[[], nn.Module]] = {
    "digits-mlp": DigitsMLP,
    "digits-cnn": DigitsCNN,
    "mudfl-cnn": MudflCNN,
    "mnist1d-cnn": Mnist1dCNN,
    "logreg-digits": partial(LogisticRegression, 8 * 8),
    "logreg-mnist1d": partial(LogisticRegression, 40),
    "logreg-28": partial(LogisticRegression, 28 * 28),
}
"""Factories by name; the same names as :data:`fedledger.fl.specs.MODEL_SPECS`."""


def build_model(name: str, seed: int = 0) -> nn.Module:
    """Instantiate model ``name`` with initial weights drawn from ``seed``.

    Uses a forked RNG, so torch's global random state is left untouched.
    Raises UsageError for an unknown name.
    """
    factory = MODELS.get(name)
    if factory is None:
        known = ", ".join(sorted(MODELS))
        raise UsageError(f"unknown model {name!r}; known models: {known}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return factory()


def get_weights(model: nn.Module) -> Weights:
    """The model's state as float32 NumPy copies, in ``state_dict`` order."""
    return [
        (name, t.detach().cpu().numpy().astype(np.float32, copy=True))
        for name, t in model.state_dict().items()
    ]


def set_weights(model: nn.Module, w: Weights) -> None:
    """Load ``w`` into ``model``; names (in order) and shapes must match exactly, else ValueError."""
    state = model.state_dict()
    expected = list(state)
    got = [name for name, _ in w]
    if got != expected:
        raise ValueError(f"weight names {got} do not match model parameters {expected}")
    new_state: dict[str, torch.Tensor] = {}
    for name, value in w:
        arr = as_float32(name, value)
        if tuple(arr.shape) != tuple(state[name].shape):
            raise ValueError(
                f"tensor {name!r}: shape {tuple(arr.shape)} does not match model shape "
                f"{tuple(state[name].shape)}"
            )
        new_state[name] = torch.from_numpy(arr.copy())
    model.load_state_dict(new_state, strict=True)


def init_weights(name: str, seed: int) -> Weights:
    """Deterministic initial weights of model ``name`` for ``seed``."""
    return get_weights(build_model(name, seed))
