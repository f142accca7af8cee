"""Rewrite: build the CA block's H x W gate once, then one same-shape multiply.

``x * a_w * a_h`` multiplies the full tensor twice, each time broadcasting a strip
([B, C, 1, W], then [B, C, H, 1]). ``x * (a_h * a_w)`` is the same product grouped
differently (elementwise multiplication is associative and commutative; results
differ by fp rounding only): the gate is built once from the two strips, and the
multiply with ``x`` reads two tensors of one shape, which ONNX Runtime's CPU kernel
runs without broadcasting. Measured by ``benchmarks/ca_overhead.py``.

Before::

    x ── mul ── mul ── y
         │      │
        a_w    a_h

After::

    a_h ─┐
         mul ── g ─┐
    a_w ─┘         │
    x ──────────── mul ── y        (the block's output node is kept, with new inputs)
"""

from __future__ import annotations

import torch
from torch.fx import Graph, Node

from ca_export.fx import add_node
from ca_export.patterns import CABlock
from ca_export.patterns.coordatt import Branch

aten = torch.ops.aten


def _leaf(branch: Branch) -> Node:
    """The node the multiplies read for this gate: the expand if it is still used."""
    return branch.gate_leaf if branch.gate_leaf.users else branch.gate


def gate_once(graph: Graph, block: CABlock) -> Node | None:
    """Make the block's output ``x * (a_h * a_w)``; return the gate node, None if already so."""
    output = block.output
    leaf_h, leaf_w = _leaf(block.branch("h")), _leaf(block.branch("w"))
    x, other = output.args[:2]
    if x is not block.source:
        x, other = other, x
    if (
        x is block.source
        and isinstance(other, Node)
        and other.target == aten.mul.Tensor
        and set(other.args[:2]) == {leaf_h, leaf_w}
    ):
        return None
    gate = add_node(graph, aten.mul.Tensor, (leaf_h, leaf_w), output)
    output.args = (block.source, gate)
    return gate
