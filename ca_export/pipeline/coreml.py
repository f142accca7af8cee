"""The Core ML pipeline: prepare -> convert -> save (temporary) -> gate -> rename.

The job and its checks of the options are here; the conversion is
``export.coreml_conversion``, the gate ``verify.coreml_gate``. The model is saved under
a temporary name in the output folder, read back from disk and checked there; it takes
the requested name only when every check that ran passed. Prediction parity runs on
macOS only; elsewhere the report says it did not run.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ca_export import __version__
from ca_export.errors import BadInputError
from ca_export.export import coreml as coreml_export
from ca_export.export import coreml_compress
from ca_export.export.coreml import ImageInput, InputSpec, Target
from ca_export.export.coreml_conversion import Conversion, convert
from ca_export.files import Output, guard, publish, scratch
from ca_export.pipeline.accuracy import accuracy_stage
from ca_export.pipeline.common import ModelJob, Prepared, Progress, Stages, quiet
from ca_export.report import Check, ExportReport
from ca_export.report.figures import ValueFigures
from ca_export.rewrites import scale_upsamples
from ca_export.rewrites.size_to_scale import multiple as exact_multiple
from ca_export.tracing import output_arrays
from ca_export.verify.coreml_gate import (
    Candidate,
    Judged,
    Reloaded,
    mil_parity,
    predict,
    reload_check,
)
from ca_export.verify.mil.artifact import open_mil

DEFAULT_HW_RANGE = (32, 1024)
METADATA_FIELDS = ("author", "license", "version", "short_description")


@dataclass
class CoreMLJob(ModelJob):
    """What the user asked ``ca-export coreml`` for.

    ``precision`` and ``min_target`` default by format (mlprogram: fp16, iOS15;
    neuralnetwork: fp32, iOS13; a neuralnetwork in fp16 stores fp16 weights).
    ``hw_range`` or ``sizes`` need ``dynamic``; dynamic
    without either gets ``DEFAULT_HW_RANGE``. ``metadata`` keys: ``METADATA_FIELDS``.
    ``compress`` (an ML program only) compresses the weights (``export.coreml_compress``);
    the deployment target then defaults to iOS16, the first with compressed weights.
    A job is checked when it is made (``validate``; exit 2 on options that do not fit).
    """

    format: str = "mlprogram"
    precision: str | None = None
    min_target: str | None = None
    hw_range: tuple[int, int] | None = None
    sizes: tuple[tuple[int, int], ...] = ()
    image: ImageInput | None = None
    labels: tuple[str, ...] = ()
    metadata: dict[str, str] = field(default_factory=dict)
    compress: str | None = None

    def __post_init__(self) -> None:
        validate(self)

    def run(self, progress: Progress = quiet) -> ExportReport:
        """Run the whole pipeline (``export_coreml``)."""
        return export_coreml(self, progress)

    def writes(self) -> list[Output]:
        """The files this job writes."""
        kind = "mlpackage" if self.output.suffix == ".mlpackage" else "mlmodel"
        return [Output(self.output, kind)]

    @property
    def target(self) -> Target:
        """Format, precision and deployment target, with the format's defaults filled in."""
        program = self.format == "mlprogram"
        precision = self.precision or ("fp16" if program else "fp32")
        default = (coreml_compress.MIN_TARGET if self.compress else "iOS15") if program else "iOS13"
        return Target(self.format, precision, self.min_target or default)

    def other_shapes(self) -> list[tuple[tuple[int, int, int, int], str]]:
        """Each of ``--sizes`` (the gate runs the model at every one)."""
        n, c, _, _ = self.input_shape
        return [((n, c, h, w), "--sizes") for h, w in self.sizes]

    def input_spec(self, name: str) -> InputSpec:
        """The converted model's input under ``name``."""
        hw_range = self.hw_range or (DEFAULT_HW_RANGE if self.dynamic and not self.sizes else None)
        return InputSpec(name, self.input_shape, hw_range, self.sizes, self.image)


def validate(job: CoreMLJob) -> None:
    """Refuse, before any heavy work, what cannot be converted or saved as asked
    (``CoreMLJob`` runs it when it is made)."""
    target = job.target
    if target.format not in coreml_export.EXTENSIONS:
        raise BadInputError(f"unknown Core ML format {target.format!r}")
    suffix = coreml_export.EXTENSIONS[target.format]
    if job.output.suffix != suffix:
        raise BadInputError(
            f"a {target.format} model is saved as {suffix}, not {job.output.name!r}"
        )
    level = coreml_export.TARGETS.index(target.min_target)
    if target.format == "mlprogram" and level < coreml_export.TARGETS.index("iOS15"):
        raise BadInputError(f"mlprogram needs --min-target iOS15 or later, not {target.min_target}")
    if target.format == "neuralnetwork" and level > coreml_export.TARGETS.index("iOS14"):
        raise BadInputError(
            f"neuralnetwork needs --min-target iOS14 or earlier, not {target.min_target}"
        )
    _validate_sizes(job)
    _validate_compress(job)
    if job.image is not None and job.gates.eval_data is not None:
        raise BadInputError(
            "--eval-data feeds the model's own inputs; it does not apply to --image-input "
            "(verify the fp32-input package with --eval-data instead)"
        )
    if job.image is not None and (job.input_shape[0] != 1 or job.input_shape[1] != 3):
        raise BadInputError("an image input is one RGB image: --input-shape must be 1,3,H,W")


def _validate_compress(job: CoreMLJob) -> None:
    """Weight compression needs an ML program for iOS16 or later, and a known mode."""
    if job.compress is None:
        return
    if job.compress not in coreml_compress.MODES:
        raise BadInputError(
            f"unknown --compress {job.compress!r}; choose from {', '.join(coreml_compress.MODES)}"
        )
    target = job.target
    if target.format != "mlprogram":
        raise BadInputError("--compress needs --format mlprogram (a neuralnetwork cannot hold it)")
    first = coreml_export.TARGETS.index(coreml_compress.MIN_TARGET)
    if coreml_export.TARGETS.index(target.min_target) < first:
        raise BadInputError(
            f"--compress needs --min-target {coreml_compress.MIN_TARGET} or later "
            f"(compressed weights are {coreml_compress.MIN_TARGET} ops), not {target.min_target}"
        )


def _validate_sizes(job: CoreMLJob) -> None:
    """Flexible sizes need --dynamic, one kind at a time, and must hold the traced size."""
    _, _, h, w = job.input_shape
    if (job.hw_range or job.sizes) and not job.dynamic:
        raise BadInputError("--hw-range and --sizes need --dynamic")
    if job.hw_range and job.sizes:
        raise BadInputError("give --hw-range or --sizes, not both")
    low, high = job.hw_range or DEFAULT_HW_RANGE
    if job.dynamic and not job.sizes and not 1 <= low <= min(h, w) <= max(h, w) <= high:
        raise BadInputError(f"--hw-range {low}:{high} must hold the input size {h}x{w}")
    repeated = sorted({s for s in job.sizes if job.sizes.count(s) > 1})
    if repeated:
        raise BadInputError(f"--sizes lists {repeated[0][0]}x{repeated[0][1]} more than once")
    if job.sizes and (h, w) not in job.sizes:
        raise BadInputError(f"--sizes must include the input size {h}x{w}")


def read_labels(path: Path) -> tuple[str, ...]:
    """Class labels: the non-empty lines of a text file."""
    try:
        lines = path.read_text().splitlines()
    except OSError as err:
        raise BadInputError(f"cannot read labels {str(path)!r}: {err.strerror}") from None
    labels = tuple(line.strip() for line in lines if line.strip())
    if not labels:
        raise BadInputError(f"labels file {str(path)!r} has no labels")
    return labels


def export_coreml(job: CoreMLJob, progress: Progress = quiet) -> ExportReport:
    """Run the whole Core ML pipeline; the report says which checks ran and passed."""
    guard(job.reads(), job.writes())
    stage = Stages(progress)
    target = job.target
    report = ExportReport(
        job.model,
        __version__,
        f"coreml-{target.format}",
        list(job.input_shape),
        job.dynamic,
        job.rewrite,
    )
    prepared = job.prepare(stage, report)
    if job.compress:
        coreml_compress.check_compressible(prepared.module, job.compress)
    spec = job.input_spec(prepared.traced.input_names[0])
    shapes = _output_shapes(prepared, job.input_shape)
    _validate_traced(job, prepared, spec, shapes)
    multiple = _scale_upsamples(job, prepared, report) if job.dynamic else (1, 1)
    report.expected = ["load", "io", "structure", "mil_parity", "prediction"]
    report.expected += ["compression", "compressed_weights"] if job.compress else []
    report.expected += ["flexible_sizes"] if multiple != (1, 1) else []
    metadata = _metadata(job, spec, report)
    if multiple != (1, 1):
        metadata[coreml_export.HW_MULTIPLE] = "{}x{}".format(*multiple)
    names = tuple(prepared.traced.output_names)
    conversion = Conversion(
        program=prepared.program,
        modules=tuple(b.module for b in prepared.blocks),
        spec=spec,
        target=target,
        output_names=names,
        labels=job.labels,
        compress=job.compress,
        user_metadata=job.metadata,
        metadata=metadata,
    )
    with stage("convert"):
        converted = convert(conversion)
    with scratch(job.output) as folder:
        temporary = folder / job.output.name
        with stage("save"):
            coreml_export.save(converted.model, temporary)
        candidate = Candidate(
            path=temporary,
            target=target,
            spec=spec,
            output_names=names,
            output_shapes=tuple(shapes),
            module=prepared.module,
            program=prepared.program,
            owner=converted.owner,
            blocks=len(prepared.blocks),
            labels=job.labels,
            compress=job.compress,
            twin=converted.twin,
            multiple=multiple,
            bounds=prepared.gates.bounds,
            allow_unverified=prepared.gates.allow_unverified,
        )
        with stage("check"):
            reloaded = reload_check(candidate)
        with stage("mil parity"):
            evaluated = mil_parity(candidate)
        with stage("predict") if coreml_export.CAN_PREDICT else nullcontext():
            predicted = predict(candidate)
        _record(report, reloaded, evaluated, predicted)
        parity_ok = all(c.ok for c in evaluated.checks if c.name == "mil_parity")
        if parity_ok and prepared.eval_set is not None:
            artifact = open_mil(temporary)
            name = f"Core ML {target.precision}" + (f" {job.compress}" if job.compress else "")
            accuracy_stage(prepared, artifact.run, name, stage).record(report)
        if report.passed:
            with stage("write"):
                report.artifact = _move(temporary, job.output)
    report.stages = stage.times
    return report


def _record(report: ExportReport, reloaded: Reloaded, evaluated: Judged, predicted: Judged) -> None:
    """The gate's results in the report; Core ML's own prediction settles parity where it ran,
    the NumPy evaluation otherwise."""
    report.opset = reloaded.spec_version
    report.op_counts_after = reloaded.op_counts
    for entry, counts in zip(report.ca_blocks, reloaded.ca_only_nodes_after, strict=True):
        entry.ca_only_nodes_after = counts
    report.structure = reloaded.structure
    for check in (*reloaded.checks, *evaluated.checks, *predicted.checks):
        report.add(check)
    report.warnings += evaluated.warnings
    ran = predicted.parity is not None and predicted.parity.ran
    report.parity = predicted.parity if ran or evaluated.parity is None else evaluated.parity


def _scale_upsamples(job: CoreMLJob, prepared: Prepared, report: ExportReport) -> tuple[int, int]:
    """Size-driven integer-ratio upsamples by scale factor; the H, W multiples sizes must meet.

    Enumerated sizes (and the input size) that are not multiples exit 2; a range cannot
    hold only multiples, so the condition is recorded in the model's metadata, warned
    about, and checked by ``verify``.
    """
    scaled = scale_upsamples(prepared.program)
    multiple = exact_multiple(scaled)
    report.notices += [f"upsample {node}: {change}" for node, change in scaled.applied.items()]
    if multiple == (1, 1):
        return multiple
    mh, mw = multiple
    sizes = [tuple(job.input_shape[2:]), *job.sizes]
    wrong = [f"{h}x{w}" for h, w in sizes if h % mh or w % mw]
    if wrong:
        raise BadInputError(
            f"{job.model} is exact in Core ML only where H is a multiple of {mh} and W of "
            f"{mw}; {', '.join(dict.fromkeys(wrong))} is not"
        )
    report.add(Check.judged("flexible_sizes", True, ValueFigures({"multiple": [mh, mw]})))
    if not job.sizes:
        report.warnings.append(
            f"the size range also admits sizes where the model is not exact: use H a multiple "
            f"of {mh} and W of {mw} (recorded as {coreml_export.HW_MULTIPLE}; verify checks it), "
            "or --sizes"
        )
    return multiple


def _output_shapes(prepared: Prepared, input_shape: tuple[int, ...]) -> list[tuple[int, ...]]:
    """The original model's output shapes at the input shape."""
    with torch.no_grad():
        outputs = output_arrays(prepared.module(torch.zeros(input_shape)))
    return [tuple(o.shape) for o in outputs]


def _validate_traced(
    job: CoreMLJob, prepared: Prepared, spec: InputSpec, shapes: list[tuple[int, ...]]
) -> None:
    """What only the trace tells: square-only models, and labels that fit the output."""
    if prepared.square_only:
        if spec.hw_range is not None:
            raise BadInputError(
                f"{job.model} runs on square inputs only, and a Core ML size range cannot tie "
                "H to W; use --sizes with square sizes"
            )
        if any(h != w for h, w in spec.shapes):
            raise BadInputError(f"{job.model} runs on square inputs only; --sizes must be square")
    if job.labels and (len(shapes) != 1 or len(shapes[0]) != 2 or shapes[0][1] != len(job.labels)):
        outputs = ", ".join("x".join(map(str, s)) for s in shapes)
        raise BadInputError(
            f"--labels gives {len(job.labels)} labels, but a classifier needs one output of "
            f"shape (N, {len(job.labels)}); the model outputs {outputs}"
        )


def _move(temporary: Path, output: Path) -> dict[str, Any]:
    """Stage the checked model for ``output`` (renamed with the run's other outputs)."""
    files = [temporary] if temporary.is_file() else [p for p in temporary.rglob("*") if p.is_file()]
    size = sum(p.stat().st_size for p in files)
    publish(temporary, output)
    return {"path": str(output), "bytes": size}


def _metadata(job: CoreMLJob, spec: InputSpec, report: ExportReport) -> dict[str, str]:
    """The model's user-defined metadata."""
    entries = {
        "ca_export.source_model": job.model,
        "ca_export.tool_version": f"ca-export {__version__}",
        "ca_export.input_shape": ",".join(map(str, job.input_shape)),
        "ca_export.blocks_found": str(len(report.ca_blocks)),
        "ca_export.blocks_rewritten": str(sum(b.rewritten for b in report.ca_blocks)),
    }
    if spec.hw_range is not None:
        entries["ca_export.hw_range"] = "{}:{}".format(*spec.hw_range)
    if spec.shapes:
        entries["ca_export.shapes"] = ",".join(f"{h}x{w}" for h, w in spec.shapes)
    if spec.image is not None:
        entries |= spec.image.metadata()
    if job.compress:
        entries[coreml_compress.COMPRESSION] = job.compress
    return entries
