"""The xnnpack rewrite form: ``broadcast_gate``, ``swap_as_view``/``swap_as_permute``,
``float_hardsigmoid`` and ``global_strip_pool``, exact, with twins."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import onnx
import pytest
import torch
from ca_zoo import NEGATIVE, POSITIVE, ZooCase, seeded_input
from conftest import assert_within, comparisons
from torch.export import ExportedProgram

from ca_export.errors import BadInputError
from ca_export.patterns import find
from ca_export.patterns.aten import AtenView
from ca_export.rewrites import rewrite, rewrite_model
from ca_export.rewrites.float_hardsigmoid import float_hardsigmoid
from ca_export.rewrites.passes import EXECUTORCH_ONLY, Skip
from ca_export.tracing import Traced, trace

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
    assert_within((model(x_in),), after.module()(x_in))


def test_a_wrong_gate_twin_is_caught_by_the_same_comparison() -> None:
    case = _case("official")
    model, before, after = _xnnpack_form(case)
    (block,) = find(before.graph)[0]
    output = next(n for n in after.graph.nodes if n.name == block.output.name)
    inner, _ = output.args
    output.args = (inner, inner.args[1])
    after.graph_module.recompile()
    x_in = seeded_input(case.input_shape, 3)
    assert not any(c.passed for c in comparisons((model(x_in),), after.module()(x_in)))


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
    assert_within((model(x_in),), after.module()(x_in))


def test_the_onnx_form_keeps_the_swap_and_a_dynamic_trace_swaps_by_permute() -> None:
    case = _case("seed")
    onnx_form = rewrite(trace(case.build(), case.input_shape, False).program, True, "onnx")
    assert aten.squeeze.dims in _targets(onnx_form.program)
    model, _, dynamic = _xnnpack_form(case, dynamic=True)
    assert aten.squeeze.dims not in _targets(dynamic)
    assert aten.view.default not in _targets(dynamic)
    swaps = [n for n in dynamic.graph.nodes if n.target == aten.permute.default]
    assert [list(n.args[1]) for n in swaps] == [[0, 1, 3, 2]]
    assert swaps[0].users and all(u.target == aten.conv2d.default for u in swaps[0].users)
    x_in = seeded_input((2, 3, 24, 24), 5)
    assert_within((model(x_in),), dynamic.module()(x_in))


def test_blocks_that_transpose_back_get_no_view() -> None:
    _, before, after = _xnnpack_form(_case("official"))
    assert aten.view.default not in _targets(after) - _targets(before)


def _int_scalars(program: ExportedProgram) -> list[str]:
    """Nodes of arithmetic ops with an int scalar operand (ExecuTorch casts those outside)."""
    arithmetic = (aten.add.Tensor, aten.div.Tensor, aten.mul.Tensor, aten.clamp.default)
    return [
        n.name
        for n in program.graph.nodes
        if n.target in arithmetic and any(type(a) is int for a in n.args)
    ]


def test_hardsigmoid_gates_get_float_constants_and_stay_exact() -> None:
    case = _case("hardsigmoid_expand")
    model, before, after = _xnnpack_form(case)
    assert aten.hardsigmoid.default in _targets(before)
    assert aten.hardsigmoid.default not in _targets(after)
    clamps = [n for n in after.graph.nodes if n.target == aten.clamp.default]
    assert [tuple(n.args[1:]) for n in clamps] == [(0.0, 6.0), (0.0, 6.0)]
    assert _int_scalars(after) == []
    x_in = seeded_input(case.input_shape, 4)
    (got,) = after.module()(x_in)
    assert torch.equal(got, model(x_in))


def test_a_written_out_hard_sigmoid_gate_gets_float_scalars() -> None:
    case = _case("hardsigmoid_expand")
    model = case.build()
    for module in model.modules():
        if hasattr(module, "conv_h"):
            module.forward = _written_out_forward(module)  # type: ignore[method-assign]
    before = trace(model, case.input_shape, dynamic=False).program
    (block,) = find(before.graph)[0]
    assert {b.gate_kind for b in block.branches} == {"h_sigmoid"}
    assert len(_int_scalars(before)) == 4
    after = rewrite(before, static=True, form="xnnpack").program
    assert _int_scalars(after) == []
    x_in = seeded_input(case.input_shape, 6)
    assert_within((model(x_in),), after.module()(x_in))


def _written_out_forward(block: torch.nn.Module) -> object:
    """The hard-sigmoid zoo block's forward with ``relu6(x + 3) / 6`` gates, int scalars."""

    def forward(x: torch.Tensor) -> torch.Tensor:
        _, _, h, w = x.shape
        x_h = block.pool_h(x)
        x_w = block.pool_w(x).permute(0, 1, 3, 2)
        y = torch.nn.functional.silu(block.conv1(torch.cat([x_h, x_w], dim=2)))
        y_h, y_w = torch.split(y, [h, w], dim=2)
        a_h = torch.nn.functional.relu6(block.conv_h(y_h) + 3) / 6
        a_w = torch.nn.functional.relu6(block.conv_w(y_w.permute(0, 1, 3, 2)) + 3) / 6
        return x * a_h * a_w

    return forward


def test_sigmoid_gates_are_left_alone_by_float_hardsigmoid() -> None:
    case = _case("official")
    program = trace(case.build(), case.input_shape, dynamic=False).program
    view = AtenView(program.graph)
    (block,) = find(view)[0]
    before = [(n.name, n.target, n.args) for n in program.graph.nodes]
    with pytest.raises(Skip, match="no hard-sigmoid gate"):
        float_hardsigmoid(view, block, True)
    assert [(n.name, n.target, n.args) for n in program.graph.nodes] == before


def _means(program: ExportedProgram) -> list[list[int]]:
    return [list(n.args[1]) for n in program.graph.nodes if n.target == aten.mean.dim]


def test_bounded_strip_pools_become_global_means_between_permutes() -> None:
    case = _case("official")
    model = case.build()
    traced = trace(model, case.input_shape, dynamic=True, bounded=True)
    assert traced.bounds is not None
    assert (traced.bounds.h[0], traced.bounds.h[-1]) == (16, 32)
    assert (traced.bounds.w[0], traced.bounds.w[-1]) == (24, 48)
    after = rewrite(traced.program, static=False, form="xnnpack").program
    assert _means(after) == [[2, 3], [2, 3]]
    module = after.module()
    for h, w in [(16, 24), *traced.bounds.other_sizes(square_only=False)]:
        x_in = seeded_input((1, 3, h, w), h + w)
        assert_within((model(x_in),), module(x_in))


@pytest.mark.slow
def test_a_batch_of_two_keeps_its_strip_pools_as_means_over_one_axis(
    zoo_trace: Callable[..., Traced],
) -> None:
    after = rewrite(zoo_trace("official", dynamic=True).program, static=False, form="xnnpack")
    assert sorted(_means(after.program)) == [[2], [3]]


def test_an_onnx_graph_skips_the_executorch_only_passes(tmp_path: Path) -> None:
    """The ONNX adapter makes none of the optional edits, so the three passes that need them
    say so; its twin, the same block traced to ATen, applies ``global_strip_pool``."""
    case = _case("official")
    path = tmp_path / "official.onnx"
    torch.onnx.export(
        case.build(), (torch.zeros(case.input_shape),), path, dynamo=False, opset_version=17
    )
    result = rewrite_model(onnx.load(path), static=True, form="xnnpack")
    skipped = {p.name: set(p.skipped.values()) for p in result.passes}
    for name in ("global_strip_pool", "swap_as_permute", "float_hardsigmoid"):
        assert skipped[name] == {EXECUTORCH_ONLY}
    program = trace(case.build(), case.input_shape, dynamic=True, bounded=True).program
    twin = rewrite(program, static=False, form="xnnpack")
    (strip,) = (p for p in twin.passes if p.name == "global_strip_pool")
    assert strip.modified
