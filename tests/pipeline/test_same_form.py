"""``ca-export onnx`` and ``ca-export optimize`` (of a stock export) emit the same CA ops.

Both sides run the same passes (``ca_export.rewrites``) through their own graph adapter, so
for the same model and target the rewritten graphs hold the same count of every op a CA
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

from ca_export.pipeline.bench import block_forms
from ca_export.pipeline.optimize import OptimizeJob, optimize_onnx
from ca_export.report import ExportReport
from ca_export.rewrites import FORMS, form_of
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
    "Resize",
    "Pad",
)
GATE_OPS = {"ort-x86": ("Resize", 2), "ort-plain": ("MatMul", 3)}
"""Per target, the op each block's form is built on and how many of it a block holds."""
ZOO = {c.name: c for c in POSITIVE}


def _counts(path: Path) -> dict[str, int]:
    """Counts of the ops CA blocks are made of; a mean over the whole map (the classifier
    head's, a ReduceMean or GlobalAveragePool by exporter) counts as a ReduceMean."""
    counts = Counter(n.op_type for n in onnx.load(path).graph.node)
    means = counts["ReduceMean"] + counts["GlobalAveragePool"]
    return {op: counts[op] for op in CA_OPS} | {"ReduceMean": means}


@pytest.mark.parametrize(
    ("name", "exporter", "target"),
    [
        ("official", "dynamo", "ort-x86"),
        ("official", "torchscript", "ort-x86"),
        ("timm", "dynamo", "ort-x86"),
        ("official", "dynamo", "ort-plain"),
        pytest.param("mobilenetv2_ca", "dynamo", "ort-x86", marks=pytest.mark.slow),
        pytest.param("mobilenetv2_ca", "torchscript", "ort-x86", marks=pytest.mark.slow),
        pytest.param("mobilenetv2_ca", "dynamo", "ort-plain", marks=pytest.mark.slow),
    ],
)
def test_onnx_and_optimize_emit_the_same_ca_ops(
    name: str,
    exporter: str,
    target: str,
    exported: Callable[..., tuple[ExportReport, Path]],
    tmp_path: Path,
) -> None:
    report, ours = exported(name, False, target)
    assert report.passed
    model = ZOO[name].build() if name in ZOO else build(name)
    shape = ZOO[name].input_shape if name in ZOO else SMALL_SHAPES[name]
    stock = tmp_path / "stock.onnx"
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        x = seeded_input(shape, 0)
        torch.onnx.export(model, (x,), stock, dynamo=exporter == "dynamo", opset_version=18)
    optimized = tmp_path / "optimized.onnx"
    assert optimize_onnx(OptimizeJob(stock, optimized, target=target)).passed
    assert _counts(optimized) == _counts(ours)
    op, per_block = GATE_OPS[target]
    assert _counts(optimized)[op] == per_block * len(report.ca_blocks)
    (form,) = set(block_forms(report).values())
    assert form.endswith(f"+ {FORMS[form_of(target)][-1]}") and report.target == target
