"""``ca-export optimize``: rewrite the CA blocks of an existing ONNX file behind a parity gate."""

from __future__ import annotations

from pathlib import Path

import click

from ca_export.pipeline.optimize import OptimizeJob, optimize_onnx
from ca_export.pipeline.precision import PrecisionRequest
from ca_export.report import render_optimize
from cli.common import handle_errors, run_job
from cli.options import (
    bound_options,
    dynamic_option,
    html_option,
    precision_options,
    report_option,
    skip_pass_option,
    target_option,
)

EPILOG = """\b
Examples:
  ca-export optimize yolo_ca.onnx -o yolo_ca.opt.onnx
  ca-export optimize yolo_ca.onnx -o yolo_ca.arm.onnx --target ort-plain
  ca-export optimize net.onnx -o net.dyn.onnx --dynamic --report report.json
  ca-export optimize plain.onnx -o plain.copy.onnx --force-write
  ca-export optimize yolo_ca.onnx -o yolo_ca.fp16.onnx --precision fp16
"""


@click.command(epilog=EPILOG)
@click.argument("source", metavar="IN.onnx", type=click.Path(path_type=Path, dir_okay=False))
@click.option(
    "-o", "--output", type=click.Path(path_type=Path), required=True, help="ONNX file to write."
)
@dynamic_option
@skip_pass_option
@target_option
@click.option(
    "--force-write", is_flag=True, help="Write OUT even when IN has no CA block (a copy of IN)."
)
@precision_options
@bound_options
@report_option
@html_option
@handle_errors
def optimize(
    source: Path,
    output: Path,
    dynamic: bool,
    skip_passes: tuple[str, ...],
    target: str,
    force_write: bool,
    precision: str,
    calibration: Path | None,
    keep_fp32: tuple[str, ...],
    rtol: float | None,
    atol: float | None,
    report_path: Path | None,
    html_path: Path | None,
) -> None:
    """Rewrite the CA blocks of IN.onnx exactly and write OUT if ONNX Runtime agrees with IN.

    With --dynamic, H and W become dynamic only where nothing else in the graph is baked
    for the file's size (the report says why not otherwise). With --precision fp16/int8 the
    result is then converted and judged against IN by the lossy gate.
    """
    request = PrecisionRequest(precision, calibration, keep_fp32)
    job = OptimizeJob(
        source, output, dynamic, force_write, skip_passes, request, target, (rtol, atol)
    )
    run_job(
        job, optimize_onnx, render_optimize, report_path, in_place=(output,), html_path=html_path
    )
