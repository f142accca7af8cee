"""``ca-export optimize``: rewrite the CA blocks of an existing ONNX file behind a parity gate."""

from __future__ import annotations

from pathlib import Path

import click

from ca_export.pipeline.optimize import OptimizeJob, optimize_onnx
from ca_export.report import render_optimize
from cli.common import handle_errors, run_job
from cli.options import report_option

EPILOG = """\b
Examples:
  ca-export optimize yolo_ca.onnx -o yolo_ca.opt.onnx
  ca-export optimize net.onnx -o net.dyn.onnx --dynamic --report report.json
  ca-export optimize plain.onnx -o plain.copy.onnx --force-write
"""


@click.command(epilog=EPILOG)
@click.argument("source", metavar="IN.onnx", type=click.Path(path_type=Path, dir_okay=False))
@click.option(
    "-o", "--output", type=click.Path(path_type=Path), required=True, help="ONNX file to write."
)
@click.option(
    "--dynamic", is_flag=True, help="Make H and W dynamic where the rest of the graph allows."
)
@click.option(
    "--force-write", is_flag=True, help="Write OUT even when IN has no CA block (a copy of IN)."
)
@report_option
@handle_errors
def optimize(
    source: Path, output: Path, dynamic: bool, force_write: bool, report_path: Path | None
) -> None:
    """Rewrite the CA blocks of IN.onnx exactly and write OUT if ONNX Runtime agrees with IN."""
    job = OptimizeJob(source, output, dynamic, force_write)
    run_job(job, optimize_onnx, render_optimize, report_path, in_place=(output,))
