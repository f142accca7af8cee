"""Rewrite: a view that splits the channels of a map in two axes, written as a split.

An anchor-based head splits each level's channels per anchor with ``x.view(b, na, no,
ny, nx)``: one ``-1`` cannot stand for both ``ny`` and ``nx``, so TorchScript and pnnx
keep the traced sizes. The same tensor is the channel split ``x.split(no, 1)``, each
part given an axis of 1 (``unsqueeze``) and the parts joined on it (``cat``): ncnn
``Slice``, ``ExpandDims`` and ``Concat``, which follow the input size. The values are the
same element for element (a view only renames positions). A ``stack`` of the parts would
do the same in PyTorch, but pnnx writes it as a reshape with two ``-1`` sizes, which ncnn
cannot load.

Before::

    x [b, na*no, h, w] ── view(x, [b, na, no, h, w])
    input ── sym_size ── arithmetic ──┘

After::

    x ── split_with_sizes(x, [no] * na, 1) ─┬─ getitem 0 ── unsqueeze(·, 1) ──────┐
                                            ├─ ...                               ├── cat(dim 1)
                                            └─ getitem na-1 ── unsqueeze(·, 1) ──┘

Match rules: ``aten.view``/``aten.reshape``/``aten._unsafe_view`` of a tensor ``x`` to
one more axis, where axis ``d >= 1`` of ``x`` (a fixed size) becomes two fixed sizes
``na >= 2`` and ``no`` with ``na * no`` equal to it, every other size is ``x``'s own (as
symbolic expressions), and two or more of them depend on the input's H or W (a view with
one is ``reshape_minus_one``'s). Anything else is left alone with the reason. An
ncnn-only pass on the ATen graph (run by ``pipeline.ncnn`` on the size-safe trace).
"""

from __future__ import annotations

import operator

import torch
from torch.export import ExportedProgram

from ca_export.rewrites.grid_from_map import add_op, finished, same_size, value
from ca_export.rewrites.passes import PassResult
from ca_export.rewrites.reshape_minus_one import RESHAPES, depends, spatial_symbols

NAME = "split_view"
aten = torch.ops.aten


def _split_axis(shape: list[object], sizes: list[object]) -> int | None:
    """The axis ``d >= 1`` of ``shape`` that ``sizes`` splits in two fixed sizes, keeping
    every other size; None if there is none."""
    if len(sizes) != len(shape) + 1:
        return None
    for d in range(1, len(shape)):
        outer, inner, whole = sizes[d], sizes[d + 1], shape[d]
        if not (isinstance(outer, int) and isinstance(inner, int) and isinstance(whole, int)):
            continue
        kept = [*sizes[:d], *sizes[d + 2 :]]
        rest = [*shape[:d], *shape[d + 1 :]]
        if outer * inner == whole and outer >= 2 and all(map(same_size, kept, rest)):
            return d
    return None


def split_view(program: ExportedProgram) -> PassResult:
    """Rewrite every matching view of ``program`` in place."""
    result = PassResult(NAME)
    spatial = spatial_symbols(program)
    graph = program.graph
    for node in [n for n in graph.nodes if n.target in RESHAPES and len(n.args) == 2]:
        source, operands = node.args
        if sum(depends(s, spatial) for s in operands) < 2:
            continue
        axis = _split_axis(list(value(source).shape), [value(s) for s in operands])
        if axis is None:
            result.skipped[node.name] = "not a split of one fixed axis in two, the rest kept"
            continue
        parts, size = value(operands[axis]), value(operands[axis + 1])
        with graph.inserting_before(node):
            split = add_op(graph, aten.split_with_sizes.default, source, [size] * parts, axis)
            pieces = [
                add_op(
                    graph, aten.unsqueeze.default, add_op(graph, operator.getitem, split, i), axis
                )
                for i in range(parts)
            ]
            node.replace_all_uses_with(add_op(graph, aten.cat.default, pieces, axis))
        result.applied[node.name] = f"axis {axis} split in {parts} x {size}"
    return finished(program, result)
