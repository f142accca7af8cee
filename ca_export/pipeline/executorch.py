"""The ExecuTorch pipeline: prepare (xnnpack form) -> lower -> gate in ExecuTorch -> write.

The program is rewritten into the ``xnnpack`` form (``broadcast_gate``), lowered with
the XNNPACK partitioner, serialised, loaded back into ExecuTorch's own runtime
(``executorch.runtime``) and run on seeded inputs against the original PyTorch model;
each rewritten block is also gated in PyTorch. The .pte takes the requested name only
when every gate passed. Delegate segments and every op left outside XNNPACK (with its
CA block) go into the report; CA ops left outside are a warning, not a failure (a
block the xnnpack form does not cover still exports, slower).

``--dynamic`` traces H and W bounded (``tracing.Bounds``: from min(64, size) to twice the
size, at the multiples the model needs) with the batch static, since ExecuTorch plans
memory for the largest size; the gate then also runs at two other sizes in the bounds
(one non-square where the model allows), in ExecuTorch.
"""

from __future__ import annotations

from dataclasses import dataclass

from ca_export import __version__
from ca_export.errors import BadInputError
from ca_export.export import executorch as et
from ca_export.files import Output, guard, write_atomic
from ca_export.pipeline.accuracy import accuracy_stage
from ca_export.pipeline.common import ModelJob, Prepared, Progress, Stages, quiet, with_block_gate
from ca_export.report import Check, ExportReport, Verdict
from ca_export.report.figures import SizeSpan, StructureFigures
from ca_export.verify.parity import gate_inputs, runner_gate

SUFFIX = ".pte"
NO_STRUCTURE_GATE = "no structure gate: CA ops left outside XNNPACK are a warning"


@dataclass
class ExecutorchJob(ModelJob):
    """What the user asked ``ca-export executorch`` for."""

    def run(self, progress: Progress = quiet) -> ExportReport:
        """Run the whole pipeline (``export_executorch``)."""
        return export_executorch(self, progress)

    def writes(self) -> list[Output]:
        """The files this job writes."""
        return [Output(self.output, "pte")]


def validate(job: ExecutorchJob) -> None:
    """Refuse, before any heavy work, what cannot be lowered or written as asked."""
    if job.output.suffix != SUFFIX:
        raise BadInputError(f"an ExecuTorch program is saved as {SUFFIX}, not {job.output.name!r}")
    guard(job.reads(), job.writes())
    et.EXTRA.require()


@dataclass(frozen=True)
class Lowered:
    """The lower stage's result: the serialised program and what lowering left outside
    XNNPACK: each CA block's ops there (in block order), the op counts, the ``structure``
    check (not run: CA ops outside XNNPACK are a warning) and that warning."""

    buffer: bytes
    ca_only_nodes_after: tuple[dict[str, int], ...]
    op_counts: dict[str, int]
    structure: Check
    warnings: tuple[str, ...]

    def record(self, report: ExportReport) -> None:
        """Put the structure, the op counts, each block's outside ops and the warning in
        ``report``."""
        for entry, counts in zip(report.ca_blocks, self.ca_only_nodes_after, strict=True):
            entry.ca_only_nodes_after = counts
        report.op_counts_after = self.op_counts
        report.structure = self.structure
        report.warnings += self.warnings


def lower(prepared: Prepared, stage: Stages) -> Lowered:
    """Lower the prepared program with the XNNPACK partitioner, serialise it and count what
    is left outside the delegates."""
    with stage("lower"):
        lowered = et.lower(prepared.program, [b.module for b in prepared.blocks])
    outside = lowered.outside
    per_block = tuple(et.outside_counts(outside, i) for i in range(len(prepared.blocks)))
    left = sum(o.block is not None for o in outside)
    counts = {"executorch_call_delegate": lowered.segments} | et.outside_counts(outside)
    bounds = prepared.traced.bounds
    figures = StructureFigures(
        left,
        "ops outside XNNPACK",
        segments=lowered.segments,
        outside=tuple(outside),
        dynamic_sizes={} if bounds is None else {a: SizeSpan(**bounds.describe(a)) for a in "hw"},
    )
    structure = Check("structure", Verdict.NOT_RUN, NO_STRUCTURE_GATE, figures, True)
    warning = (
        f"{left} op(s) of CA blocks run outside XNNPACK ({lowered.segments} delegate "
        "segments); see the report's structure.outside"
    )
    return Lowered(lowered.buffer, per_block, counts, structure, (warning,) if left else ())


def export_executorch(job: ExecutorchJob, progress: Progress = quiet) -> ExportReport:
    """Run the whole ExecuTorch pipeline; the report says whether every gate passed."""
    validate(job)
    stage = Stages(progress)
    report = ExportReport(
        job.model, __version__, "executorch", list(job.input_shape), job.dynamic, job.rewrite
    )
    prepared = job.prepare(stage, report, form="xnnpack")
    lowered = lower(prepared, stage)
    lowered.record(report)
    with stage("gate"):
        runner = et.PteRunner(lowered.buffer)
        inputs = gate_inputs(prepared.traced, job.input_shape, prepared.square_only)
        names = prepared.traced.output_names
        tolerances = prepared.gates.bounds
        gate = runner_gate(prepared.module, runner.run, names, inputs, et.BACKEND, tolerances)
        report.parity = with_block_gate(prepared, gate, inputs)
    if report.parity.ok:
        accuracy_stage(prepared, runner.run, "ExecuTorch XNNPACK", stage).record(report)
    if report.passed:
        with stage("write"):
            report.artifact = write_atomic(lowered.buffer, job.output)
    report.stages = stage.times
    return report
