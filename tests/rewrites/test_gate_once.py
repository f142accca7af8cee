"""Rewrite ``gate_once``: ``x * a_w * a_h`` becomes ``x * (a_h @ a_w)``, exactly."""

from __future__ import annotations

import copy

import pytest
import torch
from ca_zoo import POSITIVE, OfficialCA, _build, _net, seeded_input
from conftest import assert_within
from test_rewrites import assert_same_interface
from torch.export import ExportedProgram
from torch.fx import Node

from ca_export.patterns import find
from ca_export.patterns.aten import AtenView
from ca_export.rewrites.gate_once import gate_once
from ca_export.rewrites.passes import Skip
from ca_export.tracing import trace

aten = torch.ops.aten
SHAPE = (1, 3, 12, 20)


class GroupedGateCA(OfficialCA):
    """The official block with the gate grouped by a broadcasting multiply."""

    def _combine(self, x: torch.Tensor, a_h: torch.Tensor, a_w: torch.Tensor) -> torch.Tensor:
        return x * (a_h * a_w)


def _apply(
    model: torch.nn.Module, shape: tuple[int, ...], dynamic: bool = False, times: int = 1
) -> tuple[ExportedProgram, ExportedProgram, list[Node | None]]:
    """Trace, apply ``gate_once`` alone ``times`` times to every block of a copy."""
    before = trace(model, shape, dynamic).program
    after = copy.deepcopy(before)
    view = AtenView(after.graph)
    blocks, _ = find(view)
    gates: list[Node | None] = []
    for _ in range(times):
        for block in blocks:
            try:
                gate_once(view, block, not dynamic)
            except Skip:
                gates.append(None)
                continue
            gates.append(view.operands(block.output)[1])
    after.graph.eliminate_dead_code()
    after.graph.lint()
    after.graph_module.recompile()
    return before, after, gates


def _official() -> torch.nn.Module:
    return next(c for c in POSITIVE if c.name == "official").build()


@pytest.mark.parametrize("dynamic", [False, True], ids=["static", "dynamic"])
def test_gate_is_one_matmul_of_the_strips_and_exact(dynamic: bool) -> None:
    model = _official()
    before, after, [gate] = _apply(model, SHAPE, dynamic)
    assert gate is not None and gate.target == aten.matmul.default
    a_h, a_w = gate.args
    assert [a.target for a in (a_h, a_w)] == [aten.sigmoid.default] * 2
    assert a_h.meta["val"].shape[3] == 1 and a_w.meta["val"].shape[2] == 1
    (output,) = gate.users
    assert output.target == aten.mul.Tensor and output.args[1] is gate
    assert output.meta["val"].shape == output.args[0].meta["val"].shape
    assert_same_interface(before, after)
    sizes = [SHAPE] + ([(2, 3, 9, 27)] if dynamic else [])
    for seed, size in enumerate(sizes):
        x = seeded_input(size, seed)
        assert_within((model(x),), after.module()(x))


def test_a_second_application_changes_nothing() -> None:
    _, after, gates = _apply(_official(), SHAPE, times=2)
    assert gates[0] is not None and gates[1] is None
    assert sum(n.target == aten.matmul.default for n in after.graph.nodes) == 1


def test_a_grouped_multiply_gate_becomes_a_matmul() -> None:
    model = _build(lambda: _net(32, GroupedGateCA(32, 8)), 1, SHAPE)
    _, after, [gate] = _apply(model, SHAPE)
    assert gate is not None and gate.target == aten.matmul.default
    x = seeded_input(SHAPE, 3)
    assert_within((model(x),), after.module()(x))


def test_gates_that_are_not_strips_keep_a_multiply() -> None:
    case = next(c for c in POSITIVE if c.name == "seed")
    model = case.build()
    _, after, [gate] = _apply(model, case.input_shape)
    assert gate is not None and gate.target == aten.mul.Tensor
    assert not any(n.target == aten.matmul.default for n in after.graph.nodes)
    x = seeded_input(case.input_shape, 3)
    assert_within((model(x),), after.module()(x))
