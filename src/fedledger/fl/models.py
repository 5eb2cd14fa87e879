"""Model registry and conversion between torch modules and :data:`Weights`.

Models are built inside a forked RNG so that construction never touches torch's
global random state, and initial weights are a pure function of ``(name, seed)``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from fedledger.errors import UsageError
from fedledger.fl.weights import Weights, as_float32


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


MODELS: dict[str, Callable[[], nn.Module]] = {
    "digits-mlp": DigitsMLP,
    "digits-cnn": DigitsCNN,
}


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
