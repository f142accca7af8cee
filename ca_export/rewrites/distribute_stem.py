"""Rewrite: run the CA block's shared pointwise branch on each pooled tensor apart.

The shared conv1/BN/activation are spatially pointwise, so they commute with the
concat, the split and the transposes around them: ``f(cat(a, b)) == cat(f(a), f(b))``.
Each gate conv then reads ``f(pool)`` directly. Where the model never transposes a
piece back (the seed's quirk), the gate keeps reading its input along the other
axis; that axis swap moves a singleton, so it is a squeeze + unsqueeze, not a
transpose.

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

import torch
from torch.fx import Graph, Node

from ca_export.fx import add_node, copy_node
from ca_export.patterns import CABlock
from ca_export.patterns.coordatt import IDENTITY

aten = torch.ops.aten


def distribute_stem(graph: Graph, block: CABlock, pooled: dict[str, Node]) -> list[Node]:
    """Feed every gate conv from its own copy of the stem; return the nodes added."""
    added: list[Node] = []
    for branch in block.branches:
        env: dict[Node, Node] = {block.cat: pooled[branch.axis]}
        for node in block.stem:
            env[node] = copy_node(graph, node, env, before=block.splits[0])
            added.append(env[node])
        gate_input = env[block.stem_end]
        if branch.perm != IDENTITY:
            kept = 2 if branch.axis == "h" else 3
            gone = 5 - kept
            conv = branch.gate_conv
            squeezed = add_node(graph, aten.squeeze.dims, (gate_input, [gone]), conv)
            gate_input = add_node(graph, aten.unsqueeze.default, (squeezed, kept), conv)
            added += [squeezed, gate_input]
        branch.gate_conv.replace_input_with(branch.gate_input, gate_input)
    return added
