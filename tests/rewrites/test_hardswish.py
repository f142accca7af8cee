"""Rewrite ``hardswish``: a written-out ``x * relu6(x + 3) / 6`` becomes one op."""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from ca_zoo import seeded_input
from conftest import comparisons
from torch import nn

from ca_export.patterns.aten import AtenView
from ca_export.patterns.hswish import h_sigmoid
from ca_export.rewrites.hardswish import fuse_ends
from ca_export.tracing import trace

aten = torch.ops.aten
SHAPE = (1, 3, 8, 8)


class Net(nn.Module):
    """A 1x1 conv, then ``act(conv(x), x)``."""

    def __init__(self, act: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1)
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv(x), x)


def _clip_read_twice(y: torch.Tensor) -> torch.Tensor:
    """h_swish written out, with its clip also read elsewhere."""
    clip = F.relu6(y + 3)
    return y * clip / 6 + clip


def _fused(act: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> tuple[int, bool]:
    """How many h_swish were fused, and whether the result matches the module."""
    torch.manual_seed(0)
    model = Net(act).eval()
    program = copy.deepcopy(trace(model, SHAPE, False).program)
    fused = fuse_ends(AtenView(program.graph), list(program.graph.nodes), "hswish")
    program.graph.eliminate_dead_code()
    program.graph.lint()
    program.graph_module.recompile()
    x = seeded_input(SHAPE, 1) * 4
    with torch.no_grad():
        close = all(c.passed for c in comparisons(model(x), program.module()(x)[0]))
    return fused, close


@pytest.mark.parametrize(
    "act",
    [
        pytest.param(lambda y, _: y * F.relu6(y + 3) / 6, id="relu6"),
        pytest.param(lambda y, _: F.relu6(y + 3) / 6 * y, id="operands-swapped"),
        pytest.param(lambda y, _: y * F.hardtanh(y + 3, 0.0, 6.0) / 6, id="hardtanh"),
        pytest.param(lambda y, _: y * (F.relu6(y + 3) * (1 / 6)), id="mul-sixth"),
        pytest.param(lambda y, _: y * F.relu6(y + 3) * (1 / 6), id="mul-sixth-last"),
    ],
)
def test_written_out_hswish_is_fused_exactly(act: Callable) -> None:
    assert _fused(act) == (1, True)


@pytest.mark.parametrize(
    "act",
    [
        pytest.param(lambda y, _: y * F.relu6(y + 3) / 5, id="divisor-5"),
        pytest.param(lambda y, _: y * (F.relu6(y + 3) * (1 / 5)), id="mul-fifth"),
        pytest.param(lambda y, _: y * F.relu6(y + 2) / 6, id="offset-2"),
        pytest.param(lambda y, x: x * F.relu6(y + 3) / 6, id="other-multiplicand"),
        pytest.param(lambda y, _: y * F.hardtanh(y + 3, -1.0, 6.0) / 6, id="clip-from-minus-1"),
        pytest.param(lambda y, _: _clip_read_twice(y), id="clip-read-twice"),
    ],
)
def test_near_misses_are_left_alone(act: Callable) -> None:
    assert _fused(act) == (0, True)


@pytest.mark.parametrize(
    ("gate", "found"),
    [
        pytest.param(lambda y: F.relu6(y + 3) / 6, True, id="div-6"),
        pytest.param(lambda y: F.relu6(y + 3) * (1 / 6), True, id="mul-sixth"),
        pytest.param(lambda y: F.relu6(y + 3) * (1 / 5), False, id="mul-fifth"),
    ],
)
def test_one_hard_sigmoid_recogniser_reads_both_ways_to_divide(
    gate: Callable[[torch.Tensor], torch.Tensor], found: bool
) -> None:
    """The gate rule the matcher uses: ``/ 6`` and ``* (1/6)`` are the same gate, ``* (1/5)``
    is not."""
    program = trace(Net(lambda y, _: gate(y)).eval(), SHAPE, False).program
    view = AtenView(program.graph)
    conv = next(n for n in program.graph.nodes if n.target == aten.conv2d.default)
    ends = [(op, got) for op in view.ops() if (got := h_sigmoid(view, op)) is not None]
    assert [got[0] for _, got in ends] == ([conv] if found else [])
