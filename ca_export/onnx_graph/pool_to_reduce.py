"""Rewrite: a CA strip pool as a plain average whose form fits the target sizes.

Static: an ``AveragePool`` whose kernel and stride span the whole reduced axis.
Dynamic (``--dynamic``): a ``ReduceMean`` over that axis with ``keepdims``, which is
right at every input size where a baked kernel is not. Both are exact. A pool that
already is a ``ReduceMean`` stays one: it holds at every size, and swapping it for an
AveragePool only changes the summation order (measured: 3e-4 of the output's RMS
after MobileNeXt's 13 blocks, at the edge of the ONNX Runtime gate).

Before::

    x ── AveragePool(kernel=[1, W]) ── y          (or ReduceMean(axes=[3]))

After (static)::

    x ── AveragePool(kernel=[1, W], strides=[1, W]) ── y

After (dynamic)::

    x ── ReduceMean(axes=[3], keepdims=1) ── y
"""

from __future__ import annotations

from ca_export.onnx_graph.edit import Editor
from ca_export.onnx_graph.pattern import OnnxBlock, OnnxBranch


def pool_to_reduce(edit: Editor, block: OnnxBlock, branch: OnnxBranch, static: bool) -> str:
    """Append the exact replacement of the branch's pool; return its output name."""
    gone = 3 if branch.axis == "h" else 2
    base = f"{block.name}/ca_{branch.axis}/pool"
    if static and branch.pool_kind == "AveragePool":
        extent = block.spatial[gone - 2]
        kernel = [1, extent] if gone == 3 else [extent, 1]
        return edit.node(
            "AveragePool", [block.source], base, kernel_shape=kernel, strides=kernel
        ).output[0]
    return edit.axes_node("ReduceMean", block.source, [gone], base, keepdims=1)
