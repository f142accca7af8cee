"""Rewrite: drop ``Expand`` on a CA gate whose multiply broadcasts to the same shape.

``x * Expand(a_h, shape)`` equals ``x * a_h`` when the expanded gate has x's shape:
the multiply broadcasts the gate anyway. The Expand only adds shape arithmetic
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


def expanded_shape(index: GraphIndex, branch: OnnxBranch) -> tuple[Dim, ...] | None:
    """The shape an Expand gives, inferred or computed from its constant shape operand."""
    assert branch.expand is not None
    inferred = index.shape(branch.expand.output[0])
    if inferred is not None and None not in inferred:
        return inferred
    gate = index.shape(branch.gate_output)
    target = index.const(branch.expand.input[1])
    if gate is None or None in gate or target is None:
        return None
    try:
        return tuple(np.broadcast_shapes(gate, tuple(int(d) for d in target)))  # type: ignore[arg-type]
    except ValueError:
        return None


def drop_expand(index: GraphIndex, block: OnnxBlock) -> int:
    """Bypass each gate's Expand where the gate broadcasts to x's shape; return how many."""
    dropped = 0
    source = index.shape(block.source)
    for branch in block.branches:
        expand = branch.expand
        if expand is None or source is None or expanded_shape(index, branch) != source:
            continue
        for user in index.consumers[expand.output[0]]:
            for i, name in enumerate(user.input):
                if name == expand.output[0]:
                    user.input[i] = branch.gate_output
        dropped += 1
    return dropped
