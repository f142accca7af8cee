"""``ca-export litert``: convert to a LiteRT .tflite (XNNPACK) behind the parity gate."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ca_export.pipeline.litert import LiteRTJob, export_litert
from ca_export.report import render_export
from cli.common import run_job
from cli.options import (
    calibration_option,
    dynamic_option,
    export_options,
    model_options,
    output_option,
    precision_option,
)

EPILOG = """\b
Examples:
  ca-export litert mobilenetv2_ca -o mnv2_ca.tflite
  ca-export litert mobilenetv2_ca -o mnv2_ca_nhwc.tflite --channels-last-io
  ca-export litert mobilenetv2_ca -o stock.tflite --no-rewrite --report report.json
  ca-export litert mobilenetv2_ca -o mnv2_int8.tflite --precision int8 --calibration imgs/
"""


@click.command(epilog=EPILOG)
@model_options
@output_option(".tflite file to write.")
@click.option(
    "--channels-last-io",
    is_flag=True,
    help="NHWC input (and NHWC 4-D outputs), as camera frames come; no TRANSPOSE at the input.",
)
@precision_option
@calibration_option
@dynamic_option
@export_options
def litert(
    fields: dict[str, Any],
    channels_last_io: bool,
    precision: str,
    calibration: Path | None,
    report_path: Path | None,
    html_path: Path | None,
) -> None:
    """Convert MODEL to a LiteRT model (.tflite) and gate it against PyTorch.

    The file runs in LiteRT's interpreter with XNNPACK on seeded inputs; it is written
    only if it matches the original model. The summary gives the TRANSPOSE ops left and
    the XNNPACK partitions with the ops left outside, by CA block. --precision fp16|int8
    quantizes the gated file with ai-edge-quantizer (weights only; int8 with --calibration
    DIR: static, activations too), judged by the lossy gate. Needs the extra:
    pip install -e ".[litert]".
    """
    job = LiteRTJob(
        **fields, channels_last_io=channels_last_io, precision=precision, calibration=calibration
    )
    run_job(job, export_litert, render_export, report_path, html_path=html_path)
