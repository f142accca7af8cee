"""The ONNX pipeline: prepare -> emit (stock and rewritten) -> simplify -> check -> gate -> write.

An artifact is written under the requested name only after every gate passed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import onnx

from ca_export import __version__
from ca_export.errors import BadInputError
from ca_export.export import onnx as onnx_export
from ca_export.pipeline.common import (
    Prepared,
    Progress,
    Stages,
    check_writable,
    prepare,
    quiet,
    with_block_gate,
    write_onnx,
)
from ca_export.report import ExportReport
from ca_export.verify.parity import gate_inputs, onnx_gate


@dataclass
class OnnxJob:
    """What the user asked ``ca-export onnx`` for."""

    model: str
    output: Path
    weights: Path | None = None
    input_shape: tuple[int, int, int, int] = (1, 3, 224, 224)
    opset: int = 18
    dynamic: bool = False
    rewrite: bool = True
    simplify: bool = True


def parity_gates(prepared: Prepared, onnx_model: onnx.ModelProto, shape: tuple[int, ...]) -> dict:
    """ONNX Runtime against the original model, and each rewritten block against its original."""
    inputs = gate_inputs(prepared.traced, shape)
    gate = onnx_gate(prepared.module, onnx_model, prepared.traced, inputs)
    return with_block_gate(prepared, gate, inputs)


def export_onnx(job: OnnxJob, progress: Progress = quiet) -> ExportReport:
    """Run the whole ONNX pipeline; the report says whether every gate passed."""
    check_writable(job.output)
    stage = Stages(progress)
    report = ExportReport(
        job.model, __version__, "onnx", list(job.input_shape), job.dynamic, job.rewrite, job.opset
    )
    prepared = prepare(
        job.model, job.weights, job.input_shape, job.dynamic, job.rewrite, stage, report
    )
    traced = prepared.traced
    modules = [b.module for b in prepared.blocks]
    stock = None
    with stage("export stock"):
        try:
            stock = onnx_export.emit(traced.program, traced, job.opset)
        except BadInputError as err:
            if prepared.rewritten:
                report.warnings.append(f"stock export (for comparison) failed: {err}")
            else:
                raise
    if stock is not None:
        stock_owner = onnx_export.attribute(stock, modules)
        report.op_counts_before = onnx_export.op_counts(stock)
        for i, entry in enumerate(report.ca_blocks):
            entry.ca_only_nodes_before = onnx_export.ca_only_nodes(stock, stock_owner, i)
    if prepared.rewritten:
        with stage("export"):
            raw = onnx_export.emit(prepared.program, traced, job.opset)
    else:
        assert stock is not None
        raw = stock
    model = raw
    if job.simplify:
        with stage("simplify"):
            model, warnings = onnx_export.simplify(raw)
            report.warnings += warnings
    with stage("check"):
        onnx_export.keep_scopes(model, raw)
        onnx_export.check(model)
        owner = onnx_export.attribute(raw, modules)
        for i, entry in enumerate(report.ca_blocks):
            entry.ca_only_nodes_after = onnx_export.ca_only_nodes(model, owner, i)
        left = sum(sum(b.ca_only_nodes_after.values()) for b in report.ca_blocks if b.rewritten)
        report.structure = {"passed": left == 0, "ca_only_nodes_after": left}
        report.op_counts_after = onnx_export.op_counts(model)
    with stage("gate"):
        report.parity = parity_gates(prepared, model, job.input_shape)
    onnx_export.set_metadata(model, _metadata(job, traced.dynamic, report))
    if report.passed:
        with stage("write"):
            report.artifact = write_onnx(model, job.output)
    report.stages = stage.times
    return report


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
