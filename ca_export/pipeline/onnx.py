"""The ONNX pipeline: prepare -> emit (stock and rewritten) -> simplify -> check -> gate -> write.

An artifact is written under the requested name only after every gate passed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import onnx

from ca_export import __version__
from ca_export.errors import BadInputError
from ca_export.export import onnx as onnx_export
from ca_export.export import opset as opset_export
from ca_export.export.ort_format import paths_for
from ca_export.export.precision import calibration_files
from ca_export.files import Output, guard
from ca_export.pipeline import ort_format
from ca_export.pipeline.accuracy import accuracy_stage
from ca_export.pipeline.common import ModelJob, Prepared, Progress, Stages, quiet, with_block_gate
from ca_export.pipeline.precision import Lowering, PrecisionRequest, lower, not_run
from ca_export.report import Check, ExportReport
from ca_export.report.figures import OpsetFigures, StructureFigures
from ca_export.rewrites import DEFAULT_TARGET, form_of
from ca_export.verify.parity import gate_inputs, onnx_gate
from ca_export.verify.runtime import cpu_runner


@dataclass
class OnnxJob(ModelJob):
    """What the user asked ``ca-export onnx`` for."""

    opset: int = 18
    simplify: bool = True
    precision: PrecisionRequest = field(default_factory=PrecisionRequest)
    ort_format: bool = False
    target: str = DEFAULT_TARGET
    form: str | None = None
    """A rewrite form by name (``ca_export.rewrites.FORMS``) instead of the target's; for
    benchmarks that compare forms."""
    decompose: ClassVar[bool] = False

    def reads(self) -> list[Path]:
        """The files this job reads: the model's, and the calibration folder's."""
        return super().reads() + calibration_files(self.precision.calibration)

    def check(self) -> None:
        """Refuse options that do not fit together (exit 2)."""
        self.precision.check()
        lossy = self.precision.precision != "fp32"
        if self.ort_format and lossy:
            raise BadInputError(
                "--ort-format is gated exactly and writes fp32 only; drop --precision "
                f"{self.precision.precision} or --ort-format"
            )
        if self.precision.precision == "int8" and self.opset < 13:
            raise BadInputError(
                "--precision int8 quantizes weights per channel, which ONNX needs opset 13 for"
            )

    def run(self, progress: Progress = quiet) -> ExportReport:
        """Run the whole pipeline (``export_onnx``)."""
        return export_onnx(self, progress)

    def writes(self) -> list[Output]:
        """The files this job writes."""
        outputs = [Output(self.output, "onnx")]
        if self.ort_format:
            ort = paths_for(self.output)
            outputs += [Output(ort.model, "ort"), Output(ort.config, "ort_config")]
        return outputs


def parity_gates(prepared: Prepared, onnx_model: onnx.ModelProto, shape: tuple[int, ...]) -> Check:
    """ONNX Runtime against the original model, and each rewritten block against its original."""
    inputs = gate_inputs(prepared.traced, shape, prepared.square_only)
    gate = onnx_gate(prepared.module, onnx_model, prepared.traced, inputs, prepared.gates.bounds)
    return with_block_gate(prepared, gate, inputs)


@dataclass(frozen=True)
class Emitted:
    """The emit stage's result: the checked model at the requested opset, the raw export
    (whose scopes attribute each node to its module), the ``opset`` check, and what the
    stage noticed and warned about."""

    model: onnx.ModelProto
    raw: onnx.ModelProto
    opset: Check
    notices: tuple[str, ...]
    warnings: tuple[str, ...]


def emit(job: OnnxJob, prepared: Prepared, stage: Stages) -> Emitted:
    """Export the program, simplify it (as the job asks), convert it to the job's opset
    exactly and check it."""
    with stage("export"):
        exported_at = opset_export.export_opset(job.opset)
        raw = onnx_export.emit(prepared.program, prepared.traced, exported_at)
    model = raw
    warnings: list[str] = []
    if job.simplify:
        with stage("simplify"):
            model, warnings = onnx_export.simplify(raw)
    with stage("check"):
        onnx_export.keep_scopes(model, raw)
        model, change = opset_export.convert(model, job.opset)
        written = opset_export.model_opset(model)
        opset = OpsetFigures(change.opset, written, change.exported_at, dict(change.adapted))
        onnx_export.check(model)
    notices = (change.summary(),) if change.converted else ()
    check = Check.judged("opset", opset.written == opset.asked, opset)
    return Emitted(model, raw, check, notices, tuple(warnings))


def export_onnx(job: OnnxJob, progress: Progress = quiet) -> ExportReport:
    """Run the whole ONNX pipeline; the report says whether every gate passed."""
    guard(job.reads(), job.writes())
    job.check()
    samples = job.precision.samples(job.input_shape)
    stage = Stages(progress)
    report = ExportReport(
        job.model,
        __version__,
        "onnx",
        list(job.input_shape),
        job.dynamic,
        job.rewrite,
        opset=job.opset,
    )
    report.expected = ["opset"]
    form = job.form or form_of(job.target)
    if job.rewrite and job.form is None:
        report.target = job.target
    prepared = job.prepare(stage, report, form)
    emitted = emit(job, prepared, stage)
    model = emitted.model
    report.add(emitted.opset)
    report.notices += emitted.notices
    report.warnings += emitted.warnings
    with stage("gate"):
        modules = [b.module for b in prepared.blocks]
        report.structure = structure(report, model, emitted.raw, modules)
        report.op_counts_after = onnx_export.op_counts(model)
        report.parity = parity_gates(prepared, model, job.input_shape)
    if job.precision.precision != "fp32":
        passed = report.passed
        report.expected.append("precision")
        if passed:
            lowering = Lowering.of_pytorch(job.precision, prepared, model, samples, job.input_shape)
            lowered = lower(lowering, stage)
            lowered.record(report)
            model = lowered.model
        else:
            report.add(not_run(job.precision))
    traced = prepared.traced
    if report.parity is not None and report.parity.ok and prepared.eval_set is not None:
        run = cpu_runner(model, "the model", traced.input_names[0], traced.output_names)
        accuracy_stage(prepared, run, f"ONNX {job.precision.precision}", stage).record(report)
    onnx_export.set_metadata(model, _metadata(job, traced.dynamic, report))
    with ort_format.scratch(job.output, job.ort_format) as folder:
        staged = None
        if folder is not None and report.passed:
            report.expected.append("ort_format")
            with stage("ort format"):
                staged, check = ort_format.build_and_gate(
                    prepared, model, job.output, folder, job.input_shape
                )
                report.add(check)
        if report.passed:
            with stage("write"):
                report.artifact = ort_format.write_all(model, job.output, staged, folder)
    report.stages = stage.times
    return report


def structure(
    report: ExportReport, model: onnx.ModelProto, raw: onnx.ModelProto, modules: list[str]
) -> Check:
    """CA-only nodes left per block, and in each pooled concat the detector did not match.

    The check gates only rewritten blocks; what is left elsewhere is counted and named.
    """
    unmatched = [
        r.module for r in report.rejected if r.module not in modules and r.module != "<model>"
    ]
    owner = onnx_export.attribute(raw, modules + unmatched)
    for i, entry in enumerate(report.ca_blocks):
        entry.ca_only_nodes_after = onnx_export.ca_only_nodes(model, owner, i)
    gated = sum(sum(b.ca_only_nodes_after.values()) for b in report.ca_blocks if b.rewritten)
    others = sum(sum(b.ca_only_nodes_after.values()) for b in report.ca_blocks if not b.rewritten)
    left_unmatched = {}
    for i, module in enumerate(unmatched, start=len(modules)):
        counts = onnx_export.ca_only_nodes(model, owner, i)
        if counts:
            left_unmatched[module] = counts
    figures = StructureFigures(
        gated + others + sum(sum(c.values()) for c in left_unmatched.values()),
        in_rewritten_blocks=gated,
        in_blocks_not_rewritten=others,
        in_unmatched_concats=left_unmatched,
    )
    return Check.judged("structure", gated == 0, figures)


def _metadata(job: OnnxJob, dynamic: bool, report: ExportReport) -> dict[str, str]:
    """The model's metadata_props."""
    return {
        "ca_export.source_model": job.model,
        "ca_export.tool_version": f"ca-export {__version__}",
        "ca_export.input_shape": ",".join(map(str, job.input_shape)),
        "ca_export.dynamic": str(dynamic).lower(),
        "ca_export.precision": job.precision.precision,
        "ca_export.blocks_found": str(len(report.ca_blocks)),
        "ca_export.blocks_rewritten": str(sum(b.rewritten for b in report.ca_blocks)),
    }
