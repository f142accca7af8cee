"""The ``bench`` pipeline: export what is to be timed (behind its gates), then time it all
in one interleaved run.

With a model, the stock export (rewrite off) and one rewritten export per target (each in
its form, ``ca_export.rewrites.TARGETS``) are made, and the baseline's if given; the
report says which passes each CA block of each export got; with ``executorch`` the same as
``.pte`` programs, with ``litert`` as ``.tflite`` files (stock litert-torch conversion,
the ``litert`` form, the baseline); with ``ncnn`` as ncnn models: stock (the pnnx
conversion without the rewrite, gated at the traced size only, where it is right), the
size-safe default, the ``--fixed-size`` form, and the baseline. Files the user names are
timed as they are. A stock ONNX export that cannot be made dynamic, and a model that cannot
be size-safe in ncnn, are left out with a warning; every other failed export fails the run.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from ca_export.bench import BenchProgress, bench, no_progress
from ca_export.errors import BadInputError, CheckFailedError
from ca_export.pipeline.common import ModelJob, Progress, quiet
from ca_export.pipeline.executorch import ExecutorchJob
from ca_export.pipeline.litert import LiteRTJob
from ca_export.pipeline.ncnn import NcnnJob
from ca_export.pipeline.onnx import OnnxJob
from ca_export.report import ExportReport
from ca_export.report.results import BenchConfig, BenchReport
from ca_export.rewrites import TARGETS


@dataclass
class BenchJob:
    """What the user asked ``ca-export bench`` for."""

    model: str | None
    input_shape: tuple[int, int, int, int]
    config: BenchConfig
    weights: Path | None = None
    onnx_files: tuple[Path, ...] = ()
    pte_files: tuple[Path, ...] = ()
    tflite_files: tuple[Path, ...] = ()
    ncnn_files: tuple[Path, ...] = ()
    baseline: str | None = None
    executorch: bool = False
    litert: bool = False
    ncnn: bool = False
    dynamic: bool = False
    skip_passes: tuple[str, ...] = ()
    targets: tuple[str, ...] = tuple(TARGETS)
    warnings: list[str] = field(default_factory=list)
    forms: dict[str, dict[str, str]] = field(default_factory=dict)
    """Per rewritten export: each CA block and the passes applied to it."""

    def validate(self) -> None:
        """Refuse combinations that cannot be timed."""
        files = self.onnx_files or self.pte_files or self.tflite_files or self.ncnn_files
        if (self.model is None) == (not files):
            raise BadInputError("give either MODEL or --onnx/--pte/--tflite/--ncnn-param FILE")
        if self.executorch and (self.model is None or self.dynamic):
            raise BadInputError("--executorch needs MODEL and a static size (no --dynamic)")
        if self.litert and (self.model is None or self.dynamic):
            raise BadInputError("--litert needs MODEL and a static size (no --dynamic)")
        if self.ncnn and self.model is None:
            raise BadInputError("--ncnn needs MODEL")


def _export(job: ModelJob, progress: Progress) -> ExportReport:
    """Export through the job's pipeline; a failed gate is a failed check."""
    kind = "stock" if not job.rewrite else getattr(job, "target", "rewritten")
    progress(f"export {job.model} ({kind}, {job.output.suffix or 'ncnn'})")
    report = job.run()
    if not report.passed or report.artifact is None:
        raise CheckFailedError(f"the export of {job.model!r} did not pass its gates")
    return report


def block_forms(report: ExportReport) -> dict[str, str]:
    """Each CA block of an export (by ``id``) and the passes applied to it, in order."""
    forms = {}
    for block in report.ca_blocks:
        applied = [p.name for p in report.passes if block.id in p.applied]
        forms[block.id] = " + ".join(applied) or "not rewritten"
    return forms


def _user_files(job: BenchJob) -> dict[str, Path]:
    """The files the user named, under unique names."""
    models: dict[str, Path] = {}
    for path in job.onnx_files + job.pte_files + job.tflite_files + job.ncnn_files:
        name = path.stem if path.suffix == ".onnx" else path.name
        while name in models:
            name += "'"
        models[name] = path
    return models


def _exports(job: BenchJob, folder: Path, progress: Progress) -> dict[str, Path]:
    """Export the model's stock and rewritten forms, and the baseline, into ``folder``."""
    models: dict[str, Path] = {}
    shape = job.input_shape
    if job.model is not None:
        for name in ("stock", *job.targets):
            onnx_job = OnnxJob(
                job.model,
                folder / f"{name}.onnx",
                job.weights,
                shape,
                dynamic=job.dynamic,
                rewrite=name != "stock",
                skip_passes=job.skip_passes,
                target=name if name != "stock" else OnnxJob.target,
            )
            try:
                report = _export(onnx_job, progress)
            except BadInputError as err:
                if onnx_job.rewrite or not job.dynamic:
                    raise
                job.warnings.append(f"not timing the stock export: {err}")
                continue
            models[name] = onnx_job.output
            if onnx_job.rewrite:
                job.forms[name] = block_forms(report)
    if job.baseline is not None:
        out = folder / "baseline.onnx"
        _export(OnnxJob(job.baseline, out, None, shape, dynamic=job.dynamic), progress)
        models["baseline"] = out
    xnnpack: list[tuple[str, type[ExecutorchJob] | type[LiteRTJob]]] = []
    if job.executorch:
        xnnpack.append(("pte", ExecutorchJob))
    if job.litert:
        xnnpack.append(("tflite", LiteRTJob))
    for suffix, make in xnnpack if job.model is not None else []:
        for name, spec, ckpt, rewrite in (
            (f"stock.{suffix}", job.model, job.weights, False),
            (f"rewritten.{suffix}", job.model, job.weights, True),
            (f"baseline.{suffix}", job.baseline, None, True),
        ):
            if spec is not None:
                one = make(
                    spec, folder / name, ckpt, shape, rewrite=rewrite, skip_passes=job.skip_passes
                )
                _export(one, progress)
                models[name] = one.output
    if job.ncnn and job.model is not None:
        for name, spec, ckpt, rewrite, dynamic in (
            ("stock.ncnn", job.model, job.weights, False, False),
            ("rewritten.ncnn", job.model, job.weights, True, True),
            ("fixed-size.ncnn", job.model, job.weights, True, False),
            ("baseline.ncnn", job.baseline, None, True, False),
        ):
            if spec is not None:
                ncnn_job = NcnnJob(
                    spec,
                    folder / name,
                    ckpt,
                    shape,
                    dynamic=dynamic,
                    rewrite=rewrite,
                    skip_passes=job.skip_passes,
                )
                try:
                    _export(ncnn_job, progress)
                except BadInputError as err:
                    if not dynamic:
                        raise
                    job.warnings.append(f"not timing the size-safe ncnn form: {err}")
                    continue
                models[name] = ncnn_job.files[0]
    return models


def run_bench(
    job: BenchJob, progress: Progress = quiet, timing: BenchProgress = no_progress
) -> BenchReport:
    """Export what ``job`` asks for into a temporary folder and time it all, interleaved."""
    job.validate()
    with tempfile.TemporaryDirectory(prefix="ca-export-bench-") as folder:
        models = _user_files(job) | _exports(job, Path(folder), progress)
        report = bench(models, job.input_shape, job.config, progress=timing)
    report.forms = job.forms
    return report
