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
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch.export import ExportedProgram
from torch.fx import Node

UPSAMPLES = (torch.ops.aten.upsample_bilinear2d.vec, torch.ops.aten.upsample_nearest2d.vec)
MULTIPLES = (1, 2, 4, 8, 16, 32, 64)


@dataclass
class ScaledUpsample:
    """One rewritten upsample: its node name, its ratios and the multiples it is exact at."""

    node: str
    ratio: tuple[int, int]
    multiple: tuple[int, int]


@dataclass
class SizeToScale:
    """What the pass rewrote, what it left and why, and the multiples every size must meet."""

    rewritten: list[ScaledUpsample] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)

    @property
    def multiple(self) -> tuple[int, int]:
        """The H and W multiples at which every rewritten upsample is exact."""
        h = math.lcm(1, *(r.multiple[0] for r in self.rewritten))
        return h, math.lcm(1, *(r.multiple[1] for r in self.rewritten))


def _axis(size_in: object, size_out: object) -> tuple[int, int] | str:
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


def _rewrite(node: Node) -> ScaledUpsample | str:
    """Replace one upsample's size by scale factors, or say why not."""
    if node.args[1] is None:
        return "already by scale factor"
    source = node.args[0]
    if not isinstance(source, Node):
        return "its input is not a graph value"
    axes = [
        _axis(a, b)
        for a, b in zip(source.meta["val"].shape[2:], node.meta["val"].shape[2:], strict=True)
    ]
    reasons = [a for a in axes if isinstance(a, str)]
    if reasons:
        return reasons[0]
    # String reasons returned above; each axis is a (ratio, mode) pair.
    (rh, mh), (rw, mw) = axes  # type: ignore[misc]
    if node.target is torch.ops.aten.upsample_bilinear2d.vec:
        node.args = (source, None, node.args[2], [float(rh), float(rw)])
    else:
        node.args = (source, None, [float(rh), float(rw)])
    return ScaledUpsample(node.name, (rh, rw), (mh, mw))


def size_to_scale(program: ExportedProgram) -> SizeToScale:
    """Rewrite every size-driven integer-ratio upsample of ``program`` in place."""
    result = SizeToScale()
    for node in list(program.graph.nodes):
        if node.op != "call_function" or node.target not in UPSAMPLES:
            continue
        found = _rewrite(node)
        if isinstance(found, str):
            result.skipped[node.name] = found
        else:
            result.rewritten.append(found)
    if result.rewritten:
        program.graph.eliminate_dead_code()
        program.graph.lint()
        program.graph_module.recompile()
    return result
