"""Core ML parity off macOS: the saved ML program, evaluated in NumPy, against PyTorch.

Errors are judged with the ``coreml`` rows of the tolerance table. The noise that
widens a bound is the model's own loss at the program's precision: PyTorch fp32
against fp64 for an fp32 program, PyTorch fp32 against PyTorch fp16 for an fp16 one.
A program with compressed weights is compared with a copy of the model holding its
decompressed weights under the same rows, and that copy with the fp32 model under its
weight format's row (``verify.mil.compressed``).
Where that noise is so large that the bound admits any output (allowed error at or
above the signal's RMS), parity cannot be judged, and the result says so.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ca_export.errors import CheckFailedError
from ca_export.export.coreml import PRECISIONS, ImageInput
from ca_export.tracing import output_arrays
from ca_export.verify.metrics import Comparison, compare
from ca_export.verify.mil.compressed import CompressedCopy, compressed_copy
from ca_export.verify.mil.ops import Unsupported
from ca_export.verify.mil.program import MilProgram, load_program, run_program, uncovered
from ca_export.verify.parity import (
    CaseResult,
    GateResult,
    float64_copy,
    fp32_runs,
    run_float64,
)
from ca_export.verify.tolerances import tolerance, user_tolerance

BACKEND = "coreml-mil-numpy"


@dataclass(frozen=True)
class NotVerified:
    """Parity could not be judged, and why (never a pass by itself).

    ``model_loss`` is set where the program ran but the model's own loss at the
    program's precision reaches its signal (see ``vacuous``): the program may still be
    proven the right program by a check that removes that loss (``fp32_arithmetic``).
    """

    reason: str
    model_loss: bool = False


def reference_runs(
    model: nn.Module, other: nn.Module | None, x: torch.Tensor, dtype: str
) -> tuple[list[np.ndarray], list[list[np.ndarray]]]:
    """The reference outputs on ``x``, and per output the model's run alike the artifact.

    ``other`` is ``reference_copy(model, dtype)``. For fp32 the reference is the float64
    copy's run and the alike runs are the model's own (``fp32_runs``); for fp16 the
    reference is the model's run and the alike run the fp16 copy's. Where ``other`` cannot
    run, the reference is the model's run and nothing is alike (no noise).
    """
    with torch.no_grad():
        own = output_arrays(model(x))
        try:
            if dtype == "float16" and other is not None:
                return own, [[a] for a in output_arrays(other(x.half()))]
        except Exception:
            return own, [[] for _ in own]
        exact = run_float64(other, x)
    if exact is None:
        return own, [[] for _ in own]
    return exact, fp32_runs(model, x, own)


def reference_copy(model: nn.Module, dtype: str) -> nn.Module | None:
    """The copy of ``model`` that measures its own noise at ``dtype`` (fp16, or fp64 for fp32)."""
    if dtype != "float16":
        return float64_copy(model)
    try:
        return copy.deepcopy(model).half()
    except Exception:
        return None


def vacuous(
    comparisons: Sequence[Comparison],
    shape: tuple[int, ...],
    subject: str = "the model itself",
) -> str | None:
    """Why these comparisons cannot fail (bounds as large as the signal), or None."""
    loose = [c for c in comparisons if c.slack >= 1]
    if not loose:
        return None
    return (
        f"not verified: at {'x'.join(map(str, shape))} {subject} at this precision is "
        f"off by rel err {loose[0].noise:.3g} ({loose[0].name}), so any output would pass"
    )


def subject(weights: CompressedCopy | None) -> str:
    """Whose noise a gate measures, for its "not verified" reason."""
    return "the model itself" if weights is None else f"the model with its {weights.key}"


def mil_parity(
    package: Path,
    model: nn.Module,
    inputs: Sequence[tuple[int, torch.Tensor]],
    precision: str,
    image: ImageInput | None = None,
    weights: CompressedCopy | None = None,
    bounds: tuple[float | None, float | None] = (None, None),
) -> GateResult | NotVerified:
    """Evaluate the saved ML program at ``package`` on each seeded input; compare with ``model``.

    A program with compressed weights is compared with ``weights``, the model's copy
    holding them (``compressed_copy``; made here when not given).

    ``precision`` is the conversion's compute precision, "fp16" or "fp32". For a
    package with an image input, ``inputs`` are RGB pixels: the program takes them as
    they are (it applies its own preprocessing), ``model`` takes ``image.normalise``
    of them, the normalisation the user asked for. Returns the
    gate (backend ``coreml-mil-numpy``), or ``NotVerified`` for a format it cannot read, an op
    the evaluator does not implement, or an fp16 bound that would pass anything.
    """
    dtype = PRECISIONS[precision]
    try:
        program = load_program(package)
    except Unsupported as err:
        return NotVerified(f"not verified: {err}")
    gaps = uncovered(program)
    if gaps:
        return NotVerified(f"not verified: {program.unit} " + ", ".join(gaps))
    if len(program.input_names) != 1:
        return NotVerified(f"not verified: the program takes {len(program.input_names)} inputs")
    if weights is None and isinstance(program, MilProgram) and inputs:
        weights = compressed_copy(program, model, tuple(inputs[0][1].shape))
    reference = weights.model if weights else model
    tol = user_tolerance(tolerance(dtype, "coreml"), *bounds)
    other = reference_copy(reference, dtype)
    result = GateResult(BACKEND, tolerance=tol)
    for seed, x in inputs:
        torch_x = x if image is None else image.normalise(x)
        expected, alike = reference_runs(reference, other, torch_x, dtype)
        try:
            got = run_program(program, x.numpy())
        except Unsupported as err:
            return NotVerified(f"not verified: {err}")
        if len(got) != len(expected):
            raise CheckFailedError(
                f"{package.name} has {len(got)} outputs, the model {len(expected)}"
            )
        comparisons = [
            compare(name, ref, out, tol, a)
            for name, ref, out, a in zip(
                program.compared_outputs, expected, got, alike, strict=True
            )
        ]
        reason = vacuous(comparisons, tuple(x.shape), subject(weights))
        if reason:
            return NotVerified(reason, model_loss=True)
        result.cases.append(CaseResult(tuple(x.shape), seed, comparisons))
    return result
