"""Rewrite (XNNPACK form): a hard-sigmoid gate as add/clamp/div with float constants.

ExecuTorch decomposes ``hardsigmoid`` into ``clamp(x + 3, 0, 6) / 6`` with the 3 and the
6 as int64 tensor constants, each cast to float by a ``_to_dim_order_copy`` that
XNNPACK does not take (a dtype conversion); a written-out ``relu6(x + 3) / 6`` with
int scalars lowers the same way. Measured on ``ca_segnet``: 12 such copies outside the
delegate, four per block. Written with float scalars, the same ops lower into the one
XNNPACK delegate with no copy. It is exact: PyTorch's CPU kernel computes
``min(max(x + 3, 0), 6) / 6`` in the input's dtype, and ``3`` and ``3.0`` are the same
fp32 value (equal bit for bit on the CPU and in XNNPACK). Used for the ``xnnpack``
form (ExecuTorch) only, on views that make the ``float_scalars`` edits (ATen graphs); an
ONNX graph is skipped.

Before::

    conv ── hardsigmoid ── (mul)            or   conv ── add(·, 3) ── relu6 ── div(·, 6)

After::

    conv ── add(·, 3.0) ── clamp(·, 0.0, 6.0) ── div(·, 6.0) ── (mul)
                                                 (a written-out gate keeps its own ops,
                                                  only its int scalars become floats)
"""

from __future__ import annotations

from ca_export.patterns.coordatt import CABlock
from ca_export.patterns.view import GraphView, OpT, ValueT
from ca_export.rewrites.passes import EXECUTORCH_ONLY, Change, Skip


def float_hardsigmoid(
    view: GraphView[OpT, ValueT], block: CABlock[OpT, ValueT], static: bool
) -> Change[OpT, ValueT]:
    """Give every hard-sigmoid gate of the block float constants; the returned block names
    a replaced gate's new ops."""
    if not view.supports("float_scalars"):
        raise Skip(EXECUTORCH_ONLY)
    done = []
    after = block
    for branch in block.branches:
        if branch.gate_kind == "hardsigmoid":
            gate = branch.gate
            ops = view.float_hardsigmoid(view.data(gate), gate, f"{block.name}/ca_{branch.axis}")
            view.replace_uses(view.output(gate), view.output(ops[-1]))
            after = after.with_branch(branch, gate_ops=ops)
            done.append(f"{branch.axis}: hardsigmoid as add/clamp/div by floats")
        elif branch.gate_kind == "h_sigmoid":
            changed = [view.float_scalars(op) for op in branch.gate_ops]
            if not any(changed):
                continue
            done.append(f"{branch.axis}: relu6(x + 3) / 6 with float scalars")
    if not done:
        raise Skip("no hard-sigmoid gate with int constants")
    return Change("; ".join(done), after)
