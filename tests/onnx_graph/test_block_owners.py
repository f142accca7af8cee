"""``onnx_graph.owners``: which nodes join a block, with a negative twin for each rule."""

from __future__ import annotations

import onnx.parser
import onnx_ir as ir

from ca_export.onnx_graph import owners

GRAPH = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[1,4,6,6] x) => (float[1,2,1,6] y, int64[1] {extra})
    <int64[1] two = {{2}}, int64[1] zero = {{0}}, int64[1] axes = {{2}}>
{{
    shape = Shape (x)
    idx = Constant <value = int64[1] {{1}}> ()
    dim = Gather (shape, idx)
    half = Div (dim, two)
    pooled = ReduceMean <keepdims = 1> (x, axes)
    cut = Slice (pooled, zero, half, idx)
    y = Relu (cut)
    {reader}
}}
"""


def _graph(reader: str = "", extra: str = "other") -> ir.Graph:
    text = GRAPH.format(reader=reader, extra=extra)
    return ir.from_proto(onnx.parser.parse_model(text)).graph


def _node(graph: ir.Graph, output: str) -> ir.Node:
    return next(n for n in graph if n.outputs[0].name == output)


def _grow(graph: ir.Graph) -> set[str]:
    owner = owners.grow(graph, {_node(graph, "cut"): 0}, owners.shape_arithmetic(graph))
    return {n.outputs[0].name for n in owner}  # type: ignore[misc]


def test_shape_arithmetic_only_the_block_reads_joins_it() -> None:
    graph = _graph("other = Identity (idx)")
    assert _grow(graph) == {"cut", "half", "dim", "shape"}


def test_shape_arithmetic_read_outside_the_block_stays_out() -> None:
    graph = _graph("other = Identity (dim)")
    assert _grow(graph) == {"cut", "half"}


def test_a_graph_output_stays_out() -> None:
    graph = _graph("", extra="half")
    assert _grow(graph) == {"cut"}


def test_data_only_the_block_reads_is_not_shape_arithmetic() -> None:
    graph = _graph("other = Identity (idx)")
    pooled = _node(graph, "pooled")
    assert not owners.shape_arithmetic(graph)(pooled)
    assert "pooled" not in _grow(graph)
    everything = owners.grow(graph, {_node(graph, "cut"): 0}, lambda node: True)
    assert pooled in everything, "only the predicate keeps it out"
