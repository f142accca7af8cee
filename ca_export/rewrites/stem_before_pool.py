"""Rewrite (ncnn form, dynamic H/W): the stem's affine ops on ``x`` once, the strip means after.

After ``distribute_stem`` each branch runs its pool and then its own copy of the stem. The
stem's leading 1x1 conv and eval-mode batch norm are affine per spatial position, so they
commute with a mean over a spatial axis: ``mean(A x) == A mean(x)`` (a bias is the mean of
itself). One copy of them runs on ``x`` (``[N, mip, H, W]``), and both strip means read
its output; the rest of each stem (the activation) stays after its mean. It is exact
(results differ by fp rounding only) at every size.

Why: with symbolic H and W a strip pool is a ``mean``, which ncnn runs as ``Reduction``,
a generic layer without its packed layout: each of the two reads ``x`` repacked, at
``C`` channels. On the stem's output they read ``mip`` channels (``C / 32`` or 8), and
the 1x1 conv at full size costs less than the two ``Reduction`` layers it spares
(``benchmarks/ncnn_layers.py``). With static sizes the pools are average pools, which
ncnn runs in its packed layout faster than the conv at full size: those blocks are
skipped. Blocks whose stem does not start with an affine op are skipped too.

Before (after ``distribute_stem``)::

    x ─┬─ mean(·, [3]) ── conv1 ── bn ── act ── conv_h ── sig
       └─ mean(·, [2]) ── conv1 ── bn ── act ── conv_w ── sig

After::

    x ── conv1 ── bn ─┬─ mean(·, [3]) ── act ── conv_h ── sig
                      └─ mean(·, [2]) ── act ── conv_w ── sig
"""

from __future__ import annotations

from ca_export.patterns.coordatt import CABlock
from ca_export.patterns.view import GraphView, OpT, ValueT
from ca_export.rewrites.passes import Change, Skip

AFFINE = frozenset({"conv1x1", "bn", "Conv", "BatchNormalization"})
"""Stem ops that commute with a mean over a spatial axis (ATen and ONNX labels)."""


def affine_prefix(view: GraphView[OpT, ValueT], pool: ValueT, gate_conv: OpT) -> list[OpT]:
    """The affine ops a branch runs right after its pool, in order. Another reader of one
    of them (a dead op a rewrite left) keeps its own copy."""
    chain = []
    value = view.data(gate_conv)
    while value != pool and (op := view.producer(value)) is not None:
        chain.append(op)
        value = view.data(op)
    prefix: list[OpT] = []
    for op in reversed(chain):
        if view.label(op) not in AFFINE:
            break
        prefix.append(op)
    return prefix


def stem_before_pool(
    view: GraphView[OpT, ValueT], block: CABlock[OpT, ValueT], static: bool
) -> Change[OpT, ValueT]:
    """Run the stem's affine ops once on ``x`` and take both strip means of their output;
    the returned block names the new means as its pools."""
    if static:
        raise Skip("static sizes: the strip pools are average pools, faster on x in ncnn")
    prefixes = [affine_prefix(view, view.output(b.pool), b.gate_conv) for b in block.branches]
    if not all(prefixes) or len({len(p) for p in prefixes}) != 1:
        raise Skip("a branch's stem does not start with a 1x1 conv or batch norm")
    first = min((b.pool for b in block.branches), key=list(view.ops()).index)
    prefix, branch = prefixes[0], block.branches[0]
    env = {view.output(branch.pool): block.source}
    for op in prefix:
        view.clone(op, env, first, f"{block.name}/ca_stem")
    stem = env[view.output(prefix[-1])]
    after = block
    for branch, ops in zip(block.branches, prefixes, strict=True):
        gone = 3 if branch.axis == "h" else 2
        mean = view.mean(stem, gone, first, f"{block.name}/ca_{branch.axis}/pool")
        view.replace_uses(view.output(ops[-1]), mean)
        after = after.with_branch(branch, pool=view.producer(mean))
    return Change(f"{len(prefix)} affine stem op(s) before the strip means", after)
