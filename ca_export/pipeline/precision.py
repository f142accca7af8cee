"""The post-emit precision stage of ``onnx`` and ``optimize``: fp16 or int8, behind the lossy gate.

One stage, ``lower``: a ``Lowering`` in, a ``Lowered`` out. It runs on the fp32 model
only after that model passed its exact gates, converts it (``export.precision``, beside
the other emitters) and judges the result against the fp32 reference on real inputs
first (up to 8 calibration samples, and 8 samples spread over ``--eval-data``), then 8
seeded inputs and, for a dynamic export, the exact gate's inputs at its other sizes
(``verify.lossy``). With ``--keep-fp32 auto`` it first finds the modules int8 keeps in
fp32 (``pipeline.keep_auto``), judged as the final gate judges. The reference is the
PyTorch model for ``onnx`` and the input file, run in ONNX Runtime, for ``optimize``. The
report's ``precision`` check states the method, the inputs, the bounds and each output's
figures.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from ca_export.errors import BadInputError
from ca_export.export import onnx as onnx_export
from ca_export.export import precision as convert
from ca_export.pipeline import keep_auto
from ca_export.pipeline.common import Prepared, Stages
from ca_export.report import Check, ExportReport, OptimizeReport, Verdict
from ca_export.report.figures import Calibration, KeptFp32, LossyFigures
from ca_export.tracing import example_input
from ca_export.verify.accuracy import DEFAULT_MAX_DROP, EvalSet, measure
from ca_export.verify.lossy import GATE_SEEDS, lossy_gate, torch_runner
from ca_export.verify.lossy import judge as judge_outputs
from ca_export.verify.parity import SEEDS, gate_inputs
from ca_export.verify.runtime import Runner, cpu_runner
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
SEARCH_FAILED = (
    "--keep-fp32 auto: no set of kept modules short of every one brings int8 within bounds"
)
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


@dataclass(frozen=True)
class Lowering:
    """The precision stage's input: the request, the fp32 ``model`` that passed its exact
    gates, its input and output names, the fp32 ``reference`` (a runner, and what it is:
    ``against``) and the gate's inputs besides the seeded ones: the calibration
    ``samples`` (up to ``GATE_CALIBRATION`` join) and ``extra`` (real samples of the
    labelled set first). ``eval_set`` and ``max_drop``: the labelled set
    ``--keep-fp32 auto`` also judges accuracy on, and its bound."""

    request: PrecisionRequest
    model: onnx.ModelProto
    input_name: str
    output_names: tuple[str, ...]
    reference: Runner
    against: str
    input_shape: tuple[int, ...]
    samples: tuple[tuple[str, np.ndarray], ...] = ()
    extra: tuple[tuple[str, np.ndarray], ...] = ()
    eval_set: EvalSet | None = None
    max_drop: float = DEFAULT_MAX_DROP

    @classmethod
    def of_pytorch(
        cls,
        request: PrecisionRequest,
        prepared: Prepared,
        model: onnx.ModelProto,
        samples: list[tuple[str, np.ndarray]],
        input_shape: tuple[int, ...],
    ) -> Lowering:
        """``model`` judged against the PyTorch model under the user's gate bounds, also on
        samples of the labelled set (``--eval-data``); a dynamic export's gate also takes
        the exact gate's inputs at its other sizes."""
        traced = prepared.traced
        extra = prepared.real_inputs()
        if traced.dynamic:
            others = gate_inputs(traced, input_shape, prepared.square_only)[len(SEEDS) :]
            extra += [(f"seed {s} at {_dims(x.shape)}", x.numpy()) for s, x in others]
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
            eval_set=prepared.eval_set,
            max_drop=prepared.gates.max_drop,
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
        reference = cpu_runner(source, "the fp32 model", name, outputs)
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

    def record(self, report: ExportReport | OptimizeReport) -> None:
        """Put the ``precision`` check, the warnings and the op counts in ``report``."""
        report.add(self.check)
        report.warnings += self.warnings
        report.op_counts_after = self.op_counts


def lower(lowering: Lowering, stage: Stages) -> Lowered:
    """Convert the model (``export.precision``) and judge it against the fp32 reference on
    up to 8 calibration samples, the extra inputs and the seeded inputs; with
    ``--keep-fp32 auto``, first find the modules int8 keeps in fp32 (``pipeline.keep_auto``)."""
    request, model = lowering.request, lowering.model
    input_name, output_names = lowering.input_name, list(lowering.output_names)
    samples = list(lowering.samples)
    shape = lowering.input_shape
    seeded = [(f"seed {s}", example_input(shape, s).numpy()) for s in GATE_SEEDS]
    inputs = samples[:GATE_CALIBRATION] + list(lowering.extra) + seeded
    tol = user_tolerance(tolerance(request.precision, BACKEND), *request.bounds)
    figures: dict[str, Any] = {"method": METHODS[request.precision]}
    warnings = []
    searched = True
    with stage(request.precision):
        if request.precision == "fp16":
            lowered = convert.to_fp16(model)
        else:
            calibration = samples or convert.seeded_calibration(shape)
            if not samples:
                warnings.append(SEEDED_WARNING.format(n=len(calibration)))
            source = str(request.calibration) if samples else "seeded random inputs"
            figures["calibration"] = Calibration(source, len(calibration))
            arrays = [x for _, x in calibration]

            def quantize(keep: Sequence[str]) -> onnx.ModelProto:
                return convert.to_int8(model, input_name, arrays, keep)

            keep: tuple[str, ...] = request.keep_fp32
            if request.auto:
                found = keep_auto.search(model, quantize, _judge(lowering, inputs, tol))
                keep, searched = found.kept, found.passed
                figures["keep_fp32_auto"] = found
            nodes = len(convert.fp32_nodes(model, keep))
            figures["kept_fp32"] = KeptFp32(keep, nodes)
            lowered = quantize(keep)
        onnx_export.check(lowered)
    with stage("lossy gate"):
        run = cpu_runner(lowered, "the lowered model", input_name, output_names)
        reference = lowering.reference
        gate = lossy_gate(reference, run, output_names, inputs, request.precision, BACKEND, tol)
    figures |= {"fp32_bytes": model.ByteSize(), "bytes": lowered.ByteSize()}
    lossy = LossyFigures.of(gate, lowering.against, **figures)
    if not searched:
        lossy = dataclasses.replace(lossy, failures=(*lossy.failures, SEARCH_FAILED))
    verdict = Check.judged("precision", gate.passed and searched, lossy)
    return Lowered(lowered, verdict, tuple(warnings), onnx_export.op_counts(lowered))


def _judge(
    lowering: Lowering, inputs: list[tuple[str, np.ndarray]], tol: Tolerance
) -> keep_auto.Judge:
    """The verdict ``--keep-fp32 auto`` searches on: the lossy gate on ``inputs`` and, with
    a labelled set and a classifier output, the accuracy drop; the reference's outputs are
    computed once."""
    reference = lowering.reference
    output_names = list(lowering.output_names)
    references = [reference(x) for _, x in inputs]
    labels = [n for n, _ in inputs]
    eval_set = lowering.eval_set

    def judge(lowered: onnx.ModelProto) -> keep_auto.Score:
        run = cpu_runner(lowered, "the lowered model", lowering.input_name, output_names)
        actuals = [run(x) for _, x in inputs]
        gate = judge_outputs(references, actuals, output_names, labels, "int8", BACKEND, tol)
        cosine = min(o.min_cosine for o in gate.outputs)
        text = f"lossy gate {'passed' if gate.passed else 'failed'}, min cosine {cosine:.4f}"
        if eval_set is None:
            return keep_auto.Score(gate.passed, cosine, text)
        accuracy = measure(reference, run, eval_set, output_names, lowering.max_drop)
        if accuracy is None:
            return keep_auto.Score(gate.passed, cosine, text)
        text += f", top-1 {100 * accuracy.top1:.2f} % (drop {accuracy.drop:.2f} points)"
        return keep_auto.Score(gate.passed and accuracy.passed, -accuracy.drop, text)

    return judge


def not_run(request: PrecisionRequest) -> Check:
    """The ``precision`` check of a run whose fp32 model failed its gates."""
    reason = "the fp32 model failed its gates"
    return Check("precision", Verdict.NOT_RUN, reason, LossyFigures(request.precision))


def _dims(shape: tuple[int, ...]) -> str:
    """``2x3x64x96``."""
    return "x".join(map(str, shape))
