"""The post-emit precision stage of ``onnx`` and ``optimize``: fp16 or int8, behind the lossy gate.

One stage, ``lower``: a ``Lowering`` in, a ``Lowered`` out. It runs on the fp32 model
only after that model passed its exact gates, converts it (``export.precision``, beside
the other emitters) and judges the result against the fp32 reference on 8 seeded
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
from ca_export.report import Check, Verdict
from ca_export.report.figures import Calibration, KeptFp32, LossyFigures
from ca_export.tracing import example_input
from ca_export.verify.lossy import (
    GATE_SEEDS,
    Runner,
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


@dataclass(frozen=True)
class Lowering:
    """The precision stage's input: the request, the fp32 ``model`` that passed its exact
    gates, its input and output names, the fp32 ``reference`` (a runner, and what it is:
    ``against``) and the gate's inputs besides the seeded ones: the calibration
    ``samples`` (up to ``GATE_CALIBRATION`` join) and ``extra``."""

    request: PrecisionRequest
    model: onnx.ModelProto
    input_name: str
    output_names: tuple[str, ...]
    reference: Runner
    against: str
    input_shape: tuple[int, ...]
    samples: tuple[tuple[str, np.ndarray], ...] = ()
    extra: tuple[tuple[str, np.ndarray], ...] = ()

    @classmethod
    def of_pytorch(
        cls,
        request: PrecisionRequest,
        prepared: Prepared,
        model: onnx.ModelProto,
        samples: list[tuple[str, np.ndarray]],
        input_shape: tuple[int, ...],
    ) -> Lowering:
        """``model`` judged against the PyTorch model under the user's gate bounds; a
        dynamic export's gate also takes the exact gate's inputs at its other sizes."""
        traced = prepared.traced
        extra = []
        if traced.dynamic:
            others = gate_inputs(traced, input_shape, prepared.square_only)[len(SEEDS) :]
            extra = [(f"seed {s} at {_dims(x.shape)}", x.numpy()) for s, x in others]
        request = dataclasses.replace(request, bounds=prepared.gates.bounds)
        return cls(
            request=request,
            model=model,
            input_name=traced.input_names[0],
            output_names=tuple(traced.output_names),
            reference=torch_runner(prepared.module),
            against="PyTorch fp32",
            input_shape=input_shape,
            samples=tuple(samples),
            extra=tuple(extra),
        )

    @classmethod
    def of_file(
        cls,
        request: PrecisionRequest,
        model: onnx.ModelProto,
        source: onnx.ModelProto,
        input_shape: tuple[int, ...],
        samples: list[tuple[str, np.ndarray]],
    ) -> Lowering:
        """``model`` (optimize's result) judged against the ``source`` file as read, in ONNX
        Runtime."""
        inits = {i.name for i in source.graph.initializer}
        (name,) = [i.name for i in source.graph.input if i.name not in inits]
        outputs = [o.name for o in source.graph.output]
        session = cpu_session(source, "the fp32 model", error=CheckFailedError)

        def reference(x: np.ndarray) -> list[np.ndarray]:
            return session.run(outputs, {name: x})

        return cls(
            request=request,
            model=model,
            input_name=name,
            output_names=tuple(outputs),
            reference=reference,
            against="IN (fp32, onnxruntime-cpu)",
            input_shape=input_shape,
            samples=tuple(samples),
        )


@dataclass(frozen=True)
class Lowered:
    """The precision stage's result: the lowered model, its ``precision`` check, warnings,
    and its op counts."""

    model: onnx.ModelProto
    check: Check
    warnings: tuple[str, ...]
    op_counts: dict[str, int]


def lower(lowering: Lowering, stage: Stages) -> Lowered:
    """Convert the model (``export.precision``) and judge it against the fp32 reference on
    the seeded inputs, up to 8 calibration samples and the extra inputs."""
    request, model = lowering.request, lowering.model
    input_name, output_names = lowering.input_name, list(lowering.output_names)
    samples = list(lowering.samples)
    figures: dict[str, Any] = {"method": METHODS[request.precision]}
    warnings = []
    with stage(request.precision):
        if request.precision == "fp16":
            lowered = convert.to_fp16(model)
        else:
            calibration = samples or convert.seeded_calibration(lowering.input_shape)
            if not samples:
                warnings.append(SEEDED_WARNING.format(n=len(calibration)))
            source = str(request.calibration) if samples else "seeded random inputs"
            figures["calibration"] = Calibration(source, len(calibration))
            nodes = len(convert.fp32_nodes(model, request.keep_fp32))
            figures["kept_fp32"] = KeptFp32(tuple(request.keep_fp32), nodes)
            lowered = convert.to_int8(
                model, input_name, [x for _, x in calibration], request.keep_fp32
            )
        onnx_export.check(lowered)
    with stage("lossy gate"):
        shape = lowering.input_shape
        inputs = [(f"seed {s}", example_input(shape, s).numpy()) for s in GATE_SEEDS]
        inputs += samples[:GATE_CALIBRATION] + list(lowering.extra)
        session = cpu_session(lowered, "the lowered model", error=CheckFailedError)

        def run(x: np.ndarray) -> list[np.ndarray]:
            return session.run(output_names, {input_name: x})

        tol = user_tolerance(tolerance(request.precision, BACKEND), *request.bounds)
        reference = lowering.reference
        gate = lossy_gate(reference, run, output_names, inputs, request.precision, BACKEND, tol)
    figures |= {"fp32_bytes": model.ByteSize(), "bytes": lowered.ByteSize()}
    lossy = LossyFigures.of(gate, lowering.against, **figures)
    verdict = Check.judged("precision", gate.passed, lossy)
    return Lowered(lowered, verdict, tuple(warnings), onnx_export.op_counts(lowered))


def not_run(request: PrecisionRequest) -> Check:
    """The ``precision`` check of a run whose fp32 model failed its gates."""
    reason = "the fp32 model failed its gates"
    return Check("precision", Verdict.NOT_RUN, reason, LossyFigures(request.precision))


def _dims(shape: tuple[int, ...]) -> str:
    """``2x3x64x96``."""
    return "x".join(map(str, shape))
