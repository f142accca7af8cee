"""Rewrite (blocked-layout form): expand each gate to H x W by nearest ``Resize``, then two
same-shape multiplies.

ONNX Runtime on x86 runs convolutions, pools, ``Resize`` nearest with integer scales and
same-shape ``Mul`` in its blocked NCHWc layout; a ``MatMul`` or a broadcasting ``Mul`` on
a full-size tensor forces reorders out of and back into it. A nearest upsample of
``a_h [B, C, H, 1]`` by (1, W) repeats each value along W, which is what the broadcast
did: ``x * up(a_h) * up(a_w)`` is ``x * a_h * a_w`` value for value (the multiplies are
the same, in the original order). Static sizes only (the scales are constants); with
dynamic H/W the block keeps ``gate_once``'s gate. Measured by
``benchmarks/target_forms.py``.

Before (after ``gate_once``)::

    a_h [B,C,H,1] ─┐
                   matmul ── g ─┐
    a_w [B,C,1,W] ─┘            │
    x ───────────────────────── mul ── y

After::

    a_h ── Resize(nearest, scales 1,1,1,W) ─┐
    x ───────────────────────────────────── mul ─┐
    a_w ── Resize(nearest, scales 1,1,H,1) ───── mul ── y    (the output op kept)
"""

from __future__ import annotations

from ca_export.patterns.coordatt import CABlock, leaf
from ca_export.patterns.view import GraphView, OpT, ValueT
from ca_export.rewrites.passes import Change, Skip


def resize_gate(
    view: GraphView[OpT, ValueT], block: CABlock[OpT, ValueT], static: bool
) -> Change[OpT, ValueT]:
    """Make the block's output ``(x * up(a_h)) * up(a_w)`` with nearest upsamples."""
    height, width = block.spatial
    if not static or not isinstance(height, int) or not isinstance(width, int):
        raise Skip("the Resize scales need a static H and W")
    a_h, a_w = leaf(view, block.branch("h")), leaf(view, block.branch("w"))
    h, w = view.shape(a_h), view.shape(a_w)
    if h is None or w is None or len(h) != 4 or len(w) != 4:
        raise Skip("the gates' shapes are unknown")
    if not (view.same_size(h[3], 1) and view.same_size(w[2], 1)):
        raise Skip("the gates are not [B, C, H, 1] and [B, C, 1, W] strips")
    name = f"{block.name}/ca_gate"
    up_h = view.upsample(a_h, (1, width), block.output, f"{name}_h")
    up_w = view.upsample(a_w, (height, 1), block.output, f"{name}_w")
    inner = view.binary("mul", block.source, up_h, block.output, f"{name}_mul_h")
    view.set_operands(block.output, [inner, up_w])
    return Change(
        f"gates expanded by nearest Resize (x{width} and x{height}), two same-shape multiplies",
        block,
    )
