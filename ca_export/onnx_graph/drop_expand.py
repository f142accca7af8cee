"""Rewrite: drop ``Expand`` on a CA gate whose multiply broadcasts to the same shape.

``x * Expand(a_h, shape)`` equals ``x * a_h`` when ``shape`` broadcasts into x's shape:
the multiply tree broadcasts the gate to x's shape anyway. The Expand only adds shape arithmetic
(Shape/ConstantOfShape/Where) that is baked for one input size.

Before::

    a_h ── Expand(a_h, Shape(x)) ── Mul(x, ·)

After::

    a_h ── Mul(x, ·)
"""

from __future__ import annotations

import numpy as np

from ca_export.onnx_graph.index import Dim, GraphIndex
from ca_export.onnx_graph.pattern import OnnxBlock, OnnxBranch


def within(index: GraphIndex, branch: OnnxBranch, source: tuple[Dim, ...]) -> bool:
    """Whether the Expand's target shape broadcasts into x's shape (so x * gate is unchanged)."""
    assert branch.expand is not None
    target = index.const(branch.expand.input[1])
    dims = (
        tuple(int(d) for d in target)
        if target is not None
        else index.shape(branch.expand.output[0])
    )
    if dims is None or None in dims or None in source:
        return False
    try:
        return tuple(np.broadcast_shapes(source, dims)) == source  # type: ignore[arg-type]
    except ValueError:
        return False


def drop_expand(index: GraphIndex, block: OnnxBlock) -> int:
    """Bypass each gate's Expand whose target fits in x's shape; return how many."""
    dropped = 0
    source = index.shape(block.source)
    for branch in block.branches:
        expand = branch.expand
        if expand is None or source is None or not within(index, branch, source):
            continue
        for user in index.consumers[expand.output[0]]:
            for i, name in enumerate(user.input):
                if name == expand.output[0]:
                    user.input[i] = branch.gate_output
        dropped += 1
    return dropped
