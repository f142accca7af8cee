"""Rewrite: ``x * relu6(x + 3) / 6`` written out becomes one ``hardswish``.

The official CA block writes h_swish out (add, clip, divide, multiply); every node but
the last must have no other reader. ``hardswish`` computes the same function (results
differ by fp rounding only) as one op: ONNX ``HardSwish`` (opset 14+), which ONNX
Runtime's CPU provider fuses into the 1x1 conv before it, so the gate path stays in
its blocked layout with no reorders. Measured by ``benchmarks/ca_overhead.py``.

Before (either grouping)::

    x ─┬─ add(·, 3) ── relu6 ── div(·, 6) ─┐
       └──────────────────────────────── mul ── y

    x ─┬─ add(·, 3) ── relu6 ─┐
       └───────────────────── mul ── div(·, 6) ── y

After::

    x ── hardswish ── y
"""

from __future__ import annotations

import torch
from torch.fx import Graph, Node

from ca_export.fx import add_node, single_user
from ca_export.patterns.pointwise import UNARY

aten = torch.ops.aten

ADD = (aten.add.Tensor, aten.add.Scalar)
DIV = (aten.div.Tensor, aten.div.Scalar)
MUL = (aten.mul.Tensor, aten.mul.Scalar)


def _is_relu6(node: Node) -> bool:
    """``relu6(x)`` or ``hardtanh(x, 0, 6)``."""
    kind = UNARY.get(node.target)
    if kind == "relu6":
        return True
    return kind == "hardtanh" and tuple(node.args[1:3]) == (0.0, 6.0)


def _relu6_of(clip: object, x: Node, user: Node) -> bool:
    """Whether ``clip`` is ``relu6(x + 3)`` and only ``user`` reads it."""
    if not isinstance(clip, Node) or not _is_relu6(clip) or single_user(clip) is not user:
        return False
    add = clip.args[0]
    return (
        isinstance(add, Node)
        and add.target in ADD
        and single_user(add) is clip
        and add.args[0] is x
        and add.args[1] == 3
    )


def _operands(node: Node) -> list[tuple[object, object]]:
    """Both orders of a binary node's two operands."""
    a, b = node.args[:2]
    return [(a, b), (b, a)]


def hswish_input(end: Node) -> Node | None:
    """``x`` if ``end`` is ``x * (relu6(x + 3) / 6)`` or ``(x * relu6(x + 3)) / 6``."""
    if end.op != "call_function" or len(end.args) < 2:
        return None
    if end.target in MUL:
        for x, div in _operands(end):
            if (
                isinstance(x, Node)
                and isinstance(div, Node)
                and div.target in DIV
                and div.args[1] == 6
                and single_user(div) is end
                and _relu6_of(div.args[0], x, div)
            ):
                return x
    if end.target in DIV and end.args[1] == 6:
        mul = end.args[0]
        if isinstance(mul, Node) and mul.target in MUL and single_user(mul) is end:
            for x, clip in _operands(mul):
                if isinstance(x, Node) and _relu6_of(clip, x, mul):
                    return x
    return None


def fuse_hardswish(graph: Graph, nodes: list[Node]) -> list[Node]:
    """Replace each written-out h_swish ending at one of ``nodes``; return the new nodes."""
    fused = []
    for end in nodes:
        x = hswish_input(end)
        if x is None:
            continue
        node = add_node(graph, aten.hardswish.default, (x,), end)
        end.replace_all_uses_with(node)
        fused.append(node)
    return fused
