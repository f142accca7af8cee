"""Rewrite: drop ``expand`` on a CA gate whose multiply broadcasts to the same shape.

``x * a_h.expand(-1, -1, h, w)`` equals ``x * a_h``: the multiply broadcasts the
gate anyway. The expand only adds shape arithmetic (Shape/Gather/Expand) to a
dynamic-size export.

Before::

    a_h ── expand(a_h, [-1, -1, h, w]) ── mul(x, ·)

After::

    a_h ── mul(x, ·)
"""

from __future__ import annotations

from torch.fx import Graph, Node

from ca_export.fx import same_size, shape
from ca_export.patterns import CABlock


def drop_expand(graph: Graph, block: CABlock) -> list[Node]:
    """Bypass each gate's expand where that keeps every multiply's shape; return them."""
    dropped = []
    for branch in block.branches:
        expand = branch.gate_leaf
        if expand is branch.gate:
            continue
        mul = next(iter(expand.users))
        other = next(a for a in mul.args[:2] if a is not expand)
        if not isinstance(other, Node):
            continue
        if all(same_size(a, b) for a, b in zip(shape(other), shape(mul), strict=True)):
            mul.replace_input_with(expand, branch.gate)
            dropped.append(expand)
    return dropped
