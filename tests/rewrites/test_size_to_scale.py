"""Size-driven upsamples become scale-factor upsamples, so dense prediction converts flexibly.

Unit tests trace tiny heads; CLI tests convert a small FPN-style segmentation net
(nearest to the skip size, bilinear with aligned corners to the input size; timm-style
CA) and, marked slow, the ``ca_segnet`` sample; ``verify`` then checks two sizes.
"""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from conftest import assert_within
from torch import nn

from ca_export.patterns import OnnxView
from ca_export.rewrites import scale_upsamples
from ca_export.rewrites.size_to_scale import ATEN_ONLY, multiple, size_to_scale
from ca_export.tracing import trace
from cli.main import cli

FPN_NET = """
import torch
import torch.nn.functional as F
from torch import nn
from ca_zoo import TimmCA


class FpnSeg(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.down1 = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), nn.ReLU())
        self.down2 = nn.Sequential(nn.Conv2d(16, 24, 3, 2, 1), nn.ReLU(), TimmCA(24, 8))
        self.lateral = nn.Conv2d(16, 24, 1)
        self.head = nn.Conv2d(24, 3, 3, 1, 1)

    def forward(self, x):
        skip = self.down1(x)
        deep = self.down2(skip)
        up = F.interpolate(deep, size=skip.shape[-2:], mode="nearest")
        y = self.head(up + self.lateral(skip))
        return F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=True)


def fpn_seg():
    return FpnSeg().eval()
"""


class Head(nn.Module):
    """A stride-2 conv, then bilinear back to the input's size."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(self.conv(x), size=x.shape[-2:], mode="bilinear")


class PooledHead(Head):
    """Negative twin: pooled to fixed 3x3 bins (PSP-style), then up to the input's size."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bins = F.adaptive_avg_pool2d(self.conv(x), 3)
        return F.interpolate(bins, size=x.shape[-2:], mode="bilinear")


def _sizes(node: torch.fx.Node) -> object:
    return node.args[1]


def test_size_driven_upsample_becomes_a_scale_factor() -> None:
    model = Head().eval()
    program = trace(model, (2, 3, 8, 12), dynamic=True).program
    result = scale_upsamples(program)
    assert list(result.figures.values()) == [{"ratio": (2, 2), "multiple": (2, 2)}]
    assert multiple(result) == (2, 2) and result.skipped == {}
    (node,) = [n for n in program.graph.nodes if "upsample" in str(n.target)]
    assert _sizes(node) is None and node.args[3] == [2.0, 2.0]
    x = torch.randn(2, 3, 10, 14)
    with torch.no_grad():
        assert_within((model(x),), program.module()(x))


def test_upsample_from_fixed_bins_is_left_alone() -> None:
    program = trace(PooledHead().eval(), (2, 3, 8, 12), dynamic=True).program
    result = scale_upsamples(program)
    assert result.applied == {} and multiple(result) == (1, 1)
    assert list(result.skipped.values()) == ["the size is static"]
    (node,) = [n for n in program.graph.nodes if "upsample" in str(n.target)]
    assert _sizes(node) is not None


def test_static_trace_is_left_alone() -> None:
    program = trace(Head().eval(), (1, 3, 8, 12), dynamic=False).program
    result = scale_upsamples(program)
    assert result.applied == {} and set(result.skipped.values()) == {"the size is static"}


def _coreml(model: str, output: Path, *extra: str) -> tuple[int, str]:
    result = CliRunner().invoke(
        cli, ["coreml", model, "-o", str(output), "--input-shape", "1,3,64,64", "--dynamic", *extra]
    )
    return result.exit_code, result.output


def _verify(model: str, package: Path) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["verify", model, str(package), "--input-shape", "1,3,64,64"])
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def fpn(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    folder = tmp_path_factory.mktemp("fpn")
    (folder / "fpn_net.py").write_text(FPN_NET)
    return f"{folder / 'fpn_net.py'}:fpn_seg", folder


def test_fpn_net_converts_flexibly_and_verify_passes_two_sizes(fpn: tuple[str, Path]) -> None:
    model, folder = fpn
    package = folder / "fpn.mlpackage"
    code, text = _coreml(model, package, "--precision", "fp32")
    assert code == 0, text
    assert "scale factor 2x2, exact where H and W are multiples of 2 and 2" in text
    assert "scale factor 2x2, exact where H and W are multiples of 4 and 4" in text
    code, text = _verify(model, package)
    assert code == 0, text
    assert "ok   1x3x64x64 seed 1" in text and "ok   1x3x96x128 seed 1" in text
    assert "skipped" not in text


def test_enumerated_sizes_the_net_is_not_exact_at_exit_2(fpn: tuple[str, Path]) -> None:
    model, folder = fpn
    code, text = _coreml(model, folder / "bad.mlpackage", "--sizes", "64x64,66x64")
    assert code == 2, text
    assert "only where H is a multiple of 4 and W of 4; 66x64 is not" in text
    assert not (folder / "bad.mlpackage").exists()


@pytest.mark.slow
def test_segnet_dynamic_converts_and_verify_passes_two_sizes(tmp_path: Path) -> None:
    package = tmp_path / "seg.mlpackage"
    code, text = _coreml("ca_segnet", package)
    assert code == 0, text
    assert "fp32 arithmetic: passed" in text
    code, text = _verify("ca_segnet", package)
    assert code == 0, text
    assert "ok   1x3x96x128 seed 1" in text and "skipped" not in text


def test_an_onnx_graph_is_left_alone_with_the_reason() -> None:
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 3, 4, 4])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 3, 4, 4])
    graph = onnx.helper.make_graph([onnx.helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
    result = size_to_scale(OnnxView(onnx.helper.make_model(graph)), static=False)
    assert result.applied == {} and result.skipped == {"<graph>": ATEN_ONLY}
