"""``ca-export bench``: time the stock and the rewritten export with ONNX Runtime (and
ExecuTorch)."""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import click

from ca_export.bench import BenchConfig, bench, default_threads, render_bench
from ca_export.errors import BadInputError, CheckFailedError
from ca_export.pipeline import OnnxJob, export_onnx
from ca_export.pipeline.executorch import ExecutorchJob, export_executorch
from cli.common import handle_errors, progress
from cli.options import ThreadList, input_shape_option, weights_option

EPILOG = """\b
Examples:
  ca-export bench mobilenetv2_ca --baseline mobilenetv2 --threads 1
  ca-export bench mobilenetv2_ca --dynamic --min-time 20 --json > bench.json
  ca-export bench --onnx a.onnx --onnx b.onnx --input-shape 1,3,224,224
  ca-export bench mobilenetv2_ca --baseline mobilenetv2 --executorch --threads 1
  ca-export bench --onnx a.onnx --pte a.pte --input-shape 1,3,224,224
"""


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


def export(job: OnnxJob | ExecutorchJob) -> Path:
    """Export through the pipeline; a failed gate is a failed check."""
    kind = "rewritten" if job.rewrite else "stock"
    click.echo(f"exporting {job.model} ({kind}, {job.output.suffix})", err=True)
    if isinstance(job, ExecutorchJob):
        report = export_executorch(job, progress=progress)
    else:
        report = export_onnx(job, progress=progress)
    if not report.passed or report.artifact is None:
        raise CheckFailedError(f"the export of {job.model!r} did not pass its gates")
    return job.output


@click.command("bench", epilog=EPILOG)
@click.argument("model", metavar="[MODEL]", required=False)
@weights_option
@input_shape_option
@click.option(
    "--onnx",
    "onnx_files",
    type=click.Path(path_type=Path, dir_okay=False),
    multiple=True,
    help="Time this ONNX file instead of exporting MODEL (repeat for several).",
)
@click.option(
    "--pte",
    "pte_files",
    type=click.Path(path_type=Path, dir_okay=False),
    multiple=True,
    help="Also time this ExecuTorch program (repeat for several).",
)
@click.option("--baseline", metavar="SPEC", help="Also export and time this model as reference.")
@click.option(
    "--executorch",
    "with_executorch",
    is_flag=True,
    help="With MODEL: also lower stock, rewritten (and baseline) to .pte and time them.",
)
@click.option("--dynamic", is_flag=True, help="Export with dynamic batch, H and W.")
@click.option(
    "--threads",
    type=ThreadList(),
    default=",".join(map(str, default_threads())),
    show_default=True,
    help="intra_op_num_threads values, timed one after the other.",
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
@handle_errors
def bench_cmd(
    model: str | None,
    weights: Path | None,
    input_shape: tuple[int, int, int, int],
    onnx_files: tuple[Path, ...],
    pte_files: tuple[Path, ...],
    baseline: str | None,
    with_executorch: bool,
    dynamic: bool,
    threads: tuple[int, ...],
    runs: int,
    min_time: float,
    warmup: int,
    profile_runs: int,
    as_json: bool,
) -> None:
    """Time the stock and rewritten ONNX exports of MODEL side by side (ONNX Runtime CPU).

    With --executorch (or --pte FILE), ExecuTorch programs (XNNPACK) are timed in the
    same rounds. Models run round-robin so that machine noise hits all alike; compare
    the ratios.
    """
    files = onnx_files + pte_files
    if (model is None) == (not files):
        raise BadInputError("give either MODEL or --onnx/--pte FILE")
    if with_executorch and (model is None or dynamic):
        raise BadInputError("--executorch needs MODEL and a static size (no --dynamic)")
    config = BenchConfig(warmup, runs, min_time, threads, profile_runs)
    with tempfile.TemporaryDirectory(prefix="ca-export-bench-") as folder:
        models: dict[str, Path] = {}
        for path in files:
            name = path.stem if path.suffix == ".onnx" else path.name
            while name in models:
                name += "'"
            models[name] = path
        if model is not None:
            for name, rewrite in (("stock", False), ("rewritten", True)):
                out = Path(folder) / f"{name}.onnx"
                job = OnnxJob(model, out, weights, input_shape, dynamic=dynamic, rewrite=rewrite)
                try:
                    models[name] = export(job)
                except BadInputError as err:
                    if rewrite or not dynamic:
                        raise
                    click.echo(f"warning: not timing the stock export: {err}", err=True)
        if baseline is not None:
            out = Path(folder) / "baseline.onnx"
            models["baseline"] = export(OnnxJob(baseline, out, None, input_shape, dynamic=dynamic))
        if with_executorch and model is not None:
            for name, spec, ckpt, rewrite in (
                ("stock.pte", model, weights, False),
                ("rewritten.pte", model, weights, True),
                ("baseline.pte", baseline, None, True),
            ):
                if spec is not None:
                    path = Path(folder) / name
                    models[name] = export(
                        ExecutorchJob(spec, path, ckpt, input_shape, rewrite=rewrite)
                    )
        bar = ProgressBar()
        try:
            report = bench(models, input_shape, config, progress=bar)
        finally:
            bar.close()
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
    else:
        click.echo(render_bench(report))
