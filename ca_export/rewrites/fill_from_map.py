"""Rewrite: a constant fill of a feature map's area, read from the feature map.

A detection head fills ``full((1, h * w), stride)`` for each level's anchors. TorchScript
records ``full`` with the traced size, so the converted ncnn model keeps the traced
length. The same tensor is ``fmap[0, :1] * 0 + stride`` (shape ``[1, h, w]``) viewed to
``(1, -1)``, which follows the input size in ncnn (pnnx writes the view with a size
expression when given a second input shape). A non-finite value in ``fmap``'s first
channel makes the fill non-finite at that cell.

Before::

    full([1, h*w], c)

After::

    fmap ── select(0, 0) ── slice(0, 0, 1) ── mul(·, 0) ── add(·, c) ── view([1, -1])

Match rules: ``aten.full.default`` of a float value and a shape with one symbolic size,
equal to the H x W of a 4-D tensor earlier in the graph (``grid_from_map.feature_map``)
of the fill's dtype, and every other size 1. Anything else is left alone with the
reason. An ncnn-only pass on the ATen graph (run by ``pipeline.ncnn``).
"""

from __future__ import annotations

import torch
from torch.export import ExportedProgram

from ca_export.rewrites.grid_from_map import add_op, finished, same_size, value
from ca_export.rewrites.passes import PassResult

NAME = "fill_from_map"
aten = torch.ops.aten


def fill_from_map(program: ExportedProgram) -> PassResult:
    """Rewrite every matching ``full`` of ``program`` in place."""
    result = PassResult(NAME)
    graph = program.graph
    for fill in [n for n in graph.nodes if n.target is aten.full.default]:
        shape, fill_value = [value(s) for s in fill.args[0]], fill.args[1]
        symbolic = [i for i, s in enumerate(shape) if isinstance(s, torch.SymInt)]
        dtype = value(fill).dtype
        if len(symbolic) != 1 or any(s != 1 for i, s in enumerate(shape) if i not in symbolic):
            result.skipped[fill.name] = "not a fill of one symbolic size"
            continue
        if not isinstance(fill_value, (int, float)) or not dtype.is_floating_point:
            result.skipped[fill.name] = "not a float fill"
            continue
        area = shape[symbolic[0]]
        fmap = None
        for node in graph.nodes:
            if node is fill:
                break
            val = node.meta.get("val")
            if (
                isinstance(val, torch.Tensor)
                and val.dim() == 4
                and val.dtype == dtype
                and same_size(area, val.shape[2] * val.shape[3])
            ):
                fmap = node
                break
        if fmap is None:
            result.skipped[fill.name] = "no feature map of the fill's area and dtype"
            continue
        with graph.inserting_before(fill):
            plane = add_op(graph, aten.select.int, fmap, 0, 0)
            plane = add_op(graph, aten.slice.Tensor, plane, 0, 0, 1)
            filled = add_op(
                graph, aten.add.Tensor, add_op(graph, aten.mul.Tensor, plane, 0), fill_value
            )
            target = [-1 if i in symbolic else 1 for i in range(len(shape))]
            out = add_op(graph, aten.view.default, filled, target)
        fill.replace_all_uses_with(out)
        result.applied[fill.name] = f"fill over {fmap.name}'s H x W"
    return finished(program, result)
