"""The Core ML gate: a saved package read back from disk and checked, in three steps.

``reload_check`` loads it and checks its inputs/outputs, the CA-only ops left per block
and, for compressed weights, that decompression ops are there. ``mil_parity`` evaluates
the saved program in NumPy against PyTorch (every platform; ``verify.mil``), and for
compressed weights also judges the weights' own loss. ``predict`` runs Core ML's own
prediction (macOS only). Each takes the one ``Candidate`` and returns its checks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.export import ExportedProgram

from ca_export.export import coreml as coreml_export
from ca_export.export import coreml_compress
from ca_export.export.coreml import InputSpec, Target
from ca_export.report import Check, Verdict, gate_check
from ca_export.report.figures import (
    ArithmeticFigures,
    MilFigures,
    StructureFigures,
    ValueFigures,
    WeightsFigures,
)
from ca_export.tracing import example_input
from ca_export.verify.coreml_prediction import prediction_gate
from ca_export.verify.mil.compressed import CompressedCopy, compressed_copy, weight_loss
from ca_export.verify.mil.fp32_arithmetic import fp32_arithmetic_parity
from ca_export.verify.mil.ops import Unsupported
from ca_export.verify.mil.parity import NotVerified
from ca_export.verify.mil.parity import mil_parity as evaluate
from ca_export.verify.mil.program import MilProgram, load_program


@dataclass(frozen=True)
class Candidate:
    """A saved package and what it is judged against.

    ``owner`` maps each converted op to its CA block's index (of ``blocks``); ``twin`` is
    the fp32 twin function of an fp16 ML program (``verify.mil.fp32_arithmetic``), else
    None; ``multiple`` the H, W multiples every gated size meets (``size_to_scale``).
    ``module`` is the original PyTorch model, ``program`` the traced program it was
    converted from; ``bounds`` the user's (rtol, atol).
    """

    path: Path
    target: Target
    spec: InputSpec
    output_names: tuple[str, ...]
    output_shapes: tuple[tuple[int, ...], ...]
    module: nn.Module
    program: ExportedProgram
    owner: dict[str, int]
    blocks: int
    labels: tuple[str, ...] = ()
    compress: str | None = None
    twin: Any = None
    multiple: tuple[int, int] = (1, 1)
    bounds: tuple[float | None, float | None] = (None, None)
    allow_unverified: bool = False


@dataclass(frozen=True)
class Reloaded:
    """``reload_check``'s result: the package's specification version, its checks, the
    ``structure`` gate, its op counts and the CA-only ops left per block."""

    spec_version: int
    checks: tuple[Check, ...]
    structure: Check
    op_counts: dict[str, int]
    ca_only_nodes_after: tuple[dict[str, int], ...]


@dataclass(frozen=True)
class Judged:
    """A gate step's checks, the ``parity`` gate it settled (None if none) and warnings."""

    checks: tuple[Check, ...]
    parity: Check | None = None
    warnings: tuple[str, ...] = field(default_factory=tuple)


def reload_check(candidate: Candidate) -> Reloaded:
    """Load the saved model back; check its inputs/outputs and the CA-only ops per block.

    With ``compress``, the program must hold weight decompression (``constexpr_*``) ops.
    """
    fmt = candidate.target.format
    reloaded = coreml_export.reload(candidate.path, fmt)
    checks = [Check.judged("load", True, ValueFigures({"ops": len(reloaded.ops)}))]
    expected = coreml_export.expected_io(
        candidate.spec,
        fmt,
        list(candidate.output_names),
        list(candidate.output_shapes),
        candidate.labels,
    )
    found = coreml_export.describe(reloaded.spec)
    problems = coreml_export.io_mismatches(expected, found)
    io = ValueFigures({"found": found, "problems": problems})
    checks.append(Check.judged("io", not problems, io))
    per_block = tuple(
        coreml_export.ca_only_ops(reloaded, fmt, candidate.owner, i)
        for i in range(candidate.blocks)
    )
    left = sum(sum(counts.values()) for counts in per_block)
    structure = StructureFigures(left, "/".join(coreml_export.CA_ONLY_OPS[fmt]))
    checks.append(Check.judged("structure", left == 0))
    if candidate.compress:
        counts = coreml_compress.constexpr_counts(reloaded.ops)
        threshold = coreml_compress.WEIGHT_THRESHOLD
        why = "" if counts else f"no weight of {threshold} elements or more was compressed"
        figures = ValueFigures({"mode": candidate.compress, "constexpr_ops": counts})
        checks.append(Check.judged("compression", bool(counts), figures, why))
    return Reloaded(
        reloaded.spec.specificationVersion,
        tuple(checks),
        Check.judged("structure", left == 0, structure),
        coreml_export.op_counts(reloaded),
        per_block,
    )


def mil_parity(candidate: Candidate) -> Judged:
    """The saved model evaluated in NumPy against PyTorch (runs on every platform), and for
    compressed weights the lossy part, their weights in PyTorch against the fp32 model.

    For compressed weights the program is compared with the model's copy holding them
    (``verify.mil.compressed``). An ML program runs op by op, a neural network layer by
    layer. An image input gets seeded RGB pixels; PyTorch gets them normalised as the
    user asked. An fp16 ML program is also evaluated in fp32 arithmetic against its fp32
    ``twin``'s constants (``verify.mil.fp32_arithmetic``); the check passes only if that
    passes too.
    """
    weights = _compressed_copy(candidate) if candidate.compress else None
    judged = _mil_parity(candidate, weights)
    if candidate.compress:
        loss = _weight_loss(candidate, weights)
        return Judged((*judged.checks, loss), judged.parity, judged.warnings)
    return judged


def predict(candidate: Candidate) -> Judged:
    """Prediction parity against PyTorch (macOS only); elsewhere not run, as accepted."""
    if not coreml_export.CAN_PREDICT:
        why = coreml_export.NO_PREDICTION
        not_run = Check("parity", Verdict.NOT_RUN, why, accepted=True)
        return Judged((Check("prediction", Verdict.NOT_RUN, why, accepted=True),), not_run)
    model = coreml_export.coremltools().models.MLModel(str(candidate.path))
    spec, multiple = candidate.spec, candidate.multiple
    precision = candidate.target.precision
    names, labels = list(candidate.output_names), list(candidate.labels)
    gate = prediction_gate(model, candidate.module, spec, names, precision, labels, multiple)
    cases = len(coreml_export.prediction_inputs(spec, multiple))
    prediction = Check.judged("prediction", gate.passed)
    return Judged((prediction,), gate_check("parity", gate, cases))


def _mil_parity(candidate: Candidate, weights: CompressedCopy | None) -> Judged:
    """The ``mil_parity`` check, the parity gate it settled (if verified) and its warning."""
    precision, image = candidate.target.precision, candidate.spec.image
    inputs = gate_inputs(candidate.spec, candidate.multiple)
    result = evaluate(
        candidate.path, candidate.module, inputs, precision, image, weights, candidate.bounds
    )
    allowed = candidate.allow_unverified
    accept = "; allowed by --allow-unverified" if allowed else "; give --allow-unverified to accept"
    verified: bool | str = True
    arithmetic_figures = None
    reason = warning = ""
    parity = None
    if isinstance(result, NotVerified):
        verdict = Verdict.NOT_VERIFIED
        verified = False
        reason = f"{precision} gate {result.reason}{accept}"
        warning = f"numeric parity not verified: {result.reason}"
    else:
        verdict = Verdict.PASSED if result.passed else Verdict.FAILED
        parity = gate_check("parity", result, len(inputs))
    if candidate.twin is not None:
        try:
            arithmetic = fp32_arithmetic_parity(
                candidate.path, candidate.module, inputs, candidate.twin, image, weights
            )
        except Unsupported as err:
            arithmetic_figures = ArithmeticFigures(False, reason=f"not verified: {err}")
            if verdict is Verdict.PASSED:
                verdict = Verdict.NOT_VERIFIED
                reason = f"fp32 arithmetic not verified: {err}{accept}"
        else:
            arithmetic_figures = ArithmeticFigures.of(arithmetic)
            if not arithmetic.passed:
                verdict = Verdict.FAILED
            elif isinstance(result, NotVerified) and result.model_loss:
                verdict = Verdict.PASSED
                verified = "fp32 arithmetic"
                reason = (
                    f"{precision} gate {result.reason}; the program's ops are verified in fp32 "
                    "arithmetic, so what is left is the model's own fp16 loss"
                )
                warning = (
                    f"the model's own fp16 loss is as large as its signal ({result.reason}); "
                    "the package is verified in fp32 arithmetic only: judge fp16 on your data"
                )
    accepted = verdict is Verdict.NOT_VERIFIED and allowed
    figures = MilFigures(verified, arithmetic_figures)
    check = Check("mil_parity", verdict, reason, figures, accepted)
    return Judged((check,), parity, (warning,) if warning else ())


def gate_inputs(spec: InputSpec, multiple: tuple[int, int]) -> list[tuple[int, torch.Tensor]]:
    """(seed, input) pairs of the gates: seeded tensors, or RGB pixels for an image input."""
    make = example_input if spec.image is None else coreml_export.pixels
    cases = coreml_export.prediction_inputs(spec, multiple)
    return [(seed, make(shape, seed)) for seed, shape in cases]


def _compressed_copy(candidate: Candidate) -> CompressedCopy | None:
    """The model's copy holding the saved program's decompressed weights (None if none)."""
    program = load_program(candidate.path)
    if not isinstance(program, MilProgram):
        return None
    return compressed_copy(program, candidate.module, candidate.spec.shape, candidate.program)


def _weight_loss(candidate: Candidate, weights: CompressedCopy | None) -> Check:
    """The lossy part of a compressed package: its weights in PyTorch against the fp32 model."""
    if weights is None:
        return Check("compressed_weights", Verdict.NOT_RUN, "no compressed weights")
    spec = candidate.spec
    inputs = [
        (seed, x if spec.image is None else spec.image.normalise(x))
        for seed, x in gate_inputs(spec, candidate.multiple)
    ]
    gate = weight_loss(weights, candidate.module, inputs, list(candidate.output_names))
    top1 = [c.top1 for case in gate.cases for c in case.comparisons if c.top1 is not None]
    figures = WeightsFigures.of(
        gate,
        len(inputs),
        tolerance=weights.key,
        min_top1=min(top1, default=None),
        format=weights.key,
        weights_placed=weights.matched,
        factors_fitted=weights.fitted,
        weights_unmatched=weights.unmatched,
    )
    return Check.judged("compressed_weights", gate.passed, figures)
