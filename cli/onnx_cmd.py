"""``ca-export onnx``: rewrite CA blocks and export ONNX behind the parity gate."""

from __future__ import annotations

from pathlib import Path

import click

from ca_export.pipeline import OnnxJob, export_onnx
from ca_export.report import render_export
from cli.common import handle_errors, run_job
from cli.options import dynamic_option, model_options, report_option, skip_pass_option

EPILOG = """\b
Examples:
  ca-export onnx mobilenetv2_ca -o mnv2_ca.onnx
  ca-export onnx mobilenetv2_ca -o mnv2_ca.onnx --dynamic --report report.json
  ca-export onnx my_net.py:build --weights ckpt.pt -o net.onnx --no-rewrite
"""


@click.command(epilog=EPILOG)
@model_options
@click.option(
    "-o", "--output", type=click.Path(path_type=Path), required=True, help="ONNX file to write."
)
@click.option("--opset", type=click.IntRange(13, 23), default=18, show_default=True)
@dynamic_option
@click.option("--rewrite/--no-rewrite", default=True, show_default=True, help="Rewrite CA blocks.")
@skip_pass_option
@click.option("--simplify/--no-simplify", default=True, show_default=True, help="Run onnxsim.")
@report_option
@handle_errors
def onnx(
    model: str,
    weights: Path | None,
    input_shape: tuple[int, int, int, int],
    trust_pickle: bool,
    memory_check: bool,
    output: Path,
    opset: int,
    dynamic: bool,
    rewrite: bool,
    skip_passes: tuple[str, ...],
    simplify: bool,
    report_path: Path | None,
) -> None:
    """Export MODEL to ONNX, rewriting its CA blocks, and gate it against PyTorch."""
    job = OnnxJob(
        model,
        output,
        weights=weights,
        input_shape=input_shape,
        dynamic=dynamic,
        rewrite=rewrite,
        trust_pickle=trust_pickle,
        check_memory=memory_check,
        skip_passes=skip_passes,
        opset=opset,
        simplify=simplify,
    )
    run_job(job, export_onnx, render_export, report_path)
