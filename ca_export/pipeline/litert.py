"""The LiteRT pipeline: prepare (litert form) -> convert -> inspect -> gate in LiteRT -> write.

The program is rewritten into the ``litert`` form, its powers by 2 become multiplies
(``square_pow``: litert-torch cannot legalize ``tfl.pow``), and it is converted by
litert-torch (with ``--channels-last-io``, NHWC input and maps), loaded back into
``ai_edge_litert``'s interpreter with XNNPACK on one thread and run on seeded inputs
against the original PyTorch model; each rewritten block is also gated in PyTorch. The
.tflite takes the requested name only when every gate passed. The report lists the
TRANSPOSE ops left (with their CA blocks), the XNNPACK partitions and the ops left outside
them; CA ops outside XNNPACK or TRANSPOSE from a CA block are a warning, not a failure (the
file is exact, only slower).

``--precision fp16|int8`` quantizes the gated fp32 file with ai-edge-quantizer (fp16 or
int8 weights with fp32 compute; int8 with ``--calibration DIR`` is static, activations
too) and judges it with the lossy rows against the PyTorch model; the structure then
describes the quantized file.

Static shapes only: ``--dynamic`` is refused (litert-torch converts a dynamic program, but
ca-export has not measured one through its layout pass and XNNPACK; export one file per
input size).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ca_export import __version__
from ca_export.errors import BadInputError
from ca_export.export import litert as lt
from ca_export.export.executorch import OutsideOp
from ca_export.export.precision import calibration_files, calibration_inputs
from ca_export.files import Output, guard, write_atomic
from ca_export.pipeline.common import (
    ModelJob,
    Prepared,
    Progress,
    Stages,
    quiet,
    with_block_gate,
)
from ca_export.pipeline.precision import GATE_CALIBRATION, PrecisionRequest, not_run
from ca_export.report import Check, ExportReport, Verdict
from ca_export.report.figures import Calibration, LossyFigures, StructureFigures
from ca_export.rewrites import square_pows
from ca_export.tracing import example_input
from ca_export.verify.lossy import GATE_SEEDS, lossy_gate, torch_runner
from ca_export.verify.parity import gate_inputs, runner_gate
from ca_export.verify.tolerances import tolerance, user_tolerance

SUFFIX = ".tflite"
FORM = "litert"
NO_STRUCTURE_GATE = "no structure gate: CA ops outside XNNPACK or CA TRANSPOSE are a warning"
NO_DYNAMIC = (
    "ca-export litert exports static shapes only (a dynamic LiteRT program is not measured "
    "through litert-torch's layout pass and XNNPACK); export one file per size with "
    "--input-shape N,C,H,W"
)


@dataclass
class LiteRTJob(ModelJob):
    """What the user asked ``ca-export litert`` for."""

    channels_last_io: bool = False
    precision: str = "fp32"
    calibration: Path | None = None

    def run(self, progress: Progress = quiet) -> ExportReport:
        """Run the whole pipeline (``export_litert``)."""
        return export_litert(self, progress)

    def reads(self) -> list[Path]:
        """The files this job reads."""
        return super().reads() + calibration_files(self.calibration)

    def writes(self) -> list[Output]:
        """The files this job writes."""
        return [Output(self.output, "tflite")]

    @property
    def quantization(self) -> str:
        """The ``litert.quantize`` kind asked for: int8 is weight-only, static with
        ``--calibration``."""
        return "int8-static" if self.calibration is not None else self.precision


def validate(job: LiteRTJob) -> None:
    """Refuse, before any heavy work, what cannot be converted or written as asked."""
    if job.output.suffix != SUFFIX:
        raise BadInputError(f"a LiteRT model is saved as {SUFFIX}, not {job.output.name!r}")
    if job.dynamic:
        raise BadInputError(NO_DYNAMIC)
    if job.precision not in ("fp32", "fp16", "int8"):
        raise BadInputError(f"unknown precision {job.precision!r}")
    if job.calibration is not None and job.precision != "int8":
        raise BadInputError("--calibration needs --precision int8 (static int8)")
    guard(job.reads(), job.writes())
    lt.EXTRA.require()


def structure(inspection: lt.Inspection, report: ExportReport, modules: list[str]) -> Check:
    """The report's view of the file: ops, TRANSPOSE left by block, partitions, ops outside."""
    for i, entry in enumerate(report.ca_blocks):
        mine = [o for o in inspection.ops if o.block == i]
        entry.ca_only_nodes_after = {
            "TRANSPOSE": sum(o.op == "TRANSPOSE" for o in mine),
            "outside XNNPACK": sum(not o.delegated for o in mine),
        }
    report.op_counts_after = inspection.counts()
    transposes = [o for o in inspection.transposes if o.block is not None]
    outside = [o for o in inspection.outside if o.block is not None]
    left = len({o.index for o in transposes + outside})

    def placed(op: lt.LiteOp) -> OutsideOp:
        module = "" if op.block is None else modules[op.block]
        return OutsideOp(op.op, f"op {op.index}", module, op.block)

    figures = StructureFigures(
        left,
        "TRANSPOSE and ops outside XNNPACK",
        segments=inspection.partitions,
        outside=tuple(map(placed, inspection.outside)),
        transposes=tuple(map(placed, inspection.transposes)),
    )
    return Check("structure", Verdict.NOT_RUN, NO_STRUCTURE_GATE, figures, True)


def structure_warnings(check: Check | None) -> list[str]:
    """A warning for the TRANSPOSE ops and the ops outside XNNPACK that CA blocks leave in
    the file the structure ``check`` describes."""
    figures = None if check is None else check.figures
    if not isinstance(figures, StructureFigures):
        return []
    transposes = sum(o.block is not None for o in figures.transposes)
    outside = sum(o.block is not None for o in figures.outside)
    warnings = [f"{transposes} TRANSPOSE op(s) come from CA blocks"] if transposes else []
    if outside:
        warnings.append(
            f"{outside} op(s) of CA blocks run outside XNNPACK ({figures.segments} "
            "partitions); see the report's structure.outside"
        )
    return warnings


def export_litert(job: LiteRTJob, progress: Progress = quiet) -> ExportReport:
    """Run the whole LiteRT pipeline; the report says whether every gate passed."""
    validate(job)
    stage = Stages(progress)
    report = ExportReport(
        job.model, __version__, "litert", list(job.input_shape), False, job.rewrite
    )
    report.target = "litert-nhwc" if job.channels_last_io else "litert"
    prepared = job.prepare(stage, report, form=FORM)
    with stage("convert"):
        squared = square_pows(prepared.program)
        report.notices += [f"{node}: {change}" for node, change in squared.applied.items()]
        example = example_input(job.input_shape, 0)
        buffer = lt.convert(prepared.program, example, job.channels_last_io)
    with stage("inspect"):
        modules = [b.module for b in prepared.blocks]
        report.structure = structure(lt.inspect(buffer, modules), report, modules)
    with stage("gate"):
        runner = lt.LiteRunner(buffer, job.channels_last_io)
        inputs = gate_inputs(prepared.traced, job.input_shape, prepared.square_only)
        names = prepared.traced.output_names
        gate = runner_gate(
            prepared.module, runner.run, names, inputs, lt.BACKEND, prepared.gates.bounds
        )
        report.parity = with_block_gate(prepared, gate, inputs)
    if job.precision != "fp32":
        exact = report.passed
        report.expected.append("precision")
        if exact:
            buffer = lower_precision(job, prepared, buffer, report, stage)
        else:
            report.add(not_run(PrecisionRequest(job.precision)))
    report.warnings += structure_warnings(report.structure)
    if report.passed:
        with stage("write"):
            report.artifact = write_atomic(buffer, job.output)
    report.stages = stage.times
    return report


def lower_precision(
    job: LiteRTJob, prepared: Prepared, buffer: bytes, report: ExportReport, stage: Stages
) -> bytes:
    """Quantize the gated fp32 file and judge it against the PyTorch model with the lossy
    rows, on the seeded gate inputs and up to 8 calibration samples; the report's structure
    then describes the quantized file."""
    samples = (
        [] if job.calibration is None else calibration_inputs(job.calibration, job.input_shape)
    )
    kind = job.quantization
    with stage(job.precision):
        lowered = lt.quantize(buffer, kind, [x for _, x in samples], job.channels_last_io)
    with stage("inspect"):
        modules = [b.module for b in prepared.blocks]
        report.structure = structure(lt.inspect(lowered, modules), report, modules)
    with stage("lossy gate"):
        inputs = [(f"seed {s}", example_input(job.input_shape, s).numpy()) for s in GATE_SEEDS]
        inputs += samples[:GATE_CALIBRATION]
        runner = lt.LiteRunner(lowered, job.channels_last_io)
        tol = user_tolerance(tolerance(job.precision, lt.BACKEND), *prepared.gates.bounds)
        names = prepared.traced.output_names
        reference = torch_runner(prepared.module)
        gate = lossy_gate(reference, runner.run, names, inputs, job.precision, lt.BACKEND, tol)
    calibration = Calibration(str(job.calibration), len(samples)) if samples else None
    figures = LossyFigures.of(
        gate,
        "PyTorch fp32",
        method=lt.QUANTIZATIONS[kind],
        calibration=calibration,
        fp32_bytes=len(buffer),
        bytes=len(lowered),
    )
    report.add(Check.judged("precision", gate.passed, figures))
    return lowered
