"""What a Coordinate Attention block looks like, in any graph a ``GraphView`` adapts."""

from __future__ import annotations

from typing import overload

import onnx
import onnx_ir as ir
from torch.fx import Graph, Node

from ca_export.patterns.aten import AtenView
from ca_export.patterns.coordatt import Branch, CABlock, Rejection
from ca_export.patterns.coordatt import find as find_in
from ca_export.patterns.onnx_proto import OnnxView
from ca_export.patterns.view import GraphView, NoMatch, OpT, ValueT

AtenBlock = CABlock[Node, Node]
"""A block found in an ATen graph (``AtenView``)."""
OnnxBlock = CABlock[ir.Node, ir.Value]
"""A block found in an ONNX model (``OnnxView``)."""


@overload
def find(graph: Graph) -> tuple[list[AtenBlock], list[Rejection]]: ...
@overload
def find(graph: onnx.ModelProto) -> tuple[list[OnnxBlock], list[Rejection]]: ...
@overload
def find(graph: GraphView[OpT, ValueT]) -> tuple[list[CABlock[OpT, ValueT]], list[Rejection]]: ...
def find(
    graph: Graph | onnx.ModelProto | GraphView[OpT, ValueT],
) -> (
    tuple[list[AtenBlock], list[Rejection]]
    | tuple[list[OnnxBlock], list[Rejection]]
    | tuple[list[CABlock[OpT, ValueT]], list[Rejection]]
):
    """All CA blocks of an ATen graph, an ONNX model or a view, and the pooled concats that
    are not, with reasons."""
    if isinstance(graph, Graph):
        return find_in(AtenView(graph))
    if isinstance(graph, onnx.ModelProto):
        return find_in(OnnxView(graph))
    return find_in(graph)


__all__ = [
    "AtenBlock",
    "Branch",
    "CABlock",
    "GraphView",
    "NoMatch",
    "OnnxBlock",
    "Rejection",
    "find",
]
