"""``ca-export onnx`` and ``ca-export optimize`` (of a stock export) emit the same CA ops.

Both sides run the same passes (``ca_export.rewrites``) through their own graph adapter, so
for the same model and form the rewritten graphs hold the same count of every op a CA
block is made of.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import onnx
import pytest
import torch
from ca_zoo import POSITIVE, seeded_input
from conftest import SMALL_SHAPES

from ca_export.pipeline.optimize import OptimizeJob, optimize_onnx
from ca_export.report import ExportReport
from sample_models import build

CA_OPS = (
    "AveragePool",
    "Transpose",
    "Concat",
    "Split",
    "Slice",
    "Squeeze",
    "Unsqueeze",
    "Expand",
    "HardSwish",
    "HardSigmoid",
    "Sigmoid",
    "MatMul",
    "Mul",
)
ZOO = {c.name: c for c in POSITIVE}


def _counts(path: Path) -> dict[str, int]:
    """Counts of the ops CA blocks are made of; a mean over the whole map (the classifier
    head's, a ReduceMean or GlobalAveragePool by exporter) counts as a ReduceMean."""
    counts = Counter(n.op_type for n in onnx.load(path).graph.node)
    means = counts["ReduceMean"] + counts["GlobalAveragePool"]
    return {op: counts[op] for op in CA_OPS} | {"ReduceMean": means}


@pytest.mark.parametrize(
    ("name", "exporter"),
    [
        ("official", "dynamo"),
        ("official", "torchscript"),
        ("timm", "dynamo"),
        pytest.param("mobilenetv2_ca", "dynamo", marks=pytest.mark.slow),
        pytest.param("mobilenetv2_ca", "torchscript", marks=pytest.mark.slow),
    ],
)
def test_onnx_and_optimize_emit_the_same_ca_ops(
    name: str,
    exporter: str,
    exported: Callable[[str, bool], tuple[ExportReport, Path]],
    tmp_path: Path,
) -> None:
    report, ours = exported(name, False)
    assert report.passed
    model = ZOO[name].build() if name in ZOO else build(name)
    shape = ZOO[name].input_shape if name in ZOO else SMALL_SHAPES[name]
    stock = tmp_path / "stock.onnx"
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        x = seeded_input(shape, 0)
        torch.onnx.export(model, (x,), stock, dynamo=exporter == "dynamo", opset_version=18)
    optimized = tmp_path / "optimized.onnx"
    assert optimize_onnx(OptimizeJob(stock, optimized)).passed
    assert _counts(optimized) == _counts(ours)
    assert _counts(optimized)["MatMul"] == len(report.ca_blocks)
