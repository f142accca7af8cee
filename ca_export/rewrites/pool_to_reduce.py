"""Rewrite: a CA strip pool as a plain average that is right at every input size it claims.

``adaptive_avg_pool2d(x, (H, 1))`` is the mean of each row; exporters bake its kernel for
the traced size, so a dynamic-size export is silently wrong elsewhere. With dynamic H/W
the pool becomes a mean over the axis (``mean(x, [3], keepdim=True)``, ONNX
``ReduceMean``); with a static size, an average pool whose kernel and stride span the
axis, which ONNX Runtime runs about 4x faster than a ReduceMean doing the same work. Both
are exact. A pool that already is a mean stays one: it holds at every size, and an
average pool would only change the summation order (measured: 3e-4 of the output's RMS
after MobileNeXt's 13 blocks, at the edge of the ONNX Runtime gate).

Before::

    x ── adaptive_avg_pool2d(x, [H, 1]) ── y          (kernel baked for the traced W)

After (dynamic)::

    x ── mean(x, dim=[3], keepdim=True) ── y

After (static)::

    x ── avg_pool2d(x, kernel=[1, W], stride=[1, W]) ── y
"""

from __future__ import annotations

from ca_export.patterns.coordatt import CABlock
from ca_export.patterns.view import GraphView, OpT, ValueT
from ca_export.rewrites.passes import Change, Skip

MEANS = ("mean", "ReduceMean")


def pool_to_reduce(
    view: GraphView[OpT, ValueT], block: CABlock[OpT, ValueT], static: bool
) -> Change[OpT, ValueT]:
    """Replace each branch's pool by its exact form; the returned block names the new pools."""
    done = []
    after = block
    for branch in block.branches:
        if branch.pool_kind in MEANS:
            continue
        gone = 3 if branch.axis == "h" else 2
        extent = block.spatial[gone - 2]
        name = f"{block.name}/ca_{branch.axis}/pool"
        old = view.output(branch.pool)
        if static and isinstance(extent, int):
            kernel = [1, extent] if gone == 3 else [extent, 1]
            new = view.avg_pool(block.source, kernel, branch.pool, name)
            done.append(f"{branch.axis}: average pool {kernel[0]}x{kernel[1]}")
        else:
            new = view.mean(block.source, gone, branch.pool, name)
            done.append(f"{branch.axis}: mean over axis {gone}")
        view.replace_uses(old, new)
        after = after.with_branch(branch, pool=view.producer(new))
    if not done:
        raise Skip("both pools already are means")
    return Change("; ".join(done), after)
