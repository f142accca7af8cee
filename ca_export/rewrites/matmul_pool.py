"""Rewrite (plain-layout form): each strip pool as a ``MatMul`` with a constant ``1/W``
(``1/H``) vector.

In plain NCHW, ONNX Runtime's two strip ``AveragePool``s are the largest part of what a
CA block costs (2.4 ms of ~5 ms on MobileNetV2-CA at 224); a MatMul of the map by a
constant averaging vector computes the same means with its GEMM kernel. Exact up to fp
rounding (a sum of ``x / W`` terms instead of a sum divided by W). Static sizes only:
the vector's length is the pooled extent. In the blocked layout the MatMul forces
reorders of the full-size map, so the blocked form keeps the pools. Runs after
``pool_to_reduce`` and before ``distribute_stem`` (it re-points the pool's readers, which
are then still the model's own ops). Measured by ``benchmarks/target_forms.py``.

Before::

    x ── avg_pool(1 x W) ── p_h [B,C,H,1]
    x ── avg_pool(H x 1) ── p_w [B,C,1,W]

After::

    x [B,C,H,W] ── matmul(x, full([W, 1], 1/W)) ── p_h [B,C,H,1]
    full([1, H], 1/H) ── matmul(·, x) ──────────── p_w [B,C,1,W]
"""

from __future__ import annotations

from ca_export.patterns.coordatt import CABlock
from ca_export.patterns.view import GraphView, OpT, ValueT
from ca_export.rewrites.passes import Change, Skip


def matmul_pool(
    view: GraphView[OpT, ValueT], block: CABlock[OpT, ValueT], static: bool
) -> Change[OpT, ValueT]:
    """Replace each branch's pool by a MatMul with an averaging vector; the returned block
    names the MatMuls as its pools."""
    height, width = block.spatial
    if not static or not isinstance(height, int) or not isinstance(width, int):
        raise Skip("the averaging vectors need a static H and W")
    after = block
    for branch in block.branches:
        name = f"{block.name}/ca_{branch.axis}/pool"
        anchor = branch.pool
        if branch.axis == "h":
            ones = view.filled([width, 1], 1.0 / width, block.source, anchor, f"{name}_avg")
            new = view.binary("matmul", block.source, ones, anchor, name)
        else:
            ones = view.filled([1, height], 1.0 / height, block.source, anchor, f"{name}_avg")
            new = view.binary("matmul", ones, block.source, anchor, name)
        view.replace_uses(view.output(branch.pool), new)
        after = after.with_branch(branch, pool=view.producer(new))
    return Change(f"pools as MatMul with 1/{width} and 1/{height} vectors", after)
