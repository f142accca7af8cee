"""The small interface the CA matcher and the rewrites read and edit a graph through.

One CA block description (``coordatt``) and one file per rewrite (``ca_export.rewrites``)
work on any graph API that implements ``GraphView``: the ATen graph of an
`ExportedProgram` (``patterns.aten``, for ONNX, Core ML and ExecuTorch export) and an
ONNX graph (``patterns.onnx_proto``, for ``optimize``). A *value* is a tensor (an fx
``Node``, an onnx_ir ``Value``); an *op* is a node that makes values (an fx ``Node``, an
onnx_ir ``Node``). Both are hashable. Questions are asked in the block's terms ("is this a
strip pool, which axis does it keep"), so each adapter answers them from its own ops and
the rules stay in one place.

Edits take an ``anchor`` op (new ops go before it where the graph API keeps an order) and a
``name`` hint (ONNX node names; ATen names its nodes itself). Some edits only one adapter
makes (``OPTIONAL_EDITS``); a rewrite asks ``supports`` before it calls them.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Protocol

Value = Hashable
Op = Hashable
Dim = object
"""A size: an int, a symbolic size (compared with ``same_size``), or None where unknown."""

OPTIONAL_EDITS = frozenset(
    {"permute", "global_mean", "float_scalars", "scale_upsample", "square_pow"}
)
"""Edits not every adapter makes (the ExecuTorch form's, Core ML's ``size_to_scale`` and
LiteRT's ``square_pow``), each named by its method; ``float_scalars`` also stands for
``float_hardsigmoid``, ``scale_upsample`` for ``upsamples`` and ``upsample_sizes``,
``square_pow`` for ``powers``."""


class NoMatch(Exception):
    """A candidate is not a CA block; the message says which rule it broke."""


class GraphView(Protocol):
    """Reading and editing one graph in terms of the CA block."""

    def ops(self) -> Sequence[Op]:
        """Every op, in an order where producers come first."""
        ...

    def producer(self, value: Value) -> Op | None:
        """The op that makes ``value`` (None for graph inputs and constants)."""
        ...

    def users(self, value: Value) -> list[Op]:
        """The ops reading ``value``."""
        ...

    def single_user(self, value: Value) -> Op | None:
        """The only op reading ``value``, if it is not also a graph output."""
        ...

    def is_output(self, value: Value) -> bool:
        """Whether ``value`` is a graph output."""
        ...

    def output(self, op: Op) -> Value:
        """The op's (first) output."""
        ...

    def outputs(self, op: Op) -> list[Value]:
        """Every output of the op."""
        ...

    def data(self, op: Op) -> Value:
        """The op's first input."""
        ...

    def shape(self, value: Value) -> tuple[Dim, ...] | None:
        """The value's shape; None where it is unknown."""
        ...

    def shape_gap(self, value: Value) -> str:
        """Why ``value``'s shape is unknown."""
        ...

    def same_size(self, a: Dim, b: Dim) -> bool:
        """Whether two sizes are the same (same int or same symbolic expression)."""
        ...

    def name(self, op: Op) -> str:
        """A name for the user: the module that made the op, or the node's name."""
        ...

    def node_name(self, op: Op) -> str:
        """The op's own node name."""
        ...

    def label(self, op: Op) -> str:
        """The op's kind in this graph API (``conv1x1``, ``HardSwish``, ...)."""
        ...

    def onnx_type(self, op: Op) -> str:
        """The ONNX op the op is or exports to (``Transpose`` for a permute)."""
        ...

    def concat(self, op: Op) -> tuple[list[Value], int] | None:
        """(inputs, axis) if the op concatenates; the axis is non-negative."""
        ...

    def perm(self, op: Op) -> tuple[int, ...] | None:
        """The full permutation if the op is a transpose/permute."""
        ...

    def strip_pool(self, op: Op) -> tuple[Value, int, str] | None:
        """(source, kept axis, kind) if the op averages one spatial axis of a 4-D tensor away."""
        ...

    def pool_source(self, op: Op) -> Value | None:
        """The input of any average pool or mean, strip or not."""
        ...

    def pointwise(self, op: Op, inside: set[Value]) -> str:
        """The op's kind if it is spatially pointwise on the ``inside`` values (its other
        operands constants without spatial extent); raise NoMatch with the reason if not."""
        ...

    def cuts(self, op: Op, value: Value) -> bool:
        """Whether the op is a split or a slice reading ``value`` as its data."""
        ...

    def pieces(self, op: Op, axis: int, sizes: list[Dim]) -> list[tuple[int, Value]]:
        """For a split/slice along ``axis`` of a concat of ``sizes``: (which concat input,
        value) for each piece it gives back; raise NoMatch if it does not undo the concat."""
        ...

    def gate_conv_channels(self, op: Op, data: Value) -> int | None:
        """The output channels if the op is a 1x1, stride-1, unpadded conv reading ``data``."""
        ...

    def activation(self, op: Op) -> str | None:
        """``sigmoid``, ``hardsigmoid`` or ``relu6`` (relu6, hardtanh(0, 6), Clip(0, 6))."""
        ...

    def scalar_arith(self, op: Op) -> tuple[str, Value, float] | None:
        """(``add``/``mul``/``div``, tensor operand, number) for arithmetic with one number."""
        ...

    def mul_operands(self, op: Op) -> tuple[Value, Value] | None:
        """The two tensor operands of an elementwise multiply."""
        ...

    def is_expand(self, op: Op) -> bool:
        """Whether the op broadcasts its input to a shape (expand, Expand)."""
        ...

    def expand_target(self, op: Op) -> tuple[Dim, ...] | None:
        """The shape an expand broadcasts its input to."""
        ...

    def owned(self, core: list[Op]) -> list[Op]:
        """``core`` and the ops only it uses to compute its shapes and bounds."""
        ...

    def avg_pool(self, source: Value, kernel: list[int], anchor: Op, name: str) -> Value:
        """A new average pool over ``kernel`` with stride ``kernel``, no padding."""
        ...

    def mean(self, source: Value, axis: int, anchor: Op, name: str) -> Value:
        """A new mean over one axis, keeping it."""
        ...

    def clone(self, op: Op, env: dict[Value, Value], anchor: Op, name: str) -> Op:
        """A copy of ``op`` reading ``env``'s values; its outputs are added to ``env``."""
        ...

    def squeeze(self, value: Value, axis: int, anchor: Op, name: str) -> Value:
        """A new squeeze of one axis."""
        ...

    def unsqueeze(self, value: Value, axis: int, anchor: Op, name: str) -> Value:
        """A new unsqueeze at one axis."""
        ...

    def reshape(self, value: Value, shape: list[int], anchor: Op, name: str) -> Value:
        """A new reshape (a view) to a static shape."""
        ...

    def hardswish(self, value: Value, anchor: Op, name: str) -> Value:
        """A new hardswish (in the form the graph's opset has)."""
        ...

    def binary(self, kind: str, a: Value, b: Value, anchor: Op, name: str) -> Value:
        """A new ``mul`` or ``matmul`` of two tensors."""
        ...

    def binary_kind(self, op: Op) -> str | None:
        """``mul`` or ``matmul`` for an op of two tensors made by ``binary``, else None."""
        ...

    def operands(self, op: Op) -> list[Value]:
        """The op's tensor inputs."""
        ...

    def set_operands(self, op: Op, values: list[Value]) -> None:
        """Make the op read ``values`` as its tensor inputs, in order."""
        ...

    def channel_params(self, op: Op) -> list[tuple[Value, int]] | None:
        """(operand, channel axis) for each per-channel parameter of a spatially pointwise op
        (conv weight and bias, batch-norm statistics, per-channel constants); None where the
        op is not one this adapter knows."""
        ...

    def pad(self, value: Value, axis: int, size: int, anchor: Op, name: str) -> Value:
        """``value`` zero-padded at the end of ``axis`` to ``size`` (a new constant where the
        graph holds constants, else an op that graph exporters fold)."""
        ...

    def upsample(self, value: Value, scales: tuple[int, int], anchor: Op, name: str) -> Value:
        """A new nearest-neighbour upsample of H and W by integer ``scales`` (ONNX ``Resize``
        nearest, asymmetric, floor, constant scales; at opset 10, Resize-10's nearest, and
        below it ``Upsample`` nearest, which are the same for integer scales)."""
        ...

    def filled(self, shape: list[int], fill: float, like: Value, anchor: Op, name: str) -> Value:
        """A new constant tensor of ``shape`` holding ``fill``, of ``like``'s dtype."""
        ...

    def supports(self, edit: str) -> bool:
        """Whether this adapter makes the optional edit ``edit`` (one of ``OPTIONAL_EDITS``)."""
        ...

    def permute(self, value: Value, perm: list[int], anchor: Op, name: str) -> Value:
        """A new permute of ``value`` (optional edit ``permute``)."""
        ...

    def global_mean(self, value: Value, anchor: Op, name: str) -> Value:
        """A new mean over axes 2 and 3, keeping them (optional edit ``global_mean``)."""
        ...

    def float_hardsigmoid(self, value: Value, anchor: Op, name: str) -> list[Op]:
        """New ``add(value, 3.0)``, ``clamp(·, 0.0, 6.0)`` and ``div(·, 6.0)`` ops with float
        scalars, in order (optional edit ``float_scalars``)."""
        ...

    def float_scalars(self, op: Op) -> bool:
        """Make the op's int scalar operands floats; whether it had any (optional edit
        ``float_scalars``)."""
        ...

    def upsamples(self) -> list[Op]:
        """Every bilinear or nearest 2-D upsample, in graph order (optional edit
        ``scale_upsample``)."""
        ...

    def upsample_sizes(self, op: Op) -> tuple[tuple[Dim, ...], tuple[Dim, ...]]:
        """The H, W sizes of the upsample's input and of its output, where its output size
        is given; raises ``NoMatch`` with the reason otherwise (optional edit
        ``scale_upsample``)."""
        ...

    def scale_upsample(self, op: Op, ratio: tuple[int, int]) -> None:
        """Make the upsample scale H and W by ``ratio`` instead of reading an output size
        (optional edit ``scale_upsample``)."""
        ...

    def powers(self) -> list[tuple[Op, float]]:
        """Every power of a value by a constant scalar exponent, with the exponent, in graph
        order (optional edit ``square_pow``)."""
        ...

    def square_pow(self, op: Op) -> Op:
        """Replace the power by a new multiply of its base by itself; returns the multiply
        (optional edit ``square_pow``)."""
        ...

    def replace_input(self, op: Op, old: Value, new: Value) -> None:
        """Make ``op`` read ``new`` where it read ``old``."""
        ...

    def replace_uses(self, old: Value, new: Value) -> None:
        """Make every reader of ``old`` read ``new``."""
        ...

    def finish(self) -> int:
        """Order the graph, drop what is dead, check it; return how many ops were dropped."""
        ...
