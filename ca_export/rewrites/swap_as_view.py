"""Rewrite (XNNPACK form): the seed quirk's singleton axis swap as one reshape.

Where a CA block never transposes a gate piece back (the seed's quirk),
``distribute_stem`` moves the singleton axis with ``squeeze(3)`` + ``unsqueeze(2)``:
[B, mip, H, 1] -> [B, mip, 1, H]. XNNPACK takes neither op, so each such block splits
the delegate (measured on ``seed_ca``: 4 segments, a squeeze/unsqueeze pair per block
outside). Moving a size-1 axis does not reorder the elements, so a ``view`` to the same
shape is exact, and XNNPACK takes it (``seed_ca`` then lowers into one delegate). Static
shapes only: with symbolic sizes the pair is kept.

Before::

    act ── squeeze(·, [3]) ── unsqueeze(·, 2) ── conv_h

After::

    act ── view(·, [B, mip, 1, H]) ── conv_h
"""

from __future__ import annotations

from ca_export.patterns.coordatt import IDENTITY, CABlock
from ca_export.patterns.view import GraphView, OpT, ValueT
from ca_export.rewrites.passes import Change, Skip


def singleton_swaps(
    view: GraphView[OpT, ValueT], block: CABlock[OpT, ValueT]
) -> list[tuple[OpT, ValueT, ValueT]]:
    """(gate conv, its unsqueezed input, the squeeze's source) where ``distribute_stem`` moved
    a singleton axis with squeeze + unsqueeze (the seed's quirk)."""
    found = []
    for branch in block.branches:
        if branch.perm == IDENTITY:
            continue
        conv = branch.gate_conv
        unsqueezed = view.data(conv)
        unsqueeze = view.producer(unsqueezed)
        if unsqueeze is None or view.onnx_type(unsqueeze) != "Unsqueeze":
            continue
        squeeze = view.producer(view.data(unsqueeze))
        if squeeze is not None and view.onnx_type(squeeze) == "Squeeze":
            found.append((conv, unsqueezed, view.data(squeeze)))
    return found


def swap_as_view(
    view: GraphView[OpT, ValueT], block: CABlock[OpT, ValueT], static: bool
) -> Change[OpT, ValueT]:
    """Replace each gate conv's squeeze + unsqueeze input by one reshape."""
    swapped = 0
    for conv, unsqueezed, source in singleton_swaps(view, block):
        sizes = view.shape(unsqueezed)
        dims = [s for s in sizes if isinstance(s, int)] if sizes is not None else []
        if sizes is None or len(dims) != len(sizes):
            continue
        name = f"{block.name}/ca_swap"
        view.replace_input(conv, unsqueezed, view.reshape(source, dims, conv, name))
        swapped += 1
    if not swapped:
        raise Skip("no singleton swap with static sizes")
    return Change(f"{swapped} singleton swap(s) as one view", block)
