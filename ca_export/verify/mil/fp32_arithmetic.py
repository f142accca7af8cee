"""fp32-arithmetic parity of an fp16 ML program: its ops checked with the fp32 bound.

An fp16 program's own error is fp16 rounding of activations and of constants; on an
ill-conditioned network that reaches the signal (the sample ``mobilenetv2_ca`` at
64x64: rounding its weights alone to fp16 moves its output by 1.4 of its RMS), so the
fp16 gate has to allow so much that a wrong conversion could pass under it. This check
removes both roundings and judges the program's ops with the fp32 bound:

- The program is converted a second time in fp32 (the "twin"). coremltools' fp16 pass
  only rounds constants and adds ``cast`` ops, so the two programs pair op by op and
  input by input (names cannot pair them: coremltools numbers constants from a counter
  that runs across conversions); every fp16 constant must equal its partner rounded to
  fp16, bit for bit, or the check fails and names it.
- The saved fp16 program is evaluated again with every value kept in fp32 and its
  fp16 constants replaced by the fp32 values they were rounded from (the same ops, the
  same constants before their rounding), and compared with the fp32 PyTorch model
  under the ``("float32", "coreml")`` tolerance and the model's fp32 noise.

Together they say the fp16 program is the fp32 program with its constants rounded and
its activations held in fp16; what fp16 rounding does to the outputs is left to the
fp16 gate. Evaluating with the fp16 constants themselves (no twin) cannot be judged
with an fp32 bound on the sample models, as measured above.

A program with compressed weights (``constexpr_*`` ops, which the twin does not have)
pairs with its twin without those ops; its compressed weights keep their decompressed
values, and it is compared with the model's copy holding those same values
(``verify.mil.compressed``) under the same fp32 bound.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ca_export.export.coreml import ImageInput
from ca_export.verify.metrics import compare
from ca_export.verify.mil.compressed import CompressedCopy
from ca_export.verify.mil.ops import Unsupported
from ca_export.verify.mil.parity import BACKEND, reference_copy, reference_runs
from ca_export.verify.mil.program import MilProgram, load_program, run_program
from ca_export.verify.parity import CaseResult, GateResult
from ca_export.verify.tolerances import tolerance


@dataclass
class Fp32Arithmetic:
    """The fp32-arithmetic gate and the constant check behind it."""

    gate: GateResult
    constants: int = 0
    mismatches: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """Whether every fp16 constant is its twin rounded and every output passed."""
        return not self.mismatches and bool(self.gate.cases) and self.gate.passed


def twin_function(model: Any) -> Any:
    """The main function of an in-memory converted ``MLModel`` (the fp32 twin)."""
    return model._mil_program.functions["main"]


def _computing(function: Any) -> list[Any]:
    """A function's ops without ``const``, ``cast`` and weight decompression (``constexpr_*``):
    the ops fp16 conversion and weight compression leave alike."""
    return [
        op
        for op in function.operations
        if op.op_type not in ("const", "cast") and not op.op_type.startswith("constexpr_")
    ]


def _values(value: Any) -> list[Any]:
    """An op input's vars (some inputs are tuples of vars)."""
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _fp16_constant(var: Any) -> np.ndarray | None:
    """The fp16 value of a var a ``const`` op makes, or None."""
    if var.op is None or var.op.op_type != "const":
        return None
    value = var.val
    if not isinstance(value, (np.ndarray, np.generic)) or np.asarray(value).dtype != np.float16:
        return None
    return np.asarray(value)


def unrounded(program: MilProgram, twin: Any) -> tuple[dict[str, Any], list[str]]:
    """Each fp16 constant's fp32 value in the ``twin`` function, and the ones that do not match.

    The two programs are paired op by op (their ops other than ``const`` and ``cast``
    must agree in type and order) and input by input; every fp16 constant must be its
    partner's value rounded to fp16.
    """
    ours, theirs = _computing(program.function), _computing(twin)
    if [op.op_type for op in ours] != [op.op_type for op in theirs]:
        return {}, ["the fp16 program's ops are not the fp32 twin's ops"]
    values: dict[str, Any] = {}
    problems = []
    for op, partner in zip(ours, theirs, strict=True):
        for key, value in op.inputs.items():
            mine = _values(value)
            others = _values(partner.inputs[key]) if key in partner.inputs else []
            for var, other in zip(mine, (others + [None] * len(mine))[: len(mine)], strict=True):
                found = _fp16_constant(var)
                if found is None:
                    continue
                source = getattr(other, "val", None)
                if not isinstance(source, (np.ndarray, np.generic)):
                    problems.append(
                        f"{var.name} ({op.op_type}.{key}): no fp32 constant in the twin"
                    )
                elif np.asarray(source).shape != found.shape or not np.array_equal(
                    np.asarray(source).astype(np.float16), found, equal_nan=True
                ):
                    problems.append(
                        f"{var.name} ({op.op_type}.{key}): not the twin's value rounded"
                    )
                else:
                    values[var.name] = np.asarray(source, dtype=np.float32)
    return values, problems


def fp32_arithmetic_parity(
    package: Path,
    model: nn.Module,
    inputs: Sequence[tuple[int, torch.Tensor]],
    twin: Any,
    image: ImageInput | None = None,
    weights: CompressedCopy | None = None,
) -> Fp32Arithmetic:
    """The saved fp16 program at ``package`` in fp32 arithmetic against the fp32 ``model``.

    ``twin`` is the same program converted in fp32 (``twin_function``); ``inputs`` and
    ``image`` are as for ``mil_parity``; a program with compressed weights is compared
    with ``weights``, the model's copy holding them.
    """
    program = load_program(package)
    if not isinstance(program, MilProgram):
        raise Unsupported("fp32 arithmetic applies to ML programs only")
    constants, mismatches = unrounded(program, twin)
    result = Fp32Arithmetic(GateResult(BACKEND), len(constants) + len(mismatches), mismatches)
    tol = tolerance("float32", "coreml")
    reference = model if weights is None else weights.model
    precise = reference_copy(reference, "float32")
    for seed, x in inputs:
        expected, alike = reference_runs(
            reference, precise, x if image is None else image.normalise(x), "float32"
        )
        got = run_program(program, x.numpy(), fp32_arithmetic=True, constants=constants)
        comparisons = [
            compare(name, ref, out, tol, a)
            for name, ref, out, a in zip(
                program.compared_outputs, expected, got, alike, strict=True
            )
        ]
        result.gate.cases.append(CaseResult(tuple(x.shape), seed, comparisons))
    return result
