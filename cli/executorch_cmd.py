"""``ca-export executorch``: lower to an ExecuTorch .pte (XNNPACK) behind the parity gate."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ca_export.pipeline.executorch import ExecutorchJob, export_executorch
from ca_export.report import render_export
from cli.common import run_job
from cli.options import dynamic_option, export_options, model_options, output_option

EPILOG = """\b
Examples:
  ca-export executorch mobilenetv2_ca -o mnv2_ca.pte
  ca-export executorch mobilenetv2_ca -o mnv2_ca.pte --report report.json
  ca-export executorch mobilenetv2_ca -o stock.pte --no-rewrite
  ca-export executorch ca_segnet -o seg.pte --input-shape 1,3,256,256 --dynamic
"""


@click.command(epilog=EPILOG)
@model_options
@output_option(".pte file to write.")
@dynamic_option
@export_options
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
