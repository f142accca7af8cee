"""Rewrite (LiteRT form): a static strip pool as a mean over its axis, not an average pool.

``pool_to_reduce`` makes a static strip pool an average pool (ONNX Runtime runs it about
4x faster than a ReduceMean). litert-torch converts an average pool to AVERAGE_POOL_2D,
which XNNPACK does not take in int8, so a static-int8 file splits into 33 partitions on
MobileNetV2-CA; a ``mean`` over the axis converts to MEAN, which XNNPACK runs in fp32 and
int8, at the same fp32 speed within noise (``benchmarks/litert_floor.py``). It is exact:
each output is the mean of the same values (results differ by fp rounding only). A pool
that already is a mean is left alone. The LiteRT form runs it in place of
``pool_to_reduce``.

Before::

    x ── adaptive_avg_pool2d(x, [H, 1]) ── y

After::

    x ── mean(x, dim=[3], keepdim=True) ── y
"""

from __future__ import annotations

from ca_export.patterns.coordatt import CABlock
from ca_export.patterns.view import GraphView, OpT, ValueT
from ca_export.rewrites.passes import Change
from ca_export.rewrites.pool_to_reduce import pool_to_reduce


def strip_mean(
    view: GraphView[OpT, ValueT], block: CABlock[OpT, ValueT], static: bool
) -> Change[OpT, ValueT]:
    """Replace each branch's pool by a mean over its axis, at any size."""
    return pool_to_reduce(view, block, static=False)
