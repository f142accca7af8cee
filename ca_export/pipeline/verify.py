"""The verify pipeline: each artifact against the original PyTorch model, then localisation.

ONNX files run in ONNX Runtime; ExecuTorch programs (.pte) in ExecuTorch's runtime
with XNNPACK; ncnn models (.ncnn.param) in ncnn's, in fp32, at every size unless
``ca-export ncnn --fixed-size`` recorded the one size the model is valid at (asking for
another fails, exit 1); Core ML models run in Core ML on macOS and, elsewhere,
through the NumPy evaluators (``ca_export.verify.mil``), with the ``coreml`` rows
of the tolerance table and the model's own noise at the artifact's precision.
Inputs are seeded tensors at every shape the artifact takes (its own static shape, or
for a dynamic artifact the input shape, a larger non-square one and batch 2), plus the
user's files. Where outputs diverge, the first diverging module is named (for an ML
program off macOS, through the evaluator's per-op values: ``verify.mil.localize``).

An fp16 or int8 ONNX file (``ca-export onnx --precision``, as its ``ca_export.precision``
metadata says) cannot meet the exact rows: it gets the lossy gate its export ran
(``verify.lossy``, the ``fp16``/``int8`` rows, ``--rtol``/``--atol`` applied) over the same
shapes and user inputs, with the export gate's 8 seeds per shape, against the PyTorch model,
and no localisation (every module differs by rounding).

A Core ML ML program with compressed weights is compared with a copy of the model
holding its decompressed weights, and each case also compares that copy with the model
in PyTorch under the weight format's row (``verify.mil.compressed``).

A Core ML model with an image input is fed RGB pixels (seeded, or the user's image
files unnormalised) and applies its own preprocessing; PyTorch gets the same pixels
normalised as ``VerifyJob.image`` says (``--scale``/``--bias``), or else as ca-export
recorded in the model's metadata. A wrong bias or scale in the package then fails.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.export import ExportedProgram

from ca_export.errors import BadInputError, CheckFailedError
from ca_export.export import coreml as coreml_export
from ca_export.export.coreml import ImageInput
from ca_export.files import Output
from ca_export.inputs import is_image, load_inputs
from ca_export.loading import load_model, model_files
from ca_export.patterns import AtenBlock, find
from ca_export.pipeline.common import GateOptions, Progress, Stages, quiet
from ca_export.report import ArtifactResult, Check, Verdict, VerifyCase, VerifyReport
from ca_export.report.ci import write_summaries
from ca_export.report.text import LOSSY_REFERENCE
from ca_export.tracing import example_input, guard_memory, trace
from ca_export.verify.accuracy import EvalSet, accuracy_check, measure
from ca_export.verify.artifacts import (
    NcnnArtifact,
    OnnxArtifact,
    OrtArtifact,
    PteArtifact,
    open_ncnn,
    open_onnx,
    open_ort,
    open_pte,
    open_tflite,
)
from ca_export.verify.localize import Localization, localize, localize_ncnn
from ca_export.verify.lossy import GATE_SEEDS, judge, torch_runner
from ca_export.verify.metrics import compare
from ca_export.verify.mil.artifact import SUFFIXES, MilArtifact, open_mil
from ca_export.verify.mil.compressed import compressed_copy
from ca_export.verify.mil.localize import localize_mil
from ca_export.verify.mil.ops import Unsupported
from ca_export.verify.mil.parity import reference_copy, reference_runs, subject, vacuous
from ca_export.verify.mil.program import MilProgram
from ca_export.verify.parity import SEEDS
from ca_export.verify.tolerances import tolerance, user_tolerance

Artifact = OnnxArtifact | OrtArtifact | MilArtifact | PteArtifact | NcnnArtifact


@dataclass
class VerifyJob:
    """What the user asked ``ca-export verify`` for."""

    model: str
    artifacts: list[Path]
    weights: Path | None = None
    input_shape: tuple[int, int, int, int] = (1, 3, 224, 224)
    shapes: list[tuple[int, int, int, int]] | None = None
    inputs: list[Path] = field(default_factory=list)
    rtol: float | None = None
    atol: float | None = None
    image: ImageInput | None = None
    trust_pickle: bool = False
    check_memory: bool = True
    junit: Path | None = None
    markdown: Path | None = None
    step_summary: Path | None = None
    allow_unverified: bool = False
    gates: GateOptions = field(default_factory=GateOptions)
    """Where set, ``--eval-data`` and ``--max-accuracy-drop`` (the rest is in the fields
    above)."""

    def reads(self) -> list[Path]:
        """The files this job reads."""
        files = [*model_files(self.model, self.weights), *self.artifacts, *self.inputs]
        return files + self.gates.eval_files()

    def writes(self) -> list[Output]:
        """The CI summaries this job writes (the step summary is appended to, not replaced)."""
        pairs = ((self.junit, "junit"), (self.markdown, "markdown"))
        return [Output(path, kind) for path, kind in pairs if path is not None]


def default_shapes(artifact: Artifact, input_shape: tuple[int, ...]) -> list[tuple[int, ...]]:
    """The artifact's static shape, or for a dynamic one three shapes incl. non-square, batch 2.

    A flexible Core ML model keeps its batch and takes its enumerated sizes, or sizes
    rounded up to the multiples it records.
    """
    if not artifact.dynamic:
        return [tuple(int(d) for d in artifact.input_dims)]
    n, c, h, w = input_shape
    if isinstance(artifact, MilArtifact):
        if artifact.allowed is not None:
            return list(artifact.allowed)
        mh, mw = artifact.multiple
        sizes = [(h, w), (h + 32, w + 64), (h + 64, w + 32)]
        return [(n, c, -(-sh // mh) * mh, -(-sw // mw) * mw) for sh, sw in sizes]
    return [tuple(input_shape), (max(2, n), c, h + 32, w + 64), (max(2, n), c, h + 64, w + 32)]


def traced_blocks(
    model: torch.nn.Module, input_shape: tuple[int, ...]
) -> tuple[ExportedProgram | None, list[AtenBlock]]:
    """The model's static trace at ``input_shape`` and its CA blocks, to find them in a
    localisation (None and none where it cannot be traced)."""
    try:
        program = trace(model, input_shape, dynamic=False).program
    except BadInputError:
        return None, []
    return program, find(program.graph)[0]


def run_verify(job: VerifyJob, progress: Progress = quiet) -> VerifyReport:
    """Verify every artifact against the original model; the report says what passed."""
    stage = Stages(progress)
    report = VerifyReport(job.model)
    with stage("load"):
        eval_set = job.gates.eval_set(job.input_shape)
        artifacts = [open_artifact(path) for path in job.artifacts]
        user_inputs = load_inputs(job.inputs, job.input_shape, notices=report.notices)
        images = any(isinstance(a, MilArtifact) and a.image for a in artifacts)
        user_pixels = load_inputs(job.inputs, job.input_shape, pixels=True) if images else []
        loaded = load_model(job.model, job.weights, job.trust_pickle)
        report.notices += loaded.notices
        model = loaded.module
        if job.check_memory:
            for shape in job.shapes or [job.input_shape]:
                guard_memory(model, shape)
        if any(isinstance(a, MilArtifact) for a in artifacts) and not coreml_export.CAN_PREDICT:
            report.notices.append(
                f"Core ML prediction did not run ({coreml_export.NO_PREDICTION}); Core ML "
                "outputs come from the NumPy MIL evaluator"
            )
    for artifact in artifacts:
        with stage(f"verify {artifact.path.name}"):
            image = isinstance(artifact, MilArtifact) and artifact.image
            real = [] if image or eval_set is None else eval_set.picks()
            inputs = user_pixels if image else user_inputs + real
            result = _verify_one(job, model, artifact, inputs, report)
            report.artifacts.append(result)
        if eval_set is not None:
            with stage(f"accuracy {artifact.path.name}"):
                result.accuracy = _accuracy(job, model, artifact, eval_set, report)
    report.stages = stage.times
    write_summaries(report, job.junit, job.markdown, job.step_summary)
    return report


def open_artifact(path: Path) -> Artifact:
    """An ONNX file, or by its suffix a Core ML model, an ExecuTorch program, a LiteRT
    model, a .ort or an ncnn model (.ncnn.param or .ncnn.bin)."""
    if path.name.endswith((".ncnn.param", ".ncnn.bin")):
        return open_ncnn(path)
    if path.suffix == ".pte":
        return open_pte(path)
    if path.suffix == ".tflite":
        return open_tflite(path)
    if path.suffix == ".ort":
        return open_ort(path)
    return open_mil(path) if path.suffix in SUFFIXES else open_onnx(path)


def _verify_one(
    job: VerifyJob,
    model: torch.nn.Module,
    artifact: Artifact,
    user_inputs: list[tuple[str, np.ndarray]],
    report: VerifyReport,
) -> ArtifactResult:
    """Run every case through one artifact, then localise the first failing one."""
    if isinstance(artifact, NcnnArtifact):
        for _, x in _seeded(job, artifact, SEEDS, example_input) + user_inputs:
            why = artifact.invalid_at(tuple(x.shape))
            if why is not None:
                raise CheckFailedError(why)
    if isinstance(artifact, OnnxArtifact | NcnnArtifact) and artifact.lossy:
        return _verify_lossy(job, model, artifact, user_inputs)
    mil = artifact if isinstance(artifact, MilArtifact) else None
    coreml = mil is not None
    backend = "coreml" if coreml else artifact.backend
    tolerances = (job.rtol, job.atol)
    tol = user_tolerance(tolerance(artifact.dtype, backend), *tolerances)
    result = ArtifactResult(str(artifact.path), artifact.dtype, tol, artifact.backend)
    result.allow_unverified = job.allow_unverified
    image = _preprocessing(job, artifact, report)
    make = example_input if image is None else coreml_export.pixels
    seeded = _seeded(job, artifact, SEEDS, make)
    failing: tuple[np.ndarray, torch.Tensor, float] | None = None
    noise_dtype = artifact.dtype if coreml else "float32"
    weights = None
    if mil and isinstance(mil.program, MilProgram) and mil.unverifiable is None:
        shape = tuple(seeded[0][1].shape) if seeded else job.input_shape
        weights = compressed_copy(mil.program, model, shape)
    # A compressed package is checked against the copy holding its weights, localised too.
    original, model = model, weights.model if weights else model
    reference = reference_copy(model, noise_dtype)
    traces: dict[tuple[int, ...], tuple[ExportedProgram | None, list[AtenBlock]]] = {}

    def traced(shape: tuple[int, ...]) -> tuple[ExportedProgram | None, list[AtenBlock]]:
        if shape not in traces:
            traces[shape] = traced_blocks(model, shape)
        return traces[shape]

    for i, (label, x) in enumerate(seeded + user_inputs):
        case = VerifyCase(label, tuple(x.shape))
        result.cases.append(case)
        case.skipped = artifact.refuses(tuple(x.shape))
        if case.skipped is None and mil and mil.image:
            case.skipped = _refuses_image(image, None if i < len(seeded) else label)
        if case.skipped:
            continue
        torch_x = torch.from_numpy(x) if image is None else image.normalise(torch.from_numpy(x))
        try:
            expected, alike = reference_runs(model, reference, torch_x, noise_dtype)
        except Exception as err:
            case.skipped = f"the PyTorch model cannot run at this shape: {type(err).__name__}"
            continue
        try:
            got = artifact.run(x)
        except Unsupported as err:
            case.skipped = f"not verified: {err}"
            continue
        _same_count(artifact, got, expected)
        for name, ref, runs, out in zip(artifact.output_names, expected, alike, got, strict=True):
            case.comparisons.append(compare(name, ref, _as_float(out), tol, runs))
        shape = tuple(x.shape)
        case.skipped = vacuous(case.comparisons, shape, subject(weights)) if coreml else None
        if case.skipped:
            case.comparisons = []
            continue
        if weights is not None:
            case.comparisons += weights.loss(original, torch_x, artifact.output_names, expected)
        if isinstance(artifact, NcnnArtifact) and shape not in traces:
            at_size, its_blocks = traced(shape)
            if at_size is not None and its_blocks:
                one = [(0, torch_x)]
                inside = artifact.runner.block_gate(at_size, its_blocks, one, tolerances)
                case.comparisons += [] if isinstance(inside, str) else inside.cases[0].comparisons
        if failing is None and not all(c.passed for c in case.comparisons):
            failing = (x, torch_x, max([tol.rel] + [c.slack for c in case.comparisons]))
    if failing is None:
        return result
    x, torch_x, bound = failing
    program: ExportedProgram | None = None
    blocks: list[AtenBlock] = []
    if isinstance(artifact, NcnnArtifact) or not report.ca_blocks:
        program, blocks = traced(tuple(torch_x.shape))
        report.ca_blocks = report.ca_blocks or [b.module for b in blocks]
    if isinstance(artifact, OnnxArtifact):
        result.localization = localize(model, artifact, torch_x, bound, set(report.ca_blocks))
    elif mil and isinstance(mil.program, MilProgram) and not coreml_export.CAN_PREDICT:
        result.localization = localize_mil(
            model, mil.program, x, torch_x, bound, set(report.ca_blocks)
        )
    elif isinstance(artifact, NcnnArtifact):
        result.localization = localize_ncnn(program, blocks, artifact.runner, torch_x, bound)
    else:
        result.localization = Localization(
            note="localisation covers ONNX files, ncnn models' CA blocks and, off macOS, "
            "Core ML ML programs"
        )
    return result


def _accuracy(
    job: VerifyJob,
    model: torch.nn.Module,
    artifact: Artifact,
    eval_set: EvalSet,
    report: VerifyReport,
) -> Check | None:
    """The artifact's accuracy gate on the labelled set, or None (with a notice) where it
    does not apply: an image-input Core ML model, an input shape the artifact refuses, a
    model without class scores."""
    name = artifact.path.name
    if isinstance(artifact, MilArtifact) and artifact.image:
        report.notices.append(f"{name}: --eval-data does not apply to an image input")
        return None
    refused = artifact.refuses(tuple(eval_set.samples[0][1].shape))
    if refused:
        report.notices.append(f"{name}: --eval-data not run ({refused})")
        return None
    try:
        measured = measure(
            torch_runner(model), artifact.run, eval_set, artifact.output_names, job.gates.max_drop
        )
    except Unsupported as err:
        why = f"the artifact cannot be run here: {err}"
        return Check("accuracy", Verdict.NOT_VERIFIED, why, accepted=job.allow_unverified)
    check = accuracy_check(measured, eval_set, LOSSY_REFERENCE, name)
    if check is None:
        report.notices.append(
            f"{name}: no output is class scores, so --eval-data gave real inputs only"
        )
    return check


def _as_float(out: np.ndarray) -> np.ndarray:
    """A floating output as fp32 (an fp16 artifact's too); integer and boolean ones as they are."""
    return out.astype(np.float32) if np.issubdtype(out.dtype, np.floating) else out


def _verify_lossy(
    job: VerifyJob,
    model: torch.nn.Module,
    artifact: OnnxArtifact | NcnnArtifact,
    user_inputs: list[tuple[str, np.ndarray]],
) -> ArtifactResult:
    """The lossy gate of an fp16 or int8 file over every seeded and user input it takes; at
    each shape the export gate's 8 seeds, not the exact gate's 3."""
    backend = artifact.backend
    tol = user_tolerance(tolerance(artifact.precision, backend), job.rtol, job.atol)
    result = ArtifactResult(str(artifact.path), artifact.precision, tol, backend)
    seeded = _seeded(job, artifact, GATE_SEEDS, example_input)
    reference = torch_runner(model)
    labels, references, actuals = [], [], []
    for label, x in seeded + user_inputs:
        case = VerifyCase(label, tuple(x.shape))
        result.cases.append(case)
        case.skipped = artifact.refuses(tuple(x.shape))
        if case.skipped:
            continue
        try:
            expected = reference(x)
        except Exception as err:
            case.skipped = f"the PyTorch model cannot run at this shape: {type(err).__name__}"
            continue
        got = artifact.run(x)
        _same_count(artifact, got, expected)
        labels.append(f"{label} at {'x'.join(map(str, x.shape))}")
        references.append(expected)
        actuals.append(got)
    if not labels:
        return result
    names = artifact.output_names
    result.lossy = judge(references, actuals, names, labels, artifact.precision, backend, tol)
    if not result.lossy.passed:
        result.localization = Localization(
            note=f"not run for lossy formats ({artifact.precision}): every module differs "
            "by rounding; verify the fp32 file to find a wrong module"
        )
    return result


def _seeded(
    job: VerifyJob,
    artifact: Artifact,
    seeds: Sequence[int],
    make: Callable[[tuple[int, ...], int], torch.Tensor],
) -> list[tuple[str, np.ndarray]]:
    """Seeded inputs, ``make(shape, seed)``, at every shape the job checks the artifact at."""
    return [
        (f"seed {seed}", make(shape, seed).numpy())
        for shape in (job.shapes or default_shapes(artifact, job.input_shape))
        for seed in seeds
    ]


def _same_count(artifact: Artifact, got: list[np.ndarray], expected: list[np.ndarray]) -> None:
    """Fail when the artifact gives another number of outputs than the model."""
    if len(got) != len(expected):
        raise CheckFailedError(
            f"{artifact.path.name} has {len(got)} outputs and the model {len(expected)}: "
            "it is not an artifact of this model"
        )


def _preprocessing(job: VerifyJob, artifact: Artifact, report: VerifyReport) -> ImageInput | None:
    """For an image-input Core ML model, how PyTorch's input is made from the pixels."""
    if not isinstance(artifact, MilArtifact) or not artifact.image:
        return None
    image = job.image or artifact.recorded
    if image is not None:
        source = "--scale/--bias" if job.image else "the package's ca-export metadata"
        bias = ",".join(f"{b:g}" for b in image.bias)
        report.notices.append(
            f"{artifact.path.name} takes RGB images: PyTorch gets {image.scale:g} * pixel + "
            f"({bias}) per channel, from {source}"
        )
    return image


def _refuses_image(image: ImageInput | None, user_input: str | None) -> str | None:
    """Why an image-input model cannot be checked on this input (seeded, or a user's), or None."""
    if image is None:
        return (
            "not verified: the package takes RGB images; give --scale and --bias, the "
            "normalisation the PyTorch model expects"
        )
    if user_input is not None and not is_image(user_input):
        return "the package takes RGB images: give image files, not arrays"
    return None
