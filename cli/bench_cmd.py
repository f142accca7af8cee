"""``ca-export bench``: time the stock and the rewritten export with ONNX Runtime (and
ExecuTorch)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from ca_export.bench import LAYOUTS
from ca_export.files import Output, guard, staging, write_text
from ca_export.pipeline.bench import BenchJob, run_bench
from ca_export.report import render_bench, to_json
from ca_export.report.html import Run, render_html
from ca_export.report.results import BenchConfig, default_threads
from ca_export.rewrites import TARGETS
from cli.common import handle_errors, progress
from cli.options import (
    F,
    NameList,
    ThreadList,
    dynamic_option,
    html_option,
    input_shape_option,
    skip_pass_option,
    weights_option,
)

EPILOG = """\b
Examples:
  ca-export bench mobilenetv2_ca --baseline mobilenetv2 --threads 1
  ca-export bench mobilenetv2_ca --targets ort-x86 --layout blocked --threads 1
  ca-export bench mobilenetv2_ca --dynamic --min-time 20 --json > bench.json
  ca-export bench --onnx a.onnx --onnx b.onnx --input-shape 1,3,224,224
  ca-export bench mobilenetv2_ca --baseline mobilenetv2 --executorch --threads 1
  ca-export bench --onnx a.onnx --pte a.pte --input-shape 1,3,224,224
  ca-export bench mobilenetv2_ca --baseline mobilenetv2 --litert --threads 1 --targets ort-x86
  ca-export bench mobilenetv2_ca --baseline mobilenetv2 --ncnn --targets ort-x86 --threads 1
"""


def files_option(flag: str, dest: str, what: str) -> Callable[[F], F]:
    """A repeatable option naming existing model files of one kind."""
    return click.option(
        flag,
        dest,
        type=click.Path(path_type=Path, dir_okay=False),
        multiple=True,
        help=f"{what} (repeat for several).",
    )


class ProgressBar:
    """One click progress bar per timing phase, on stderr."""

    def __init__(self) -> None:
        self.bar: Any = None
        self.phase = ""
        self.done = 0

    def __call__(self, phase: str, done: int, total: int) -> None:
        if phase != self.phase:
            self.close()
            self.bar = click.progressbar(length=total, label=phase, file=sys.stderr)
            self.bar.__enter__()
            self.phase, self.done = phase, 0
        self.bar.update(done - self.done)
        self.done = done

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None


@click.command("bench", epilog=EPILOG)
@click.argument("model", metavar="[MODEL]", required=False)
@weights_option
@input_shape_option
@files_option("--onnx", "onnx_files", "Time this ONNX file instead of exporting MODEL")
@files_option("--pte", "pte_files", "Also time this ExecuTorch program")
@files_option("--tflite", "tflite_files", "Also time this LiteRT model")
@files_option(
    "--ncnn-param",
    "ncnn_files",
    "Also time this ncnn model (.ncnn.param, with its .ncnn.bin beside it)",
)
@click.option("--baseline", metavar="SPEC", help="Also export and time this model as reference.")
@click.option(
    "--executorch",
    "with_executorch",
    is_flag=True,
    help="With MODEL: also lower stock, rewritten (and baseline) to .pte and time them.",
)
@click.option(
    "--litert",
    "with_litert",
    is_flag=True,
    help="With MODEL: also convert stock, rewritten (and baseline) to .tflite and time them.",
)
@click.option(
    "--ncnn",
    "with_ncnn",
    is_flag=True,
    help="With MODEL: also convert stock, size-safe, --fixed-size (and baseline) to ncnn "
    "and time them.",
)
@dynamic_option
@skip_pass_option
@click.option(
    "--threads",
    type=ThreadList(),
    default=",".join(map(str, default_threads())),
    show_default=True,
    help="intra_op_num_threads values, timed one after the other.",
)
@click.option(
    "--layout",
    "layouts",
    type=NameList(list(LAYOUTS)),
    default=",".join(LAYOUTS),
    show_default=True,
    help="ONNX Runtime session layouts, interleaved: blocked (ORT_ENABLE_ALL, NCHWc on x86), "
    "plain (ORT_ENABLE_EXTENDED, plain NCHW as on ARM).",
)
@click.option(
    "--targets",
    type=NameList(list(TARGETS)),
    default=",".join(TARGETS),
    show_default=True,
    help="With MODEL: the targets whose rewritten exports are timed.",
)
@click.option("--runs", type=click.IntRange(1), default=50, show_default=True)
@click.option(
    "--min-time",
    type=click.FloatRange(0),
    default=0.0,
    show_default=True,
    help="Time each thread count for at least this long (s).",
)
@click.option("--warmup", type=click.IntRange(0), default=10, show_default=True)
@click.option(
    "--profile-runs",
    type=click.IntRange(0),
    default=20,
    show_default=True,
    help="Runs profiled for the op breakdown (0: none).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@html_option
@handle_errors
def bench_cmd(
    model: str | None,
    weights: Path | None,
    input_shape: tuple[int, int, int, int],
    onnx_files: tuple[Path, ...],
    pte_files: tuple[Path, ...],
    tflite_files: tuple[Path, ...],
    ncnn_files: tuple[Path, ...],
    baseline: str | None,
    with_executorch: bool,
    with_litert: bool,
    with_ncnn: bool,
    dynamic: bool,
    skip_passes: tuple[str, ...],
    threads: tuple[int, ...],
    layouts: tuple[str, ...],
    targets: tuple[str, ...],
    runs: int,
    min_time: float,
    warmup: int,
    profile_runs: int,
    as_json: bool,
    html_path: Path | None,
) -> None:
    """Time the stock and rewritten ONNX exports of MODEL side by side (ONNX Runtime CPU),
    one rewritten export per target, each in both session layouts.

    With --executorch (or --pte FILE), ExecuTorch programs (XNNPACK) are timed in the
    same rounds; with --litert (or --tflite FILE), LiteRT models (XNNPACK); with --ncnn (or
    --ncnn-param FILE), ncnn models (fp32, one layout). Models run round-robin so that
    machine noise hits all alike; compare the ratios.
    """
    job = BenchJob(
        model,
        input_shape,
        BenchConfig(warmup, runs, min_time, threads, profile_runs, layouts=layouts),
        weights=weights,
        onnx_files=onnx_files,
        pte_files=pte_files,
        tflite_files=tflite_files,
        ncnn_files=ncnn_files,
        baseline=baseline,
        executorch=with_executorch,
        litert=with_litert,
        ncnn=with_ncnn,
        dynamic=dynamic,
        skip_passes=skip_passes,
        targets=targets,
    )
    if html_path is not None:
        guard([*onnx_files, *pte_files, *tflite_files, *ncnn_files], [Output(html_path, "html")])
    bar = ProgressBar()
    try:
        report = run_bench(job, progress=progress, timing=bar)
    finally:
        bar.close()
    if html_path is not None:
        with staging():
            write_text(render_html([Run(html_path.stem, report)]), html_path)
    for warning in job.warnings:
        click.echo(f"warning: {warning}", err=True)
    if as_json:
        click.echo(to_json(report.to_dict()), nl=False)
    else:
        click.echo(render_bench(report))
