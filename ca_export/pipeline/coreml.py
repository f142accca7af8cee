"""The Core ML pipeline: prepare -> convert -> save (temporary) -> load back and check -> rename.

The model is saved under a temporary name in the output folder, read back from disk
and checked there; it takes the requested name only when every check that ran passed.
Prediction parity runs on macOS only; elsewhere the report says it did not run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ca_export import __version__
from ca_export.errors import BadInputError
from ca_export.export import coreml as coreml_export
from ca_export.export import coreml_compress
from ca_export.export.coreml import ImageInput, InputSpec, Target
from ca_export.files import Output, guard, publish, scratch
from ca_export.pipeline.accuracy import accuracy_stage
from ca_export.pipeline.common import ModelJob, Prepared, Progress, Stages, quiet
from ca_export.report import Check, ExportReport, Verdict, gate_check
from ca_export.rewrites.size_to_scale import size_to_scale
from ca_export.tracing import example_input
from ca_export.verify.coreml_prediction import prediction_gate
from ca_export.verify.mil.artifact import open_mil
from ca_export.verify.mil.compressed import CompressedCopy, compressed_copy, weight_loss
from ca_export.verify.mil.fp32_arithmetic import fp32_arithmetic_parity, twin_function
from ca_export.verify.mil.ops import Unsupported
from ca_export.verify.mil.parity import NotVerified, mil_parity
from ca_export.verify.mil.program import MilProgram, load_program
from ca_export.verify.parity import output_arrays

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
    """Refuse, before any heavy work, what cannot be converted or saved as asked."""
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
    guard(job.reads(), job.writes())


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
    validate(job)
    stage = Stages(progress)
    target = job.target
    report = ExportReport(
        job.model,
        __version__,
        f"coreml-{target.format}",
        list(job.input_shape),
        job.dynamic,
        job.rewrite,
        0,
    )
    prepared = job.prepare(stage, report)
    if job.compress:
        coreml_compress.check_compressible(prepared.module, job.compress)
    spec = job.input_spec(prepared.traced.input_names[0])
    names = prepared.traced.output_names
    shapes = _output_shapes(prepared, job.input_shape)
    _validate_traced(job, prepared, spec, shapes)
    multiple = _scale_upsamples(job, prepared, report) if job.dynamic else (1, 1)
    report.expected = ["load", "io", "structure", "mil_parity", "prediction"]
    report.expected += ["compression", "compressed_weights"] if job.compress else []
    report.expected += ["flexible_sizes"] if multiple != (1, 1) else []
    modules = [b.module for b in prepared.blocks]
    with stage("convert"):
        blocks = coreml_export.tag(prepared.program, modules)
        model = coreml_export.convert(prepared.program, spec, target, names, job.labels)
        owner = coreml_export.owners(model, blocks)
        twin: Any = None
        if target.format == "mlprogram" and target.precision == "fp16":
            fp32 = Target(target.format, "fp32", target.min_target)
            twin = twin_function(
                coreml_export.convert(prepared.program, spec, fp32, names, job.labels)
            )
        if target.format == "neuralnetwork" and target.precision == "fp16":
            model = coreml_export.half_weights(model)
        if job.compress:
            model = coreml_compress.compress(model, job.compress)
        entries = _metadata(job, spec, report)
        if multiple != (1, 1):
            entries[coreml_export.HW_MULTIPLE] = "{}x{}".format(*multiple)
        coreml_export.set_metadata(model, job.metadata, entries)
    with scratch(job.output) as folder:
        temporary = folder / job.output.name
        with stage("save"):
            coreml_export.save(model, temporary)
        with stage("check"):
            _check(
                report,
                temporary,
                target.format,
                spec,
                names,
                shapes,
                job.labels,
                owner,
                job.compress,
            )
        with stage("mil parity"):
            weights = _compressed_copy(temporary, prepared, spec) if job.compress else None
            _mil_parity(
                report, temporary, prepared, spec, (target.precision, weights), twin, multiple
            )
            if job.compress:
                _weight_loss(report, weights, prepared, spec, multiple)
        parity_ok = report.checks["mil_parity"].ok
        if parity_ok and prepared.eval_set is not None:
            artifact = open_mil(temporary)
            name = f"Core ML {target.precision}" + (f" {job.compress}" if job.compress else "")
            accuracy_stage(prepared, artifact.run, name, report, stage)
        if coreml_export.CAN_PREDICT:
            with stage("predict"):
                _predict(
                    report,
                    temporary,
                    prepared,
                    spec,
                    names,
                    (target.precision, multiple),
                    job.labels,
                )
        else:
            why = coreml_export.NO_PREDICTION
            report.add(Check("prediction", Verdict.NOT_RUN, why, accepted=True))
            if report.parity is None:
                report.parity = Check("parity", Verdict.NOT_RUN, why, accepted=True)
        if report.passed:
            with stage("write"):
                report.artifact = _move(temporary, job.output)
    report.stages = stage.times
    return report


def _scale_upsamples(job: CoreMLJob, prepared: Prepared, report: ExportReport) -> tuple[int, int]:
    """Size-driven integer-ratio upsamples by scale factor; the H, W multiples sizes must meet.

    Enumerated sizes (and the input size) that are not multiples exit 2; a range cannot
    hold only multiples, so the condition is recorded in the model's metadata, warned
    about, and checked by ``verify``.
    """
    scaled = size_to_scale(prepared.program)
    multiple = scaled.multiple
    for up in scaled.rewritten:
        report.notices.append(
            f"upsample {up.node}: size read from the input becomes scale factor "
            f"{up.ratio[0]}x{up.ratio[1]}, exact where H and W are multiples of "
            f"{up.multiple[0]} and {up.multiple[1]}"
        )
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
    report.add(Check.judged("flexible_sizes", True, {"multiple": [mh, mw]}))
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


def _check(
    report: ExportReport,
    path: Path,
    fmt: str,
    spec: InputSpec,
    names: list[str],
    shapes: list[tuple[int, ...]],
    labels: tuple[str, ...],
    owner: dict[str, int],
    compress: str | None = None,
) -> None:
    """Load the saved model back; check its inputs/outputs and the CA-only ops per block.

    With ``compress``, the program must hold weight decompression (``constexpr_*``) ops.
    """
    reloaded = coreml_export.reload(path, fmt)
    report.opset = reloaded.spec.specificationVersion
    report.add(Check.judged("load", True, {"ops": len(reloaded.ops)}))
    expected = coreml_export.expected_io(spec, fmt, names, shapes, labels)
    found = coreml_export.describe(reloaded.spec)
    problems = coreml_export.io_mismatches(expected, found)
    report.add(Check.judged("io", not problems, {"found": found, "problems": problems}))
    report.op_counts_after = coreml_export.op_counts(reloaded)
    for i, entry in enumerate(report.ca_blocks):
        entry.ca_only_nodes_after = coreml_export.ca_only_ops(reloaded, fmt, owner, i)
    left = sum(sum(b.ca_only_nodes_after.values()) for b in report.ca_blocks)
    ops = "/".join(coreml_export.CA_ONLY_OPS[fmt])
    details = {"ca_only_nodes_after": left, "ops": ops}
    report.structure = Check.judged("structure", left == 0, details)
    report.add(Check.judged("structure", left == 0, {}))
    if compress:
        counts = coreml_compress.constexpr_counts(reloaded.ops)
        threshold = coreml_compress.WEIGHT_THRESHOLD
        why = "" if counts else f"no weight of {threshold} elements or more was compressed"
        details = {"mode": compress, "constexpr_ops": counts}
        report.add(Check.judged("compression", bool(counts), details, why))


def _predict(
    report: ExportReport,
    path: Path,
    prepared: Prepared,
    spec: InputSpec,
    names: list[str],
    precision: str,
    labels: tuple[str, ...],
    multiple: tuple[int, int],
) -> None:
    """Prediction parity against PyTorch (macOS only)."""
    model = coreml_export.coremltools().models.MLModel(str(path))
    gate = prediction_gate(model, prepared.module, spec, names, precision, labels, multiple)
    cases = len(coreml_export.prediction_inputs(spec, multiple))
    report.parity = gate_check("parity", gate, inputs=cases)
    report.add(Check.judged("prediction", gate.passed, {}))


def _mil_parity(
    report: ExportReport,
    path: Path,
    prepared: Prepared,
    spec: InputSpec,
    compute: tuple[str, CompressedCopy | None],
    twin: Any,
    multiple: tuple[int, int],
) -> None:
    """The saved model evaluated in NumPy against PyTorch (runs on every platform).

    ``compute`` is the compute precision and, for compressed weights, the model's copy
    holding them, which the program is then compared with (``verify.mil.compressed``).

    An ML program runs op by op, a neural network layer by layer. An image input gets
    seeded RGB pixels; PyTorch gets them normalised as the user asked. An fp16 ML
    program is also evaluated in fp32 arithmetic against its fp32 ``twin``'s constants
    (``verify.mil.fp32_arithmetic``); the check passes only if that passes too.
    """
    precision, weights = compute
    inputs = _gate_inputs(spec, multiple)
    bounds = prepared.gates.bounds
    result = mil_parity(path, prepared.module, inputs, precision, spec.image, weights, bounds)
    allowed = prepared.gates.allow_unverified
    accept = "; allowed by --allow-unverified" if allowed else "; give --allow-unverified to accept"
    details: dict[str, Any] = {}
    reason = warning = ""
    if isinstance(result, NotVerified):
        verdict = Verdict.NOT_VERIFIED
        details["verified"] = False
        reason = f"{precision} gate {result.reason}{accept}"
        warning = f"numeric parity not verified: {result.reason}"
    else:
        verdict = Verdict.PASSED if result.passed else Verdict.FAILED
        report.parity = gate_check("parity", result, inputs=len(inputs))
    if twin is not None:
        try:
            arithmetic = fp32_arithmetic_parity(
                path, prepared.module, inputs, twin, spec.image, weights
            )
        except Unsupported as err:
            details["fp32_arithmetic"] = {"ran": False, "reason": f"not verified: {err}"}
            if verdict is Verdict.PASSED:
                verdict = Verdict.NOT_VERIFIED
                reason = f"fp32 arithmetic not verified: {err}{accept}"
        else:
            details["fp32_arithmetic"] = arithmetic.summary()
            if not arithmetic.passed:
                verdict = Verdict.FAILED
            elif isinstance(result, NotVerified) and result.model_loss:
                verdict = Verdict.PASSED
                details["verified"] = "fp32 arithmetic"
                reason = (
                    f"{precision} gate {result.reason}; the program's ops are verified in fp32 "
                    "arithmetic, so what is left is the model's own fp16 loss"
                )
                warning = (
                    f"the model's own fp16 loss is as large as its signal ({result.reason}); "
                    "the package is verified in fp32 arithmetic only: judge fp16 on your data"
                )
    if warning:
        report.warnings.append(warning)
    accepted = verdict is Verdict.NOT_VERIFIED and allowed
    report.add(Check("mil_parity", verdict, reason, details, accepted))


def _gate_inputs(spec: InputSpec, multiple: tuple[int, int]) -> list[tuple[int, torch.Tensor]]:
    """(seed, input) pairs of the gates: seeded tensors, or RGB pixels for an image input."""
    make = example_input if spec.image is None else coreml_export.pixels
    cases = coreml_export.prediction_inputs(spec, multiple)
    return [(seed, make(shape, seed)) for seed, shape in cases]


def _compressed_copy(path: Path, prepared: Prepared, spec: InputSpec) -> CompressedCopy | None:
    """The model's copy holding the saved program's decompressed weights (None if none)."""
    program = load_program(path)
    if not isinstance(program, MilProgram):
        return None
    return compressed_copy(program, prepared.module, spec.shape, prepared.program)


def _weight_loss(
    report: ExportReport,
    weights: CompressedCopy | None,
    prepared: Prepared,
    spec: InputSpec,
    multiple: tuple[int, int],
) -> None:
    """The lossy part of a compressed package: its weights in PyTorch against the fp32 model."""
    if weights is None:
        report.add(Check("compressed_weights", Verdict.NOT_RUN, "no compressed weights"))
        return
    inputs = [
        (seed, x if spec.image is None else spec.image.normalise(x))
        for seed, x in _gate_inputs(spec, multiple)
    ]
    names = prepared.traced.output_names
    gate = weight_loss(weights, prepared.module, inputs, names)
    top1 = [c.top1 for case in gate.cases for c in case.comparisons if c.top1 is not None]
    details = {"tolerance": weights.key, "min_top1": min(top1, default=None)}
    report.add(gate_check("compressed_weights", gate, **details, **weights.summary()))


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
