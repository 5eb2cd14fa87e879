"""Deterministic local training and evaluation.

Auditors re-execute training steps and compare weight hashes, so
:func:`train_local` must give bit-identical results for identical inputs. It
therefore runs single-threaded with deterministic algorithms enabled, shuffles
with a local seeded generator, and restores every global torch setting it
touched on exit. (Bit-identity is guaranteed on the same torch build and CPU
type; different SIMD kernels on another CPU may round differently.)
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from fedledger.fl.data import Dataset
from fedledger.fl.models import build_model, get_weights, set_weights
from fedledger.fl.program import TRAINING_PROGRAM_VERSION
from fedledger.fl.weights import Weights

__all__ = ["TRAINING_PROGRAM_VERSION", "TrainConfig", "deterministic_torch", "evaluate", "train_local"]

_EVAL_BATCH = 1024


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one local training run (recorded with each update)."""

    epochs: int = 1
    batch_size: int = 32
    lr: float = 0.05
    momentum: float = 0.0

    def __post_init__(self) -> None:
        if isinstance(self.epochs, bool) or not isinstance(self.epochs, int) or self.epochs < 1:
            raise ValueError(f"epochs must be an int >= 1, got {self.epochs!r}")
        if (
            isinstance(self.batch_size, bool)
            or not isinstance(self.batch_size, int)
            or self.batch_size < 1
        ):
            raise ValueError(f"batch_size must be an int >= 1, got {self.batch_size!r}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a finite number > 0, got {self.lr!r}")
        if not (math.isfinite(self.momentum) and 0 <= self.momentum < 1):
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum!r}")

    def to_dict(self) -> dict[str, int | float]:
        """Plain dict of the fields (for JSON / canonical encoding)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, int | float]) -> TrainConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise ValueError."""
        unknown = set(d) - {"epochs", "batch_size", "lr", "momentum"}
        if unknown:
            raise ValueError(f"unknown TrainConfig keys: {sorted(unknown)}")
        return cls(**d)  # type: ignore[arg-type]


@contextmanager
def deterministic_torch() -> Iterator[None]:
    """Run the body with deterministic algorithms and one intra-op thread, then restore both.

    One thread makes reductions independent of the machine's core count. These
    are process-wide torch settings, so concurrent torch work in other threads
    is affected for the duration of the block.
    """
    prev_det = torch.are_deterministic_algorithms_enabled()
    prev_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    prev_threads = torch.get_num_threads()
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(prev_threads)
        torch.use_deterministic_algorithms(prev_det, warn_only=prev_warn)


def _tensors(data: Dataset) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-copy torch views of a dataset (read only by the callers)."""
    return torch.from_numpy(data.x), torch.from_numpy(data.y)


def train_local(
    model_name: str, weights: Weights, data: Dataset, cfg: TrainConfig, seed: int
) -> tuple[Weights, float]:
    """Train from ``weights`` on ``data`` with minibatch SGD; return new weights and mean loss.

    The loss is the sample-weighted mean cross-entropy over all minibatches of
    all epochs (measured before each step). Raises ValueError for empty data or
    if training diverges to a non-finite loss.
    """
    if len(data) == 0:
        raise ValueError("train_local: empty dataset")
    with deterministic_torch():
        model = build_model(model_name)
        set_weights(model, weights)
        model.train()
        opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum)
        gen = torch.Generator().manual_seed(seed)
        x, y = _tensors(data)
        n = len(data)
        loss_sum = 0.0
        for _ in range(cfg.epochs):
            order = torch.randperm(n, generator=gen)
            for start in range(0, n, cfg.batch_size):
                idx = order[start : start + cfg.batch_size]
                opt.zero_grad(set_to_none=True)
                loss = F.cross_entropy(model(x[idx]), y[idx])
                loss.backward()
                opt.step()
                loss_sum += loss.item() * len(idx)
        mean_loss = loss_sum / (n * cfg.epochs)
        if not math.isfinite(mean_loss):
            raise ValueError(f"train_local: training diverged (mean loss {mean_loss})")
        return get_weights(model), mean_loss


def evaluate(model_name: str, weights: Weights, data: Dataset) -> float:
    """Classification accuracy of ``weights`` on ``data``, in [0, 1]."""
    if len(data) == 0:
        raise ValueError("evaluate: empty dataset")
    model = build_model(model_name)
    set_weights(model, weights)
    model.eval()
    x, y = _tensors(data)
    correct = 0
    with torch.no_grad():
        for start in range(0, len(data), _EVAL_BATCH):
            pred = model(x[start : start + _EVAL_BATCH]).argmax(dim=1)
            correct += int((pred == y[start : start + _EVAL_BATCH]).sum().item())
    return correct / len(data)
