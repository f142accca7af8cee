"""Traces: bounded dynamic H/W (bounds, the multiples a model needs, a static batch), and
in-place ops made out of place where that is safe."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ca_export.tracing import Traced, trace


class EvenOnly(nn.Module):
    """Concatenates the input with a stride-2 conv upsampled back: H and W must be even."""

    def __init__(self) -> None:
        super().__init__()
        self.down = nn.Conv2d(3, 3, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        up = F.interpolate(self.down(x), scale_factor=2.0, mode="nearest")
        return torch.cat([x, up], dim=1)


class AnySize(nn.Module):
    """A 3x3 conv: any H and W."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def _input_shape(traced: Traced) -> tuple[object, ...]:
    nodes = traced.program.graph.nodes
    return tuple(next(n for n in nodes if n.name == traced.input_names[0]).meta["val"].shape)


def test_a_bounded_trace_keeps_the_batch_and_bounds_h_and_w() -> None:
    traced = trace(AnySize().eval(), (1, 3, 16, 24), dynamic=True, bounded=True)
    assert traced.bounds is not None
    assert traced.bounds.describe("h") == {"min": 16, "max": 32, "multiple_of": 1}
    assert traced.bounds.describe("w") == {"min": 24, "max": 48, "multiple_of": 1}
    batch, channels, h, w = _input_shape(traced)
    assert (batch, channels) == (1, 3) and not isinstance(h, int) and not isinstance(w, int)
    assert traced.bounds.other_sizes(square_only=False) == [(32, 36), (24, 48)]


def test_a_model_that_needs_even_sizes_gets_multiples_of_two() -> None:
    model = EvenOnly().eval()
    traced = trace(model, (1, 3, 16, 16), dynamic=True, bounded=True)
    assert traced.bounds is not None
    assert traced.bounds.h == tuple(range(16, 33, 2)) == traced.bounds.w
    assert traced.bounds.describe("h")["multiple_of"] == 2
    assert traced.bounds.other_sizes(square_only=True) == [(32, 32), (24, 24)]
    x = torch.randn(1, 3, 20, 28)
    with torch.no_grad():
        torch.testing.assert_close(traced.program.module()(x), (model(x),))


def test_an_unbounded_dynamic_trace_has_no_bounds() -> None:
    traced = trace(AnySize().eval(), (1, 3, 16, 24), dynamic=True)
    assert traced.bounds is None
    assert not isinstance(_input_shape(traced)[0], int)


class ConvBN(nn.Module):
    """A 1x1 conv and BN (which stays ``aten.batch_norm`` unless the trace decomposes)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)
        self.bn = nn.BatchNorm2d(4)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))


class FreshInPlace(ConvBN):
    """In-place ops, each on a fresh tensor nothing else reads: ReLU6(inplace), relu_ and
    the seed's ``transpose_`` of a pool."""

    def __init__(self) -> None:
        super().__init__()
        self.act = nn.ReLU6(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self.features(x) + 3).relu_()
        return y * F.adaptive_avg_pool2d(y, (1, None)).transpose_(2, 3).sum()


class AliasedInPlace(ConvBN):
    """Twin of ``FreshInPlace`` whose ``relu_`` writes a view: it changes ``y`` too."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.features(x)
        y[:, :2].relu_()
        return y * 2


class ReadInPlace(ConvBN):
    """Twin of ``FreshInPlace`` whose ``relu_`` writes a tensor a view was taken of before:
    the view sees the write, which an out-of-place ``relu`` would lose."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.features(x)
        flat = y.flatten(1)
        y.relu_()
        return flat * 2


def _in_place_ops(traced: Traced) -> list[str]:
    return [
        str(n.target)
        for n in traced.program.graph.nodes
        if isinstance(n.target, torch._ops.OpOverload) and n.target._schema.is_mutable
    ]


def _targets(traced: Traced) -> set[str]:
    return {str(n.target) for n in traced.program.graph.nodes if n.op == "call_function"}


def test_in_place_ops_on_fresh_tensors_are_made_out_of_place_without_decomposing() -> None:
    model = FreshInPlace().eval()
    x = torch.randn(1, 3, 8, 8)
    traced = trace(model, tuple(x.shape), dynamic=False, decompose=False)
    assert _in_place_ops(traced) == []
    assert {"aten.hardtanh.default", "aten.relu.default", "aten.transpose.int"} <= _targets(traced)
    assert "aten.batch_norm.default" in _targets(traced)
    assert torch.equal(traced.program.module()(x)[0], model(x)), "the same ops: bit-identical"


@pytest.mark.parametrize("make", [AliasedInPlace, ReadInPlace])
def test_an_in_place_op_on_a_view_or_a_shared_tensor_makes_the_trace_decompose(
    make: type[nn.Module],
) -> None:
    model = make().eval()
    x = torch.randn(1, 3, 8, 8)
    traced = trace(model, tuple(x.shape), dynamic=False, decompose=False)
    assert _in_place_ops(traced) == []
    assert "aten.batch_norm.default" not in _targets(traced)
    assert torch.equal(traced.program.module()(x)[0], model(x)), "the same ops: bit-identical"
