"""``GraphView`` over an ONNX model's main graph, as stock exporters write it.

Values are tensor names; ops are ``OnnxOp`` wrappers of the ``NodeProto``s (one per node,
compared by identity). Shapes and constants come from ``onnx_graph.index.GraphIndex``
(ONNX shape inference, constants folded through shape arithmetic); new nodes are added
by ``onnx_graph.edit.Editor`` under fresh names built from the rewrites' name hints, and
the producer/consumer maps are kept up to date as the rewrites edit, so a later rewrite
reads the graph as it is. ``finish`` puts nodes back in topological order and removes
dead nodes and initializers.

Why not onnxscript's rewriter: its patterns match a fixed op sequence with one output,
while a CA block is two branches joined through a concat/split with a variable pointwise
stem, transposes that compose, and slices whose bounds are computed from ``Shape``. The
matcher (``coordatt``) needs to walk the graph and say which rule a candidate broke, which
the rewriter's ``MatchResult`` cannot carry across a walk. onnxscript's constant folder
and onnx_ir's passes are used where they fit (``onnx_graph.normalize``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import onnx

from ca_export.onnx_graph.edit import Editor
from ca_export.onnx_graph.index import GraphIndex, prune, topo_sort
from ca_export.patterns.view import Dim, NoMatch

UNARY = frozenset(
    {
        "Abs",
        "Celu",
        "Elu",
        "Erf",
        "Exp",
        "Gelu",
        "HardSigmoid",
        "HardSwish",
        "Identity",
        "LeakyRelu",
        "Mish",
        "Neg",
        "Relu",
        "Selu",
        "Sigmoid",
        "Softplus",
        "Softsign",
        "Tanh",
        "ThresholdedRelu",
    }
)
BINARY = frozenset({"Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "PRelu"})
SCALAR_ARITH = {"Add": "add", "Mul": "mul", "Div": "div"}
MAKE = {"mul": "Mul", "matmul": "MatMul"}


@dataclass(eq=False)
class OnnxOp:
    """One node of the graph; equal only to itself."""

    proto: onnx.NodeProto

    @property
    def op_type(self) -> str:
        """The node's op type."""
        return self.proto.op_type


class OnnxView:
    """The CA questions and edits, answered on an ONNX model (edited in place)."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.model = model
        self.index = GraphIndex(model)
        self.edit = Editor(self.index)
        self._ops: dict[int, OnnxOp] = {}

    @property
    def shape_error(self) -> str | None:
        """Why shape inference failed, if it did."""
        return self.index.shape_error

    def _op(self, proto: onnx.NodeProto | None) -> OnnxOp | None:
        if proto is None:
            return None
        if id(proto) not in self._ops:
            self._ops[id(proto)] = OnnxOp(proto)
        return self._ops[id(proto)]

    def _add(self, proto: onnx.NodeProto) -> OnnxOp:
        for out in proto.output:
            self.index.producer[out] = proto
        for name in proto.input:
            if name:
                self.index.consumers[name].append(proto)
        return self._op(proto)  # type: ignore[return-value]

    def ops(self) -> Sequence[OnnxOp]:
        return [self._op(n) for n in self.index.graph.node]  # type: ignore[misc]

    def producer(self, value: str) -> OnnxOp | None:
        return self._op(self.index.producer.get(value))

    def users(self, value: str) -> list[OnnxOp]:
        return [self._op(n) for n in self.index.consumers.get(value, [])]  # type: ignore[misc]

    def single_user(self, value: str) -> OnnxOp | None:
        return self._op(self.index.single_consumer(value))

    def is_output(self, value: str) -> bool:
        return value in self.index.outputs

    def output(self, op: OnnxOp) -> str:
        return op.proto.output[0]

    def outputs(self, op: OnnxOp) -> list[str]:
        return [o for o in op.proto.output if o]

    def data(self, op: OnnxOp) -> str:
        return op.proto.input[0]

    def shape(self, value: str) -> tuple[Dim, ...] | None:
        return self.index.shape(value)

    def shape_gap(self, value: str) -> str:
        return self.index.shape_gap(value)

    def same_size(self, a: Dim, b: Dim) -> bool:
        return a is not None and a == b

    def name(self, op: OnnxOp) -> str:
        return op.proto.name or op.proto.output[0]

    def node_name(self, op: OnnxOp) -> str:
        return self.name(op)

    def label(self, op: OnnxOp) -> str:
        return op.op_type

    def onnx_type(self, op: OnnxOp) -> str:
        return op.op_type

    def attr(self, op: OnnxOp, name: str, default: object = None) -> object:
        """An attribute's value, or ``default``."""
        return self.index.attr(op.proto, name, default)

    def concat(self, op: OnnxOp) -> tuple[list[str], int] | None:
        if op.op_type != "Concat":
            return None
        return list(op.proto.input), int(self.attr(op, "axis", 0)) % 4  # type: ignore[call-overload]

    def perm(self, op: OnnxOp) -> tuple[int, ...] | None:
        if op.op_type != "Transpose":
            return None
        perm = self.attr(op, "perm")
        return tuple(perm) if perm is not None else (3, 2, 1, 0)  # type: ignore[arg-type]

    def pool_source(self, op: OnnxOp) -> str | None:
        return op.proto.input[0] if op.op_type in ("AveragePool", "ReduceMean") else None

    def strip_pool(self, op: OnnxOp) -> tuple[str, int, str] | None:
        source = self.pool_source(op)
        shape = self.index.shape(source) if source else None
        if source is None or shape is None or len(shape) != 4:
            return None
        if op.op_type == "AveragePool":
            kernel = list(self.attr(op, "kernel_shape", []))  # type: ignore[call-overload]
            pads = list(self.attr(op, "pads", [0, 0, 0, 0]))  # type: ignore[call-overload]
            dilations = list(self.attr(op, "dilations", [1, 1]))  # type: ignore[call-overload]
            auto_pad = self.attr(op, "auto_pad", b"NOTSET")
            if len(kernel) != 2 or any(pads) or auto_pad not in (b"NOTSET", b"VALID"):
                return None
            if dilations != [1, 1]:
                return None
            h, w = shape[2], shape[3]
            if kernel == [1, w] and w not in (None, 1):
                return source, 2, "AveragePool"
            if kernel == [h, 1] and h not in (None, 1):
                return source, 3, "AveragePool"
            return None
        if self.attr(op, "keepdims", 1) != 1:
            return None
        if self.index.opset >= 18:
            axes = self.index.const(op.proto.input[1]) if len(op.proto.input) > 1 else None
        else:
            axes = self.attr(op, "axes")
        if axes is None or len(list(np.ravel(axes))) != 1:
            return None
        gone = int(np.ravel(axes)[0]) % 4
        if gone in (2, 3) and shape[gone] != 1:
            return source, 5 - gone, "ReduceMean"
        return None

    def _spatially_constant(self, name: str) -> bool:
        """A constant that broadcasts over a 4-D tensor without spatial extent."""
        value = self.index.const(name)
        if value is None or value.ndim > 4:
            return False
        dims = (1,) * (4 - value.ndim) + tuple(value.shape)
        return dims[2] == 1 and dims[3] == 1

    def pointwise(self, op: OnnxOp, inside: set) -> str:
        node, kind = op.proto, op.op_type
        data = [i for i in node.input if i in inside]
        others = [i for i in node.input if i and i not in inside]
        if kind == "Conv":
            weight = self.index.shape(node.input[1])
            if node.input[0] not in inside or others != list(node.input[1:]):
                raise NoMatch("a Conv reads the shared branch as its weight")
            if weight is None or len(weight) != 4 or tuple(weight[2:]) != (1, 1):
                raise NoMatch("a Conv on the shared branch is not 1x1")
            if not self._unstrided(op):
                raise NoMatch("a 1x1 Conv on the shared branch has stride or padding")
            return kind
        if kind == "BatchNormalization":
            if len(node.output) != 1 or node.input[0] not in inside or len(data) != 1:
                raise NoMatch("a BatchNormalization on the shared branch is in training mode")
            return kind
        if kind in UNARY and len(node.input) == 1:
            return kind
        if kind == "Clip" and all(self.index.const(i) is not None for i in others):
            return kind
        if kind in BINARY and all(self._spatially_constant(i) for i in others):
            return kind
        raise NoMatch(f"'{kind}' reads the concatenated tensor but is not spatially pointwise")

    def _unstrided(self, op: OnnxOp) -> bool:
        """Stride 1 and no padding."""
        strides = list(self.attr(op, "strides", [1, 1]))  # type: ignore[call-overload]
        pads = list(self.attr(op, "pads", [0, 0, 0, 0]))  # type: ignore[call-overload]
        auto_pad = self.attr(op, "auto_pad", b"NOTSET")
        return strides == [1, 1] and not any(pads) and auto_pad in (b"NOTSET", b"VALID")

    def cuts(self, op: OnnxOp, value: str) -> bool:
        return op.op_type in ("Split", "Slice") and op.proto.input[0] == value

    def pieces(self, op: OnnxOp, axis: int, sizes: list[Dim]) -> list[tuple[int, str]]:
        if None in sizes:
            raise NoMatch("the channel count or pooled sizes are not static")
        static = [int(s) for s in sizes]  # type: ignore[call-overload]
        if op.op_type == "Split":
            if int(self.attr(op, "axis", 0)) % 4 != axis:  # type: ignore[call-overload]
                raise NoMatch("the split is not along the concat axis")
            if self._split_sizes(op, sum(static)) != static:
                raise NoMatch("the split sizes do not undo the concat")
            return [
                (i, out)
                for i, out in enumerate(op.proto.output)
                if self.index.consumers.get(out) or out in self.index.outputs
            ]
        return [(self._slice_index(op, axis, static), op.proto.output[0])]

    def _split_sizes(self, op: OnnxOp, total: int) -> list[int] | None:
        """The sizes a Split cuts, from its input, attribute or output count."""
        node = op.proto
        if len(node.input) > 1 and node.input[1]:
            value = self.index.const(node.input[1])
            return None if value is None else [int(v) for v in np.ravel(value)]
        attr = self.attr(op, "split")
        if attr is not None:
            return [int(v) for v in attr]  # type: ignore[attr-defined]
        count = len(node.output)
        return [total // count] * count if total % count == 0 else None

    def _slice_index(self, op: OnnxOp, axis: int, sizes: list[int]) -> int:
        """Which concat input a Slice along the concat axis gives back."""
        node = op.proto
        values = [self.index.const(i) if i else None for i in [*node.input[1:5], "", "", "", ""]]
        starts, ends, axes, steps = values[:4]
        has_axes = len(node.input) > 3 and node.input[3]
        if starts is None or ends is None or (has_axes and axes is None):
            raise NoMatch("a slice of the shared branch has bounds that are not constant")
        starts, ends = np.ravel(starts), np.ravel(ends)
        axes = np.ravel(axes) % 4 if axes is not None else np.arange(len(starts))
        steps = np.ravel(steps) if steps is not None else np.ones(len(starts), dtype=np.int64)
        total = sum(sizes)
        cut = None
        for ax, start, end, step in zip(axes, starts, ends, steps, strict=True):
            if int(ax) != axis:
                raise NoMatch("a slice of the shared branch cuts another axis")
            if int(step) != 1:
                raise NoMatch("a slice of the shared branch has a step")
            lo = min(max(int(start) + (total if start < 0 else 0), 0), total)
            hi = min(max(int(end) + (total if end < 0 else 0), 0), total)
            cut = (lo, hi)
        if cut == (0, sizes[0]):
            return 0
        if cut == (sizes[0], total):
            return 1
        raise NoMatch("the slices do not undo the concat")

    def gate_conv_channels(self, op: OnnxOp, data: str) -> int | None:
        if op.op_type != "Conv" or op.proto.input[0] != data:
            return None
        weight = self.index.shape(op.proto.input[1])
        if weight is None or len(weight) != 4 or tuple(weight[2:]) != (1, 1):
            return None
        return int(weight[0]) if self._unstrided(op) and weight[0] is not None else None

    def _scalar(self, name: str) -> float | None:
        """A constant's value if it holds a single number."""
        value = self.index.const(name)
        return float(np.ravel(value)[0]) if value is not None and value.size == 1 else None

    def _clip_bounds(self, op: OnnxOp) -> list[float | None]:
        """A Clip's [min, max]: constant inputs (opset 11+) or attributes (opset 10 and older).

        A bound that is absent is infinite; one that is not constant is None.
        """
        if self.index.opset <= 10:
            low = self.attr(op, "min", -np.inf)
            high = self.attr(op, "max", np.inf)
            return [float(low), float(high)]  # type: ignore[arg-type]
        names = [*op.proto.input[1:3], "", ""][:2]
        return [self._scalar(n) if n else d for n, d in zip(names, (-np.inf, np.inf), strict=True)]

    def activation(self, op: OnnxOp) -> str | None:
        if op.op_type == "Sigmoid":
            return "sigmoid"
        if op.op_type == "HardSigmoid":
            return "hardsigmoid"
        if op.op_type == "Clip" and self._clip_bounds(op) == [0.0, 6.0]:
            return "relu6"
        return None

    def scalar_arith(self, op: OnnxOp) -> tuple[str, str, float] | None:
        kind = SCALAR_ARITH.get(op.op_type)
        if kind is None or len(op.proto.input) != 2:
            return None
        a, b = op.proto.input
        if (value := self._scalar(b)) is not None and self._scalar(a) is None:
            return kind, a, value
        if kind != "div" and (value := self._scalar(a)) is not None and self._scalar(b) is None:
            return kind, b, value
        return None

    def mul_operands(self, op: OnnxOp) -> tuple[str, str] | None:
        if op.op_type != "Mul" or len(op.proto.input) != 2:
            return None
        return op.proto.input[0], op.proto.input[1]

    def is_expand(self, op: OnnxOp) -> bool:
        return op.op_type == "Expand"

    def expand_target(self, op: OnnxOp) -> tuple[Dim, ...] | None:
        target = self.index.const(op.proto.input[1])
        if target is not None:
            return tuple(int(d) for d in target)
        return self.index.shape(op.proto.output[0])

    def owned(self, core: list[OnnxOp]) -> list[OnnxOp]:
        owned = {id(op): op for op in core}
        changed = True
        while changed:
            changed = False
            for op in list(owned.values()):
                if op.op_type == "Shape":
                    continue
                for name in op.proto.input:
                    producer = self.producer(name)
                    if producer is None or id(producer) in owned or producer is core[0]:
                        continue
                    if self.index.const(name) is None and producer.op_type != "Shape":
                        continue
                    users = [u for o in producer.proto.output for u in self.users(o)]
                    outputs = set(producer.proto.output) & self.index.outputs
                    if all(id(u) in owned for u in users) and not outputs:
                        owned[id(producer)] = producer
                        changed = True
        return list(owned.values())

    def avg_pool(self, source: str, kernel: list[int], anchor: OnnxOp, name: str) -> str:
        node = self.edit.node("AveragePool", [source], name, kernel_shape=kernel, strides=kernel)
        return self.output(self._add(node))

    def mean(self, source: str, axis: int, anchor: OnnxOp, name: str) -> str:
        return self._axes("ReduceMean", source, axis, name, keepdims=1)

    def _axes(self, op: str, data: str, axis: int, name: str, **attrs: object) -> str:
        return self.output(self._add(self.edit.axes_node(op, data, [axis], name, **attrs)))

    def clone(self, op: OnnxOp, env: dict, anchor: OnnxOp, name: str) -> OnnxOp:
        return self._add(self.edit.clone(op.proto, env, name))

    def squeeze(self, value: str, axis: int, anchor: OnnxOp, name: str) -> str:
        return self._axes("Squeeze", value, axis, name)

    def unsqueeze(self, value: str, axis: int, anchor: OnnxOp, name: str) -> str:
        return self._axes("Unsqueeze", value, axis, name)

    def reshape(self, value: str, shape: list[int], anchor: OnnxOp, name: str) -> str:
        dims = self.edit.initializer(np.array(shape, dtype=np.int64), f"{name}_shape")
        return self.output(self._add(self.edit.node("Reshape", [value, dims], name)))

    def hardswish(self, value: str, anchor: OnnxOp, name: str) -> str:
        """``HardSwish`` from opset 14; below it ``x * HardSigmoid(x, 1/6, 1/2)``, the form
        ``export.opset`` writes too (measured as fast as HardSwish on ONNX Runtime CPU)."""
        if self.index.opset >= 14:
            return self.output(self._add(self.edit.node("HardSwish", [value], name)))
        gate = self.edit.node("HardSigmoid", [value], f"{name}/gate", alpha=1 / 6, beta=0.5)
        return self.binary("mul", value, self.output(self._add(gate)), anchor, name)

    def binary(self, kind: str, a: str, b: str, anchor: OnnxOp, name: str) -> str:
        return self.output(self._add(self.edit.node(MAKE[kind], [a, b], name)))

    def binary_kind(self, op: OnnxOp) -> str | None:
        return next((k for k, t in MAKE.items() if op.op_type == t), None)

    def operands(self, op: OnnxOp) -> list[str]:
        return [i for i in op.proto.input if i]

    def _unread(self, op: OnnxOp, name: str) -> None:
        """Forget that ``op`` reads ``name``."""
        readers = self.index.consumers.get(name, [])
        if op.proto in readers:
            readers.remove(op.proto)

    def set_operands(self, op: OnnxOp, values: list[str]) -> None:
        for name in op.proto.input[: len(values)]:
            self._unread(op, name)
        for i, name in enumerate(values):
            op.proto.input[i] = name
            self.index.consumers[name].append(op.proto)

    def channel_params(self, op: OnnxOp) -> list[tuple[str, int]] | None:
        inputs = [i for i in op.proto.input[1:] if i]
        if op.op_type in ("Conv", "BatchNormalization"):
            return [(i, 0) for i in inputs]
        if op.op_type in BINARY:
            found = []
            for name in inputs:
                dims = self.index.shape(name)
                if dims is None:
                    return None
                if len(dims) >= 3 and dims[-3] != 1:
                    found.append((name, len(dims) - 3))
            return found
        if op.op_type in UNARY or op.op_type in ("Squeeze", "Unsqueeze", "Clip"):
            return []
        return None

    def pad(self, value: str, axis: int, size: int, anchor: OnnxOp, name: str) -> str:
        const = self.index.const(value)
        if const is not None:
            widths = [(0, 0)] * const.ndim
            widths[axis] = (0, size - const.shape[axis])
            return self.edit.initializer(np.pad(const, widths), f"{name}_padded")
        dims = self.index.shape(value)
        assert dims is not None
        pads = [0] * (2 * len(dims))
        pads[len(dims) + axis] = size - int(dims[axis])  # type: ignore[call-overload]
        widths_name = self.edit.initializer(np.array(pads, dtype=np.int64), f"{name}_pads")
        return self.output(self._add(self.edit.node("Pad", [value, widths_name], name)))

    def upsample(self, value: str, scales: tuple[int, int], anchor: OnnxOp, name: str) -> str:
        factors = np.array([1, 1, *scales], dtype=np.float32)
        if self.index.opset < 9:
            node = self.edit.node("Upsample", [value], name, mode="nearest", scales=factors)
            return self.output(self._add(node))
        scales_name = self.edit.initializer(factors, f"{name}_scales")
        if self.index.opset == 9:
            node = self.edit.node("Upsample", [value, scales_name], name, mode="nearest")
            return self.output(self._add(node))
        if self.index.opset < 11:
            node = self.edit.node("Resize", [value, scales_name], name, mode="nearest")
            return self.output(self._add(node))
        roi = ""
        if self.index.opset < 13:
            roi = self.edit.initializer(np.zeros(0, dtype=np.float32), f"{name}_roi")
        node = self.edit.node(
            "Resize",
            [value, roi, scales_name],
            name,
            mode="nearest",
            coordinate_transformation_mode="asymmetric",
            nearest_mode="floor",
        )
        return self.output(self._add(node))

    def filled(self, shape: list[int], fill: float, like: str, anchor: OnnxOp, name: str) -> str:
        return self.edit.initializer(np.full(shape, fill, dtype=np.float32), name)

    def supports(self, edit: str) -> bool:
        """None of the optional edits: they are for ExecuTorch's ATen graphs."""
        return False

    def replace_input(self, op: OnnxOp, old: str, new: str) -> None:
        for i, name in enumerate(op.proto.input):
            if name == old:
                op.proto.input[i] = new
                self._unread(op, old)
                self.index.consumers[new].append(op.proto)

    def replace_uses(self, old: str, new: str) -> None:
        for op in self.users(old):
            self.replace_input(op, old, new)

    def finish(self) -> int:
        topo_sort(self.index.graph)
        nodes, _ = prune(self.index.graph)
        return nodes
