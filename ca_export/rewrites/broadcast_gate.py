"""Rewrite (XNNPACK form): gate ``x`` by two broadcasting multiplies, nothing else.

``gate_once`` builds the H x W gate as ``matmul(a_h, a_w)``; ExecuTorch decomposes that
matmul into ``expand_copy`` + ``bmm`` and XNNPACK takes no ``expand_copy``, so each block
splits the delegate twice (measured on MobileNetV2-CA: 17 segments, 32 ops outside).
XNNPACK's ``multiply`` broadcasts [B, C, H, 1] and [B, C, 1, W] against [B, C, H, W]
itself, so ``(x * a_h) * a_w`` lowers into the one delegate with the rest of the network.
It is exact: each element is ``x * a_h * a_w`` in some order, as in the original block
(results differ by fp rounding only). ``x * (a_h * a_w)`` also lowers into one delegate
and ran at the same speed within noise (MobileNetV2-CA, 224, one thread, interleaved,
measured by hand); this form needs no H x W gate tensor. Used for the ``xnnpack`` form
only; ``onnx`` keeps ``gate_once``.

Before::

    x ── mul ── mul ── y          (any order, possibly an H x W gate in between)
         │      │
        a_w    a_h

After::

    x ── mul(·, a_h [B,C,H,1]) ── mul(·, a_w [B,C,1,W]) ── y    (the output op kept)
"""

from __future__ import annotations

from ca_export.patterns.coordatt import CABlock, leaf
from ca_export.patterns.view import GraphView, OpT, ValueT
from ca_export.rewrites.passes import Change, Skip


def broadcast_gate(
    view: GraphView[OpT, ValueT], block: CABlock[OpT, ValueT], static: bool
) -> Change[OpT, ValueT]:
    """Make the block's output ``(x * a_h) * a_w``."""
    a_h, a_w = leaf(view, block.branch("h")), leaf(view, block.branch("w"))
    inner, outer_gate = view.operands(block.output)[:2]
    made = view.producer(inner)
    if (
        outer_gate == a_w
        and made is not None
        and view.binary_kind(made) == "mul"
        and view.operands(made) == [block.source, a_h]
    ):
        raise Skip("the gates already multiply x one after the other")
    inner = view.binary("mul", block.source, a_h, block.output, f"{block.name}/ca_gate_h")
    view.set_operands(block.output, [inner, a_w])
    return Change("x * a_h * a_w by two broadcasting multiplies", block)
