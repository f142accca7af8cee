"""``ca-export optimize``: rewrite the CA blocks of an existing ONNX file behind a parity gate."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ca_export.files import Output, guard, write_text
from ca_export.pipeline.optimize import OptimizeJob, optimize_onnx
from ca_export.report import render_optimize, to_json
from cli.common import EXIT_CHECK_FAILED, handle_errors, progress
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
    reports = [Output(report_path, "json")] if report_path is not None else []
    guard(job.reads(), job.writes() + reports, in_place=[output])
    report = optimize_onnx(job, progress=progress)
    if report_path is not None:
        write_text(to_json(report.to_dict()), report_path)
    click.echo(render_optimize(report))
    if not report.passed:
        sys.exit(EXIT_CHECK_FAILED)
