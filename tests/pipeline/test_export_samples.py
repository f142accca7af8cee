"""Every sample model exports, passes its gate, and keeps no CA-only node."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from ca_zoo import POSITIVE
from conftest import CPU_FP32, assert_within

from ca_export.files import write_onnx
from ca_export.patterns.coordatt import CA_ONLY_OPS
from ca_export.pipeline import OnnxJob, export_onnx
from ca_export.report import ExportReport
from ca_export.tracing import example_input
from sample_models import CA_BLOCKS, build

Exported = Callable[[str, bool], tuple[ExportReport, Path]]
FAST = {"seed_ca", "ca_segnet"}
"""The two cheap samples run in the fast suite (seed quirk; hardsigmoid gates, expand_as, no
BN); mobilenetv2_ca and mobilenext_ca run with ``-m slow``. Their CA flavours (official
permute + split; mean pools, transpose and slicing) stay in the fast suite as ca_zoo cases
(``test_zoo_exports_pass_the_gate``)."""
CASES = [
    pytest.param(
        name,
        dynamic,
        id=f"{name}-{'dynamic' if dynamic else 'static'}",
        marks=() if name in FAST else pytest.mark.slow,
    )
    for name, dynamic in [
        ("seed_ca", False),
        ("seed_ca", True),
        ("mobilenetv2_ca", False),
        ("mobilenetv2_ca", True),
        ("mobilenext_ca", False),
        ("mobilenext_ca", True),
        ("ca_segnet", False),
        ("ca_segnet", True),
    ]
]
ZOO_CASES = [
    pytest.param("official", False, id="official-static"),
    pytest.param("official", True, id="official-dynamic"),
    pytest.param("timm", True, id="timm-dynamic"),
    pytest.param("slicing", True, id="slicing-dynamic"),
]
ZOO = {c.name: c for c in POSITIVE}
"""Small modules in the flavours of mobilenetv2_ca (official) and mobilenext_ca (timm-style
mean pools and transpose; split by slicing)."""


def _assert_gated_and_rewritten(
    report: ExportReport, path: Path, blocks: int, input_name: str
) -> onnx.ModelProto:
    """Every gate passed, every block was rewritten and left no CA-only node; the file is
    the reported artifact with the pipeline's metadata and the forward's input name."""
    assert report.passed, report.parity.figures
    assert len(report.ca_blocks) == blocks
    assert all(b.rewritten and b.ca_only_nodes_after == {} for b in report.ca_blocks)
    assert report.structure.ok and report.structure.figures.ca_only_nodes_after == 0
    assert report.parity.figures.blocks is not None and not report.parity.figures.blocks.failures
    assert report.artifact is not None and Path(report.artifact["path"]) == path
    model = onnx.load(path)
    props = {p.key: p.value for p in model.metadata_props}
    assert props["ca_export.blocks_rewritten"] == str(blocks)
    assert [i.name for i in model.graph.input] == [input_name]
    return model


@pytest.mark.parametrize(("name", "dynamic"), CASES)
def test_sample_exports_pass_the_gate(exported: Exported, name: str, dynamic: bool) -> None:
    report, path = exported(name, dynamic)
    model = _assert_gated_and_rewritten(report, path, CA_BLOCKS[name], "x")
    props = {p.key: p.value for p in model.metadata_props}
    assert props["ca_export.source_model"] == name


@pytest.mark.parametrize(("name", "dynamic"), ZOO_CASES)
def test_zoo_exports_pass_the_gate(exported: Exported, name: str, dynamic: bool) -> None:
    report, path = exported(name, dynamic)
    _assert_gated_and_rewritten(report, path, ZOO[name].ca_blocks, "input")
    assert [b.channels for b in report.ca_blocks] == list(ZOO[name].channels)
    shapes = {tuple(case.input_shape) for case in report.parity.figures.cases}
    assert len(shapes) == (3 if dynamic else 1)


@pytest.mark.parametrize(("name", "dynamic"), CASES + ZOO_CASES)
def test_blocks_had_ca_only_nodes_before(exported: Exported, name: str, dynamic: bool) -> None:
    report, _ = exported(name, dynamic)
    for block in report.ca_blocks:
        before = block.ca_only_nodes_before
        assert before["Concat"] == 1
        assert before["Transpose"] >= 1
        assert before.get("Split", 0) + before.get("Slice", 0) >= 1
    assert report.op_counts_after.get("Transpose", 0) == 0
    assert not report.warnings


def test_dynamic_export_is_right_at_other_sizes(exported: Exported) -> None:
    _, path = exported("ca_segnet", True)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    model = build("ca_segnet")
    for shape in [(1, 3, 96, 160), (3, 3, 128, 64)]:
        x = example_input(shape, seed=7)
        (got,) = session.run(None, {"x": x.numpy()})
        with torch.no_grad():
            want = model(x).numpy()
        assert_within(want, got, CPU_FP32)


def test_dynamic_report_names_the_sizes_checked(exported: Exported) -> None:
    report, _ = exported("ca_segnet", True)
    shapes = {tuple(case.input_shape) for case in report.parity.figures.cases}
    assert (1, 3, 64, 64) in shapes and len(shapes) == 3
    assert any(s[2] != s[3] for s in shapes)


def test_no_rewrite_keeps_the_stock_graph(tmp_path: Path) -> None:
    job = OnnxJob("seed_ca", tmp_path / "stock.onnx", input_shape=(1, 3, 32, 32), rewrite=False)
    report = export_onnx(job)
    assert report.passed
    assert not any(b.rewritten for b in report.ca_blocks)
    assert report.parity.figures.blocks is None
    ops = {n.op_type for n in onnx.load(tmp_path / "stock.onnx").graph.node}
    assert {"Transpose", "Concat", "Split"} <= ops and set(CA_ONLY_OPS) & ops
    left = report.structure.figures.in_blocks_not_rewritten
    assert left >= 3 * 3 and report.structure.figures.ca_only_nodes_after == left


def test_a_block_too_small_to_match_is_named_and_counted(tmp_path: Path) -> None:
    job = OnnxJob("seed_ca", tmp_path / "tiny.onnx", input_shape=(1, 3, 8, 8))
    report = export_onnx(job)
    assert [b.module for b in report.ca_blocks] == ["stages.1", "stages.3"]
    assert [(r.module, "spatial size of 1" in r.reason) for r in report.rejected] == [
        ("stages.5", True)
    ]
    left = report.structure.figures.in_unmatched_concats["stages.5"]
    assert left["Concat"] == 1 and left["Transpose"] >= 1
    assert report.structure.figures.ca_only_nodes_after == sum(left.values())
    assert report.structure.ok


@pytest.mark.slow
@pytest.mark.parametrize(("name", "dynamic"), CASES)
def test_full_size_exports(tmp_path: Path, name: str, dynamic: bool) -> None:
    job = OnnxJob(name, tmp_path / f"{name}.onnx", input_shape=(1, 3, 224, 224), dynamic=dynamic)
    report = export_onnx(job)
    assert report.passed, report.parity.figures
    assert report.structure.ok


def test_same_input_gives_a_byte_identical_file(exported: Exported, tmp_path: Path) -> None:
    report, path = exported("seed_ca", False)
    again = export_onnx(OnnxJob("seed_ca", tmp_path / "again.onnx", input_shape=(1, 3, 32, 32)))
    assert again.artifact is not None and report.artifact is not None
    assert again.artifact["sha256"] == report.artifact["sha256"]
    assert (tmp_path / "again.onnx").read_bytes() == path.read_bytes()


def test_large_models_are_written_with_external_data(exported: Exported, tmp_path: Path) -> None:
    _, path = exported("seed_ca", False)
    model = onnx.load(path)
    out = tmp_path / "big.onnx"
    info = write_onnx(model, out, limit=1000)
    assert info["external_data"] == "big.onnx.data"
    assert (tmp_path / "big.onnx.data").stat().st_size > out.stat().st_size
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.onnx", "big.onnx.data"]
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    x = example_input((1, 3, 32, 32), seed=1).numpy()
    reference = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    np.testing.assert_array_equal(session.run(None, {"x": x})[0], reference.run(None, {"x": x})[0])


def test_onnxsim_failure_keeps_the_model_with_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import onnxsim

    def broken(*_: object, **__: object) -> None:
        raise RuntimeError("simplifier crashed")

    monkeypatch.setattr(onnxsim, "simplify", broken)
    job = OnnxJob("seed_ca", tmp_path / "s.onnx", input_shape=(1, 3, 32, 32))
    report = export_onnx(job)
    assert report.passed
    assert any("onnxsim failed" in w and "simplifier crashed" in w for w in report.warnings)
    assert (tmp_path / "s.onnx").is_file()
