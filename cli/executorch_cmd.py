"""``ca-export executorch``: lower to an ExecuTorch .pte (XNNPACK) behind the parity gate."""

from __future__ import annotations

from pathlib import Path

import click

from ca_export.pipeline.executorch import ExecutorchJob, export_executorch
from ca_export.report import render_export
from cli.common import handle_errors, run_job
from cli.options import dynamic_option, model_options, report_option, skip_pass_option

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
@click.option("--rewrite/--no-rewrite", default=True, show_default=True, help="Rewrite CA blocks.")
@skip_pass_option
@report_option
@handle_errors
def executorch(
    model: str,
    weights: Path | None,
    input_shape: tuple[int, int, int, int],
    trust_pickle: bool,
    memory_check: bool,
    output: Path,
    dynamic: bool,
    rewrite: bool,
    skip_passes: tuple[str, ...],
    report_path: Path | None,
) -> None:
    """Lower MODEL to an ExecuTorch program with XNNPACK and gate it against PyTorch.

    The .pte runs in ExecuTorch's own runtime on seeded inputs; it is written only if
    it matches the original model. The summary gives the XNNPACK delegate segments
    and the ops left outside, by CA block. Needs the extra: pip install -e ".[executorch]".
    """
    job = ExecutorchJob(
        model,
        output,
        weights=weights,
        input_shape=input_shape,
        dynamic=dynamic,
        rewrite=rewrite,
        trust_pickle=trust_pickle,
        check_memory=memory_check,
        skip_passes=skip_passes,
    )
    run_job(job, export_executorch, render_export, report_path)
