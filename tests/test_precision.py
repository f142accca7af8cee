"""``ca-export onnx --precision fp16|int8``: conversion, the lossy gate, and its error paths.

Three CLI runs on ``seed_ca`` at 32x32 are made once for the module (fp16, int8 with one
module kept fp32, int8 calibrated on arrays that make every activation clip); the lossy
gate itself is tested on a small linear model. MobileNetV2-CA at 224 is in the slow set.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner, Result
from torch import nn

from ca_export.errors import BadInputError
from ca_export.export.precision import fp32_nodes
from ca_export.verify.lossy import lossy_gate
from ca_export.verify.tolerances import tolerance
from cli.main import cli

SMALL = ["seed_ca", "--input-shape", "1,3,32,32"]


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Result, Path, dict]]:
    """CLI result, output path and JSON report of each run, made once."""
    folder = tmp_path_factory.mktemp("precision")
    clipping = folder / "clipping"
    clipping.mkdir()
    tiny = np.random.default_rng(0).standard_normal((4, 3, 32, 32)) * 1e-3
    np.save(clipping / "tiny.npy", tiny.astype(np.float32))
    options = {
        "fp16": ["--precision", "fp16"],
        "int8": ["--precision", "int8", "--keep-fp32", "stages.0"],
        "clipped": ["--precision", "int8", "--calibration", str(clipping)],
    }
    found = {}
    for name, extra in options.items():
        out, report = folder / f"{name}.onnx", folder / f"{name}.json"
        result = run("onnx", *SMALL, "-o", str(out), "--report", str(report), *extra)
        found[name] = (result, out, json.loads(report.read_text()))
    return found


def test_fp16_keeps_fp32_io_and_passes_the_lossy_gate(runs: dict[str, Any]) -> None:
    result, out, report = runs["fp16"]
    assert result.exit_code == 0, result.output
    model = onnx.load(out)
    io = [*model.graph.input, *model.graph.output]
    assert {v.type.tensor_type.elem_type for v in io} == {onnx.TensorProto.FLOAT}
    weights = Counter(t.data_type for t in model.graph.initializer if len(t.dims) == 4)
    assert set(weights) == {onnx.TensorProto.FLOAT16}
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["ca_export.precision"] == "fp16"
    check = report["checks"]["precision"]
    assert check["passed"] and check["inputs"] == [f"seed {s}" for s in range(1, 9)]
    (output,) = check["outputs"]
    assert output["top1"] >= 7 / 8 and output["min_cosine"] >= 0.99
    assert check["bytes"] < 0.6 * check["fp32_bytes"]
    assert "check precision: passed" in result.output


def test_int8_is_qdq_with_per_channel_weights(runs: dict[str, Any]) -> None:
    result, out, report = runs["int8"]
    assert result.exit_code == 0, result.output
    assert "calibrated on 16 seeded random inputs" in result.output
    model = onnx.load(out)
    init = {t.name: t for t in model.graph.initializer}
    weight_scales = [
        init[n.input[1]]
        for n in model.graph.node
        if n.op_type == "DequantizeLinear" and n.input[0] in init and init[n.input[0]].dims
    ]
    assert any(len(s.dims) == 1 and s.dims[0] > 1 for s in weight_scales)
    check = report["checks"]["precision"]
    assert check["passed"] and check["calibration"]["source"] == "seeded random inputs"
    assert check["kept_fp32"]["nodes"] > 0
    (output,) = check["outputs"]
    assert output["top1"] >= 6 / 8 and output["min_cosine"] >= 0.90


def test_kept_module_has_no_quantized_conv(runs: dict[str, Any]) -> None:
    _, out, _ = runs["int8"]
    model = onnx.load(out)
    producer = {o: n for n in model.graph.node for o in n.output}
    kept = set(fp32_nodes(model, ["stages.0"]))
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    quantized = {n.name for n in convs if n.input[1] in producer}
    assert all(
        producer[n.input[1]].op_type == "DequantizeLinear" for n in convs if n.input[1] in producer
    )
    assert kept & {n.name for n in convs} and not kept & quantized
    assert quantized, "the other convs are quantized"
    with pytest.raises(BadInputError, match=r"no ONNX node belongs to module 'stages\.9'"):
        fp32_nodes(model, ["stages.9"])


def test_clipping_calibration_fails_the_gate_and_writes_nothing(runs: dict[str, Any]) -> None:
    result, out, report = runs["clipped"]
    assert result.exit_code == 1, result.output
    assert not out.exists()
    assert "check precision: FAILED" in result.output
    assert "failed: output: cosine" in result.output
    check = report["checks"]["precision"]
    assert not check["passed"] and check["calibration"]["samples"] == 4
    assert check["inputs"][-1] == "tiny.npy[3]"
    assert report["parity"]["passed"], "the fp32 model itself passed"


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda d: d / "missing", "is not a folder"),
        (lambda d: d, "holds no images or .npy/.npz arrays"),
        (lambda d: _array(d, (2, 3, 16, 16)), "shape (2, 3, 16, 16), expected N,3,32,32"),
    ],
)
def test_bad_calibration_folder_exits_2(tmp_path: Path, setup: Any, message: str) -> None:
    (tmp_path / "notes.txt").write_text("not calibration data")
    folder = setup(tmp_path)
    out = tmp_path / "m.onnx"
    options = ["--precision", "int8", "--calibration", str(folder)]
    result = run("onnx", *SMALL, "-o", str(out), *options)
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert not out.exists()


def test_calibration_needs_a_lossy_precision(tmp_path: Path) -> None:
    result = run("onnx", *SMALL, "-o", str(tmp_path / "m.onnx"), "--calibration", str(tmp_path))
    assert result.exit_code == 2
    assert "need --precision fp16 or int8" in result.output


def _array(folder: Path, shape: tuple[int, ...]) -> Path:
    np.save(folder / "a.npy", np.zeros(shape, np.float32))
    return folder


@pytest.fixture(scope="module")
def scorer() -> nn.Module:
    """A 100-class linear model."""
    torch.manual_seed(0)
    return nn.Linear(16, 100).eval()


def _inputs() -> list[tuple[str, np.ndarray]]:
    rng = np.random.default_rng(1)
    return [(f"seed {i}", rng.standard_normal((1, 16)).astype(np.float32)) for i in range(8)]


def _gate(model: nn.Module, change: Any) -> Any:
    def run(x: np.ndarray) -> list[np.ndarray]:
        with torch.no_grad():
            return [change(model(torch.from_numpy(x)).numpy())]

    tol = tolerance("int8", "onnxruntime-cpu")
    return lossy_gate(model, run, ["scores"], _inputs(), "int8", "onnxruntime-cpu", tol)


def test_lossy_gate_passes_a_small_error(scorer: nn.Module) -> None:
    gate = _gate(scorer, lambda y: y * 1.01 + 1e-3)
    assert gate.passed, gate.failures()
    (out,) = gate.outputs
    assert out.top1 == 1.0 and out.top1_in_top5 == 1.0 and out.min_cosine > 0.999


def test_lossy_gate_fails_swapped_classes_at_high_cosine(scorer: nn.Module) -> None:
    def swap_top_two(y: np.ndarray) -> np.ndarray:
        order = np.argsort(-y, axis=1)[0]
        y = y.copy()
        y[0, order[0]], y[0, order[1]] = y[0, order[1]], y[0, order[0]]
        return y

    gate = _gate(scorer, swap_top_two)
    (out,) = gate.outputs
    assert out.top1 == 0.0 and out.top1_in_top5 == 1.0
    assert gate.failures() == ["scores: top-1 agreement 0/8, needs 6/8"]


def test_lossy_gate_fails_a_collapsed_output(scorer: nn.Module) -> None:
    gate = _gate(scorer, lambda y: np.zeros_like(y) + y.mean())
    assert not gate.passed
    assert any(line.startswith("scores: cosine") for line in gate.failures())
