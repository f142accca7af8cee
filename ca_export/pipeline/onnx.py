"""The ONNX pipeline: prepare -> emit (stock and rewritten) -> simplify -> check -> gate -> write.

An artifact is written under the requested name only after every gate passed.
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx

from ca_export import __version__
from ca_export.export import onnx as onnx_export
from ca_export.files import Output, guard, write_onnx
from ca_export.pipeline.common import ModelJob, Prepared, Progress, Stages, quiet, with_block_gate
from ca_export.report import ExportReport
from ca_export.rewrites import DEFAULT_TARGET, form_of
from ca_export.verify.parity import gate_inputs, onnx_gate


@dataclass
class OnnxJob(ModelJob):
    """What the user asked ``ca-export onnx`` for."""

    opset: int = 18
    simplify: bool = True
    target: str = DEFAULT_TARGET
    form: str | None = None
    """A rewrite form by name (``ca_export.rewrites.FORMS``) instead of the target's; for
    benchmarks that compare forms."""

    def writes(self) -> list[Output]:
        """The files this job writes."""
        return [Output(self.output, "onnx")]


def parity_gates(prepared: Prepared, onnx_model: onnx.ModelProto, shape: tuple[int, ...]) -> dict:
    """ONNX Runtime against the original model, and each rewritten block against its original."""
    inputs = gate_inputs(prepared.traced, shape, prepared.square_only)
    gate = onnx_gate(prepared.module, onnx_model, prepared.traced, inputs)
    return with_block_gate(prepared, gate, inputs)


def export_onnx(job: OnnxJob, progress: Progress = quiet) -> ExportReport:
    """Run the whole ONNX pipeline; the report says whether every gate passed."""
    guard(job.reads(), job.writes())
    stage = Stages(progress)
    report = ExportReport(
        job.model, __version__, "onnx", list(job.input_shape), job.dynamic, job.rewrite, job.opset
    )
    form = job.form or form_of(job.target)
    if job.rewrite and job.form is None:
        report.target = job.target
    prepared = job.prepare(stage, report, form)
    traced = prepared.traced
    with stage("export"):
        raw = onnx_export.emit(prepared.program, traced, job.opset)
    model = raw
    if job.simplify:
        with stage("simplify"):
            model, warnings = onnx_export.simplify(raw)
            report.warnings += warnings
    with stage("check"):
        onnx_export.keep_scopes(model, raw)
        onnx_export.check(model)
        report.structure = structure(report, model, raw, [b.module for b in prepared.blocks])
        report.op_counts_after = onnx_export.op_counts(model)
    with stage("gate"):
        report.parity = parity_gates(prepared, model, job.input_shape)
    onnx_export.set_metadata(model, _metadata(job, traced.dynamic, report))
    if report.passed:
        with stage("write"):
            report.artifact = write_onnx(model, job.output)
    report.stages = stage.times
    return report


def structure(
    report: ExportReport, model: onnx.ModelProto, raw: onnx.ModelProto, modules: list[str]
) -> dict:
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
    return {
        "passed": gated == 0,
        "ca_only_nodes_after": gated
        + others
        + sum(sum(c.values()) for c in left_unmatched.values()),
        "in_rewritten_blocks": gated,
        "in_blocks_not_rewritten": others,
        "in_unmatched_concats": left_unmatched,
    }


def _metadata(job: OnnxJob, dynamic: bool, report: ExportReport) -> dict[str, str]:
    """The model's metadata_props."""
    return {
        "ca_export.source_model": job.model,
        "ca_export.tool_version": f"ca-export {__version__}",
        "ca_export.input_shape": ",".join(map(str, job.input_shape)),
        "ca_export.dynamic": str(dynamic).lower(),
        "ca_export.blocks_found": str(len(report.ca_blocks)),
        "ca_export.blocks_rewritten": str(sum(b.rewritten for b in report.ca_blocks)),
    }
