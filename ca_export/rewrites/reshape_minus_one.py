"""Rewrite: a reshape's size computed from the input's H and W, written as ``-1``.

A detection head flattens each level's map with ``x.view(b, c, h * w)``, the ``h * w``
read from the map's shape. TorchScript records that product as the traced number, so
the converted ncnn model holds it. Written as ``-1``, pnnx (given a second input shape)
writes the ncnn ``Reshape`` with a size expression (``6="*(0h,0w),c"``), which follows
the input size. The reshape is the same: ``-1`` is the one size that makes the element
counts agree.

Before::

    x ── view(x, [b, c, f(H, W)])
    input ── sym_size ── arithmetic ──┘

After::

    x ── view(x, [b, c, -1])

Match rules: ``aten.view``/``aten.reshape``/``aten._unsafe_view`` whose sizes hold
exactly one operand that depends on the input's H or W and no ``-1`` already. A reshape
with two such sizes is left alone with the reason. An ncnn-only pass on the ATen graph
(run by ``pipeline.ncnn`` on the size-safe trace).
"""

from __future__ import annotations

from typing import Any

import torch
from torch.export import ExportedProgram

from ca_export.rewrites.grid_from_map import finished
from ca_export.rewrites.passes import PassResult

NAME = "reshape_minus_one"
aten = torch.ops.aten
RESHAPES = {aten.view.default, aten.reshape.default, aten._unsafe_view.default}


def spatial_symbols(program: ExportedProgram) -> set[Any]:
    """The symbols of the user inputs' sizes after the first two (H, W, ...)."""
    user = set(program.graph_signature.user_inputs)
    found: set[Any] = set()
    for node in program.graph.nodes:
        if node.op == "placeholder" and node.name in user:
            for size in getattr(node.meta.get("val"), "shape", ())[2:]:
                if isinstance(size, torch.SymInt):
                    found |= size.node.expr.free_symbols
    return found


def depends(size: object, spatial: set[Any]) -> bool:
    """Whether a size operand (a node holding a SymInt, or a SymInt) uses ``spatial``."""
    val = size.meta.get("val") if isinstance(size, torch.fx.Node) else size
    return isinstance(val, torch.SymInt) and bool(val.node.expr.free_symbols & spatial)


def reshape_minus_one(program: ExportedProgram) -> PassResult:
    """Rewrite every matching reshape of ``program`` in place."""
    result = PassResult(NAME)
    spatial = spatial_symbols(program)
    graph = program.graph
    for node in graph.nodes:
        if node.target not in RESHAPES or len(node.args) != 2:
            continue
        sizes = list(node.args[1])
        held = [i for i, s in enumerate(sizes) if depends(s, spatial)]
        if not held:
            continue
        if len(held) > 1 or -1 in sizes:
            result.skipped[node.name] = f"{len(held)} sizes from H or W (or a -1 already)"
            continue
        sizes[held[0]] = -1
        node.args = (node.args[0], sizes)
        result.applied[node.name] = f"size {held[0]} as -1"
    return finished(program, result)
