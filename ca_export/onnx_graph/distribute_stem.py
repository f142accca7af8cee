"""Rewrite: run the CA block's shared pointwise branch on each pooled tensor apart.

The shared 1x1 Conv / BatchNormalization / activation are spatially pointwise, so they
commute with the Concat, the Split (or Slices) and the Transposes around them:
``f(concat(a, b)) == concat(f(a), f(b))``. Each branch gets its own copy of those
nodes (reading the same weights), and each gate conv reads its branch directly.
Where the model never transposes a piece back (the seed's quirk), the gate keeps
reading its input along the other axis; that swap moves a singleton, so it is a
Squeeze + Unsqueeze, not a Transpose.

Before::

    pool_h ──────────────┐
                         Concat ── Conv ── BN ── act ── Split ─┬─ Conv_h ── Sigmoid
    pool_w ── Transpose ─┘                                    └─ Transpose ── Conv_w ── Sigmoid

After::

    pool_h ── Conv ── BN ── act ── Conv_h ── Sigmoid
    pool_w ── Conv ── BN ── act ── Conv_w ── Sigmoid       (Conv/BN weights shared)

After, where a piece is not transposed back (seed)::

    pool_h ── Conv ── BN ── act ── Squeeze(3) ── Unsqueeze(2) ── Conv_h ── Sigmoid
"""

from __future__ import annotations

from ca_export.onnx_graph.edit import Editor
from ca_export.onnx_graph.pattern import IDENTITY, OnnxBlock


def distribute_stem(edit: Editor, block: OnnxBlock, pooled: dict[str, str]) -> None:
    """Feed every gate conv from its own copy of the stem."""
    for branch in block.branches:
        base = f"{block.name}/ca_{branch.axis}"
        env = {block.concat.output[0]: pooled[branch.axis]}
        for node in block.stem:
            edit.clone(node, env, base)
        gate_input = env[block.stem_end]
        if branch.perm != IDENTITY:
            kept = 2 if branch.axis == "h" else 3
            lands = branch.perm.index(kept)
            squeezed = edit.axes_node("Squeeze", gate_input, [5 - kept], f"{base}/squeeze")
            gate_input = edit.axes_node("Unsqueeze", squeezed, [5 - lands], f"{base}/unsqueeze")
        branch.gate_conv.input[0] = gate_input
