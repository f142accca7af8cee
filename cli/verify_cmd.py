"""``ca-export verify``: compare artifacts with the original PyTorch model, for CI."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from ca_export.export.coreml import ImageInput
from ca_export.files import Output, guard, write_text
from ca_export.pipeline.verify import VerifyJob, run_verify
from ca_export.report import VerifyReport, to_json
from ca_export.verify.ci_reports import junit_xml, markdown
from cli.common import EXIT_CHECK_FAILED, handle_errors, progress
from cli.options import FloatList, PositiveFloat, Shapes, model_options, report_option

EPILOG = """\b
Examples:
  ca-export verify mobilenetv2_ca mnv2_ca.onnx
  ca-export verify mobilenetv2_ca mnv2_dyn.onnx --shapes 1x3x224x224,2x3x256x320
  ca-export verify mobilenetv2_ca mnv2_ca.mlpackage --input-shape 1,3,224,224
  ca-export verify mobilenetv2_ca mnv2_img.mlpackage --scale 0.0187 --bias -2.12,-2.04,-1.80 \\
      --inputs photo.jpg
  ca-export verify mobilenetv2_ca mnv2_ca.pte mnv2_ca.onnx
  ca-export verify my_net.py:build net.onnx --weights ckpt.pt --inputs batch.npz \\
      --junit verify.xml --markdown verify.md
"""


@click.command(epilog=EPILOG)
@model_options
@click.argument(
    "artifacts", nargs=-1, required=True, type=click.Path(path_type=Path), metavar="ARTIFACT..."
)
@click.option("--shapes", type=Shapes(), default=None, help="Input shapes to check.")
@click.option(
    "--inputs",
    "input_files",
    multiple=True,
    type=click.Path(path_type=Path),
    help="Inputs: .npy/.npz arrays (N,C,H,W) or images (resized, ImageNet-normalised).",
)
@click.option(
    "--scale",
    type=FloatList(),
    default=None,
    help="Image-input Core ML models: the scale PyTorch's input is made with (scale * pixel + "
    "bias); default: as ca-export recorded in the model.",
)
@click.option(
    "--bias",
    type=FloatList(),
    default=None,
    help="Image-input Core ML models: the bias per channel R,G,B (see --scale).",
)
@click.option("--rtol", type=PositiveFloat(), help="Max abs error over the output's RMS.")
@click.option("--atol", type=PositiveFloat(), help="Max abs error.")
@report_option
@click.option("--junit", "junit_path", type=click.Path(path_type=Path), help="JUnit XML here.")
@click.option("--markdown", "markdown_path", type=click.Path(path_type=Path), help="Markdown.")
@handle_errors
def verify(
    model: str,
    weights: Path | None,
    input_shape: tuple[int, int, int, int],
    trust_pickle: bool,
    memory_check: bool,
    artifacts: tuple[Path, ...],
    shapes: list[tuple[int, int, int, int]] | None,
    input_files: tuple[Path, ...],
    scale: tuple[float, ...] | None,
    bias: tuple[float, ...] | None,
    rtol: float | None,
    atol: float | None,
    report_path: Path | None,
    junit_path: Path | None,
    markdown_path: Path | None,
) -> None:
    """Check that each ARTIFACT (.onnx, .mlpackage, .pte) computes what MODEL computes.

    ExecuTorch programs (.pte) run in ExecuTorch's runtime with XNNPACK (needs the
    executorch extra).

    Core ML models run in Core ML on macOS; elsewhere they are evaluated in NumPy, an
    ML program op by op and a neural network layer by layer (an op or layer the
    evaluator lacks is reported as not verified and fails). A Core ML model with an
    image input gets RGB pixels; PyTorch gets them as scale * pixel + bias
    (--scale/--bias, or as recorded in the model).

    Exit 0 when every output passes, 1 on a mismatch (the first diverging module is
    named), 2 on bad input. Writes the Markdown summary to $GITHUB_STEP_SUMMARY too
    when that is set.
    """
    image = None
    if scale is not None or bias is not None:
        image = ImageInput.of(scale or (1.0,), bias or (0.0, 0.0, 0.0))
    job = VerifyJob(
        model,
        list(artifacts),
        weights,
        input_shape,
        shapes,
        list(input_files),
        rtol,
        atol,
        image,
        trust_pickle,
        memory_check,
    )
    outputs = [
        Output(path, kind)
        for path, kind in (
            (report_path, "json"),
            (junit_path, "junit"),
            (markdown_path, "markdown"),
        )
        if path is not None
    ]
    guard(job.reads(), outputs)
    report = run_verify(job, progress=progress)
    summary = markdown(report)
    if report_path is not None:
        write_text(to_json(report.to_dict()), report_path)
    if junit_path is not None:
        write_text(junit_xml(report), junit_path)
    if markdown_path is not None:
        write_text(summary, markdown_path)
    if os.environ.get("GITHUB_STEP_SUMMARY"):
        with open(os.environ["GITHUB_STEP_SUMMARY"], "a") as handle:
            handle.write(summary)
    click.echo(render(report))
    if not report.passed:
        sys.exit(EXIT_CHECK_FAILED)


def render(report: VerifyReport) -> str:
    """One line per artifact and shape, the failures, and where outputs diverge."""
    lines = []
    for artifact in report.artifacts:
        ran = any(c.skipped is None for c in artifact.cases)
        verdict = "passed" if artifact.passed else "FAILED" if ran else "NOT VERIFIED"
        lines.append(f"{artifact.path} ({artifact.dtype}, {artifact.backend}): {verdict}")
        for case in artifact.cases:
            shape = "x".join(map(str, case.input_shape))
            if case.skipped:
                lines.append(f"  {shape} {case.input}: skipped ({case.skipped})")
                continue
            for c in case.comparisons:
                mark = "ok  " if c.passed else "FAIL"
                top = "" if c.top1 is None else f", top-1 {c.top1:.2f}, top-5 {c.top5:.2f}"
                lines.append(
                    f"  {mark} {shape} {case.input} {c.name}: rel err {c.rel_err:.3g}, "
                    f"max abs {c.max_abs_err:.3g}, cosine {c.cosine:.9f}, PSNR {c.psnr:.1f} dB{top}"
                )
        loc = artifact.localization
        if loc is not None:
            if loc.first_divergence:
                layer = next(x for x in loc.layers if x.module == loc.first_divergence)
                where = " (inside a CA block)" if layer.ca_block else ""
                lines.append(
                    f"  first divergence: module {loc.first_divergence}{where}, "
                    f"rel err {layer.rel_err:.3g}"
                )
            else:
                lines.append(f"  localisation: {loc.note or 'no module diverges past the bound'}")
    return "\n".join(lines + [f"notice: {n}" for n in report.notices])
