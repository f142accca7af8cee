"""``ca-export executorch``: lower to an ExecuTorch .pte (XNNPACK) behind the parity gate."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ca_export.pipeline.executorch import ExecutorchJob, export_executorch
from ca_export.report import render_export
from cli.common import handle_errors, run_job
from cli.options import (
    dynamic_option,
    gate_options,
    html_option,
    model_job,
    model_options,
    report_option,
    rewrite_option,
    skip_pass_option,
)

EPILOG = """\b
Examples:
  ca-export executorch mobilenetv2_ca -o mnv2_ca.pte
  ca-export executorch mobilenetv2_ca -o mnv2_ca.pte --report report.json
  ca-export executorch mobilenetv2_ca -o stock.pte --no-rewrite
  ca-export executorch ca_segnet -o seg.pte --input-shape 1,3,256,256 --dynamic
"""


@click.command(epilog=EPILOG)
@model_options
@click.option(
    "-o", "--output", type=click.Path(path_type=Path), required=True, help=".pte file to write."
)
@dynamic_option
@rewrite_option
@skip_pass_option
@report_option
@html_option
@gate_options
@handle_errors
@model_job
def executorch(
    fields: dict[str, Any],
    report_path: Path | None,
    html_path: Path | None,
) -> None:
    """Lower MODEL to an ExecuTorch program with XNNPACK and gate it against PyTorch.

    The .pte runs in ExecuTorch's own runtime on seeded inputs; it is written only if
    it matches the original model. The summary gives the XNNPACK delegate segments
    and the ops left outside, by CA block. Needs the extra: pip install -e ".[executorch]".
    """
    job = ExecutorchJob(**fields)
    run_job(job, export_executorch, render_export, report_path, html_path=html_path)
