"""``export.ncnn.pinned_ops``: ops taking a size computed from the input's H or W, which
TorchScript and pnnx would fix at the traced size (positive and negative twins)."""

from __future__ import annotations

import torch
from torch import nn

from ca_export.export import ncnn
from ca_export.tracing import trace

SHAPE = (1, 3, 16, 16)


class Grid(nn.Module):
    """Adds a column index grid read from the map's width (as a YOLO head's anchors)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + torch.arange(x.shape[3], dtype=x.dtype)


class Rows(nn.Module):
    """Flattens the map's positions with ``-1`` (as a detection head's decode)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(x.shape[0], x.shape[1], -1)


class Flatten(nn.Module):
    """Pools to 1x1 and flattens by the batch size only (a classifier's tail)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean((2, 3), keepdim=True).view(x.shape[0], -1)


def test_an_op_taking_the_width_is_named() -> None:
    program = trace(Grid(), SHAPE, dynamic=True).program
    found = ncnn.pinned_ops(program)
    assert found and all(p.op.startswith("aten.arange") and not p.by_shape for p in found)


def test_a_reshape_to_the_positions_is_named_even_with_minus_one() -> None:
    found = ncnn.pinned_ops(trace(Rows(), SHAPE, dynamic=True).program)
    assert found and all(p.op.startswith("aten.view") and p.by_shape for p in found)


def test_sizes_of_the_batch_alone_are_not() -> None:
    program = trace(Flatten(), SHAPE, dynamic=True).program
    views = [n for n in program.graph.nodes if "view" in str(n.target)]
    assert views  # the view takes the symbolic batch size
    assert ncnn.pinned_ops(program) == []


def test_a_static_trace_pins_nothing() -> None:
    assert ncnn.pinned_ops(trace(Grid(), SHAPE, dynamic=False).program) == []
