"""``ca-export coreml``: rewrite CA blocks, convert to Core ML, load the result back, check it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ca_export.export.coreml import EXTENSIONS, TARGETS, ImageInput
from ca_export.export.coreml_compress import MODES
from ca_export.pipeline.coreml import CoreMLJob, export_coreml, read_labels
from ca_export.report import render_export
from cli.common import run_job
from cli.options import (
    FloatList,
    SizeList,
    SizeRange,
    dynamic_option,
    export_options,
    model_options,
    output_option,
)

EPILOG = """\b
Examples:
  ca-export coreml mobilenetv2_ca -o mnv2_ca.mlpackage
  ca-export coreml mobilenetv2_ca -o mnv2_ca.mlpackage --precision fp32 --report report.json
  ca-export coreml mobilenetv2_ca -o mnv2_ca.mlpackage --dynamic --hw-range 64:1024
  ca-export coreml mobilenetv2_ca -o mnv2_ca.mlpackage --dynamic --sizes 224x224,256x320
  ca-export coreml mobilenetv2_ca -o mnv2_ca.mlpackage --image-input --scale 0.0187 \\
      --bias -2.12,-2.04,-1.80 --labels imagenet.txt --author me --license MIT
  ca-export coreml seed_ca -o seed.mlmodel --format neuralnetwork --input-shape 1,3,32,32
  ca-export coreml mobilenetv2_ca -o mnv2_ca_int8.mlpackage --compress int8
"""


@click.command(epilog=EPILOG)
@model_options
@output_option("Model to write: .mlpackage (mlprogram) or .mlmodel (neuralnetwork).")
@click.option(
    "--format", "fmt", type=click.Choice(list(EXTENSIONS)), default="mlprogram", show_default=True
)
@click.option(
    "--precision",
    type=click.Choice(["fp16", "fp32"]),
    default=None,
    help="Compute precision (mlprogram: fp16 by default; neuralnetwork: fp32 only).",
)
@click.option(
    "--min-target",
    type=click.Choice(TARGETS),
    default=None,
    help="Minimum deployment target (mlprogram: iOS15 by default; neuralnetwork: iOS13).",
)
@dynamic_option
@click.option(
    "--hw-range", type=SizeRange(), default=None, help="Bounds of H and W with --dynamic."
)
@click.option(
    "--sizes",
    type=SizeList(),
    default=None,
    help="With --dynamic: the only allowed sizes, e.g. 224x224,256x320.",
)
@click.option("--image-input", is_flag=True, help="Take an RGB image instead of a tensor.")
@click.option(
    "--scale",
    type=FloatList(),
    default="1",
    show_default=True,
    help="Image input: scale for every channel (one value, or three equal ones).",
)
@click.option(
    "--bias",
    type=FloatList(),
    default="0,0,0",
    show_default=True,
    help="Image input: bias per channel R,G,B, added after scaling.",
)
@click.option(
    "--labels",
    "labels_path",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Class labels, one per line: the model becomes a classifier.",
)
@click.option("--author", default=None, help="Metadata: author.")
@click.option("--license", "license_", default=None, help="Metadata: license.")
@click.option("--version", "version_", default=None, help="Metadata: model version.")
@click.option("--description", default=None, help="Metadata: short description.")
@click.option(
    "--compress",
    type=click.Choice(MODES),
    default=None,
    help="Compress the weights (mlprogram, iOS16+): int8, or a 4/6/8-bit k-means palette.",
)
@export_options
def coreml(
    fields: dict[str, Any],
    fmt: str,
    precision: str | None,
    min_target: str | None,
    hw_range: tuple[int, int] | None,
    sizes: tuple[tuple[int, int], ...] | None,
    image_input: bool,
    scale: tuple[float, ...],
    bias: tuple[float, ...],
    labels_path: Path | None,
    author: str | None,
    license_: str | None,
    version_: str | None,
    description: str | None,
    compress: str | None,
    report_path: Path | None,
    html_path: Path | None,
) -> None:
    """Convert MODEL to Core ML, rewriting its CA blocks, and check the saved model.

    The saved model is loaded back from disk and checked: its inputs and outputs, and
    that no transpose/concat/split/slice op comes from a CA block. Prediction parity
    against PyTorch runs on macOS only; elsewhere the report says it did not run.
    """
    image = ImageInput.of(scale, bias) if image_input else None
    labels = read_labels(labels_path) if labels_path is not None else ()
    metadata = {
        "author": author,
        "license": license_,
        "version": version_,
        "short_description": description,
    }
    job = CoreMLJob(
        **fields,
        format=fmt,
        precision=precision,
        min_target=min_target,
        hw_range=hw_range,
        sizes=sizes or (),
        image=image,
        labels=labels,
        metadata={k: v for k, v in metadata.items() if v is not None},
        compress=compress,
    )
    labels = (labels_path,) if labels_path else ()
    run_job(job, export_coreml, render_export, report_path, reads=labels, html_path=html_path)
