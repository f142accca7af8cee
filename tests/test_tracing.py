"""Bounded dynamic traces: H/W bounds, the multiples a model needs, a static batch."""

from __future__ import annotations

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
