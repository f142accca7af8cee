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

from ca_export.patterns.coordatt import CABlock
from ca_export.patterns.view import GraphView, OpT, ValueT
from ca_export.rewrites.passes import EXECUTORCH_ONLY, Change, Skip
from ca_export.rewrites.swap_as_view import singleton_swaps


def swap_as_permute(
    view: GraphView[OpT, ValueT], block: CABlock[OpT, ValueT], static: bool
) -> Change[OpT, ValueT]:
    """Replace each gate conv's squeeze + unsqueeze input by one permute."""
    if not view.supports("permute"):
        raise Skip(EXECUTORCH_ONLY)
    swapped = 0
    for conv, unsqueezed, source in singleton_swaps(view, block):
        permute = view.permute(source, [0, 1, 3, 2], conv, f"{block.name}/ca_swap")
        view.replace_input(conv, unsqueezed, permute)
        swapped += 1
    if not swapped:
        raise Skip("no singleton swap left")
    return Change(f"{swapped} singleton swap(s) as one permute", block)
