"""Rewrite: a CA strip pool as a plain average that is right at every input size.

``adaptive_avg_pool2d(x, (H, 1))`` is the mean of each row; exporters bake its kernel
for the traced size, so a dynamic-size export is silently wrong elsewhere. With
dynamic H/W the pool becomes ``mean(x, [3], keepdim=True)``; with a static size it
becomes an ``avg_pool2d`` with a full-width kernel, which ONNX Runtime runs faster
than a ReduceMean doing the same work. Both are exact.

Before::

    x ── adaptive_avg_pool2d(x, [H, 1]) ── y          (kernel baked for the traced W)

After (dynamic)::

    x ── mean(x, dim=[3], keepdim=True) ── y

After (static)::

    x ── avg_pool2d(x, kernel=[1, W], stride=[1, W]) ── y
"""

from __future__ import annotations

import torch
from torch.fx import Graph, Node

from ca_export.fx import add_node, shape
from ca_export.patterns import Branch

aten = torch.ops.aten


def pool_to_reduce(graph: Graph, branch: Branch, static: bool) -> Node:
    """Insert the exact replacement of the branch's pool and return it (uses are not moved)."""
    source = branch.pool.args[0]
    assert isinstance(source, Node)
    gone = 3 if branch.axis == "h" else 2
    width = shape(source)[gone]
    if static and isinstance(width, int):
        kernel = [1, width] if gone == 3 else [width, 1]
        return add_node(graph, aten.avg_pool2d.default, (source, kernel, kernel), branch.pool)
    return add_node(graph, aten.mean.dim, (source, [gone], True), branch.pool)
