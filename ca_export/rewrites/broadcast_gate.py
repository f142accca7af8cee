"""Rewrite (XNNPACK form): gate ``x`` by two broadcasting multiplies, nothing else.

``gate_once`` builds the H x W gate as ``matmul(a_h, a_w)``; ExecuTorch decomposes
that matmul into ``expand_copy`` + ``bmm`` and XNNPACK takes no ``expand_copy``, so each
block splits the delegate twice (measured on MobileNetV2-CA: 17 segments, 32 ops
outside). XNNPACK's ``multiply`` broadcasts [B, C, H, 1] and [B, C, 1, W] against
[B, C, H, W] itself, so ``(x * a_h) * a_w`` lowers into the one delegate with the rest
of the network. It is exact: each element is ``x * a_h * a_w`` in some order, as in
the original block (results differ by fp rounding only). ``x * (a_h * a_w)`` also
lowers into one delegate and ran at the same speed within noise (MobileNetV2-CA, 224,
one thread, interleaved, measured by hand); this form needs no H x W gate tensor.
Used for the ``xnnpack`` form only; ``onnx`` keeps ``gate_once``.

Before::

    x ── mul ── mul ── y          (any order, possibly an H x W gate in between)
         │      │
        a_w    a_h

After::

    x ── mul(·, a_h [B,C,H,1]) ── mul(·, a_w [B,C,1,W]) ── y    (the output node kept)
"""

from __future__ import annotations

import torch
from torch.fx import Graph, Node

from ca_export.fx import add_node
from ca_export.patterns import CABlock
from ca_export.patterns.coordatt import Branch

aten = torch.ops.aten


def _leaf(branch: Branch) -> Node:
    """The node the multiplies read for this gate: its expand if ``drop_expand`` kept it."""
    return branch.gate_leaf if branch.gate_leaf.users else branch.gate


def broadcast_gate(graph: Graph, block: CABlock) -> Node | None:
    """Make the block's output ``(x * a_h) * a_w``; return the inner multiply, None if so."""
    output = block.output
    a_h, a_w = _leaf(block.branch("h")), _leaf(block.branch("w"))
    inner = output.args[0]
    if (
        output.args[1] is a_w
        and isinstance(inner, Node)
        and inner.target == aten.mul.Tensor
        and tuple(inner.args[:2]) == (block.source, a_h)
    ):
        return None
    inner = add_node(graph, aten.mul.Tensor, (block.source, a_h), output)
    output.args = (inner, a_w)
    return inner
