"""``ca-export verify``: compare artifacts with the original PyTorch model, for CI."""

from __future__ import annotations

import os
from pathlib import Path

import click

from ca_export.export.coreml import ImageInput
from ca_export.pipeline.verify import VerifyJob, run_verify
from ca_export.report import render_verify
from cli.common import handle_errors, run_job
from cli.options import FloatList, Shapes, gate_options, html_option, model_options, report_option

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
@gate_options
@report_option
@html_option
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
    allow_unverified: bool,
    report_path: Path | None,
    html_path: Path | None,
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

    An fp16 or int8 ONNX file (ca-export onnx --precision) gets the lossy gate its
    export ran: top-1, top-1 in top-5, cosine and rel err bounds over all inputs.

    Exit 0 when every output passes, 1 on a mismatch (the first diverging module is
    named), 2 on bad input. Writes the Markdown summary to $GITHUB_STEP_SUMMARY too
    when that is set.
    """
    image = None
    if scale is not None or bias is not None:
        image = ImageInput.of(scale or (1.0,), bias or (0.0, 0.0, 0.0))
    step_summary = os.environ.get("GITHUB_STEP_SUMMARY")
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
        junit=junit_path,
        markdown=markdown_path,
        step_summary=Path(step_summary) if step_summary else None,
        allow_unverified=allow_unverified,
    )
    run_job(job, run_verify, render_verify, report_path, html_path=html_path)
