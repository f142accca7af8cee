"""Rewrite (XNNPACK form): the seed quirk's singleton axis swap as one ``view``.

Where a CA block never transposes a gate piece back (the seed's quirk),
``distribute_stem`` moves the singleton axis with ``squeeze(3)`` + ``unsqueeze(2)``:
[B, mip, H, 1] -> [B, mip, 1, H]. XNNPACK takes neither op, so each such block splits
the delegate (measured on ``seed_ca``: 4 segments, a squeeze/unsqueeze pair per block
outside). Moving a size-1 axis does not reorder the elements, so a ``view`` to the
same shape is exact, and XNNPACK takes it (``seed_ca`` then lowers into one
delegate). Static shapes only: with symbolic sizes the pair is kept.

Before::

    act ── squeeze(·, [3]) ── unsqueeze(·, 2) ── conv_h

After::

    act ── view(·, [B, mip, 1, H]) ── conv_h
"""

from __future__ import annotations

import torch
from torch.fx import Graph, Node

from ca_export.fx import add_node, shape
from ca_export.patterns import CABlock

aten = torch.ops.aten


def swap_source(node: object) -> Node | None:
    """The source of ``unsqueeze(squeeze(source, [d]), k)`` if ``node`` is that, else None."""
    if not isinstance(node, Node) or node.target != aten.unsqueeze.default:
        return None
    squeezed = node.args[0]
    if not isinstance(squeezed, Node) or squeezed.target != aten.squeeze.dims:
        return None
    source = squeezed.args[0]
    return source if isinstance(source, Node) and len(squeezed.users) == 1 else None


def swap_as_view(graph: Graph, block: CABlock) -> list[Node]:
    """Replace each gate conv's squeeze + unsqueeze input by one view; return the views."""
    views = []
    for branch in block.branches:
        conv = branch.gate_conv
        unsqueezed = conv.args[0]
        source = swap_source(unsqueezed)
        if source is None:
            continue
        assert isinstance(unsqueezed, Node)
        sizes = shape(unsqueezed)
        if not all(isinstance(s, int) for s in sizes):
            continue
        view = add_node(graph, aten.view.default, (source, list(sizes)), conv)
        conv.replace_input_with(unsqueezed, view)
        views.append(view)
    return views
