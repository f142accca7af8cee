"""``ca-export ncnn``: convert to ncnn (.ncnn.param + .ncnn.bin) behind the parity gate."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ca_export.pipeline.ncnn import NcnnJob, export_ncnn
from ca_export.report import render_export
from cli.common import run_job
from cli.options import export_options, model_options, output_option

EPILOG = """\b
Examples:
  ca-export ncnn mobilenetv2_ca -o mnv2_ca
  ca-export ncnn mobilenetv2_ca -o mnv2_ca --fixed-size --report report.json
  ca-export ncnn yolo_ca -o yolo --input-shape 1,3,320,320 --fixed-size
  ca-export ncnn mobilenetv2_ca -o mnv2_fp16 --precision fp16
"""


@click.command(epilog=EPILOG)
@model_options
@output_option("Writes OUTPUT.ncnn.param, OUTPUT.ncnn.bin and OUTPUT.ncnn.json.")
@click.option(
    "--fixed-size",
    "dynamic",
    flag_value=False,
    default=True,
    help="Faster CA blocks, right only at --input-shape's size (recorded; verify refuses "
    "other sizes). Default: right at every size.",
)
@click.option(
    "--precision",
    type=click.Choice(["fp32", "fp16"]),
    default="fp32",
    show_default=True,
    help="fp16: pnnx's fp16 weights, ncnn's fp16 storage and arithmetic, behind the lossy "
    "gate (after the fp32 model passed the exact gate).",
)
@export_options
def ncnn(
    fields: dict[str, Any],
    precision: str,
    report_path: Path | None,
    html_path: Path | None,
) -> None:
    """Convert MODEL to ncnn through pnnx and gate it against PyTorch in ncnn.

    The model runs in ncnn's Python runtime (fp32, fp16 storage off) on seeded inputs at
    the traced size and, unless --fixed-size, at two other sizes (ncnn models take any
    size); the files are written only if every output matches the original model.
    Needs the extra: pip install -e ".[ncnn]".
    """
    job = NcnnJob(**fields, precision=precision)
    run_job(job, export_ncnn, render_export, report_path, html_path=html_path)
