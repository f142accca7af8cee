"""Rewrite: a grid of ``arange(H)``/``arange(W)`` cell indices, read from a feature map.

A detection head builds its anchor points from the sizes of a feature map:
``meshgrid(arange(h) + 0.5, arange(w) + 0.5)``. TorchScript records ``arange`` with the
traced size, so the converted ncnn model holds the traced grid (and ncnn has no
``meshgrid`` layer). The same grid is a cumulative sum over a map of ones of the feature
map's own shape: ``cumsum(ones, 1) - 1`` counts rows, ``cumsum(ones, 2) - 1`` columns
(ncnn ``CumulativeSum``), which follows the input size. The counts are small integers,
exact in float32 below 2**24; the scalar ops that followed each ``arange`` are applied to
the grid instead, element for element the same values. The ones map is
``fmap[0, :1] * 0 + 1`` (``[1, h, w]``): a non-finite value in ``fmap``'s first channel
turns the rest of its row or column of the grid non-finite. A ``stack`` of the two
meshgrid outputs along dim 0 becomes a ``cat`` of the ``[1, h, w]`` planes (pnnx cannot
write that stack of 2-D maps for ncnn); one along their last axis (an anchor-based
head's ``[h, w, 2]`` grid) a ``cat`` of the planes given a last axis, ``[1, h, w, 2]``,
squeezed to ``[h, w, 2]``. Any other reader reads the plane squeezed.

Before::

    arange(h) ── add(·, 0.5) ──┐
    arange(w) ── add(·, 0.5) ──┴── meshgrid(ij) ── getitem 0 / 1 ── stack(dim 0)

After::

    fmap ── select(0, 0) ── slice(0, 0, 1) ── mul(·, 0) ── add(·, 1) ──┐
      ┌─────────────────────────────────────────────────────────────┘
      ├── cumsum(·, 1) ── sub(·, 1) ── add(·, 0.5) ──┐
      └── cumsum(·, 2) ── sub(·, 1) ── add(·, 0.5) ──┴── cat(dim 0)

A stack along the last axis (``stack(dim 2)`` of the two outputs), after::

    plane y ── unsqueeze(·, 3) ──┐
    plane x ── unsqueeze(·, 3) ──┴── cat(dim 3) ── squeeze(·, 0)

Match rules: ``aten.meshgrid`` with ``ij`` indexing of two 1-D float inputs, each an
``arange(n)`` of a symbolic size followed by ``add``/``sub``/``mul``/``div`` with a
Python scalar; ``fmap`` is the first 4-D tensor of the graph whose H and W are the two
sizes (as symbolic expressions), of the same dtype. Anything else is left alone with the
reason. An ncnn-only pass on the ATen graph (run by ``pipeline.ncnn`` on the size-safe
trace), not a CA block rewrite.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Any, cast

import torch
from torch.export import ExportedProgram
from torch.fx import Graph, Node
from torch.fx.experimental.symbolic_shapes import statically_known_true
from torch.fx.node import Argument

from ca_export.rewrites.passes import PassResult, Skip

NAME = "grid_from_map"
aten = torch.ops.aten
_SCALAR_OPS = {aten.add.Tensor, aten.sub.Tensor, aten.mul.Tensor, aten.div.Tensor}


def finished(program: ExportedProgram, result: PassResult) -> PassResult:
    """``result``, after dropping the ops a pass that changed ``program`` left unused and
    recompiling its module."""
    if result.modified:
        program.graph.eliminate_dead_code()
        program.graph.lint()
        program.graph_module.recompile()
    return result


def same_size(a: object, b: object) -> bool:
    """Whether two sizes (ints or SymInts) are equal at every input size."""
    if not isinstance(a, (int, torch.SymInt)) or not isinstance(b, (int, torch.SymInt)):
        return False
    return statically_known_true(a == b)


def value(node: object) -> Any:
    """The fake tensor or size a node holds (an operand's own value otherwise)."""
    return node.meta.get("val") if isinstance(node, Node) else node


def add_op(graph: Graph, target: Any, *args: object) -> Node:
    """Insert ``target(*args)`` at the graph's insertion point, with its fake value."""
    node = graph.call_function(target, cast(tuple[Argument, ...], args))
    node.meta["val"] = target(*(_values(a) for a in args))
    return node


def _values(arg: object) -> Any:
    """``value`` of an operand or of each item of a list operand."""
    return [value(a) for a in arg] if isinstance(arg, list) else value(arg)


def feature_map(graph: Graph, before: Node, sizes: Sequence[object]) -> Node | None:
    """The first 4-D tensor before ``before`` whose trailing sizes are ``sizes``."""
    for node in graph.nodes:
        if node is before:
            return None
        val = node.meta.get("val")
        if isinstance(val, torch.Tensor) and val.dim() == 4:
            tail = list(val.shape[4 - len(sizes) :])
            if all(same_size(t, s) for t, s in zip(tail, sizes, strict=True)):
                found: Node = node
                return found
    return None


def _chain(node: Node) -> tuple[Node, list[tuple[Any, object]]]:
    """The ``arange`` a 1-D grid input comes from and the scalar ops after it (``Skip``
    with the reason for any other input)."""
    ops: list[tuple[Any, object]] = []
    while node.target in _SCALAR_OPS:
        source, scalar = (*node.args, None, None)[:2]
        if len(node.args) != 2 or not isinstance(scalar, (int, float)) or node.kwargs:
            raise Skip(f"{node.name} is not an op with a scalar")
        if not isinstance(source, Node):
            raise Skip(f"{node.name} reads no tensor")
        ops.append((node.target, scalar))
        node = source
    if node.target is not aten.arange.default or not isinstance(value(node.args[0]), torch.SymInt):
        raise Skip(f"{node.name} is not an arange of a symbolic size")
    if not value(node).is_floating_point():
        raise Skip(f"{node.name} is not a float arange")
    return node, ops[::-1]


def _stacked(graph: Graph, planes: list[Node], axis: int) -> Node:
    """The stack of the ``[h, w]`` grids along dim 0 (``axis`` 0) or their last (``axis``
    3), as a ``cat`` of their ``[1, h, w]`` planes."""
    if axis == 0:
        return add_op(graph, aten.cat.default, planes, 0)
    columns = [add_op(graph, aten.unsqueeze.default, p, axis) for p in planes]
    return add_op(graph, aten.squeeze.dim, add_op(graph, aten.cat.default, columns, axis), 0)


def _replace_outputs(graph: Graph, grid: Node, planes: list[Node]) -> None:
    """Let the meshgrid's readers read the ``[1, h, w]`` planes: a ``stack`` of its
    outputs along dim 0 or their last becomes a ``cat`` of the planes (``_stacked``), any
    other reader a ``squeeze``."""
    items = {u: int(cast(int, u.args[1])) for u in grid.users if u.target is operator.getitem}
    for item, index in items.items():
        for user in list(item.users):
            stacked = user.args[0] if user.target is aten.stack.default else ()
            dim = user.args[1] if len(user.args) > 1 else 0
            axis = {0: 0, 2: 3, -1: 3}.get(cast(int, dim))
            tensors = list(stacked) if isinstance(stacked, (list, tuple)) else []
            if (
                axis is not None
                and tensors
                and all(isinstance(t, Node) and t in items for t in tensors)
            ):
                with graph.inserting_before(user):
                    joined = [planes[items[cast(Node, t)]] for t in tensors]
                    user.replace_all_uses_with(_stacked(graph, joined, axis))
        if item.users:
            with graph.inserting_before(item):
                item.replace_all_uses_with(add_op(graph, aten.squeeze.dim, planes[index], 0))


def grid_from_map(program: ExportedProgram) -> PassResult:
    """Rewrite every matching ``meshgrid`` of ``program`` in place."""
    result = PassResult(NAME)
    graph = program.graph
    for grid in [n for n in graph.nodes if n.target is aten.meshgrid.indexing]:
        tensors, indexing = grid.args[0], grid.args[1] if len(grid.args) > 1 else "ij"
        if indexing != "ij" or len(tensors) != 2:
            result.skipped[grid.name] = "not a 2-D meshgrid with ij indexing"
            continue
        try:
            chains = [_chain(t) for t in tensors]
        except Skip as why:
            result.skipped[grid.name] = str(why)
            continue
        sizes = [value(arange.args[0]) for arange, _ in chains]
        fmap = feature_map(graph, grid, sizes)
        dtype = value(chains[0][0]).dtype
        if fmap is None or value(fmap).dtype != dtype:
            result.skipped[grid.name] = "no feature map of the grid's sizes and dtype"
            continue
        with graph.inserting_before(grid):
            plane = add_op(graph, aten.select.int, fmap, 0, 0)
            plane = add_op(graph, aten.slice.Tensor, plane, 0, 0, 1)
            ones = add_op(graph, aten.add.Tensor, add_op(graph, aten.mul.Tensor, plane, 0), 1)
            planes = []
            for axis, (_, ops) in enumerate(chains):
                out = add_op(graph, aten.cumsum.default, ones, axis + 1)
                out = add_op(graph, aten.sub.Tensor, out, 1)
                for target, scalar in ops:
                    out = add_op(graph, target, out, scalar)
                planes.append(out)
        _replace_outputs(graph, grid, planes)
        result.applied[grid.name] = f"grid of {fmap.name}'s H and W by cumsum"
    return finished(program, result)
