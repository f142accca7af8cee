"""``ca-export onnx``: rewrite CA blocks and export ONNX behind the parity gate."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ca_export.pipeline import OnnxJob, export_onnx
from ca_export.pipeline.precision import PrecisionRequest
from ca_export.report import render_export
from cli.common import run_job
from cli.options import (
    dynamic_option,
    export_options,
    model_options,
    output_option,
    precision_options,
    target_option,
)

EPILOG = """\b
Examples:
  ca-export onnx mobilenetv2_ca -o mnv2_ca.onnx
  ca-export onnx mobilenetv2_ca -o mnv2_ca.arm.onnx --target ort-plain
  ca-export onnx mobilenetv2_ca -o mnv2_ca.onnx --dynamic --report report.json
  ca-export onnx my_net.py:build --weights ckpt.pt -o net.onnx --no-rewrite
  ca-export onnx mobilenetv2_ca -o mnv2_ca.fp16.onnx --precision fp16
  ca-export onnx mobilenetv2_ca -o mnv2_ca.int8.onnx --precision int8 --calibration images/
  ca-export onnx mobilenetv2_ca -o mnv2_ca.onnx --opset 13 --ort-format
"""


@click.command(epilog=EPILOG)
@model_options
@output_option("ONNX file to write.")
@click.option(
    "--opset",
    type=click.IntRange(11, 23),
    default=18,
    show_default=True,
    help="ONNX opset of the file (below 18: exported at 18, then converted exactly).",
)
@dynamic_option
@target_option
@click.option("--simplify/--no-simplify", default=True, show_default=True, help="Run onnxsim.")
@precision_options
@click.option(
    "--ort-format",
    is_flag=True,
    help="Also write OUT.ort (ONNX Runtime Mobile) and OUT.required_operators.config.",
)
@export_options
def onnx(
    fields: dict[str, Any],
    opset: int,
    target: str,
    simplify: bool,
    precision: str,
    calibration: Path | None,
    keep_fp32: tuple[str, ...],
    ort_format: bool,
    report_path: Path | None,
    html_path: Path | None,
) -> None:
    """Export MODEL to ONNX, rewriting its CA blocks, and gate it against PyTorch."""
    job = OnnxJob(
        **fields,
        target=target,
        opset=opset,
        simplify=simplify,
        precision=PrecisionRequest(precision, calibration, keep_fp32),
        ort_format=ort_format,
    )
    run_job(job, export_onnx, render_export, report_path, html_path=html_path)
