"""Rewrite: pad the CA bottleneck (mip channels) with zero channels to a multiple of 16.

ONNX Runtime's blocked layout on x86 holds channels in blocks of 8 or 16; a conv whose
channels are not a multiple of the block runs in plain NCHW, with reorders of its input
and output around it. Zero channels are exact: each per-branch stem conv gets zero output
channels (zero weights, zero bias, zero batch-norm parameters, so the padded channels
stay finite: the statistics give ``0 * rsqrt(0 + eps) + 0``), the activations map them to
finite values, and each gate conv reads them through zero weights, so they add nothing to
any sum. The parameters are padded where they are read (``constant_pad_nd`` on the ATen
side, which the ONNX exporter and onnxsim fold into padded initializers; new initializers
on the ONNX side). Runs after ``distribute_stem``.

Before (one branch; mip = 8)::

    pool ── conv1 [8] ── bn [8] ── act ── conv_h [C <- 8] ── gate

After (mip padded to 16; weights padded with zeros)::

    pool ── conv1 [16] ── bn [16] ── act ── conv_h [C <- 16] ── gate
"""

from __future__ import annotations

from dataclasses import replace

from ca_export.patterns.coordatt import Branch, CABlock
from ca_export.patterns.view import GraphView, OpT, ValueT
from ca_export.rewrites.passes import Change, Skip

BLOCK = 16
"""The channel multiple padded to (ORT's widest blocked layout, AVX-512)."""


def _chain(view: GraphView[OpT, ValueT], branch: Branch[OpT, ValueT]) -> list[OpT]:
    """The branch's ops from its pool to its gate conv (exclusive), in order."""
    start = view.output(branch.pool)
    chain: list[OpT] = []
    value = view.data(branch.gate_conv)
    while value != start:
        op = view.producer(value)
        if op is None or len(chain) > 32:
            raise Skip("the gate conv is not reached from its pool by one chain of ops")
        chain.append(op)
        value = view.data(op)
    return chain[::-1]


def pad_mip(
    view: GraphView[OpT, ValueT], block: CABlock[OpT, ValueT], static: bool
) -> Change[OpT, ValueT]:
    """Give each branch's stem and gate conv ``mip`` rounded up to a multiple of 16; the
    returned block names the new gate convs and the padded ``mip``."""
    size = -(-block.mip // BLOCK) * BLOCK
    if size == block.mip:
        raise Skip(f"mip {block.mip} already is a multiple of {BLOCK}")
    chains = [_chain(view, branch) for branch in block.branches]
    for chain in chains:
        for op in chain:
            if view.channel_params(op) is None:
                raise Skip(f"cannot pad the channels of '{view.label(op)}'")
    # The branches share parameters (one stem, distributed), so a parameter is padded once,
    # before the gate conv that comes first in the graph: every branch's clones, placed
    # before their own gate conv, then read it after it is defined, whichever gate the
    # forward computes first.
    order = {op: i for i, op in enumerate(view.ops())}
    first = min((b.gate_conv for b in block.branches), key=order.__getitem__)
    padded: dict[ValueT, ValueT] = {}
    padded_gate: dict[ValueT, ValueT] = {}
    after = block
    for branch, chain in zip(block.branches, chains, strict=True):
        base = f"{block.name}/ca_{branch.axis}/pad"
        env: dict[ValueT, ValueT] = {}
        for op in chain:
            for value, axis in view.channel_params(op) or []:
                if value not in padded:
                    padded[value] = view.pad(value, axis, size, first, base)
                env[value] = padded[value]
            view.clone(op, env, branch.gate_conv, base)
        weight = view.operands(branch.gate_conv)[1]
        if weight not in padded_gate:
            padded_gate[weight] = view.pad(weight, 1, size, branch.gate_conv, f"{base}_gate")
        env[weight] = padded_gate[weight]
        old = view.output(branch.gate_conv)
        new_conv = view.clone(branch.gate_conv, env, branch.gate_conv, base)
        view.replace_uses(old, view.output(new_conv))
        after = after.with_branch(branch, gate_conv=new_conv)
    return Change(f"mip {block.mip} padded to {size} with zero channels", replace(after, mip=size))
