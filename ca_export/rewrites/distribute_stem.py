"""Rewrite: run the CA block's shared pointwise branch on each pooled tensor apart.

The shared conv1/BN/activation are spatially pointwise, so they commute with the concat,
the split and the transposes around them: ``f(cat(a, b)) == cat(f(a), f(b))``. Each
branch gets its own copy of those ops (reading the same weights), and each gate conv
reads its branch directly. Where the model never transposes a piece back (the seed's
quirk), the gate keeps reading its input along the other axis; that swap moves a
singleton, so it is a squeeze + unsqueeze, not a transpose.

Before::

    pool_h ────────────┐
                       cat ── conv1 ── bn ── act ── split ─┬─ conv_h ── sig
    pool_w ── permute ─┘                                  └─ permute ── conv_w ── sig

After::

    pool_h ── conv1 ── bn ── act ── conv_h ── sig
    pool_w ── conv1 ── bn ── act ── conv_w ── sig      (conv1/bn weights shared)

After, where a piece is not transposed back (seed)::

    pool_h ── conv1 ── bn ── act ── squeeze(3) ── unsqueeze(2) ── conv_h ── sig
"""

from __future__ import annotations

from ca_export.patterns.coordatt import IDENTITY, CABlock
from ca_export.patterns.view import GraphView, OpT, ValueT
from ca_export.rewrites.passes import Change


def distribute_stem(
    view: GraphView[OpT, ValueT], block: CABlock[OpT, ValueT], static: bool
) -> Change[OpT, ValueT]:
    """Feed every gate conv from its own copy of the stem."""
    for branch in block.branches:
        base = f"{block.name}/ca_{branch.axis}"
        env = {view.output(block.concat): view.output(branch.pool)}
        for op in block.stem:
            view.clone(op, env, block.splits[0], base)
        gate_input = env[block.stem_end]
        if branch.perm != IDENTITY:
            kept = 2 if branch.axis == "h" else 3
            lands = branch.perm.index(kept)
            conv = branch.gate_conv
            squeezed = view.squeeze(gate_input, 5 - kept, conv, f"{base}/squeeze")
            gate_input = view.unsqueeze(squeezed, 5 - lands, conv, f"{base}/unsqueeze")
        view.replace_input(branch.gate_conv, view.data(branch.gate_conv), gate_input)
    swapped = sum(b.perm != IDENTITY for b in block.branches)
    summary = f"{len(block.stem)} stem ops per branch" + (
        f", {swapped} singleton swap(s)" if swapped else ""
    )
    return Change(summary, block)
