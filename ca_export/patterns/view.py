"""The small interface the CA matcher and the rewrites read and edit a graph through.

One CA block description (``coordatt``) and one file per rewrite (``ca_export.rewrites``)
work on any graph API that implements ``GraphView``: the ATen graph of an
`ExportedProgram` (``patterns.aten``, for ONNX, Core ML and ExecuTorch export) and an
ONNX graph (``patterns.onnx_proto``, for ``optimize``). A *value* is a tensor (an fx
``Node``, an onnx_ir ``Value``); an *op* is a node that makes values (an fx ``Node``, an
onnx_ir ``Node``). Both are hashable. Questions are asked in the block's terms ("is this a
strip pool, which axis does it keep"), so each adapter answers them from its own ops and
the rules stay in one place.

``GraphView`` is generic in its op and value types: ``AtenView`` is a
``GraphView[Node, Node]``, ``OnnxView`` a ``GraphView[ir.Node, ir.Value]``, and the matcher
and rewrites are generic functions over ``GraphView[OpT, ValueT]``, so a block found in one
graph carries that graph's ops (``CABlock[OpT, ValueT]``).

Edits take an ``anchor`` op (new ops go before it where the graph API keeps an order) and a
``name`` hint (ONNX node names; ATen names its nodes itself). Some edits only one adapter
makes (``OPTIONAL_EDITS``); a rewrite asks ``supports`` before it calls them, and an adapter
that does not make one inherits the default, which raises ``NotImplementedError``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Hashable, Sequence
from typing import Generic, TypeVar

OpT = TypeVar("OpT", bound=Hashable)
"""An adapter's op type (a node that makes values)."""
ValueT = TypeVar("ValueT", bound=Hashable)
"""An adapter's value type (a tensor)."""
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


class GraphView(ABC, Generic[OpT, ValueT]):
    """Reading and editing one graph in terms of the CA block."""

    @abstractmethod
    def ops(self) -> Sequence[OpT]:
        """Every op, in an order where producers come first."""

    @abstractmethod
    def producer(self, value: ValueT) -> OpT | None:
        """The op that makes ``value`` (None for graph inputs and constants)."""

    @abstractmethod
    def users(self, value: ValueT) -> list[OpT]:
        """The ops reading ``value``."""

    @abstractmethod
    def single_user(self, value: ValueT) -> OpT | None:
        """The only op reading ``value``, if it is not also a graph output."""

    @abstractmethod
    def is_output(self, value: ValueT) -> bool:
        """Whether ``value`` is a graph output."""

    @abstractmethod
    def output(self, op: OpT) -> ValueT:
        """The op's (first) output."""

    @abstractmethod
    def outputs(self, op: OpT) -> list[ValueT]:
        """Every output of the op."""

    @abstractmethod
    def data(self, op: OpT) -> ValueT:
        """The op's first input."""

    @abstractmethod
    def shape(self, value: ValueT) -> tuple[Dim, ...] | None:
        """The value's shape; None where it is unknown."""

    @abstractmethod
    def shape_gap(self, value: ValueT) -> str:
        """Why ``value``'s shape is unknown."""

    @abstractmethod
    def same_size(self, a: Dim, b: Dim) -> bool:
        """Whether two sizes are the same (same int or same symbolic expression)."""

    @abstractmethod
    def name(self, op: OpT) -> str:
        """A name for the user: the module that made the op, or the node's name."""

    @abstractmethod
    def node_name(self, op: OpT) -> str:
        """The op's own node name."""

    @abstractmethod
    def label(self, op: OpT) -> str:
        """The op's kind in this graph API (``conv1x1``, ``HardSwish``, ...)."""

    @abstractmethod
    def onnx_type(self, op: OpT) -> str:
        """The ONNX op the op is or exports to (``Transpose`` for a permute)."""

    @abstractmethod
    def concat(self, op: OpT) -> tuple[list[ValueT], int] | None:
        """(inputs, axis) if the op concatenates; the axis is non-negative."""

    @abstractmethod
    def perm(self, op: OpT) -> tuple[int, ...] | None:
        """The full permutation if the op is a transpose/permute."""

    @abstractmethod
    def strip_pool(self, op: OpT) -> tuple[ValueT, int, str] | None:
        """(source, kept axis, kind) if the op averages one spatial axis of a 4-D tensor away."""

    @abstractmethod
    def pool_source(self, op: OpT) -> ValueT | None:
        """The input of any average pool or mean, strip or not."""

    @abstractmethod
    def pointwise(self, op: OpT, inside: set[ValueT]) -> str:
        """The op's kind if it is spatially pointwise on the ``inside`` values (its other
        operands constants without spatial extent); raise NoMatch with the reason if not."""

    @abstractmethod
    def cuts(self, op: OpT, value: ValueT) -> bool:
        """Whether the op is a split or a slice reading ``value`` as its data."""

    @abstractmethod
    def pieces(self, op: OpT, axis: int, sizes: list[Dim]) -> list[tuple[int, ValueT]]:
        """For a split/slice along ``axis`` of a concat of ``sizes``: (which concat input,
        value) for each piece it gives back; raise NoMatch if it does not undo the concat."""

    @abstractmethod
    def gate_conv_channels(self, op: OpT, data: ValueT) -> int | None:
        """The output channels if the op is a 1x1, stride-1, unpadded conv reading ``data``."""

    @abstractmethod
    def activation(self, op: OpT) -> str | None:
        """``sigmoid``, ``hardsigmoid`` or ``relu6`` (relu6, hardtanh(0, 6), Clip(0, 6))."""

    @abstractmethod
    def scalar_arith(self, op: OpT) -> tuple[str, ValueT, float] | None:
        """(``add``/``mul``/``div``, tensor operand, number) for arithmetic with one number."""

    @abstractmethod
    def mul_operands(self, op: OpT) -> tuple[ValueT, ValueT] | None:
        """The two tensor operands of an elementwise multiply."""

    @abstractmethod
    def is_expand(self, op: OpT) -> bool:
        """Whether the op broadcasts its input to a shape (expand, Expand)."""

    @abstractmethod
    def expand_target(self, op: OpT) -> tuple[Dim, ...] | None:
        """The shape an expand broadcasts its input to."""

    @abstractmethod
    def owned(self, core: list[OpT]) -> list[OpT]:
        """``core`` and the ops only it uses to compute its shapes and bounds."""

    @abstractmethod
    def avg_pool(self, source: ValueT, kernel: list[int], anchor: OpT, name: str) -> ValueT:
        """A new average pool over ``kernel`` with stride ``kernel``, no padding."""

    @abstractmethod
    def mean(self, source: ValueT, axis: int, anchor: OpT, name: str) -> ValueT:
        """A new mean over one axis, keeping it."""

    @abstractmethod
    def clone(self, op: OpT, env: dict[ValueT, ValueT], anchor: OpT, name: str) -> OpT:
        """A copy of ``op`` reading ``env``'s values; its outputs are added to ``env``."""

    @abstractmethod
    def squeeze(self, value: ValueT, axis: int, anchor: OpT, name: str) -> ValueT:
        """A new squeeze of one axis."""

    @abstractmethod
    def unsqueeze(self, value: ValueT, axis: int, anchor: OpT, name: str) -> ValueT:
        """A new unsqueeze at one axis."""

    @abstractmethod
    def reshape(self, value: ValueT, shape: list[int], anchor: OpT, name: str) -> ValueT:
        """A new reshape (a view) to a static shape."""

    @abstractmethod
    def hardswish(self, value: ValueT, anchor: OpT, name: str) -> ValueT:
        """A new hardswish (in the form the graph's opset has)."""

    @abstractmethod
    def binary(self, kind: str, a: ValueT, b: ValueT, anchor: OpT, name: str) -> ValueT:
        """A new ``mul`` or ``matmul`` of two tensors."""

    @abstractmethod
    def binary_kind(self, op: OpT) -> str | None:
        """``mul`` or ``matmul`` for an op of two tensors made by ``binary``, else None."""

    @abstractmethod
    def operands(self, op: OpT) -> list[ValueT]:
        """The op's tensor inputs."""

    @abstractmethod
    def set_operands(self, op: OpT, values: list[ValueT]) -> None:
        """Make the op read ``values`` as its tensor inputs, in order."""

    @abstractmethod
    def channel_params(self, op: OpT) -> list[tuple[ValueT, int]] | None:
        """(operand, channel axis) for each per-channel parameter of a spatially pointwise op
        (conv weight and bias, batch-norm statistics, per-channel constants); None where the
        op is not one this adapter knows."""

    @abstractmethod
    def pad(self, value: ValueT, axis: int, size: int, anchor: OpT, name: str) -> ValueT:
        """``value`` zero-padded at the end of ``axis`` to ``size`` (a new constant where the
        graph holds constants, else an op that graph exporters fold)."""

    @abstractmethod
    def upsample(self, value: ValueT, scales: tuple[int, int], anchor: OpT, name: str) -> ValueT:
        """A new nearest-neighbour upsample of H and W by integer ``scales`` (ONNX ``Resize``
        nearest, asymmetric, floor, constant scales; at opset 10, Resize-10's nearest, and
        below it ``Upsample`` nearest, which are the same for integer scales)."""

    @abstractmethod
    def filled(self, shape: list[int], fill: float, like: ValueT, anchor: OpT, name: str) -> ValueT:
        """A new constant tensor of ``shape`` holding ``fill``, of ``like``'s dtype."""

    def supports(self, edit: str) -> bool:
        """Whether this adapter makes the optional edit ``edit`` (one of ``OPTIONAL_EDITS``)."""
        return False

    def permute(self, value: ValueT, perm: list[int], anchor: OpT, name: str) -> ValueT:
        """A new permute of ``value`` (optional edit ``permute``)."""
        raise NotImplementedError(f"{type(self).__name__} does not make permute")

    def global_mean(self, value: ValueT, anchor: OpT, name: str) -> ValueT:
        """A new mean over axes 2 and 3, keeping them (optional edit ``global_mean``)."""
        raise NotImplementedError(f"{type(self).__name__} does not make global_mean")

    def float_hardsigmoid(self, value: ValueT, anchor: OpT, name: str) -> list[OpT]:
        """New ``add(value, 3.0)``, ``clamp(·, 0.0, 6.0)`` and ``div(·, 6.0)`` ops with float
        scalars, in order (optional edit ``float_scalars``)."""
        raise NotImplementedError(f"{type(self).__name__} does not make float_hardsigmoid")

    def float_scalars(self, op: OpT) -> bool:
        """Make the op's int scalar operands floats; whether it had any (optional edit
        ``float_scalars``)."""
        raise NotImplementedError(f"{type(self).__name__} does not make float_scalars")

    def upsamples(self) -> list[OpT]:
        """Every bilinear or nearest 2-D upsample, in graph order (optional edit
        ``scale_upsample``)."""
        raise NotImplementedError(f"{type(self).__name__} does not make upsamples")

    def upsample_sizes(self, op: OpT) -> tuple[tuple[Dim, ...], tuple[Dim, ...]]:
        """The H, W sizes of the upsample's input and of its output, where its output size
        is given; raises ``NoMatch`` with the reason otherwise (optional edit
        ``scale_upsample``)."""
        raise NotImplementedError(f"{type(self).__name__} does not make upsample_sizes")

    def scale_upsample(self, op: OpT, ratio: tuple[int, int]) -> None:
        """Make the upsample scale H and W by ``ratio`` instead of reading an output size
        (optional edit ``scale_upsample``)."""
        raise NotImplementedError(f"{type(self).__name__} does not make scale_upsample")

    def powers(self) -> list[tuple[OpT, float]]:
        """Every power of a value by a constant scalar exponent, with the exponent, in graph
        order (optional edit ``square_pow``)."""
        raise NotImplementedError(f"{type(self).__name__} does not make powers")

    def square_pow(self, op: OpT) -> OpT:
        """Replace the power by a new multiply of its base by itself; returns the multiply
        (optional edit ``square_pow``)."""
        raise NotImplementedError(f"{type(self).__name__} does not make square_pow")

    @abstractmethod
    def replace_input(self, op: OpT, old: ValueT, new: ValueT) -> None:
        """Make ``op`` read ``new`` where it read ``old``."""

    @abstractmethod
    def replace_uses(self, old: ValueT, new: ValueT) -> None:
        """Make every reader of ``old`` read ``new``."""

    @abstractmethod
    def finish(self) -> int:
        """Order the graph, drop what is dead, check it; return how many ops were dropped."""
