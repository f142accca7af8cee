"""Core ML's own prediction (macOS only) against the original PyTorch model.

Off macOS coremltools cannot predict; ``ca_export.verify.mil`` evaluates the saved
program instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from ca_export.export import coreml as coreml_export
from ca_export.tracing import example_input, output_arrays
from ca_export.verify.metrics import compare
from ca_export.verify.parity import (
    CaseResult,
    GateResult,
    float64_copy,
    fp32_runs,
    run_float64,
)
from ca_export.verify.tolerances import tolerance


def prediction_gate(
    model: Any,
    module: nn.Module,
    spec: coreml_export.InputSpec,
    output_names: Sequence[str],
    precision: str,
    labels: Sequence[str] | None = None,
    multiple: tuple[int, int] = (1, 1),
) -> GateResult:
    """Core ML's prediction (macOS only) against the original PyTorch model, output by
    output: against float64, with two fp32 runs as the noise (``parity.fp32_runs``)."""
    from PIL import Image

    tol = tolerance(coreml_export.PRECISIONS[precision], "coreml")
    precise = float64_copy(module)
    result = GateResult("coreml")
    for seed, shape in coreml_export.prediction_inputs(spec, multiple):
        x = example_input(shape, seed)
        feed: Any = x.numpy()
        if spec.image is not None:
            rgb = coreml_export.pixels(shape, seed)
            x = spec.image.normalise(rgb)
            feed = Image.fromarray(rgb[0].permute(1, 2, 0).numpy().astype(np.uint8), "RGB")
        with torch.no_grad():
            expected = output_arrays(module(x))
            exact = run_float64(precise, x) or expected
        got = model.predict({spec.name: feed})
        if labels:
            scores = got[
                coreml_export.PROBABILITIES
                if coreml_export.PROBABILITIES in got
                else output_names[0]
            ]
            values = [[scores[label] for label in labels]]
            outputs = [np.asarray(values, dtype=np.float32)]
        else:
            outputs = [np.asarray(got[name]) for name in output_names]
        with torch.no_grad():
            alike = fp32_runs(module, x, expected)
        comparisons = [
            compare(name, ref64, out, tol, runs)
            for name, ref64, out, runs in zip(output_names, exact, outputs, alike, strict=True)
        ]
        result.cases.append(CaseResult(shape, seed, comparisons))
    return result
