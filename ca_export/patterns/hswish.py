"""The written-out hard sigmoid and hard swish, recognised once for the matcher and rewrites.

Match rules: ``relu6(x + 3) / 6`` is a hard sigmoid, where the ``/ 6`` may be written as a
division by 6 or a multiplication by 1/6 (to 1e-7), and ``relu6`` is any op
``GraphView.activation`` calls one (relu6, hardtanh(0, 6), Clip(0, 6)). ``x * hsig(x)``
and ``(x * relu6(x + 3)) / 6`` are a hard swish. Every op but the last must have no other
reader. ``coordatt`` reads gates with ``h_sigmoid``; ``rewrites.hardswish`` fuses stems with
``h_swish``.

Recognised::

    x ── add(·, 3) ── relu6 ── div(·, 6)  |  mul(·, 1/6)              h_sigmoid -> x

    x ─┬─ add(·, 3) ── relu6 ── div(·, 6) ─┐
       └──────────────────────────────── mul                         h_swish -> x
    x ─┬─ add(·, 3) ── relu6 ─┐
       └───────────────────── mul ── div(·, 6)
"""

from __future__ import annotations

from ca_export.patterns.view import GraphView, OpT, ValueT

SIXTH = 1 / 6
"""The multiplier that counts as a division by 6."""


def by_six(view: GraphView[OpT, ValueT], op: OpT) -> ValueT | None:
    """The tensor ``op`` divides by 6 (or multiplies by 1/6), else None."""
    arith = view.scalar_arith(op)
    if arith is None:
        return None
    kind, tensor, number = arith
    if (kind == "div" and number == 6.0) or (kind == "mul" and abs(number - SIXTH) < 1e-7):
        return tensor
    return None


def relu6_plus3(view: GraphView[OpT, ValueT], clip: OpT, reader: OpT) -> ValueT | None:
    """``x`` if ``clip`` is ``relu6(x + 3)``, the add read only by ``clip`` and ``clip``
    only by ``reader``; else None."""
    if view.activation(clip) != "relu6" or view.single_user(view.output(clip)) is not reader:
        return None
    add = view.producer(view.data(clip))
    arith = view.scalar_arith(add) if add is not None else None
    if add is None or arith is None or arith[0] != "add" or arith[2] != 3.0:
        return None
    return arith[1] if view.single_user(view.output(add)) is clip else None


def h_sigmoid(view: GraphView[OpT, ValueT], end: OpT) -> tuple[ValueT, list[OpT]] | None:
    """(``x``, [add, relu6, ``end``]) if ``end`` is ``relu6(x + 3) / 6``, else None."""
    clipped = by_six(view, end)
    clip = view.producer(clipped) if clipped is not None else None
    x = relu6_plus3(view, clip, end) if clip is not None else None
    add = view.producer(view.data(clip)) if clip is not None else None
    if x is None or clip is None or add is None:
        return None
    return x, [add, clip, end]


def h_swish(view: GraphView[OpT, ValueT], end: OpT) -> ValueT | None:
    """``x`` if ``end`` is ``x * (relu6(x + 3) / 6)`` or ``(x * relu6(x + 3)) / 6``."""
    operands = view.mul_operands(end)
    for x, other in [operands, operands[::-1]] if operands else []:
        scale = view.producer(other)
        gate = h_sigmoid(view, scale) if scale is not None else None
        if gate is not None and gate[0] == x and view.single_user(other) is end:
            return x
    product = by_six(view, end)
    mul = view.producer(product) if product is not None else None
    operands = view.mul_operands(mul) if mul is not None else None
    if product is None or mul is None or operands is None or view.single_user(product) is not end:
        return None
    for x, clipped in (operands, operands[::-1]):
        clip = view.producer(clipped)
        if clip is not None and relu6_plus3(view, clip, mul) == x:
            return x
    return None
