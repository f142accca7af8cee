"""Rewrite (LiteRT form): a written-out h_swish as ``(relu6(x + 3) * x) * (1/6)``.

litert-torch fuses ``x * relu6(x + 3) / 6`` (and ``hardswish``) into HARD_SWISH, which
XNNPACK does not take in int8: a static-int8 file of MobileNetV2-CA keeps its 32 stem
h_swish ops outside the delegate, in 17 partitions. Grouped as ``(relu6(x + 3) * x) *
(1/6)`` the converter keeps ADD (with a fused RELU6) and MUL, and folds the ``* (1/6)``
into the gate conv after it; XNNPACK runs all of them in fp32 and int8, at the same fp32
speed within noise (``benchmarks/litert_floor.py``). It is exact: the same products in
another order (results differ by fp rounding only). An ``nn.Hardswish`` (one op) is left
as it is.

Before (either grouping ``patterns.hswish`` recognises)::

    x ─┬─ add(·, 3) ── relu6 ── div(·, 6) ─┐
       └──────────────────────────────── mul ── y

After::

    x ─┬─ add(·, 3.0) ── clamp(·, 0.0, 6.0) ─┐
       └──────────────────────────────────── mul(relu6, x) ── mul(·, 1/6) ── y
"""

from __future__ import annotations

from ca_export.patterns.coordatt import CABlock
from ca_export.patterns.hswish import SIXTH, h_swish
from ca_export.patterns.view import GraphView, Op
from ca_export.rewrites.hardswish import stem_ends
from ca_export.rewrites.passes import Change, Skip

ATEN_ONLY = "the LiteRT form rewrites ATen graphs only"


def _grouped(view: GraphView, end: Op) -> bool:
    """Whether ``end`` already is ``mul(mul(relu6(·), x), 1/6)``."""
    arith = view.scalar_arith(end)
    if arith is None or arith[0] != "mul":
        return False
    inner = view.producer(arith[1])
    if inner is None or view.binary_kind(inner) != "mul":
        return False
    first = view.producer(view.operands(inner)[0])
    return first is not None and view.activation(first) == "relu6"


def relu6_hswish(view: GraphView, block: CABlock, static: bool) -> Change:
    """Write each h_swish on the block's stem copies as ``(relu6(x + 3) * x) * (1/6)``."""
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
        _, clip, _ = view.float_hardsigmoid(x, end, name)
        product = view.binary("mul", view.output(clip), x, end, name)
        view.replace_uses(view.output(end), view.binary("mul", product, SIXTH, end, name))
    return Change(f"{len(found)} h_swish as (relu6(x + 3) * x) * (1/6)", block)
