"""Rewrite: drop an ``expand`` whose elementwise readers broadcast to the same shape.

An anchor-based head expands each level's grid and anchor sizes to the map's shape,
``grid.expand(1, na, ny, nx, 2)``, before adding or multiplying them into it. The
``expand`` takes ``ny`` and ``nx`` as operands, so TorchScript and pnnx fix the traced
sizes. An add, subtract, multiply or divide broadcasts its operands anyway: where the
other operand already has every size the expand asks for, the reader of the unexpanded
tensor gives the same values in the same shape (broadcasting repeats the values an
``expand`` would, without copying them).

Before::

    grid [h, w, 2] ── expand(·, [1, na, h, w, 2]) ── add(xy, ·)
    input ── sym_size ── arithmetic ──┘

After::

    grid [h, w, 2] ── add(xy, ·)

Match rules: ``aten.expand.default`` whose every reader is an ``aten.add``/``sub``/``mul``
/``div`` of two tensors, one of them the expand, whose output shape is the broadcast of
the other tensor's shape and the expand's input shape (as symbolic expressions). An
expand with another reader, or whose other operand is smaller, is left alone with the
reason. An ncnn-only pass on the ATen graph (run by ``pipeline.ncnn`` on the size-safe
trace); ``drop_expand`` does the same for a CA block's gates.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.export import ExportedProgram
from torch.fx import Node

from ca_export.rewrites.grid_from_map import finished, same_size, value
from ca_export.rewrites.passes import PassResult

NAME = "broadcast_expand"
aten = torch.ops.aten
_ELEMENTWISE = {aten.add.Tensor, aten.sub.Tensor, aten.mul.Tensor, aten.div.Tensor}


def broadcasts_to(a: Sequence[object], b: Sequence[object], out: Sequence[object]) -> bool:
    """Whether shapes ``a`` and ``b`` broadcast to ``out`` (sizes as ints or SymInts)."""
    if len(out) != max(len(a), len(b)):
        return False
    for i in range(1, len(out) + 1):
        x, y, o = (a[-i] if i <= len(a) else 1), (b[-i] if i <= len(b) else 1), out[-i]
        if not ((same_size(x, o) and (y == 1 or same_size(y, o))) or (x == 1 and same_size(y, o))):
            return False
    return True


def _reads_broadcast(reader: Node, expand: Node, source: Node) -> bool:
    """Whether ``reader`` is an elementwise op of two tensors, ``expand`` one of them,
    whose output shape the other and ``source`` broadcast to."""
    if reader.target not in _ELEMENTWISE or reader.kwargs or len(reader.args) != 2:
        return False
    others = [a for a in reader.args if a is not expand]
    if len(others) != 1 or not isinstance(value(others[0]), torch.Tensor):
        return False
    shapes = (value(others[0]).shape, value(source).shape, value(reader).shape)
    return broadcasts_to(*shapes)


def broadcast_expand(program: ExportedProgram) -> PassResult:
    """Rewrite every matching ``expand`` of ``program`` in place."""
    result = PassResult(NAME)
    graph = program.graph
    for expand in [n for n in graph.nodes if n.target is aten.expand.default]:
        source = expand.args[0]
        if not isinstance(source, Node) or not expand.users:
            continue
        if not all(_reads_broadcast(r, expand, source) for r in expand.users):
            result.skipped[expand.name] = "a reader does not broadcast to the expanded shape"
            continue
        result.applied[expand.name] = f"{len(expand.users)} reader(s) broadcast {source.name}"
        expand.replace_all_uses_with(source)
    return finished(program, result)
