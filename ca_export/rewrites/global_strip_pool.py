"""Rewrite (XNNPACK form, dynamic H/W): a strip pool as a global mean between two permutes.

With symbolic H and W a strip pool is ``mean(x, [3], keepdim=True)`` (``pool_to_reduce``),
and XNNPACK takes none of the exact forms of it: its mean averages only the two
innermost axes of a 4-D tensor (``[2, 3]``, global average pooling); ``avg_pool2d``
needs its kernel as ints (a kernel read from the input size is specialised by
torch.export); it has no ``sum``; a ``matmul`` with a ones vector needs a ones tensor
of symbolic size (``full``, not delegated). So each pool, two per block, splits the
delegate. For batch 1 the batch axis can carry the kept axis's partner instead: permute
``x`` [1, C, H, W] to [C, H, W, 1], average over [2, 3] (W and a size-1 axis), permute
[C, H, 1, 1] back to [1, C, H, 1]. The permutes and the mean lower into XNNPACK at any
size in the bounds. It is exact: each output is the mean of the same W values (results
differ by fp rounding only). A batch other than 1 keeps the mean (it cannot be moved
out of the way without a reshape of symbolic size, which XNNPACK refuses). Used for
the ``xnnpack`` form (ExecuTorch) only, on views that make the ``permute`` and
``global_mean`` edits (ATen graphs); an ONNX graph is skipped.

Before::

    x ── mean(·, [3], keepdim) ── y      [1, C, H, 1]
    x ── mean(·, [2], keepdim) ── y      [1, C, 1, W]

After::

    x ── permute(1, 2, 3, 0) ── mean(·, [2, 3], keepdim) ── permute(3, 0, 1, 2) ── y
    x ── permute(1, 3, 2, 0) ── mean(·, [2, 3], keepdim) ── permute(2, 0, 3, 1) ── y
"""

from __future__ import annotations

from ca_export.patterns.coordatt import CABlock
from ca_export.patterns.view import GraphView, OpT, ValueT
from ca_export.rewrites.passes import EXECUTORCH_ONLY, Change, Skip

PERMUTES = {3: ([1, 2, 3, 0], [3, 0, 1, 2]), 2: ([1, 3, 2, 0], [2, 0, 3, 1])}
"""By the axis a strip pool averages: the permute in, and the permute back out."""


def _strip_mean(view: GraphView[OpT, ValueT], pool: OpT) -> tuple[ValueT, int] | None:
    """(source, averaged axis) if ``pool`` is a keepdim ``mean`` over axis 2 or 3 of a
    batch-1 4-D tensor, else None."""
    found = view.strip_pool(pool)
    if found is None or found[2] != "mean":
        return None
    source, kept, _ = found
    sizes = view.shape(source)
    if sizes is None or not (type(sizes[0]) is int and sizes[0] == 1):
        return None
    return source, 5 - kept


def global_strip_pool(
    view: GraphView[OpT, ValueT], block: CABlock[OpT, ValueT], static: bool
) -> Change[OpT, ValueT]:
    """Replace each branch's batch-1 ``mean`` pool by permute / global mean / permute; the
    returned block names the last permute as its pool."""
    if not (view.supports("permute") and view.supports("global_mean")):
        raise Skip(EXECUTORCH_ONLY)
    done = []
    after = block
    for branch in block.branches:
        found = _strip_mean(view, branch.pool)
        if found is None:
            continue
        source, axis = found
        into, back = PERMUTES[axis]
        pool, name = branch.pool, f"{block.name}/ca_{branch.axis}/pool"
        moved = view.permute(source, into, pool, f"{name}_in")
        mean = view.global_mean(moved, pool, name)
        out = view.permute(mean, back, pool, f"{name}_out")
        view.replace_uses(view.output(pool), out)
        after = after.with_branch(branch, pool=view.producer(out))
        done.append(f"{branch.axis}: mean over axis {axis} as a global mean between permutes")
    if not done:
        raise Skip("no batch-1 mean over one axis (static pools, or a batch other than 1)")
    return Change("; ".join(done), after)
