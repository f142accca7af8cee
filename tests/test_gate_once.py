"""Rewrite ``gate_once``: ``x * a_w * a_h`` becomes ``x * (a_h * a_w)``, exactly."""

from __future__ import annotations

import copy

import pytest
import torch
from ca_zoo import POSITIVE, OfficialCA, _build, _net, seeded_input
from test_rewrites import assert_same_interface

from ca_export.patterns import find
from ca_export.rewrites.gate_once import gate_once
from ca_export.tracing import trace

aten = torch.ops.aten
SHAPE = (1, 3, 12, 20)


class GroupedGateCA(OfficialCA):
    """The official block with the gate already built once: ``x * (a_h * a_w)``."""

    def _combine(self, x: torch.Tensor, a_h: torch.Tensor, a_w: torch.Tensor) -> torch.Tensor:
        return x * (a_h * a_w)


def _apply(model: torch.nn.Module, dynamic: bool) -> tuple[object, object, list]:
    """Trace, apply ``gate_once`` alone to every block of a copy; (before, after, gates)."""
    before = trace(model, SHAPE, dynamic).program
    after = copy.deepcopy(before)
    blocks, _ = find(after.graph)
    gates = [gate_once(after.graph, block) for block in blocks]
    after.graph.eliminate_dead_code()
    after.graph.lint()
    after.graph_module.recompile()
    return before, after, gates


@pytest.mark.parametrize("dynamic", [False, True], ids=["static", "dynamic"])
def test_gate_built_once_is_exact(dynamic: bool) -> None:
    case = next(c for c in POSITIVE if c.name == "official")
    model = case.build()
    before, after, gates = _apply(model, dynamic)
    assert len(gates) == 1 and gates[0] is not None
    gate = gates[0]
    assert gate.target == aten.mul.Tensor and len(gate.users) == 1
    output = next(iter(gate.users))
    assert [a.target for a in gate.args] == [aten.sigmoid.default] * 2
    assert output.args[1] is gate and output.target == aten.mul.Tensor
    assert tuple(output.meta["val"].shape) == tuple(output.args[0].meta["val"].shape)
    muls = [n for n in after.graph.nodes if n.target == aten.mul.Tensor]
    assert len(muls) == len([n for n in before.graph.nodes if n.target == aten.mul.Tensor])
    assert_same_interface(before, after)
    sizes = [SHAPE] + ([(2, 3, 9, 27)] if dynamic else [])
    for seed, size in enumerate(sizes):
        x = seeded_input(size, seed)
        torch.testing.assert_close(after.module()(x), model(x), rtol=1e-6, atol=1e-6)


def test_gate_already_built_once_is_left_alone() -> None:
    model = _build(lambda: _net(32, GroupedGateCA(32, 8)), 1, SHAPE)
    before, after, gates = _apply(model, False)
    assert gates == [None]
    assert after.graph_module.code == before.graph_module.code
