"""Pure aggregation kernels (NumPy only, no I/O).

Auditors re-run these to check an aggregator's claimed result bit-for-bit, so
the arithmetic is fixed: every input is read as float32, widened to float64,
accumulated in the order given, divided once by the total weight, and only then
rounded to float32. NumPy element-wise add/multiply/divide are correctly rounded
IEEE operations, so the result does not depend on thread count or SIMD width.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import numpy as np

from fedledger.fl.weights import Weights, as_float32


def _check_count(i: int, n: object) -> int:
    """Validate one sample count: a non-negative integer (bool is refused)."""
    if isinstance(n, bool) or not isinstance(n, numbers.Integral):
        raise ValueError(f"result {i}: sample count must be an int, got {type(n).__name__}")
    if n < 0:
        raise ValueError(f"result {i}: negative sample count {n}")
    return int(n)


def _check_layout(i: int, w: Weights, ref: Weights) -> None:
    """Require ``w`` to have the same tensor names, order and shapes as ``ref``."""
    if len(w) != len(ref):
        raise ValueError(f"result {i}: {len(w)} tensors, expected {len(ref)}")
    for (name, arr), (ref_name, ref_arr) in zip(w, ref, strict=True):
        if name != ref_name:
            raise ValueError(f"result {i}: tensor {name!r} where {ref_name!r} was expected")
        if np.shape(arr) != np.shape(ref_arr):
            raise ValueError(
                f"result {i}: tensor {name!r} has shape {np.shape(arr)}, "
                f"expected {np.shape(ref_arr)}"
            )


def fedavg(results: Sequence[tuple[Weights, int]]) -> Weights:
    """Federated averaging: the sample-count-weighted mean of several model states.

    ``results`` is a sequence of ``(weights, num_samples)``. Raises ValueError on
    empty input, a zero total weight, a bad count, or mismatched names/shapes.
    Results with a count of 0 still have their layout checked but contribute nothing.
    """
    if not results:
        raise ValueError("fedavg: no results to aggregate")
    counts = [_check_count(i, n) for i, (_, n) in enumerate(results)]
    total = sum(counts)
    if total == 0:
        raise ValueError("fedavg: total sample count is zero")
    ref = results[0][0]
    for i, (w, _) in enumerate(results):
        _check_layout(i, w, ref)

    out: Weights = []
    for t, (name, _) in enumerate(ref):
        terms = [
            np.float64(n) * as_float32(name, w[t][1]).astype(np.float64)
            for (w, _), n in zip(results, counts, strict=True)
        ]
        # Start from the first term, not from zeros, so that -0.0 survives a single input.
        acc = terms[0]
        for term in terms[1:]:
            acc = acc + term
        mean = np.asarray(acc / np.float64(total), dtype=np.float64)  # 0-d stays an array
        out.append((name, mean.astype(np.float32)))
    return out
