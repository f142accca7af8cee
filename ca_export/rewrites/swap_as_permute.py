"""Rewrite (XNNPACK form, dynamic H/W): the seed quirk's singleton axis swap as a permute.

``swap_as_view`` turns ``squeeze(3)`` + ``unsqueeze(2)`` ([B, mip, H, 1] -> [B, mip, 1, H])
into one ``view`` at static sizes; with symbolic sizes XNNPACK refuses the view
("symbolic reshape"), and the pair stays outside the delegate (measured on ``seed_ca``
with bounded H/W: a squeeze/unsqueeze pair per block). ``permute(0, 1, 3, 2)`` moves the
same size-1 axis, so it is exact, and XNNPACK takes it at any size.

Before::

    act ── squeeze(·, [3]) ── unsqueeze(·, 2) ── conv_h

After::

    act ── permute(·, [0, 1, 3, 2]) ── conv_h
"""

from __future__ import annotations

import torch
from torch.fx import Graph, Node

from ca_export.fx import add_node
from ca_export.patterns import CABlock
from ca_export.rewrites.swap_as_view import swap_source

aten = torch.ops.aten


def swap_as_permute(graph: Graph, block: CABlock) -> list[Node]:
    """Replace each gate conv's squeeze + unsqueeze input by one permute; return them."""
    permutes = []
    for branch in block.branches:
        conv = branch.gate_conv
        unsqueezed = conv.args[0]
        source = swap_source(unsqueezed)
        if source is None:
            continue
        assert isinstance(unsqueezed, Node)
        permute = add_node(graph, aten.permute.default, (source, [0, 1, 3, 2]), conv)
        conv.replace_input_with(unsqueezed, permute)
        permutes.append(permute)
    return permutes
