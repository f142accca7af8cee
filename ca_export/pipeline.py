"""The pipeline: load -> trace -> find blocks -> rewrite -> emit -> verify -> report.

Each stage is timed and announced through a progress callback; the CLI prints it.
An artifact is written under the requested name only after every gate passed.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import onnx

from ca_export import __version__
from ca_export.errors import BadInputError
from ca_export.export import onnx as onnx_export
from ca_export.loading import load_model
from ca_export.patterns import find
from ca_export.report import BlockReport, ExportReport, InspectReport, gate_summary
from ca_export.rewrites import rewrite
from ca_export.tracing import trace
from ca_export.verify.parity import block_gate, gate_inputs, onnx_gate

Progress = Callable[[str], None]


def _quiet(_: str) -> None:
    """A progress callback that says nothing."""


class Stages:
    """Times named stages and announces each one as it starts."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.times: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        self.progress(name)
        start = time.perf_counter()
        try:
            yield
        finally:
            self.times[name] = round(self.times.get(name, 0.0) + time.perf_counter() - start, 3)


def inspect_model(
    model: str,
    weights: Path | None = None,
    input_shape: tuple[int, int, int, int] = (1, 3, 224, 224),
    progress: Progress = _quiet,
) -> InspectReport:
    """Trace a model and report its CA blocks and the pooled concats that are not CA."""
    stage = Stages(progress)
    with stage("load"):
        loaded = load_model(model, weights)
    with stage("trace"):
        traced = trace(loaded.module, input_shape, dynamic=False)
    with stage("detect"):
        blocks, rejected = find(traced.program.graph)
    return InspectReport(
        model, list(input_shape), [BlockReport.of(b) for b in blocks], rejected, loaded.notices
    )


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


def check_writable(path: Path) -> None:
    """Fail early, before any heavy work, if ``path`` cannot be written."""
    parent = path.resolve().parent
    if path.is_dir():
        raise BadInputError(f"output {str(path)!r} is a directory")
    if not parent.is_dir():
        raise BadInputError(f"output folder {str(parent)!r} does not exist")
    if not os.access(parent, os.W_OK):
        raise BadInputError(f"output folder {str(parent)!r} is not writable")


def export_onnx(job: OnnxJob, progress: Progress = _quiet) -> ExportReport:
    """Run the whole ONNX pipeline; the report says whether every gate passed."""
    check_writable(job.output)
    stage = Stages(progress)
    report = ExportReport(
        job.model, __version__, "onnx", list(job.input_shape), job.dynamic, job.rewrite, job.opset
    )
    with stage("load"):
        loaded = load_model(job.model, job.weights)
        report.notices += loaded.notices
    with stage("trace"):
        traced = trace(loaded.module, job.input_shape, job.dynamic)
    with stage("detect"):
        blocks, report.rejected = find(traced.program.graph)
        report.ca_blocks = [BlockReport.of(b) for b in blocks]
        modules = [b.module for b in blocks]
    stock = None
    with stage("export stock"):
        try:
            stock = onnx_export.emit(traced.program, traced, job.opset)
        except BadInputError as err:
            if not job.rewrite:
                raise
            report.warnings.append(f"stock export (for comparison) failed: {err}")
    if stock is not None:
        stock_owner = onnx_export.attribute(stock, modules)
        report.op_counts_before = onnx_export.op_counts(stock)
        for i, entry in enumerate(report.ca_blocks):
            entry.ca_only_nodes_before = onnx_export.ca_only_nodes(stock, stock_owner, i)
    program = traced.program
    if job.rewrite and blocks:
        with stage("rewrite"):
            result = rewrite(traced.program, static=not job.dynamic)
            program = result.program
            for entry in report.ca_blocks:
                entry.rewritten = True
        with stage("export"):
            raw = onnx_export.emit(program, traced, job.opset)
    else:
        assert stock is not None
        raw = stock
    model = raw
    if job.simplify:
        with stage("simplify"):
            model, warnings = onnx_export.simplify(raw)
            report.warnings += warnings
    with stage("check"):
        onnx_export.check(model)
        owner = onnx_export.attribute(raw, modules)
        for i, entry in enumerate(report.ca_blocks):
            entry.ca_only_nodes_after = onnx_export.ca_only_nodes(model, owner, i)
        left = sum(sum(b.ca_only_nodes_after.values()) for b in report.ca_blocks if b.rewritten)
        report.structure = {"passed": left == 0, "ca_only_nodes_after": left}
        report.op_counts_after = onnx_export.op_counts(model)
    with stage("gate"):
        inputs = gate_inputs(traced, job.input_shape)
        gate = onnx_gate(loaded.module, model, traced, inputs)
        report.parity = gate_summary(gate) | {"inputs": len(inputs)}
        if job.rewrite and blocks:
            pairs = [(b.module, b.source.name, b.output.name) for b in blocks]
            report.parity["blocks"] = gate_summary(
                block_gate(traced.program, program, pairs, inputs)
            )
            report.parity["passed"] = gate.passed and report.parity["blocks"]["passed"]
    onnx_export.set_metadata(model, _metadata(job, traced.dynamic, report))
    if report.passed:
        with stage("write"):
            report.artifact = _write(model, job.output)
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


def _write(model: onnx.ModelProto, path: Path) -> dict[str, object]:
    """Write atomically: a temporary file in the same folder, then a rename."""
    data = model.SerializeToString()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.resolve().parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except OSError as err:
        Path(tmp).unlink(missing_ok=True)
        raise BadInputError(f"cannot write {str(path)!r}: {err.strerror}") from None
    return {"path": str(path), "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
