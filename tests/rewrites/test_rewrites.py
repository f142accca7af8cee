"""Rewrites: exact per block, no CA-only ops left, idempotent, names and shapes kept."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from ca_zoo import POSITIVE, ZooCase, seeded_input
from conftest import assert_within
from torch.export import ExportedProgram

from ca_export.fx import shape
from ca_export.patterns import find
from ca_export.rewrites import RewriteResult, rewrite
from ca_export.tracing import Traced
from ca_export.verify.parity import block_gate

aten = torch.ops.aten
ZooTrace = Callable[..., Traced]
ZooRewrite = Callable[..., RewriteResult]
CA_ONLY = {
    aten.cat.default,
    aten.split.Tensor,
    aten.split_with_sizes.default,
    aten.slice.Tensor,
    aten.permute.default,
    aten.transpose.int,
    aten.expand.default,
    aten.adaptive_avg_pool2d.default,
}
MODES = [pytest.param(False, id="static"), pytest.param(True, id="dynamic")]


def _other_size(case: ZooCase) -> tuple[int, int, int, int]:
    _, c, h, w = case.input_shape
    return (2, c, h + 8, h + 8) if case.name == "seed" else (2, c, h + 8, w + 16)


def assert_same_interface(before: ExportedProgram, after: ExportedProgram) -> None:
    """Input/output names and traced shapes did not change."""
    assert before.graph_signature.user_inputs == after.graph_signature.user_inputs
    outs = [[str(shape(n)) for n in p.graph.output_node().args[0]] for p in (before, after)]
    assert outs[0] == outs[1]
    ins = [[str(shape(n)) for n in p.graph.nodes if n.op == "placeholder"] for p in (before, after)]
    assert ins[0] == ins[1]


@pytest.mark.parametrize("dynamic", MODES)
@pytest.mark.parametrize("case", POSITIVE, ids=lambda c: c.name)
def test_rewrite_is_exact_and_complete(
    case: ZooCase, dynamic: bool, zoo_trace: ZooTrace, zoo_rewrite: ZooRewrite
) -> None:
    if dynamic and case.name == "seed":
        pytest.skip("the seed's block only runs on square inputs")
    traced = zoo_trace(case.name, dynamic)
    blocks, _ = find(traced.program.graph)
    result = zoo_rewrite(case.name, dynamic)
    assert len(result.blocks) == case.ca_blocks
    assert_same_interface(traced.program, result.program)
    left = [n for n in result.program.graph.nodes if n.target in CA_ONLY]
    assert left == []
    sizes = [case.input_shape] + ([_other_size(case)] if dynamic else [])
    inputs = [(seed, seeded_input(s, seed)) for seed, s in enumerate(sizes, start=1)]
    pairs = [(b.module, b.source.name, b.output.name) for b in blocks]
    gate = block_gate(traced.program, result.program, pairs, inputs)
    assert gate.passed, gate.failures()
    model = case.build()
    for _, x in inputs:
        assert_within((model(x),), result.program.module()(x))


@pytest.mark.parametrize("case", POSITIVE, ids=lambda c: c.name)
def test_rewrite_is_idempotent(case: ZooCase, zoo_rewrite: ZooRewrite) -> None:
    once = zoo_rewrite(case.name)
    twice = rewrite(once.program, static=True)
    assert not twice.modified
    assert twice.program.graph_module.code == once.program.graph_module.code


def test_input_program_is_left_untouched(zoo_trace: ZooTrace) -> None:
    traced = zoo_trace(POSITIVE[0].name)
    code = traced.program.graph_module.code
    rewrite(traced.program, static=True)
    assert traced.program.graph_module.code == code


def test_seed_quirk_is_kept_with_a_singleton_swap(zoo_rewrite: ZooRewrite) -> None:
    result = zoo_rewrite("seed")
    targets = [n.target for n in result.program.graph.nodes]
    assert aten.squeeze.dims in targets and aten.unsqueeze.default in targets


def test_static_pool_is_full_width_average_dynamic_is_mean(zoo_rewrite: ZooRewrite) -> None:
    static = zoo_rewrite("official")
    dynamic = zoo_rewrite("official", dynamic=True)
    assert sum(n.target == aten.avg_pool2d.default for n in static.program.graph.nodes) == 2
    assert sum(n.target == aten.mean.dim for n in dynamic.program.graph.nodes) == 2


def test_block_gate_catches_a_wrong_rewrite(zoo_trace: ZooTrace) -> None:
    traced = zoo_trace("official", shape=(1, 3, 16, 16))
    blocks, _ = find(traced.program.graph)
    broken = rewrite(traced.program, static=True).program
    nodes = {n.name: n for n in broken.graph.nodes}
    conv_h = nodes[blocks[0].branch("h").gate_conv.name]
    conv_w = nodes[blocks[0].branch("w").gate_conv.name]
    in_h, in_w = conv_h.args[0], conv_w.args[0]
    conv_h.replace_input_with(in_h, in_w)
    conv_w.replace_input_with(in_w, in_h)
    broken.graph_module.recompile()
    pairs = [(b.module, b.source.name, b.output.name) for b in blocks]
    gate = block_gate(traced.program, broken, pairs, [(1, seeded_input((1, 3, 16, 16), 1))])
    assert not gate.passed
    assert "block 2" in gate.failures()[0]


def test_placeholder_named_like_a_builtin_keeps_its_name(
    zoo_trace: ZooTrace, zoo_rewrite: ZooRewrite
) -> None:
    name = POSITIVE[0].name
    assert zoo_trace(name).input_names == ["input"]
    result = zoo_rewrite(name)
    names = [n.name for n in result.program.graph.nodes if n.op == "placeholder"]
    assert names[-1] == "input" == result.program.graph_signature.user_inputs[0]
