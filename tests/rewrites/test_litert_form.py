"""The litert rewrite form: ``strip_mean`` and ``relu6_hswish``, exact, with their twins
(the official block is the golden case ``official_litert.atentxt``)."""

from __future__ import annotations

import onnx
import torch
from ca_zoo import seeded_input
from conftest import ZOO, ZooTrace, assert_within

from ca_export.patterns import OnnxView, find
from ca_export.rewrites import rewrite
from ca_export.rewrites.passes import Skip
from ca_export.rewrites.relu6_hswish import ATEN_ONLY, relu6_hswish

aten = torch.ops.aten


def test_timm_block_keeps_its_means_and_its_hardswish_op(zoo_trace: ZooTrace) -> None:
    case = ZOO["timm"]
    model = case.build()
    result = rewrite(zoo_trace("timm").program, static=True, form="litert")
    skipped = {p.name: next(iter(p.skipped.values()), "") for p in result.passes}
    assert skipped["strip_mean"] == "both pools already are means"
    assert skipped["relu6_hswish"].startswith("no written-out h_swish")
    targets = {n.target for n in result.program.graph.nodes}
    assert aten.hardswish.default in targets and aten.avg_pool2d.default not in targets
    x = seeded_input(case.input_shape, 1)
    with torch.no_grad():
        assert_within(model(x), result.program.module()(x))


def test_relu6_hswish_skips_an_onnx_graph(zoo_trace: ZooTrace) -> None:
    graph = onnx.helper.make_graph([], "empty", [], [])
    view = OnnxView(onnx.helper.make_model(graph))
    block = find(zoo_trace("official").program.graph)[0][0]
    try:
        relu6_hswish(view, block, True)
    except Skip as why:
        assert str(why) == ATEN_ONLY
    else:
        raise AssertionError("relu6_hswish rewrote an ONNX graph")
