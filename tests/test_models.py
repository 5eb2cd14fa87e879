"""The model registry: every torch model matches its torch-free spec; the seed-004 CNN."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from fedledger.errors import UsageError
from fedledger.fl.models import MODELS, build_model, init_weights
from fedledger.fl.specs import MODEL_SPECS, ModelSpec, model_spec
from fedledger.fl.weights import num_parameters

SRC = Path(__file__).resolve().parents[1] / "src"


def test_registry_and_specs_have_the_same_names() -> None:
    assert set(MODELS) == set(MODEL_SPECS)
    for name, spec in MODEL_SPECS.items():
        assert spec.name == name


@pytest.mark.parametrize("name", sorted(MODELS))
def test_built_model_matches_its_spec(name: str) -> None:
    spec = model_spec(name)
    model = build_model(name)
    assert sum(p.numel() for p in model.parameters()) == spec.num_parameters
    # No buffers: the parameters are the whole model state that gets hashed and averaged.
    assert num_parameters(init_weights(name, 0)) == spec.num_parameters
    out = model(torch.zeros(4, *spec.input_shape))
    assert tuple(out.shape) == (4, spec.num_classes)
    assert spec.datasets and spec.architecture


def test_spec_is_frozen_and_shapes_are_tuples() -> None:
    spec = model_spec("mudfl-cnn")
    assert isinstance(spec, ModelSpec)
    with pytest.raises(AttributeError):
        spec.num_parameters = 1  # type: ignore[misc]
    for s in MODEL_SPECS.values():
        assert isinstance(s.input_shape, tuple) and isinstance(s.datasets, tuple)


def test_unknown_spec_is_usage_error_listing_known_names() -> None:
    with pytest.raises(UsageError, match="resnet-9000") as exc:
        model_spec("resnet-9000")
    for name in MODEL_SPECS:
        assert name in str(exc.value)


def test_mudfl_cnn_is_the_seed_004_network() -> None:
    """Seed 004 §VIII-A: two 5x5 convs (20, 50 channels) each with 2x2 max pooling,
    fully connected 500 and 10, ReLU, softmax output: 431,080 parameters."""
    model = build_model("mudfl-cnn")
    assert sum(p.numel() for p in model.parameters()) == 431_080
    assert model_spec("mudfl-cnn").num_parameters == 431_080
    assert model_spec("mudfl-cnn").input_shape == (1, 28, 28)
    shapes = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    assert shapes == {
        "conv1.weight": (20, 1, 5, 5),
        "conv1.bias": (20,),
        "conv2.weight": (50, 20, 5, 5),
        "conv2.bias": (50,),
        "fc1.weight": (500, 800),
        "fc1.bias": (500,),
        "fc2.weight": (10, 500),
        "fc2.bias": (10,),
    }
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.kernel_size, c.padding, c.stride) for c in convs] == [((5, 5), (0, 0), (1, 1))] * 2


def test_mudfl_cnn_forward_backward_on_a_small_batch() -> None:
    model = build_model("mudfl-cnn", seed=1)
    x = torch.randn(8, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    logits = model(x)
    assert tuple(logits.shape) == (8, 10)
    torch.nn.functional.cross_entropy(logits, torch.arange(8)).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize(
    ("name", "size"),
    [("logreg-digits", 64), ("logreg-mnist1d", 40), ("logreg-28", 784)],
)
def test_logistic_regression_is_one_linear_layer(name: str, size: int) -> None:
    """Seed 001 trains a (multinomial) logistic regression: weights of k features x l classes."""
    shapes = [tuple(t.shape) for _, t in init_weights(name, 0)]
    assert shapes == [(10, size), (10,)]


def test_mnist1d_cnn_is_small() -> None:
    spec = model_spec("mnist1d-cnn")
    assert spec.input_shape == (1, 40) and spec.datasets == ("mnist1d",)
    assert spec.num_parameters == 5_210


def test_specs_and_program_do_not_load_torch() -> None:
    """Edge validators hash the training program, so specs and program stay torch-free."""
    code = (
        "import sys\n"
        "import fedledger.fl.specs, fedledger.fl.program\n"
        "fedledger.fl.program.training_program('mudfl-cnn', 1, 64, 0.01, 0.9)\n"
        "bad = [m for m in ('torch', 'sklearn') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env={"PYTHONPATH": str(SRC)})
