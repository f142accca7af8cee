"""``yolov5_ca``, a YOLOv5s-layout sample: its output, its model dict, what ``inspect`` finds
in it, and the files a YOLOv5 fork leaves (stripped ``best.pt``, export-script ONNX file).

Negative twin: the same network with its three CA rows made identities has no CA block and
no rejected candidate, though it holds the C3, SPPF and neck channel concats.
"""

from __future__ import annotations

import copy
import json
import warnings
from collections.abc import Callable
from functools import cache
from pathlib import Path

import onnx
import pytest
import torch
from click.testing import CliRunner, Result
from conftest import SMALL_SHAPES
from torch import nn
from yolov5_files import export_like_yolov5, write_stripped_checkpoint

from ca_export.loading import load_model
from ca_export.patterns import find
from ca_export.pipeline import OnnxJob, export_onnx
from ca_export.pipeline.optimize import OptimizeJob, optimize_onnx
from ca_export.report import ExportReport
from ca_export.tracing import example_input, trace
from cli.main import cli
from sample_models import build
from sample_models.yolov5 import C3, SPPF, CoordAtt, Detect, Model

SHAPE = SMALL_SHAPES["yolov5_ca"]
FULL = (1, 3, 320, 320)
CA_ROWS = {5: ("C3", 128), 8: ("C3", 256), 12: ("SPPF", 512)}
"""Model dict row of each CA block: the row type it follows, and its channels (YOLOv5s)."""


def _anchors(h: int, w: int) -> int:
    """Predictions per image: 3 anchors per cell of the stride 8, 16 and 32 maps."""
    return 3 * sum((h // s) * (w // s) for s in (8, 16, 32))


@cache
def _sample() -> Model:
    model = build("yolov5_ca")
    assert isinstance(model, Model)
    return model


def _fresh() -> Model:
    """A copy whose grid caches no forward has filled."""
    return copy.deepcopy(_sample())


def _run(*args: str | Path) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture
def best_pt(tmp_path: Path) -> Path:
    """``best.pt`` as YOLOv5 training leaves it after stripping: the fp16 model under
    ``model``, ``ema`` None."""
    return write_stripped_checkpoint(_sample(), tmp_path / "best.pt")


# ----------------------------------------------------------------- the sample in PyTorch


def test_output_is_one_tensor_and_grids_are_cached_per_size() -> None:
    model = _fresh()
    detect = model.model[-1]
    assert isinstance(detect, Detect) and detect.export
    assert all(g.numel() == 0 for g in detect.grid), "the caches start empty"
    with torch.no_grad():
        y = model(example_input(SHAPE, 0))
        assert isinstance(y, torch.Tensor)
        assert y.shape == (1, _anchors(64, 64), 85) and y.dtype == torch.float32
        assert [tuple(g.shape) for g in detect.grid] == [(1, 3, n, n, 2) for n in (8, 4, 2)]
        assert ((y[..., 4:] >= 0) & (y[..., 4:] <= 1)).all()
        assert model(example_input((1, 3, 96, 64), 0)).shape == (1, _anchors(96, 64), 85)
        assert tuple(detect.anchor_grid[0].shape) == (1, 3, 12, 8, 2)
        detect.export = False
        predictions, maps = model(example_input(SHAPE, 0))
    assert torch.equal(predictions, y)
    assert [tuple(m.shape) for m in maps] == [(1, 3, n, n, 85) for n in (8, 4, 2)]


def test_model_dict_puts_three_coordatt_after_c3_c3_and_sppf() -> None:
    layers = _sample().model
    rows = {
        m.i: (layers[m.i - 1].type, m.conv_h.out_channels)
        for m in layers
        if isinstance(m, CoordAtt)
    }
    assert rows == CA_ROWS
    assert all(layers[i].type == "CoordAtt" and layers[i].f == -1 for i in CA_ROWS)
    assert [m.f for m in layers if m.type == "Concat"] == [[-1, 8], [-1, 5], [-1, 17], [-1, 13]]
    assert layers[-1].f == [20, 23, 26]


# ----------------------------------------------------------------- CA detection


def test_inspect_finds_the_three_ca_blocks_and_none_in_c3_or_sppf() -> None:
    result = _run("inspect", "yolov5_ca", "--input-shape", "1,3,64,64", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert [b["module"] for b in data["ca_blocks"]] == [f"model.{i}" for i in CA_ROWS]
    assert [b["channels"] for b in data["ca_blocks"]] == [c for _, c in CA_ROWS.values()]
    assert data["rejected"] == [], "C3/SPPF/neck concats pool nothing: not even candidates"


def test_without_ca_rows_nothing_is_found_in_c3_sppf_or_neck_concats() -> None:
    model = _fresh()
    for i in CA_ROWS:
        model.model[i] = nn.Identity()
        model.model[i].i, model.model[i].f = i, -1
    graph = trace(model, SHAPE, dynamic=False).program.graph
    cats = [n for n in graph.nodes if n.target == torch.ops.aten.cat.default]
    c3_and_sppf = sum(isinstance(m, C3 | SPPF) for m in model.modules())
    assert c3_and_sppf == 9 and len(cats) >= c3_and_sppf + 4
    assert find(graph) == ([], [])


# ----------------------------------------------------------------- ca-export onnx


def _assert_rewritten(report: ExportReport) -> None:
    """Three blocks rewritten, no CA-only node left, every gate passed."""
    assert [b.module for b in report.ca_blocks] == [f"model.{i}" for i in CA_ROWS]
    assert all(b.rewritten for b in report.ca_blocks)
    assert report.structure.ok and report.structure.figures.ca_only_nodes_after == 0
    assert report.passed, report.parity.figures


def test_onnx_export_rewrites_the_three_blocks(
    exported: Callable[..., tuple[ExportReport, Path]],
) -> None:
    _assert_rewritten(exported("yolov5_ca", False)[0])


@pytest.mark.slow
def test_onnx_export_at_320_rewrites_the_three_blocks(tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = export_onnx(OnnxJob("yolov5_ca", tmp_path / "y5.onnx", None, FULL))
    _assert_rewritten(report)


# ----------------------------------------------------------------- files a fork leaves


def test_stripped_best_pt_loads_as_fp32_with_trust_pickle(best_pt: Path) -> None:
    """Refused without ``--trust-pickle``; with it, ``model`` is picked (``ema`` is None) and
    cast to fp32 with a notice."""
    saved = torch.load(best_pt, weights_only=False)
    assert saved["ema"] is None and next(saved["model"].parameters()).dtype == torch.float16
    assert saved["model"].model[-1].stride.dtype == torch.float16, "Model._apply casts it"
    refused = _run("inspect", best_pt, "--input-shape", "1,3,64,64")
    assert refused.exit_code == 2 and "--trust-pickle" in refused.stderr
    loaded = load_model(str(best_pt), trust_pickle=True)
    model = loaded.module
    assert isinstance(model, Model)
    assert any("cast to fp32" in n for n in loaded.notices)
    tensors = [*model.parameters(), *model.buffers(), model.model[-1].stride]
    assert {t.dtype for t in tensors if t.is_floating_point()} == {torch.float32}
    with torch.no_grad():
        y = model(example_input(SHAPE, 0))
    assert y.dtype == torch.float32 and y.shape == (1, _anchors(64, 64), 85)


def test_export_script_file_is_found_and_rewritten_by_optimize(tmp_path: Path) -> None:
    """The file YOLOv5's export script writes (opset 12, one output): ``optimize`` finds and
    rewrites the three blocks, and its gate passes."""
    source = export_like_yolov5(_sample(), tmp_path / "yolov5_ca.onnx", SHAPE)
    exported = onnx.load(source)
    assert exported.opset_import[0].version == 12
    assert [i.name for i in exported.graph.input] == ["images"]
    (output,) = exported.graph.output
    dims = [d.dim_value for d in output.type.tensor_type.shape.dim]
    assert output.name == "output0" and dims == [1, _anchors(64, 64), 85]
    report = optimize_onnx(OptimizeJob(source, tmp_path / "out.onnx"))
    assert [b.channels for b in report.ca_blocks] == [c for _, c in CA_ROWS.values()]
    assert all(b.rewritten and not b.ca_only_nodes_after for b in report.ca_blocks)
    assert report.passed, report.parity.figures


# ----------------------------------------------------------------- full size


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_outputs_at_320_are_finite_boxes_in_pixels(seed: int) -> None:
    with torch.no_grad():
        y = _fresh()(example_input(FULL, seed))[0]
    assert y.shape == (_anchors(320, 320), 85) and torch.isfinite(y).all()
    xy, wh, probabilities = y[:, :2], y[:, 2:4], y[:, 4:]
    assert xy.min() > -32 and xy.max() < 320 + 32 and xy.max() > 280
    assert wh.min() > 0 and 100 < wh.max() < 4 * 373
    assert probabilities.min() >= 0 and probabilities.max() <= 1


EVERY_FORMAT = {
    "onnx": ["onnx", "yolov5_ca", "-o", "y5.onnx"],
    "onnx --dynamic": ["onnx", "yolov5_ca", "-o", "y5d.onnx", "--dynamic"],
    "onnx --opset 13": ["onnx", "yolov5_ca", "-o", "y5_13.onnx", "--opset", "13"],
    "coreml": ["coreml", "yolov5_ca", "-o", "y5.mlpackage"],
    "executorch": ["executorch", "yolov5_ca", "-o", "y5.pte"],
}
"""Each export of the sample at 320 in one format, by the CLI."""


@pytest.mark.slow
@pytest.mark.parametrize("args", EVERY_FORMAT.values(), ids=EVERY_FORMAT.keys())
def test_every_format_exports_and_verifies_at_320(args: list[str], tmp_path: Path) -> None:
    """Default tolerances: each export passes its gates, and ``verify`` passes the file."""
    if args[0] == "executorch":
        pytest.importorskip("executorch")
    shape = ["--input-shape", ",".join(map(str, FULL))]
    args = [str(tmp_path / a) if a.startswith("y5") else a for a in args]
    exported = _run(*args, *shape)
    assert exported.exit_code == 0, exported.output
    verified = _run("verify", "yolov5_ca", args[3], *shape)
    assert verified.exit_code == 0, verified.output


@pytest.mark.slow
def test_stripped_best_pt_and_the_export_script_file_pass_at_320(
    tmp_path: Path, best_pt: Path
) -> None:
    shape = ["--input-shape", ",".join(map(str, FULL))]
    out = tmp_path / "best.onnx"
    exported = _run("onnx", best_pt, "--trust-pickle", "-o", out, *shape)
    assert exported.exit_code == 0, exported.output
    source = export_like_yolov5(_sample(), tmp_path / "legacy.onnx", FULL)
    optimized = _run("optimize", source, "-o", tmp_path / "legacy_ca.onnx")
    assert optimized.exit_code == 0, optimized.output
    verified = _run("verify", "yolov5_ca", tmp_path / "legacy_ca.onnx", *shape)
    assert verified.exit_code == 0, verified.output
