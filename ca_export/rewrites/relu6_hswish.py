"""Rewrite (LiteRT form): a written-out h_swish as ``(relu6(x + 3) * x) / 6``.

litert-torch fuses ``x * relu6(x + 3) / 6`` (and ``hardswish``) into HARD_SWISH, which
XNNPACK does not take in int8: a static-int8 file of MobileNetV2-CA keeps its 32 stem
h_swish ops outside the delegate, in 17 partitions. Grouped as ``(relu6(x + 3) * x) / 6``
the converter keeps ADD (with a fused RELU6) and MUL, and folds the ``/ 6`` into the gate
conv after it; XNNPACK runs all of them in fp32 and int8, at the same fp32
speed within noise (``benchmarks/litert_floor.py``). It is exact: the same products in
another order (results differ by fp rounding only). An ``nn.Hardswish`` (one op) is left
as it is.

Before (either grouping ``patterns.hswish`` recognises)::

    x ─┬─ add(·, 3) ── relu6 ── div(·, 6) ─┐
       └──────────────────────────────── mul ── y

After::

    x ─┬─ add(·, 3.0) ── clamp(·, 0.0, 6.0) ─┐
       └──────────────────────────────────── mul(relu6, x) ── div(·, 6.0) ── y
"""

from __future__ import annotations

from ca_export.patterns.coordatt import CABlock
from ca_export.patterns.hswish import by_six, h_swish
from ca_export.patterns.view import GraphView, OpT, ValueT
from ca_export.rewrites.hardswish import stem_ends
from ca_export.rewrites.passes import Change, Skip

ATEN_ONLY = "the LiteRT form rewrites ATen graphs only"


def _grouped(view: GraphView[OpT, ValueT], end: OpT) -> bool:
    """Whether ``end`` already is ``div(mul(relu6(·), x), 6)``."""
    product = by_six(view, end)
    inner = view.producer(product) if product is not None else None
    if inner is None or view.binary_kind(inner) != "mul":
        return False
    first = view.producer(view.operands(inner)[0])
    return first is not None and view.activation(first) == "relu6"


def relu6_hswish(
    view: GraphView[OpT, ValueT], block: CABlock[OpT, ValueT], static: bool
) -> Change[OpT, ValueT]:
    """Write each h_swish on the block's stem copies as ``(relu6(x + 3) * x) / 6``."""
    if not view.supports("float_scalars"):
        raise Skip(ATEN_ONLY)
    found = [
        (end, x)
        for end in stem_ends(view, block)
        if (x := h_swish(view, end)) is not None and not _grouped(view, end)
    ]
    if not found:
        raise Skip("no written-out h_swish on the stem in another grouping")
    for end, x in found:
        name = f"{block.name}/ca_hswish"
        _, clip, sixth = view.float_hardsigmoid(x, end, name)
        view.set_operands(sixth, [view.binary("mul", view.output(clip), x, sixth, name)])
        view.replace_uses(view.output(end), view.output(sixth))
    return Change(f"{len(found)} h_swish as (relu6(x + 3) * x) / 6", block)
