"""Rewrite: drop ``expand`` on a CA gate whose multiply broadcasts to the same shape.

``x * a_h.expand(-1, -1, h, w)`` equals ``x * a_h`` when the expanded shape broadcasts
into x's: the multiply tree that ends at x broadcasts the gate to x's shape anyway. The
expand only adds shape arithmetic (Shape/Gather/Expand) to a dynamic-size export, baked
for one input size.

Before::

    a_h ── expand(a_h, [-1, -1, h, w]) ── mul(x, ·)

After::

    a_h ── mul(x, ·)
"""

from __future__ import annotations

from ca_export.patterns.coordatt import CABlock
from ca_export.patterns.view import GraphView, OpT, ValueT
from ca_export.rewrites.passes import Change, Skip


def drop_expand(
    view: GraphView[OpT, ValueT], block: CABlock[OpT, ValueT], static: bool
) -> Change[OpT, ValueT]:
    """Bypass each gate's expand whose shape broadcasts into x's: every multiply of the
    block's tree reads the gate itself."""
    if all(b.expand is None for b in block.branches):
        raise Skip("no expand on the gates")
    dropped = 0
    source = view.shape(block.source)
    for branch in block.branches:
        if branch.expand is None or source is None:
            continue
        expanded, gate = view.output(branch.expand), view.output(branch.gate)
        target = view.expand_target(branch.expand)
        if target is None or len(target) != len(source):
            continue
        if not all(
            view.same_size(t, s) or view.same_size(t, 1)
            for t, s in zip(target, source, strict=True)
        ):
            continue
        for mul in view.users(expanded):
            if view.mul_operands(mul) is not None:
                view.replace_input(mul, expanded, gate)
        dropped += not view.users(expanded)
    if not dropped:
        raise Skip("each expand's shape is not one x's shape holds")
    return Change(f"{dropped} expand(s) dropped", block)
