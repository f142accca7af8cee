"""The LiteRT pipeline: prepare (litert form) -> convert -> inspect -> gate in LiteRT -> write.

The program is rewritten into the ``litert`` form, converted by litert-torch (with
``--channels-last-io``, NHWC input and maps), loaded back into ``ai_edge_litert``'s
interpreter with XNNPACK on one thread and run on seeded inputs against the original
PyTorch model; each rewritten block is also gated in PyTorch. The .tflite takes the
requested name only when every gate passed. The report lists the TRANSPOSE ops left (with
their CA blocks), the XNNPACK partitions and the ops left outside them; CA ops outside
XNNPACK or TRANSPOSE from a CA block are a warning, not a failure (the file is exact,
only slower).

Static shapes only: ``--dynamic`` is refused (litert-torch converts a dynamic program, but
ca-export has not measured one through its layout pass and XNNPACK; export one file per
input size).
"""

from __future__ import annotations

from dataclasses import dataclass

from ca_export import __version__
from ca_export.errors import BadInputError
from ca_export.export import litert as lt
from ca_export.files import Output, guard, write_atomic
from ca_export.pipeline.common import ModelJob, Progress, Stages, quiet, with_block_gate
from ca_export.report import Check, ExportReport, Verdict
from ca_export.tracing import example_input
from ca_export.verify.parity import gate_inputs, runner_gate

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

    def writes(self) -> list[Output]:
        """The files this job writes."""
        return [Output(self.output, "tflite")]


def validate(job: LiteRTJob) -> None:
    """Refuse, before any heavy work, what cannot be converted or written as asked."""
    if job.output.suffix != SUFFIX:
        raise BadInputError(f"a LiteRT model is saved as {SUFFIX}, not {job.output.name!r}")
    if job.dynamic:
        raise BadInputError(NO_DYNAMIC)
    guard(job.reads(), job.writes())
    if not lt.available():
        raise BadInputError(lt.INSTALL_HINT)


def structure(inspection: lt.Inspection, report: ExportReport, modules: list[str]) -> Check:
    """The report's view of the file: ops, TRANSPOSE left by block, partitions, ops outside;
    a warning for what CA blocks leave."""
    for i, entry in enumerate(report.ca_blocks):
        mine = [o for o in inspection.ops if o.block == i]
        entry.ca_only_nodes_after = {
            "TRANSPOSE": sum(o.op == "TRANSPOSE" for o in mine),
            "outside XNNPACK": sum(not o.delegated for o in mine),
        }
    report.op_counts_after = inspection.counts()
    transposes = [o for o in inspection.transposes if o.block is not None]
    outside = [o for o in inspection.outside if o.block is not None]
    if transposes:
        report.warnings.append(f"{len(transposes)} TRANSPOSE op(s) come from CA blocks")
    if outside:
        report.warnings.append(
            f"{len(outside)} op(s) of CA blocks run outside XNNPACK ({inspection.partitions} "
            "partitions); see the report's structure.outside"
        )
    left = len({o.index for o in transposes + outside})
    details = {
        "ops": "TRANSPOSE and ops outside XNNPACK",
        "ca_only_nodes_after": left,
    } | inspection.to_dict(modules)
    return Check("structure", Verdict.NOT_RUN, NO_STRUCTURE_GATE, details, True)


def export_litert(job: LiteRTJob, progress: Progress = quiet) -> ExportReport:
    """Run the whole LiteRT pipeline; the report says whether every gate passed."""
    validate(job)
    stage = Stages(progress)
    report = ExportReport(
        job.model, __version__, "litert", list(job.input_shape), False, job.rewrite, 0
    )
    report.target = "litert-nhwc" if job.channels_last_io else "litert"
    prepared = job.prepare(stage, report, form=FORM)
    with stage("convert"):
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
    if report.passed:
        with stage("write"):
            report.artifact = write_atomic(buffer, job.output)
    report.stages = stage.times
    return report
