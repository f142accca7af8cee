"""Rewrite: build the CA block's H x W gate once, then one same-shape multiply.

``x * a_w * a_h`` multiplies the full tensor twice, each time broadcasting a strip
([B, C, 1, W], then [B, C, H, 1]). ``x * (a_h @ a_w)`` computes the same values: the
matmul of a [.., H, 1] by a [.., 1, W] strip is their outer product, one product per
element (no sum), and elementwise multiplication is associative (results differ by
fp rounding only). On ONNX Runtime CPU the broadcasting multiply that would build the
outer product is slower than MatMul, and the final multiply reads two tensors of one
shape. Where the gates are not such strips (the seed's square-only quirk) the gate is
``a_h * a_w``. Measured by ``benchmarks/ca_overhead.py``.

Before::

    x ── mul ── mul ── y
         │      │
        a_w    a_h

After::

    a_h [B,C,H,1] ─┐
                   matmul ── g [B,C,H,W] ─┐
    a_w [B,C,1,W] ─┘                      │
    x ─────────────────────────────────── mul ── y    (the output node kept, new inputs)
"""

from __future__ import annotations

import torch
from torch.fx import Graph, Node

from ca_export.fx import add_node, same_size, shape
from ca_export.patterns import CABlock
from ca_export.patterns.coordatt import Branch

aten = torch.ops.aten


def _leaf(branch: Branch) -> Node:
    """The node the multiplies read for this gate: the expand if it is still used."""
    return branch.gate_leaf if branch.gate_leaf.users else branch.gate


def _strips(a_h: Node, a_w: Node) -> bool:
    """Whether the gates are ``[B, C, H, 1]`` and ``[B, C, 1, W]``."""
    h, w = shape(a_h), shape(a_w)
    return len(h) == len(w) == 4 and same_size(h[3], 1) and same_size(w[2], 1)


def _builds(node: Node, target: object, a_h: Node, a_w: Node) -> bool:
    """Whether ``node`` already builds the gate from ``a_h`` and ``a_w`` with ``target``."""
    if node.target != target:
        return False
    if target == aten.matmul.default:
        return tuple(node.args[:2]) == (a_h, a_w)
    return set(node.args[:2]) == {a_h, a_w}


def gate_once(graph: Graph, block: CABlock) -> Node | None:
    """Make the block's output ``x * (a_h @ a_w)``; return the gate, None if already so."""
    output = block.output
    leaf_h, leaf_w = _leaf(block.branch("h")), _leaf(block.branch("w"))
    target = aten.matmul.default if _strips(leaf_h, leaf_w) else aten.mul.Tensor
    x, other = output.args[:2]
    if x is not block.source:
        x, other = other, x
    if x is block.source and isinstance(other, Node) and _builds(other, target, leaf_h, leaf_w):
        return None
    gate = add_node(graph, target, (leaf_h, leaf_w), output)
    output.args = (block.source, gate)
    return gate
