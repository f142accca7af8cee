"""Rewrite: build the CA block's H x W gate once, then one same-shape multiply.

``x * a_w * a_h`` multiplies the full tensor twice, each time broadcasting a strip
([B, C, 1, W], then [B, C, H, 1]). ``x * (a_h @ a_w)`` computes the same values: the
matmul of a [.., H, 1] by a [.., 1, W] strip is their outer product, one product per
element (no sum), and elementwise multiplication is associative (results differ by fp
rounding only). On ONNX Runtime CPU the broadcasting multiply that would build the outer
product is slower than MatMul, and the final multiply reads two tensors of one shape.
Where the gates are not such strips (the seed's square-only quirk) the gate is
``a_h * a_w``. Measured by ``benchmarks/target_forms.py --ablations``.

Before::

    x ── mul ── mul ── y
         │      │
        a_w    a_h

After::

    a_h [B,C,H,1] ─┐
                   matmul ── g [B,C,H,W] ─┐
    a_w [B,C,1,W] ─┘                      │
    x ─────────────────────────────────── mul ── y    (the output op kept, new inputs)
"""

from __future__ import annotations

from ca_export.patterns.coordatt import CABlock, leaf
from ca_export.patterns.view import GraphView, OpT, ValueT
from ca_export.rewrites.passes import Change, Skip


def _strips(view: GraphView[OpT, ValueT], a_h: ValueT, a_w: ValueT) -> bool:
    """Whether the gates are ``[B, C, H, 1]`` and ``[B, C, 1, W]``."""
    h, w = view.shape(a_h), view.shape(a_w)
    if h is None or w is None or not len(h) == len(w) == 4:
        return False
    return view.same_size(h[3], 1) and view.same_size(w[2], 1)


def gate_once(
    view: GraphView[OpT, ValueT], block: CABlock[OpT, ValueT], static: bool
) -> Change[OpT, ValueT]:
    """Make the block's output ``x * (a_h @ a_w)``."""
    a_h, a_w = leaf(view, block.branch("h")), leaf(view, block.branch("w"))
    kind = "matmul" if _strips(view, a_h, a_w) else "mul"
    operands = view.mul_operands(block.output)
    assert operands is not None
    if block.source in operands:
        other = operands[1] if operands[0] == block.source else operands[0]
        made = view.producer(other)
        if made is not None and view.binary_kind(made) == kind:
            gates = view.operands(made)
            if gates == [a_h, a_w] or (kind == "mul" and set(gates) == {a_h, a_w}):
                raise Skip("the gate is already built once")
    gate = view.binary(kind, a_h, a_w, block.output, f"{block.name}/ca_gate")
    view.set_operands(block.output, [block.source, gate])
    return Change(f"gate built once by {kind}", block)
