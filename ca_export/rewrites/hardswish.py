"""Rewrite: ``x * relu6(x + 3) / 6`` written out at the end of a CA stem becomes one hardswish.

The official CA block writes h_swish out (add, clip, divide, multiply); it is recognised by
``patterns.hswish.h_swish`` (the ``/ 6`` also as ``* (1/6)``; every op but the last must
have no other reader). ``hardswish`` computes the same function (results differ
by fp rounding only) as one op: ONNX ``HardSwish`` (opset 14+), which ONNX Runtime's CPU
provider fuses into the 1x1 conv before it, so the gate path stays in its blocked layout
with no reorders. Measured by ``benchmarks/target_forms.py --ablations``. Below opset 14
(an ONNX file ``optimize`` reads) the ONNX adapter writes ``x * HardSigmoid(x, 1/6, 1/2)``,
the form ``export.opset`` gives ``ca-export onnx --opset 13``.

Before (either grouping)::

    x ─┬─ add(·, 3) ── relu6 ── div(·, 6) ─┐
       └──────────────────────────────── mul ── y

    x ─┬─ add(·, 3) ── relu6 ─┐
       └───────────────────── mul ── div(·, 6) ── y

After::

    x ── hardswish ── y
"""

from __future__ import annotations

from ca_export.patterns.coordatt import CABlock
from ca_export.patterns.hswish import h_swish
from ca_export.patterns.view import GraphView, OpT, ValueT
from ca_export.rewrites.passes import Change, Skip


def stem_ends(view: GraphView[OpT, ValueT], block: CABlock[OpT, ValueT]) -> list[OpT]:
    """The ops from each gate conv's input back to its pool: where a stem copy ends."""
    ends = []
    for branch in block.branches:
        pool = view.output(branch.pool)
        value = view.data(branch.gate_conv)
        while value != pool and (op := view.producer(value)) is not None:
            ends.append(op)
            value = view.data(op)
    return ends


def fuse_ends(view: GraphView[OpT, ValueT], ops: list[OpT], name: str) -> int:
    """Replace each written-out h_swish ending at one of ``ops`` by one hardswish; return
    how many."""
    found = [(op, x) for op in ops if (x := h_swish(view, op)) is not None]
    for end, x in found:
        view.replace_uses(view.output(end), view.hardswish(x, end, name))
    return len(found)


def fuse_hardswish(
    view: GraphView[OpT, ValueT], block: CABlock[OpT, ValueT], static: bool
) -> Change[OpT, ValueT]:
    """Replace each written-out h_swish on the block's stem copies by one hardswish."""
    ends = stem_ends(view, block)
    if not any(h_swish(view, op) is not None for op in ends):
        raise Skip("no written-out h_swish on the stem")
    fused = fuse_ends(view, ends, f"{block.name}/ca_hswish")
    return Change(f"{fused} h_swish fused", block)
