"""What each registered model is, without torch: shapes, size and architecture.

The training-program hash (:mod:`fedledger.fl.program`) binds a model to its
spec, and edge validators compute that hash, so this module stays free of torch
and scikit-learn. :mod:`fedledger.fl.models` builds the torch modules, and the
tests check that every built model matches its spec here.
"""

from __future__ import annotations

from dataclasses import dataclass

from fedledger.errors import UsageError

__all__ = ["MODEL_SPECS", "ModelSpec", "check_model_dataset", "model_spec"]


@dataclass(frozen=True)
class ModelSpec:
    """One registered model: per-sample input shape, classes, size and architecture."""

    name: str
    input_shape: tuple[int, ...]
    """Shape of one sample, without the batch axis, e.g. ``(1, 28, 28)``."""
    num_classes: int
    num_parameters: int
    """Total number of trainable scalars (weights and biases)."""
    architecture: str
    """Short, stable description of the layers up to the logits; part of the training-program
    hash. Softmax is never listed: the cross-entropy loss applies it in training and argmax
    at inference does not need it."""
    datasets: tuple[str, ...]
    """Data sets whose samples have ``input_shape``: ``digits``, ``mnist1d``, ``mnist``."""


def _linear(n_in: int, n_out: int) -> int:
    return n_in * n_out + n_out


def _conv(c_in: int, c_out: int, *kernel: int) -> int:
    size = 1
    for k in kernel:
        size *= k
    return c_in * c_out * size + c_out


_SPECS = (
    ModelSpec(
        name="digits-mlp",
        input_shape=(1, 8, 8),
        num_classes=10,
        num_parameters=_linear(64, 64) + _linear(64, 10),
        architecture="flatten | fc 64->64 relu | fc 64->10",
        datasets=("digits",),
    ),
    ModelSpec(
        name="digits-cnn",
        input_shape=(1, 8, 8),
        num_classes=10,
        num_parameters=_conv(1, 8, 3, 3) + _linear(8 * 4 * 4, 32) + _linear(32, 10),
        architecture="conv3x3 pad1 1->8 relu maxpool2 | flatten | fc 128->32 relu | fc 32->10",
        datasets=("digits",),
    ),
    # Seed 004 §VIII-A: two 5x5 convolutions (20 and 50 channels), each followed by
    # 2x2 max pooling, fully connected layers of 500 and 10 units, ReLU, softmax
    # output; 431,080 parameters. On 28x28 input: 28 -conv-> 24 -pool-> 12 -conv-> 8 -pool-> 4.
    ModelSpec(
        name="mudfl-cnn",
        input_shape=(1, 28, 28),
        num_classes=10,
        num_parameters=(
            _conv(1, 20, 5, 5) + _conv(20, 50, 5, 5) + _linear(50 * 4 * 4, 500) + _linear(500, 10)
        ),
        architecture=(
            "conv5x5 1->20 relu maxpool2 | conv5x5 20->50 relu maxpool2 | flatten"
            " | fc 800->500 relu | fc 500->10"
        ),
        datasets=("mnist", "digits28"),
    ),
    # Three stride-2 1-D convolutions over the 40-sample signal: 40 -> 19 -> 10 -> 5.
    ModelSpec(
        name="mnist1d-cnn",
        input_shape=(1, 40),
        num_classes=10,
        num_parameters=_conv(1, 25, 5) + _conv(25, 25, 3) + _conv(25, 25, 3) + _linear(25 * 5, 10),
        architecture=(
            "conv1d k5 s2 pad1 1->25 relu | conv1d k3 s2 pad1 25->25 relu"
            " | conv1d k3 s2 pad1 25->25 relu | flatten | fc 125->10"
        ),
        datasets=("mnist1d",),
    ),
    # Multinomial logistic regression (the regression model of seed 001 §III).
    ModelSpec(
        name="logreg-digits",
        input_shape=(1, 8, 8),
        num_classes=10,
        num_parameters=_linear(64, 10),
        architecture="flatten | fc 64->10",
        datasets=("digits",),
    ),
    ModelSpec(
        name="logreg-mnist1d",
        input_shape=(1, 40),
        num_classes=10,
        num_parameters=_linear(40, 10),
        architecture="flatten | fc 40->10",
        datasets=("mnist1d",),
    ),
    ModelSpec(
        name="logreg-28",
        input_shape=(1, 28, 28),
        num_classes=10,
        num_parameters=_linear(28 * 28, 10),
        architecture="flatten | fc 784->10",
        datasets=("mnist", "digits28"),
    ),
)

MODEL_SPECS: dict[str, ModelSpec] = {spec.name: spec for spec in _SPECS}
"""Every registered model by name; :data:`fedledger.fl.models.MODELS` has the same keys."""


def model_spec(name: str) -> ModelSpec:
    """The spec of model ``name``; raises UsageError naming the known models otherwise."""
    spec = MODEL_SPECS.get(name)
    if spec is None:
        known = ", ".join(sorted(MODEL_SPECS))
        raise UsageError(f"unknown model {name!r}; known models: {known}")
    return spec


def check_model_dataset(model: str, dataset: str) -> ModelSpec:
    """The spec of ``model`` if it takes ``dataset``'s samples; UsageError naming the models that do otherwise."""
    spec = model_spec(model)
    if dataset not in spec.datasets:
        fits = ", ".join(sorted(n for n, s in MODEL_SPECS.items() if dataset in s.datasets)) or "none"
        raise UsageError(f"model {model!r} does not take {dataset!r} samples; models for {dataset!r}: {fits}")
    return spec
