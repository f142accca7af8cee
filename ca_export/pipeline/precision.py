"""The post-emit precision stage of ``onnx`` and ``optimize``: fp16 or int8, behind the lossy gate.

It runs on the fp32 model only after that model passed its exact gates, converts it
(``export.precision``) and judges the result against the fp32 reference on real inputs
first (up to 8 calibration samples, and 8 samples spread over ``--eval-data``), then 8
seeded inputs and, for a dynamic export, the exact gate's inputs at its other sizes
(``verify.lossy``). The reference is the PyTorch model for ``onnx`` and the
input file, run in ONNX Runtime, for ``optimize``. The report's ``precision`` check
states the method, the inputs, the bounds and each output's figures.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from ca_export.errors import BadInputError, CheckFailedError
from ca_export.export import onnx as onnx_export
from ca_export.export import precision as convert
from ca_export.pipeline import keep_auto
from ca_export.pipeline.common import Prepared, Stages
from ca_export.report import Check, ExportReport, Verdict
from ca_export.tracing import example_input
from ca_export.verify.accuracy import DEFAULT_MAX_DROP, EvalSet, measure
from ca_export.verify.lossy import (
    GATE_SEEDS,
    LossyGate,
    Runner,
    describe,
    lossy_gate,
    torch_runner,
)
from ca_export.verify.lossy import judge as judge_outputs
from ca_export.verify.parity import SEEDS, gate_inputs
from ca_export.verify.runtime import cpu_session
from ca_export.verify.tolerances import Tolerance, tolerance, user_tolerance

AUTO = "auto"
"""``--keep-fp32 auto``: find the modules to keep (``pipeline.keep_auto``)."""
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
    eval_set: EvalSet | None = None
    """The labelled set ``--keep-fp32 auto`` judges accuracy on, with ``max_drop``."""
    max_drop: float = DEFAULT_MAX_DROP

    @property
    def auto(self) -> bool:
        """Whether the modules kept fp32 are to be found (``--keep-fp32 auto``)."""
        return self.keep_fp32 == (AUTO,)

    def check(self) -> None:
        """Refuse options that do not fit together (exit 2)."""
        if self.precision not in convert.PRECISIONS:
            raise BadInputError(f"unknown precision {self.precision!r}")
        if self.precision == "fp32" and (self.calibration is not None or self.keep_fp32):
            raise BadInputError("--calibration and --keep-fp32 need --precision fp16 or int8")
        if self.precision == "fp16" and self.keep_fp32:
            raise BadInputError("--keep-fp32 applies to --precision int8")
        if AUTO in self.keep_fp32 and not self.auto:
            raise BadInputError("--keep-fp32 auto finds the modules itself; give no others")

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
    extra = prepared.real_inputs()
    if traced.dynamic:
        others = gate_inputs(traced, input_shape, prepared.square_only)[len(SEEDS) :]
        extra += [(f"seed {s} at {_dims(x.shape)}", x.numpy()) for s, x in others]
    io = (traced.input_names[0], traced.output_names)
    reference = (torch_runner(prepared.module), "PyTorch fp32")
    request = dataclasses.replace(
        request,
        bounds=prepared.gates.bounds,
        eval_set=prepared.eval_set,
        max_drop=prepared.gates.max_drop,
    )
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
    ``reference`` (runner, name) on up to 8 calibration samples, ``extra`` and the seeded
    inputs; with ``--keep-fp32 auto``, first find the modules int8 keeps in fp32
    (``pipeline.keep_auto``). The lowered model, the ``precision`` check and warnings."""
    input_name, output_names = io
    method = METHODS[request.precision]
    check: dict[str, Any] = {
        "precision": request.precision,
        "method": method,
        "reference": reference[1],
    }
    warnings = []
    searched: list[str] = []
    searched_failed = False
    seeded = [(f"seed {s}", example_input(input_shape, s).numpy()) for s in GATE_SEEDS]
    inputs = samples[:GATE_CALIBRATION] + extra + seeded
    tol = user_tolerance(tolerance(request.precision, BACKEND), *request.bounds)
    with stage(request.precision):
        if request.precision == "fp16":
            lowered = convert.to_fp16(model)
        else:
            calibration = samples or convert.seeded_calibration(input_shape)
            if not samples:
                warnings.append(SEEDED_WARNING.format(n=len(calibration)))
            source = str(request.calibration) if samples else "seeded random inputs"
            check["calibration"] = {"source": source, "samples": len(calibration)}
            arrays = [x for _, x in calibration]

            def quantize(keep: Sequence[str]) -> onnx.ModelProto:
                return convert.to_int8(model, input_name, arrays, keep)

            keep = list(request.keep_fp32)
            if request.auto:
                judge = _judge(request, reference[0], io, inputs, tol)
                found = keep_auto.search(model, quantize, judge)
                keep = found.kept
                if not found.passed:
                    searched_failed = True
                check["keep_fp32_auto"] = found.to_dict()
                searched = found.lines()
            check["kept_fp32"] = {
                "modules": keep,
                "nodes": len(convert.fp32_nodes(model, keep)),
            }
            lowered = quantize(keep)
        onnx_export.check(lowered)
    with stage("lossy gate"):
        run = _ort_runner(lowered, io)
        runner = reference[0]
        gate = lossy_gate(runner, run, output_names, inputs, request.precision, BACKEND, tol)
    check |= _summary(gate, reference[1])
    check["lines"] = searched + check["lines"]
    check["fp32_bytes"] = model.ByteSize()
    check["bytes"] = lowered.ByteSize()
    if searched_failed:
        check["failures"] = [
            *check["failures"],
            "--keep-fp32 auto: no set of kept modules short of every one brings int8 within bounds",
        ]
    passed = gate.passed and not searched_failed
    return lowered, Check.judged("precision", passed, check), warnings


def _ort_runner(model: onnx.ModelProto, io: tuple[str, list[str]]) -> Runner:
    """``model`` in ONNX Runtime as a runner of its input ``io[0]`` and outputs ``io[1]``."""
    session = cpu_session(model, "the lowered model", error=CheckFailedError)
    input_name, output_names = io

    def run(x: np.ndarray) -> list[np.ndarray]:
        return session.run(output_names, {input_name: x})

    return run


def _judge(
    request: PrecisionRequest,
    reference: Runner,
    io: tuple[str, list[str]],
    inputs: list[tuple[str, np.ndarray]],
    tol: Tolerance,
) -> keep_auto.Judge:
    """The verdict ``--keep-fp32 auto`` searches on: the lossy gate on ``inputs`` and, with
    a labelled set and a classifier output, the accuracy drop; the reference's outputs are
    computed once."""
    references = [reference(x) for _, x in inputs]
    labels = [n for n, _ in inputs]
    eval_set = request.eval_set

    def judge(lowered: onnx.ModelProto) -> keep_auto.Score:
        run = _ort_runner(lowered, io)
        actuals = [run(x) for _, x in inputs]
        gate = judge_outputs(references, actuals, io[1], labels, "int8", BACKEND, tol)
        cosine = min(o.min_cosine for o in gate.outputs)
        text = f"lossy gate {'passed' if gate.passed else 'failed'}, min cosine {cosine:.4f}"
        if eval_set is None:
            return keep_auto.Score(gate.passed, cosine, text)
        accuracy = measure(reference, run, eval_set, io[1], request.max_drop)
        if accuracy is None:
            return keep_auto.Score(gate.passed, cosine, text)
        text += f", top-1 {100 * accuracy.top1:.2f} % (drop {accuracy.drop:.2f} points)"
        return keep_auto.Score(gate.passed and accuracy.passed, -accuracy.drop, text)

    return judge


def not_run(request: PrecisionRequest, report: ExportReport) -> None:
    """Record that the precision stage did not run because the fp32 model failed its gates."""
    reason = "the fp32 model failed its gates"
    report.add(Check("precision", Verdict.NOT_RUN, reason, {"precision": request.precision}))


def _dims(shape: tuple[int, ...]) -> str:
    """``2x3x64x96``."""
    return "x".join(map(str, shape))


def _summary(gate: LossyGate, against: str) -> dict[str, Any]:
    """The gate's figures as report data, with the lines the CLI prints."""
    return {
        "backend": gate.backend,
        "bounds": gate.bounds,
        "inputs": gate.inputs,
        "outputs": [dataclasses.asdict(o) for o in gate.outputs],
        "failures": gate.failures(),
        "lines": describe(gate, against),
    }
