"""The post-emit precision stage of ``onnx`` and ``optimize``: fp16 or int8, behind the lossy gate.

It runs on the fp32 model only after that model passed its exact gates, converts it
(``export.precision``) and judges the result against the fp32 reference on 8 seeded
inputs, up to 8 calibration samples and, for a dynamic export, the exact gate's inputs at
its other sizes (``verify.lossy``). The reference is the PyTorch model for ``onnx`` and the
input file, run in ONNX Runtime, for ``optimize``. The report's ``precision`` check
states the method, the inputs, the bounds and each output's figures.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from ca_export.errors import BadInputError, CheckFailedError
from ca_export.export import onnx as onnx_export
from ca_export.export import precision as convert
from ca_export.pipeline.common import Prepared, Stages
from ca_export.report import Check, ExportReport, Verdict
from ca_export.tracing import example_input
from ca_export.verify.lossy import (
    GATE_SEEDS,
    LossyGate,
    Runner,
    describe,
    lossy_gate,
    torch_runner,
)
from ca_export.verify.parity import SEEDS, gate_inputs
from ca_export.verify.runtime import cpu_session
from ca_export.verify.tolerances import tolerance, user_tolerance

GATE_CALIBRATION = 8
"""At most this many calibration samples (the first, by file name) join the gate's inputs."""
BACKEND = "onnxruntime-cpu"
METHODS = {
    "fp16": "fp16 weights and compute, fp32 inputs and outputs (onnxruntime float16 converter)",
    "int8": "QDQ, per-channel int8 weights, uint8 activations, MinMax calibration "
    "(onnxruntime quantize_static)",
}
SEEDED_WARNING = (
    "int8 calibrated on {n} seeded random inputs; real images (--calibration DIR) calibrate better"
)


@dataclass
class PrecisionRequest:
    """What the user asked for: the precision, a calibration folder, modules kept fp32,
    and the user's ``--rtol``/``--atol`` for the lossy gate."""

    precision: str = "fp32"
    calibration: Path | None = None
    keep_fp32: tuple[str, ...] = ()
    bounds: tuple[float | None, float | None] = (None, None)

    def check(self) -> None:
        """Refuse options that do not fit together (exit 2)."""
        if self.precision not in convert.PRECISIONS:
            raise BadInputError(f"unknown precision {self.precision!r}")
        if self.precision == "fp32" and (self.calibration is not None or self.keep_fp32):
            raise BadInputError("--calibration and --keep-fp32 need --precision fp16 or int8")
        if self.precision == "fp16" and self.keep_fp32:
            raise BadInputError("--keep-fp32 applies to --precision int8")

    def samples(self, input_shape: tuple[int, int, int, int]) -> list[tuple[str, np.ndarray]]:
        """The calibration samples of the folder, or none without one (read before any work)."""
        if self.calibration is None:
            return []
        return convert.calibration_inputs(self.calibration, input_shape)


def lower_precision(
    request: PrecisionRequest,
    prepared: Prepared,
    model: onnx.ModelProto,
    samples: list[tuple[str, np.ndarray]],
    input_shape: tuple[int, ...],
    report: ExportReport,
    stage: Stages,
) -> onnx.ModelProto:
    """Convert the gated fp32 ``model`` and gate it against the PyTorch model; add the
    ``precision`` check to ``report``."""
    traced = prepared.traced
    extra = []
    if traced.dynamic:
        others = gate_inputs(traced, input_shape, prepared.square_only)[len(SEEDS) :]
        extra = [(f"seed {s} at {_dims(x.shape)}", x.numpy()) for s, x in others]
    io = (traced.input_names[0], traced.output_names)
    reference = (torch_runner(prepared.module), "PyTorch fp32")
    request = dataclasses.replace(request, bounds=prepared.gates.bounds)
    lowered, check, warnings = convert_and_gate(
        request, model, io, reference, input_shape, samples, extra, stage
    )
    report.add(check)
    report.warnings += warnings
    report.op_counts_after = onnx_export.op_counts(lowered)
    return lowered


def lower_file(
    request: PrecisionRequest,
    model: onnx.ModelProto,
    source: onnx.ModelProto,
    input_shape: tuple[int, ...],
    samples: list[tuple[str, np.ndarray]],
    stage: Stages,
) -> tuple[onnx.ModelProto, Check, list[str]]:
    """Convert ``model`` (optimize's result) and gate it against the ``source`` file as read,
    in ONNX Runtime; the lowered model, the ``precision`` check and warnings."""
    inits = {i.name for i in source.graph.initializer}
    (name,) = [i.name for i in source.graph.input if i.name not in inits]
    outputs = [o.name for o in source.graph.output]
    session = cpu_session(source, "the fp32 model", error=CheckFailedError)

    def reference(x: np.ndarray) -> list[np.ndarray]:
        return session.run(outputs, {name: x})

    io, against = (name, outputs), (reference, "IN (fp32, onnxruntime-cpu)")
    return convert_and_gate(request, model, io, against, input_shape, samples, [], stage)


def convert_and_gate(
    request: PrecisionRequest,
    model: onnx.ModelProto,
    io: tuple[str, list[str]],
    reference: tuple[Runner, str],
    input_shape: tuple[int, ...],
    samples: list[tuple[str, np.ndarray]],
    extra: list[tuple[str, np.ndarray]],
    stage: Stages,
) -> tuple[onnx.ModelProto, Check, list[str]]:
    """Convert ``model`` (input and output names ``io``) and judge it against the fp32
    ``reference`` (runner, name) on the seeded inputs, up to 8 calibration samples and
    ``extra``; the lowered model, the ``precision`` check and warnings."""
    input_name, output_names = io
    method = METHODS[request.precision]
    check: dict[str, Any] = {
        "precision": request.precision,
        "method": method,
        "reference": reference[1],
    }
    warnings = []
    with stage(request.precision):
        if request.precision == "fp16":
            lowered = convert.to_fp16(model)
        else:
            calibration = samples or convert.seeded_calibration(input_shape)
            if not samples:
                warnings.append(SEEDED_WARNING.format(n=len(calibration)))
            source = str(request.calibration) if samples else "seeded random inputs"
            check["calibration"] = {"source": source, "samples": len(calibration)}
            check["kept_fp32"] = {
                "modules": list(request.keep_fp32),
                "nodes": len(convert.fp32_nodes(model, request.keep_fp32)),
            }
            lowered = convert.to_int8(
                model, input_name, [x for _, x in calibration], request.keep_fp32
            )
        onnx_export.check(lowered)
    with stage("lossy gate"):
        inputs = [(f"seed {s}", example_input(input_shape, s).numpy()) for s in GATE_SEEDS]
        inputs += samples[:GATE_CALIBRATION] + extra
        session = cpu_session(lowered, "the lowered model", error=CheckFailedError)

        def run(x: np.ndarray) -> list[np.ndarray]:
            return session.run(output_names, {input_name: x})

        tol = user_tolerance(tolerance(request.precision, BACKEND), *request.bounds)
        runner = reference[0]
        gate = lossy_gate(runner, run, output_names, inputs, request.precision, BACKEND, tol)
    check |= lossy_summary(gate, reference[1])
    check["fp32_bytes"] = model.ByteSize()
    check["bytes"] = lowered.ByteSize()
    return lowered, Check.judged("precision", gate.passed, check), warnings


def not_run(request: PrecisionRequest, report: ExportReport) -> None:
    """Record that the precision stage did not run because the fp32 model failed its gates."""
    reason = "the fp32 model failed its gates"
    report.add(Check("precision", Verdict.NOT_RUN, reason, {"precision": request.precision}))


def _dims(shape: tuple[int, ...]) -> str:
    """``2x3x64x96``."""
    return "x".join(map(str, shape))


def lossy_summary(gate: LossyGate, against: str) -> dict[str, Any]:
    """The gate's figures as report data, with the lines the CLI prints."""
    return {
        "backend": gate.backend,
        "bounds": gate.bounds,
        "inputs": gate.inputs,
        "outputs": [dataclasses.asdict(o) for o in gate.outputs],
        "failures": gate.failures(),
        "lines": describe(gate, against),
    }
