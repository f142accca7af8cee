"""Rewrite: a size-driven upsample whose ratio to its input is a static integer, by scale factor.

A dense-prediction head upsamples to a size it reads from another tensor
(``F.interpolate(x, size=skip.shape[-2:])``, or back to the input size). In a dynamic
trace that size is a symbolic expression of the input's H and W, which coremltools
cannot convert to a flexible Core ML model. Where the output size is a whole multiple
``r`` of the upsample's input size, the same upsample by scale factor ``r`` gives the
same values (PyTorch and MIL place the sampling grid from the input and output sizes
alone, so the two forms agree wherever the sizes agree).

Before::

    x ──────────────────────────── upsample_bilinear2d(x, size=[f(H), g(W)])
    input ── sym_size ── arithmetic ──┘

After::

    x ── upsample_bilinear2d(x, scale_factors=[r_h, r_w])

Match rules: ``aten.upsample_bilinear2d.vec`` or ``aten.upsample_nearest2d.vec`` with
an output size (not scale factors) that is symbolic; each axis' output and input sizes
are expressions of one input dimension, whose ratio at the traced size is an integer
``r``. The rewrite is exact where ``out(H) == r * in(H)``; ``multiple`` is the smallest
power of two ``m`` (up to 64) for which that holds at ``H = m, 2m, ..., 8m``, and an
upsample with no such ``m`` is left alone with the reason. Flexible Core ML sizes must
then be multiples of ``multiple`` (checked by ``pipeline.coreml``).

A ``GraphPass`` (it rewrites ops outside CA blocks), run by ``rewrites.scale_upsamples``
on Core ML's dynamic traces; the view's optional edit ``scale_upsample`` finds the
upsamples and sets their scales. Each rewritten upsample's ``figures`` hold its
``ratio`` and ``multiple``.
"""

from __future__ import annotations

import math

import torch

from ca_export.patterns.view import Dim, GraphView, NoMatch, OpT, ValueT
from ca_export.rewrites.passes import PassResult

NAME = "size_to_scale"
MULTIPLES = (1, 2, 4, 8, 16, 32, 64)
ATEN_ONLY = "size_to_scale rewrites ATen graphs only"


def _axis(size_in: Dim, size_out: Dim) -> tuple[int, int] | str:
    """(ratio, multiple) for one axis, or why it cannot be rewritten."""
    if not isinstance(size_in, torch.SymInt) or not isinstance(size_out, torch.SymInt):
        return "the size is static"
    expr_in, expr_out = size_in.node.expr, size_out.node.expr
    symbols = expr_in.free_symbols | expr_out.free_symbols
    if len(symbols) != 1:
        return f"the sizes depend on {len(symbols)} input dimensions"
    hint_in, hint_out = size_in.node.hint, size_out.node.hint
    if not hint_in or hint_out % hint_in:
        return f"output size {hint_out} is not a whole multiple of input size {hint_in}"
    ratio = hint_out // hint_in
    (symbol,) = symbols
    for m in MULTIPLES:
        values = [m * k for k in range(1, 9)]
        if all(expr_out.subs(symbol, v) == ratio * expr_in.subs(symbol, v) for v in values):
            return ratio, m
    return f"out = {ratio} x in holds at no multiple of up to {MULTIPLES[-1]}"


def size_to_scale(view: GraphView[OpT, ValueT], static: bool) -> PassResult:
    """Rewrite every size-driven integer-ratio upsample of the view in place."""
    result = PassResult(NAME)
    if not view.supports("scale_upsample"):
        result.skipped["<graph>"] = ATEN_ONLY
        return result
    for op in view.upsamples():
        key = view.node_name(op)
        try:
            sizes_in, sizes_out = view.upsample_sizes(op)
        except NoMatch as why:
            result.skipped[key] = str(why)
            continue
        axes = [_axis(a, b) for a, b in zip(sizes_in, sizes_out, strict=True)]
        reasons = [a for a in axes if isinstance(a, str)]
        if reasons:
            result.skipped[key] = reasons[0]
            continue
        (rh, mh), (rw, mw) = [a for a in axes if not isinstance(a, str)]
        view.scale_upsample(op, (rh, rw))
        result.applied[key] = (
            f"size read from the input becomes scale factor {rh}x{rw}, exact where H and W "
            f"are multiples of {mh} and {mw}"
        )
        result.figures[key] = {"ratio": (rh, rw), "multiple": (mh, mw)}
    return result


def multiple(result: PassResult) -> tuple[int, int]:
    """The H and W multiples at which every upsample ``size_to_scale`` rewrote is exact."""
    found = [f["multiple"] for f in result.figures.values()]
    return math.lcm(1, *(m[0] for m in found)), math.lcm(1, *(m[1] for m in found))
