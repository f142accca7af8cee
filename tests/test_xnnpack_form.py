"""The xnnpack rewrite form: ``broadcast_gate`` and ``swap_as_view``, exact, with twins."""

from __future__ import annotations

import pytest
import torch
from ca_zoo import NEGATIVE, POSITIVE, ZooCase, seeded_input
from torch.export import ExportedProgram

from ca_export.errors import BadInputError
from ca_export.patterns import find
from ca_export.rewrites import rewrite
from ca_export.tracing import trace

aten = torch.ops.aten


def _case(name: str) -> ZooCase:
    return next(c for c in POSITIVE if c.name == name)


def _xnnpack_form(
    case: ZooCase, dynamic: bool = False
) -> tuple[torch.nn.Module, ExportedProgram, ExportedProgram]:
    model = case.build()
    before = trace(model, case.input_shape, dynamic=dynamic).program
    return model, before, rewrite(before, static=not dynamic, form="xnnpack").program


def _targets(program: ExportedProgram) -> set[object]:
    return {n.target for n in program.graph.nodes}


@pytest.mark.parametrize("name", ["official", "seed"])
def test_xnnpack_form_gates_by_two_broadcasting_multiplies_exactly(name: str) -> None:
    case = _case(name)
    model, before, after = _xnnpack_form(case)
    blocks, _ = find(before.graph)
    outputs = [n for n in after.graph.nodes if n.name == blocks[0].output.name]
    (output,) = outputs
    inner, a_w = output.args
    assert output.target == inner.target == aten.mul.Tensor
    x, a_h = inner.args
    assert x.name == blocks[0].source.name
    assert a_h.target == a_w.target == aten.sigmoid.default
    assert not any(n.target == aten.matmul.default for n in after.graph.nodes)
    assert not rewrite(after, static=True, form="xnnpack").modified
    x_in = seeded_input(case.input_shape, 3)
    torch.testing.assert_close(after.module()(x_in), (model(x_in),), rtol=1e-6, atol=1e-6)


def test_a_wrong_gate_twin_is_caught_by_the_same_comparison() -> None:
    case = _case("official")
    model, before, after = _xnnpack_form(case)
    (block,) = find(before.graph)[0]
    output = next(n for n in after.graph.nodes if n.name == block.output.name)
    inner, _ = output.args
    output.args = (inner, inner.args[1])
    after.graph_module.recompile()
    x_in = seeded_input(case.input_shape, 3)
    with pytest.raises(AssertionError, match="Mismatched elements"):
        torch.testing.assert_close(after.module()(x_in), (model(x_in),), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("case", NEGATIVE, ids=lambda c: c.name)
def test_look_alikes_are_left_alone_by_the_xnnpack_form(case: ZooCase) -> None:
    program = trace(case.build(), case.input_shape, dynamic=False).program
    assert not rewrite(program, static=True, form="xnnpack").modified


def test_an_unknown_form_is_refused() -> None:
    program = trace(_case("official").build(), _case("official").input_shape, False).program
    with pytest.raises(BadInputError, match="unknown rewrite form"):
        rewrite(program, static=True, form="tflite")


def test_the_seed_quirk_swap_becomes_one_exact_view() -> None:
    case = _case("seed")
    model, before, after = _xnnpack_form(case)
    assert aten.squeeze.dims not in _targets(after)
    assert aten.unsqueeze.default not in _targets(after)
    views = [n for n in after.graph.nodes if n.target == aten.view.default]
    gate_convs = [u for v in views for u in v.users if u.target == aten.conv2d.default]
    assert len(gate_convs) == len(find(before.graph)[0]) == 1
    assert list(views[0].args[1])[2] == 1
    x_in = seeded_input(case.input_shape, 5)
    torch.testing.assert_close(after.module()(x_in), (model(x_in),), rtol=1e-6, atol=1e-6)


def test_the_onnx_form_keeps_the_swap_and_a_dynamic_trace_keeps_it_too() -> None:
    case = _case("seed")
    onnx_form = rewrite(trace(case.build(), case.input_shape, False).program, True, "onnx")
    assert aten.squeeze.dims in _targets(onnx_form.program)
    _, _, dynamic = _xnnpack_form(case, dynamic=True)
    assert aten.squeeze.dims in _targets(dynamic)


def test_blocks_that_transpose_back_get_no_view() -> None:
    _, before, after = _xnnpack_form(_case("official"))
    assert aten.view.default not in _targets(after) - _targets(before)
