"""What a Coordinate Attention block looks like, in any graph a ``GraphView`` adapts."""

from __future__ import annotations

import onnx
from torch.fx import Graph

from ca_export.patterns.aten import AtenView
from ca_export.patterns.coordatt import Branch, CABlock, Rejection
from ca_export.patterns.coordatt import find as find_in
from ca_export.patterns.onnx_proto import OnnxView
from ca_export.patterns.view import GraphView, NoMatch


def find(graph: Graph | onnx.ModelProto | GraphView) -> tuple[list[CABlock], list[Rejection]]:
    """All CA blocks of an ATen graph, an ONNX model or a view, and the pooled concats that
    are not, with reasons."""
    if isinstance(graph, Graph):
        return find_in(AtenView(graph))
    if isinstance(graph, onnx.ModelProto):
        return find_in(OnnxView(graph))
    return find_in(graph)


__all__ = ["Branch", "CABlock", "GraphView", "NoMatch", "Rejection", "find"]
