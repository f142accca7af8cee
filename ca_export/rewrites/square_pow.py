"""Rewrite: a power by the constant exponent 2 as a multiply of the base by itself.

litert-torch lowers ``x ** 2`` to ``tfl.pow``, which its converter cannot legalize (it
fails with "failed to legalize operation 'tfl.pow'"), so a model with one does not
convert at all; YOLOv5's Detect head squares its box sizes (``(wh * 2) ** 2``). ``x * x``
is the same value bit for bit: PyTorch computes a power by 2 as ``x * x`` on CPU, and
one IEEE multiply rounds once, whatever the runtime.

Before::

    x ── pow(x, 2) ── y

After::

    x ──┬── mul(x, x) ── y
        └──────┘

Match rules: ``aten.pow.Tensor_Scalar`` with a constant exponent equal to 2. Any other
exponent (3, 2.5, 0.5) is left alone with the reason: its multiply form either rounds
more than once or is not a multiply at all.

A ``GraphPass`` (it rewrites ops outside CA blocks), run by ``rewrites.square_pows`` on
the program ``ca-export litert`` converts, and by no other target; the view's optional
edit ``square_pow`` finds the powers and replaces them.
"""

from __future__ import annotations

from ca_export.patterns.view import GraphView, OpT, ValueT
from ca_export.rewrites.passes import PassResult

NAME = "square_pow"
ATEN_ONLY = "square_pow rewrites ATen graphs only"


def square_pow(view: GraphView[OpT, ValueT], static: bool) -> PassResult:
    """Rewrite every power of the view by exponent 2 in place."""
    result = PassResult(NAME)
    if not view.supports("square_pow"):
        result.skipped["<graph>"] = ATEN_ONLY
        return result
    for op, exponent in view.powers():
        key = view.node_name(op)
        if exponent != 2:
            result.skipped[key] = f"exponent {exponent:g} is not 2"
            continue
        view.square_pow(op)
        result.applied[key] = "x ** 2 becomes x * x (bit-identical)"
    return result
