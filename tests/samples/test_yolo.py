"""YOLO-style samples: CA detection on the ATen graph, export, and ``optimize`` on files as
the TorchScript-based exporter writes them without a simplifier (legacy exports).

Every detection test has a negative twin: the detector without its CA blocks (C2f, SPPF,
neck and head only), a pool -> transpose -> concat that is not CA, a gate whose Clip
bounds are not (0, 6).
"""

from __future__ import annotations

import contextlib
import copy
import io
import sys
import warnings
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path

import onnx
import onnxsim
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner, Result
from conftest import CPU_FP32, assert_within
from onnx import TensorProto, helper
from onnx.shape_inference import InferenceError
from torch import nn

from ca_export.onnx_graph import normalize
from ca_export.patterns import find
from ca_export.patterns.onnx_proto import OnnxView
from ca_export.pipeline import OnnxJob, export_onnx
from ca_export.pipeline.optimize import OptimizeJob, optimize_onnx
from ca_export.tracing import trace
from cli.main import cli
from sample_models import CA_BLOCKS, build
from sample_models.yolo import CoordAtt, YoloCA

SHAPE = (1, 3, 64, 64)
DETECTOR_CHANNELS = [32, 48, 64, 96]
CLASSIFIER_CHANNELS = [32, 48]
Legacy = Callable[[str, int, bool], Path]


@cache
def _sample(name: str) -> nn.Module:
    return build(name)


def _fresh(name: str) -> nn.Module:
    """A copy no forward has touched since its build (the head's anchor cache is empty)."""
    return copy.deepcopy(_sample(name))


def _quiet_export(model: nn.Module, path: Path, opset: int, shape: tuple[int, ...]) -> None:
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), path, dynamo=False, opset_version=opset)


@pytest.fixture(scope="session")
def legacy(tmp_path_factory: pytest.TempPathFactory) -> Legacy:
    """``legacy(name, opset, simplified)``: a plain ``torch.onnx.export(dynamo=False)`` file at
    64x64, or its onnxsim twin; made once."""
    root = tmp_path_factory.mktemp("legacy")
    done: dict[tuple[str, int, bool], Path] = {}

    def get(name: str, opset: int, simplified: bool) -> Path:
        key = (name, opset, simplified)
        if key not in done:
            raw = root / f"{name}_{opset}.onnx"
            if not raw.exists():
                _quiet_export(_fresh(name), raw, opset, SHAPE)
            path = raw
            if simplified:
                path = root / f"{name}_{opset}_sim.onnx"
                model, ok = onnxsim.simplify(onnx.load(raw))
                assert ok
                onnx.save(model, path)
            done[key] = path
        return done[key]

    return get


# ----------------------------------------------------------------- the samples in PyTorch


def test_detector_returns_predictions_and_maps_and_caches_anchors() -> None:
    model = _fresh("yolo_ca")
    assert "anchors" not in vars(model.detect), "the cache starts empty (class defaults)"
    with torch.no_grad():
        predictions, maps = model(torch.randn(SHAPE))
        assert predictions.shape == (1, 4 + 4, 8 * 8 + 4 * 4 + 2 * 2)
        assert [tuple(m.shape[2:]) for m in maps] == [(8, 8), (4, 4), (2, 2)]
        assert vars(model.detect)["anchors"].shape == (2, 84)
        model(torch.randn(1, 3, 96, 64))
    assert vars(model.detect)["anchors"].shape == (2, 12 * 8 + 6 * 4 + 3 * 2)


@pytest.mark.parametrize(
    ("name", "channels"), [("yolo_ca", DETECTOR_CHANNELS), ("yolo_cls_ca", CLASSIFIER_CHANNELS)]
)
def test_every_ca_block_found(name: str, channels: list[int]) -> None:
    model = _fresh(name)
    blocks, rejected = find(trace(model, SHAPE, dynamic=False).program.graph)
    assert [b.channels for b in blocks] == channels
    owners = {n for n, m in model.named_modules() if isinstance(m, CoordAtt)}
    assert {b.module for b in blocks} == owners
    assert rejected == []


def test_detector_without_ca_has_no_block() -> None:
    """Negative twin: C2f channel split/concat, SPPF, neck and head concats are not CA."""
    model = _fresh("yolo_ca")
    assert isinstance(model, YoloCA)
    for stage in (model.stage2, model.stage3, model.stage4, model.stage5):
        stage[2] = nn.Identity()
    graph = trace(model, SHAPE, dynamic=False).program.graph
    cats = [n for n in graph.nodes if n.target == torch.ops.aten.cat.default]
    assert len(cats) >= 10
    assert find(graph) == ([], [])


# ----------------------------------------------------------------- ca-export onnx


@pytest.mark.parametrize(
    "dynamic",
    [False, pytest.param(True, marks=pytest.mark.slow)],
    ids=["static", "dynamic"],
)
def test_detector_onnx_export_passes_gate(dynamic: bool, tmp_path: Path) -> None:
    out = tmp_path / "det.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = export_onnx(OnnxJob("yolo_ca", out, None, SHAPE, dynamic=dynamic))
    assert report.parity.ok and out.exists()
    assert [b.rewritten for b in report.ca_blocks] == [True] * CA_BLOCKS["yolo_ca"]


# ----------------------------------------------------------------- optimize on legacy exports


@pytest.mark.parametrize("opset", [12, 17])
def test_legacy_export_gives_the_blocks_of_its_simplified_twin(
    opset: int, legacy: Legacy, tmp_path: Path
) -> None:
    raw = legacy("yolo_ca", opset, False)
    assert any(n.op_type == "Constant" for n in onnx.load(raw).graph.node)
    twin = optimize_onnx(OptimizeJob(legacy("yolo_ca", opset, True), tmp_path / "twin.onnx"))
    report = optimize_onnx(OptimizeJob(raw, tmp_path / "out.onnx"))
    assert [b.channels for b in report.ca_blocks] == [b.channels for b in twin.ca_blocks]
    assert [b.channels for b in report.ca_blocks] == DETECTOR_CHANNELS
    assert report.passed and report.parity.figures.inputs == 3
    assert all(b.rewritten and not b.ca_only_nodes_after for b in report.ca_blocks)
    assert report.normalize["modified"] and report.normalize["constants"][1] == 0
    assert report.skipped == [] and (tmp_path / "out.onnx").exists()


def test_dynamic_legacy_detector_fails_on_its_baked_anchor_grid(
    legacy: Legacy, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """The exporter baked the head's anchor grid for 64x64: the second size (H doubled, W kept,
    still multiples of 32) fails, with ONNX Runtime's error and without its log line."""
    out = tmp_path / "dyn.onnx"
    args = ["optimize", str(legacy("yolo_ca", 17, False)), "-o", str(out), "--dynamic"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1
    assert "FAILED to run at {'input.1': [1, 3, 128, 64]}" in result.output
    assert "'/detect/Add'" in result.output
    assert "[E:onnxruntime" not in capfd.readouterr().err
    assert not out.exists()


def test_normalize_folds_constants_and_records_shapes(legacy: Legacy) -> None:
    raw = onnx.load(legacy("yolo_ca", 12, False))
    result = normalize(raw)
    assert raw.graph.value_info == [] and result.constants_before > 0
    assert result.constants_after == 0 and result.nodes_after < result.nodes_before
    assert len(result.model.graph.value_info) > 0
    assert result.model.opset_import == raw.opset_import
    assert [o.name for o in result.model.graph.output] == [o.name for o in raw.graph.output]


def _size_read_model() -> onnx.ModelProto:
    """``y = x + W`` with W read from ``Shape(x)``: a value computed from the input size."""
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Gather", ["s", "three"], ["w"]),
        helper.make_node("Cast", ["w"], ["wf"], to=TensorProto.FLOAT),
        helper.make_node("Add", ["x", "wf"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 4, 6])],
        [helper.make_tensor("three", TensorProto.INT64, [], [3])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("keep_sizes", [False, True])
def test_normalize_bakes_sizes_only_when_allowed(keep_sizes: bool) -> None:
    model = normalize(_size_read_model(), keep_sizes=keep_sizes).model
    assert any(n.op_type == "Shape" for n in model.graph.node) == keep_sizes
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 2, 4, 6]


class _HSigmoidGateCA(nn.Module):
    """CA block whose gates are ``relu6(x + 3) / 6`` (Clip(0, 6)); ``top`` other than 6 makes
    the look-alike whose Clip bounds are not a hard sigmoid's."""

    def __init__(self, channels: int, top: float = 6.0) -> None:
        super().__init__()
        self.top = top
        self.conv1 = nn.Conv2d(channels, 8, 1)
        self.conv_h = nn.Conv2d(8, channels, 1)
        self.conv_w = nn.Conv2d(8, channels, 1)

    def _gate(self, x: torch.Tensor) -> torch.Tensor:
        return F.hardtanh(x + 3, 0.0, self.top) / 6

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, _, h, w = x.shape
        x_h = F.adaptive_avg_pool2d(x, (None, 1))
        x_w = F.adaptive_avg_pool2d(x, (1, None)).permute(0, 1, 3, 2)
        y = torch.relu(self.conv1(torch.cat([x_h, x_w], dim=2)))
        y_h, y_w = torch.split(y, [h, w], dim=2)
        return x * self._gate(self.conv_h(y_h)) * self._gate(self.conv_w(y_w.permute(0, 1, 3, 2)))


def _opset10_find(top: float, tmp_path: Path) -> tuple[list, list]:
    path = tmp_path / "ca10.onnx"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), _HSigmoidGateCA(16, top)).eval()
    _quiet_export(model, path, 10, (1, 3, 12, 20))
    clips = [n for n in onnx.load(path).graph.node if n.op_type == "Clip"]
    assert clips and all(len(c.input) == 1 and c.attribute for c in clips), "attribute-form Clip"
    return find(normalize(onnx.load(path)).model)


def test_clip_bounds_from_attributes_at_opset_10(tmp_path: Path) -> None:
    (block,), rejections = _opset10_find(6.0, tmp_path)
    assert block.variant["gate"] == "h_sigmoid" and block.channels == 16
    assert rejections == []


def test_clip_attribute_bounds_that_are_not_h_sigmoid(tmp_path: Path) -> None:
    blocks, rejections = _opset10_find(5.0, tmp_path)
    assert blocks == []
    assert ["not followed by Sigmoid or HardSigmoid" in r.reason for r in rejections] == [True]


class _PooledConcat(nn.Module):
    """Look-alike: a 2x2 average pool, transposed, concatenated with x along H."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        pooled = F.avg_pool2d(x, 2).transpose(2, 3)
        return torch.cat([x, pooled], dim=2).sigmoid()


def test_pool_transpose_concat_that_is_not_ca_is_reported(tmp_path: Path) -> None:
    source = tmp_path / "pooled.onnx"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        _quiet_export(_PooledConcat().eval(), source, 17, (1, 3, 8, 4))
    out = tmp_path / "out.onnx"
    result = CliRunner().invoke(cli, ["optimize", str(source), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "CA blocks: 0 found" in result.output
    assert "not a pool over one spatial axis" in result.output
    assert "see the skipped pooled concats" in result.output
    assert not out.exists()


def _custom_op_file(legacy: Legacy, tmp_path: Path, where: str = "/stem/") -> Path:
    """The opset-17 detector with the first Sigmoid under ``where`` replaced by ONNX Runtime's
    contrib op ``com.microsoft::QuickGelu`` (``x * sigmoid(x)``): ONNX Runtime runs it, ONNX
    shape inference does not know it."""
    model = onnx.load(legacy("yolo_ca", 17, False))
    node = next(n for n in model.graph.node if n.op_type == "Sigmoid" and where in n.name)
    node.op_type, node.domain = "QuickGelu", "com.microsoft"
    node.attribute.append(helper.make_attribute("alpha", 1.0))
    model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    path = tmp_path / "custom.onnx"
    onnx.save(model, path)
    return path


def test_custom_domain_op_is_the_reason(legacy: Legacy, tmp_path: Path) -> None:
    source = _custom_op_file(legacy, tmp_path)
    report = optimize_onnx(OptimizeJob(source, tmp_path / "out.onnx"))
    assert report.ca_blocks == []
    assert len(report.skipped) == CA_BLOCKS["yolo_ca"]
    assert all("custom domain 'com.microsoft' (QuickGelu)" in s["reason"] for s in report.skipped)
    result = CliRunner().invoke(cli, ["optimize", str(source), "-o", str(tmp_path / "o.onnx")])
    assert result.exit_code == 0
    assert result.output.count("custom domain 'com.microsoft'") == CA_BLOCKS["yolo_ca"]


def test_dynamic_kept_static_when_a_pool_shape_is_unknown(legacy: Legacy, tmp_path: Path) -> None:
    """After the CA blocks, SPPF's max pools read a custom op's output: whether they are baked
    for 64x64 cannot be told, so H/W stay static and the reason names the op."""
    source = _custom_op_file(legacy, tmp_path, where="/stage5.3/cv1/")
    report = optimize_onnx(OptimizeJob(source, tmp_path / "out.onnx", dynamic=True))
    assert len(report.ca_blocks) == CA_BLOCKS["yolo_ca"] and report.passed
    assert not report.dynamic["applied"]
    assert "cannot tell whether MaxPool" in report.dynamic["reason"]
    assert "custom domain 'com.microsoft' (QuickGelu)" in report.dynamic["reason"]


def test_shape_inference_failure_is_reported(
    legacy: Legacy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(*_args: object, **_kwargs: object) -> onnx.ModelProto:
        raise InferenceError("[ShapeInferenceError] (op_type:Split): inferred shape differs")

    monkeypatch.setattr("ca_export.onnx_graph.facts.onnx.shape_inference.infer_shapes", fail)
    raw = onnx.load(legacy("yolo_ca", 12, False))
    view = OnnxView(raw)
    assert view.shape_error is not None and "op_type:Split" in view.shape_error
    blocks, rejections = find(view)
    assert blocks == [] and len(rejections) == CA_BLOCKS["yolo_ca"]
    assert all("shape inference failed: [ShapeInferenceError]" in r.reason for r in rejections)
    report = optimize_onnx(OptimizeJob(legacy("yolo_ca", 12, False), tmp_path / "out.onnx"))
    assert len(report.ca_blocks) == CA_BLOCKS["yolo_ca"], "the folder's per-node shapes stand in"
    assert any("ONNX shape inference failed" in w for w in report.warnings)
    assert report.passed


def test_optimized_legacy_detector_matches_pytorch(legacy: Legacy, tmp_path: Path) -> None:
    """The rewritten legacy file against the PyTorch detector itself (not only against IN)."""
    out = tmp_path / "out.onnx"
    assert optimize_onnx(OptimizeJob(legacy("yolo_ca", 17, False), out)).passed
    import onnxruntime as ort

    x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        predictions, maps = _fresh("yolo_ca")(x)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    for want, have in zip([predictions, *maps], got, strict=True):
        assert_within(want, have, CPU_FP32)


# ----------------------------------------------------------------- a fork-style repo

FORK = Path(__file__).parents[1] / "data" / "fork_repo"


@pytest.fixture
def in_fork(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """cwd = the fork's root, with no ``models`` package cached from elsewhere."""
    for name in [m for m in sys.modules if m == "models" or m.startswith("models.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.syspath_prepend(str(FORK))
    monkeypatch.chdir(FORK)
    yield FORK
    for name in [m for m in sys.modules if m == "models" or m.startswith("models.")]:
        del sys.modules[name]


def test_fork_classifier_exports_from_repo_root(in_fork: Path, tmp_path: Path) -> None:
    out = tmp_path / "cls.onnx"
    args = ["onnx", "models/yolo.py:classifier", "-o", str(out), "--input-shape", "1,3,64,64"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "CA blocks: 1 found, 1 rewritten" in result.output
    assert "parity vs PyTorch (onnxruntime-cpu, 3 inputs): passed" in result.output
    assert out.exists()


def test_fork_detector_legacy_export_optimized(in_fork: Path, tmp_path: Path) -> None:
    from models.yolo import detector

    source, out = tmp_path / "det.onnx", tmp_path / "det.opt.onnx"
    _quiet_export(detector(), source, 12, SHAPE)
    result = CliRunner().invoke(cli, ["optimize", str(source), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "CA blocks: 2 found, 2 rewritten" in result.output
    assert out.exists()


@pytest.mark.slow
def test_fork_detector_dynamic_core_ml_verify_and_best_pt(in_fork: Path, tmp_path: Path) -> None:
    from models.yolo import detector

    def run(*args: str | Path) -> Result:
        return CliRunner().invoke(cli, [str(a) for a in args])

    shape = ["--input-shape", "1,3,64,64"]
    dyn, package = tmp_path / "det.dyn.onnx", tmp_path / "det.mlpackage"
    result = run("onnx", "models/yolo.py:detector", *shape, "--dynamic", "-o", dyn)
    assert result.exit_code == 0, result.output
    assert "CA blocks: 2 found, 2 rewritten" in result.output
    result = run("coreml", "models/yolo.py:detector", *shape, "--precision", "fp32", "-o", package)
    assert result.exit_code == 0, result.output
    assert "check mil_parity: passed" in result.output
    result = run("verify", "models/yolo.py:detector", dyn, package, *shape)
    assert result.exit_code == 0, result.output
    torch.save({"model": detector().half(), "ema": None}, tmp_path / "best.pt")
    refused = run("onnx", tmp_path / "best.pt", *shape, "-o", tmp_path / "best.onnx")
    assert refused.exit_code == 2 and "--trust-pickle" in refused.stderr
    assert not (tmp_path / "best.onnx").exists()
    result = run(
        "onnx", tmp_path / "best.pt", *shape, "--trust-pickle", "-o", tmp_path / "best.onnx"
    )
    assert result.exit_code == 0, result.output
    assert "cast to fp32" in result.output and (tmp_path / "best.onnx").exists()
