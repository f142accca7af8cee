"""``GraphView`` over an ONNX model's main graph (onnx_ir), as stock exporters write it.

Values are onnx_ir ``Value``s and ops its ``Node``s (both compared by identity). Shapes and
constants come from ``onnx_graph.facts.GraphFacts`` (ONNX shape inference, constants
folded through shape arithmetic); new nodes go in before their anchor under fresh names
built from the rewrites' name hints, so a later rewrite reads the graph as it is.
``finish`` sorts the graph (onnx_ir's stable ``Graph.sort``) and removes dead nodes and
initializers (onnx_ir's ``RemoveUnusedNodesPass``). Which nodes a block owns is
``onnx_graph.owners``' rule, the one ``export.onnx`` and ``pipeline.optimize`` use.

Why not onnxscript's rewriter: its patterns match a fixed op sequence with one output,
while a CA block is two branches joined through a concat/split with a variable pointwise
stem, transposes that compose, and slices whose bounds are computed from ``Shape``. The
matcher (``coordatt``) needs to walk the graph and say which rule a candidate broke, which
the rewriter's ``MatchResult`` cannot carry across a walk. onnxscript's constant folder
and onnx_ir's passes are used where they fit (``onnx_graph.normalize``, ``finish``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import numpy as np
import onnx
import onnx_ir as ir
import onnx_ir.passes.common as ir_passes

from ca_export.onnx_graph import owners
from ca_export.onnx_graph.facts import GraphFacts, attr, attr_int, attr_ints
from ca_export.patterns.view import Dim, GraphView, NoMatch

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
AXES_AS_INPUT = {"ReduceMean": 18, "Squeeze": 13, "Unsqueeze": 13}
"""The opset from which each op takes its axes as an input instead of an attribute."""


class OnnxView(GraphView[ir.Node, ir.Value]):
    """The CA questions and edits, answered on an onnx_ir copy of an ONNX model; none of
    the optional edits (they are for ExecuTorch's ATen graphs)."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.source = model
        self.model = ir.from_proto(model)
        self.graph = self.model.graph
        self.facts = GraphFacts(self.model, model)
        self.opset = self.facts.opset
        self.taken = {n.name for n in self.graph}
        self.taken |= {v.name for n in self.graph for v in [*n.inputs, *n.outputs] if v is not None}
        self.taken |= {v.name for v in [*self.graph.inputs, *self.graph.initializers.values()]}

    @property
    def shape_error(self) -> str | None:
        """Why shape inference failed, if it did."""
        return self.facts.shape_error

    def to_proto(self) -> onnx.ModelProto:
        """The model as it is now, with the opset imports as the source wrote them."""
        out = ir.to_proto(self.model)
        del out.opset_import[:]
        out.opset_import.extend(self.source.opset_import)
        return out

    def _fresh(self, base: str) -> str:
        """``base``, or ``base_<k>`` with the first k that is free."""
        name, k = base, 0
        while name in self.taken:
            k += 1
            name = f"{base}_{k}"
        self.taken.add(name)
        return name

    def _node(
        self,
        op: str,
        inputs: Sequence[ir.Value | None],
        anchor: ir.Node,
        base: str,
        **attrs: object,
    ) -> ir.Value:
        """A new node before ``anchor`` with one fresh output named after ``base``."""
        # onnx_ir's attribute value type (SupportedAttrTypes) is private; it checks at run time.
        node = ir.node(op, inputs, dict(sorted(attrs.items())), name=self._fresh(base))  # type: ignore[arg-type]
        node.outputs[0].name = self._fresh(f"{base}_out")
        self.graph.insert_before(anchor, node)
        return node.outputs[0]

    def _axes_node(
        self, op: str, data: ir.Value, axes: list[int], anchor: ir.Node, base: str, **attrs: object
    ) -> ir.Value:
        """A new ReduceMean/Squeeze/Unsqueeze over ``axes`` in the form the opset wants."""
        if self.opset >= AXES_AS_INPUT[op]:
            axes_value = self._initializer(np.array(axes, dtype=np.int64), f"{base}_axes")
            return self._node(op, [data, axes_value], anchor, base, **attrs)
        return self._node(op, [data], anchor, base, axes=axes, **attrs)

    def _initializer(self, value: np.ndarray, base: str) -> ir.Value:
        """A new constant under a fresh name."""
        name = self._fresh(base)
        init = ir.Value(name=name, const_value=ir.tensor(value, name=name))
        self.graph.register_initializer(init)
        return init

    def ops(self) -> Sequence[ir.Node]:
        return list(self.graph)

    def producer(self, value: ir.Value) -> ir.Node | None:
        return value.producer()

    def users(self, value: ir.Value) -> list[ir.Node]:
        return [use.node for use in value.uses()]

    def single_user(self, value: ir.Value) -> ir.Node | None:
        users = self.users(value)
        return users[0] if len(users) == 1 and not value.is_graph_output() else None

    def is_output(self, value: ir.Value) -> bool:
        return value.is_graph_output()

    def output(self, op: ir.Node) -> ir.Value:
        return op.outputs[0]

    def outputs(self, op: ir.Node) -> list[ir.Value]:
        return [o for o in op.outputs if o.name]

    def data(self, op: ir.Node) -> ir.Value:
        return op.inputs[0]  # type: ignore[return-value]  # the ops asked have a data input

    def shape(self, value: ir.Value) -> tuple[Dim, ...] | None:
        return self.facts.shape(value)

    def shape_gap(self, value: ir.Value) -> str:
        return self.facts.shape_gap(value)

    def same_size(self, a: Dim, b: Dim) -> bool:
        return a is not None and a == b

    def name(self, op: ir.Node) -> str:
        return op.name or op.outputs[0].name or ""

    def node_name(self, op: ir.Node) -> str:
        return self.name(op)

    def label(self, op: ir.Node) -> str:
        return op.op_type

    def onnx_type(self, op: ir.Node) -> str:
        return op.op_type

    def attr(self, op: ir.Node, name: str, default: object = None) -> object:
        """An attribute's value, or ``default``."""
        return attr(op, name, default)

    def concat(self, op: ir.Node) -> tuple[list[ir.Value], int] | None:
        if op.op_type != "Concat":
            return None
        inputs = [i for i in op.inputs if i is not None]
        return inputs, attr_int(op, "axis", 0) % 4

    def perm(self, op: ir.Node) -> tuple[int, ...] | None:
        if op.op_type != "Transpose":
            return None
        return tuple(attr_ints(op, "perm", (3, 2, 1, 0)))

    def pool_source(self, op: ir.Node) -> ir.Value | None:
        return op.inputs[0] if op.op_type in ("AveragePool", "ReduceMean") else None

    def strip_pool(self, op: ir.Node) -> tuple[ir.Value, int, str] | None:
        source = self.pool_source(op)
        shape = self.facts.shape(source) if source is not None else None
        if source is None or shape is None or len(shape) != 4:
            return None
        if op.op_type == "AveragePool":
            kernel = attr_ints(op, "kernel_shape", [])
            pads = attr_ints(op, "pads", [0, 0, 0, 0])
            dilations = attr_ints(op, "dilations", [1, 1])
            auto_pad = self.attr(op, "auto_pad", "NOTSET")
            if len(kernel) != 2 or any(pads) or auto_pad not in ("NOTSET", "VALID"):
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
        axes: np.ndarray | list[int] | None
        if self.opset >= 18:
            axes = (
                self.facts.const(op.inputs[1])
                if len(op.inputs) > 1 and op.inputs[1] is not None
                else None
            )
        else:
            axes = attr_ints(op, "axes", []) or None
        if axes is None or len(list(np.ravel(axes))) != 1:
            return None
        gone = int(np.ravel(axes)[0]) % 4
        if gone in (2, 3) and shape[gone] != 1:
            return source, 5 - gone, "ReduceMean"
        return None

    def _spatially_constant(self, value: ir.Value) -> bool:
        """A constant that broadcasts over a 4-D tensor without spatial extent."""
        const = self.facts.const(value)
        if const is None or const.ndim > 4:
            return False
        dims = (1,) * (4 - const.ndim) + tuple(const.shape)
        return bool(dims[2] == 1 and dims[3] == 1)

    def pointwise(self, op: ir.Node, inside: set[ir.Value]) -> str:
        node, kind = op, op.op_type
        data = [i for i in node.inputs if i in inside]
        others = [i for i in node.inputs if i is not None and i not in inside]
        if kind == "Conv":
            weight = self.facts.shape(node.inputs[1])
            if node.inputs[0] not in inside or others != list(node.inputs[1:]):
                raise NoMatch("a Conv reads the shared branch as its weight")
            if weight is None or len(weight) != 4 or tuple(weight[2:]) != (1, 1):
                raise NoMatch("a Conv on the shared branch is not 1x1")
            if not self._unstrided(op):
                raise NoMatch("a 1x1 Conv on the shared branch has stride or padding")
            return kind
        if kind == "BatchNormalization":
            if len(node.outputs) != 1 or node.inputs[0] not in inside or len(data) != 1:
                raise NoMatch("a BatchNormalization on the shared branch is in training mode")
            return kind
        if kind in UNARY and len(node.inputs) == 1:
            return kind
        if kind == "Clip" and all(self.facts.const(i) is not None for i in others):
            return kind
        if kind in BINARY and all(self._spatially_constant(i) for i in others):
            return kind
        raise NoMatch(f"'{kind}' reads the concatenated tensor but is not spatially pointwise")

    def _unstrided(self, op: ir.Node) -> bool:
        """Stride 1 and no padding."""
        strides = attr_ints(op, "strides", [1, 1])
        pads = attr_ints(op, "pads", [0, 0, 0, 0])
        auto_pad = self.attr(op, "auto_pad", "NOTSET")
        return strides == [1, 1] and not any(pads) and auto_pad in ("NOTSET", "VALID")

    def cuts(self, op: ir.Node, value: ir.Value) -> bool:
        return op.op_type in ("Split", "Slice") and op.inputs[0] == value

    def pieces(self, op: ir.Node, axis: int, sizes: list[Dim]) -> list[tuple[int, ir.Value]]:
        if None in sizes:
            raise NoMatch("the channel count or pooled sizes are not static")
        # ONNX sizes are ints or None, and None was ruled out above.
        static = [int(cast(int, s)) for s in sizes]
        if op.op_type == "Split":
            if attr_int(op, "axis", 0) % 4 != axis:
                raise NoMatch("the split is not along the concat axis")
            if self._split_sizes(op, sum(static)) != static:
                raise NoMatch("the split sizes do not undo the concat")
            return [
                (i, out) for i, out in enumerate(op.outputs) if out.uses() or out.is_graph_output()
            ]
        return [(self._slice_index(op, axis, static), op.outputs[0])]

    def _split_sizes(self, op: ir.Node, total: int) -> list[int] | None:
        """The sizes a Split cuts, from its input, attribute or output count."""
        node = op
        if len(node.inputs) > 1 and node.inputs[1] is not None:
            value = self.facts.const(node.inputs[1])
            return None if value is None else [int(v) for v in np.ravel(value)]
        split = op.attributes.get("split")
        if split is not None and not split.is_ref():
            return [int(v) for v in split.as_ints()]
        count = len(node.outputs)
        return [total // count] * count if total % count == 0 else None

    def _slice_index(self, op: ir.Node, axis: int, sizes: list[int]) -> int:
        """Which concat input a Slice along the concat axis gives back."""
        node = op
        values = [self.facts.const(i) for i in [*node.inputs[1:5], None, None, None, None]]
        starts, ends, axes, steps = values[:4]
        has_axes = len(node.inputs) > 3 and node.inputs[3] is not None
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

    def gate_conv_channels(self, op: ir.Node, data: ir.Value) -> int | None:
        if op.op_type != "Conv" or op.inputs[0] is not data:
            return None
        weight = self.facts.shape(op.inputs[1])
        if weight is None or len(weight) != 4 or tuple(weight[2:]) != (1, 1):
            return None
        return int(weight[0]) if self._unstrided(op) and weight[0] is not None else None

    def _scalar(self, value: ir.Value | None) -> float | None:
        """A constant's value if it holds a single number."""
        const = self.facts.const(value)
        return float(np.ravel(const)[0]) if const is not None and const.size == 1 else None

    def _clip_bounds(self, op: ir.Node) -> list[float | None]:
        """A Clip's [min, max]: constant inputs (opset 11+) or attributes (opset 10 and older).

        A bound that is absent is infinite; one that is not constant is None.
        """
        if self.opset <= 10:
            low = self.attr(op, "min", -np.inf)
            high = self.attr(op, "max", np.inf)
            # Clip's min and max attributes are FLOATs.
            return [float(cast(float, low)), float(cast(float, high))]
        names = [*op.inputs[1:3], None, None][:2]
        return [
            self._scalar(n) if n is not None else d
            for n, d in zip(names, (-np.inf, np.inf), strict=True)
        ]

    def activation(self, op: ir.Node) -> str | None:
        if op.op_type == "Sigmoid":
            return "sigmoid"
        if op.op_type == "HardSigmoid":
            return "hardsigmoid"
        if op.op_type == "Clip" and self._clip_bounds(op) == [0.0, 6.0]:
            return "relu6"
        return None

    def scalar_arith(self, op: ir.Node) -> tuple[str, ir.Value, float] | None:
        kind = SCALAR_ARITH.get(op.op_type)
        if kind is None or len(op.inputs) != 2:
            return None
        a, b = op.inputs
        if a is None or b is None:
            return None
        if (value := self._scalar(b)) is not None and self._scalar(a) is None:
            return kind, a, value
        if kind != "div" and (value := self._scalar(a)) is not None and self._scalar(b) is None:
            return kind, b, value
        return None

    def mul_operands(self, op: ir.Node) -> tuple[ir.Value, ir.Value] | None:
        if op.op_type != "Mul" or len(op.inputs) != 2:
            return None
        a, b = op.inputs
        return (a, b) if a is not None and b is not None else None

    def is_expand(self, op: ir.Node) -> bool:
        return op.op_type == "Expand"

    def expand_target(self, op: ir.Node) -> tuple[Dim, ...] | None:
        target = self.facts.const(op.inputs[1])
        if target is not None:
            return tuple(int(d) for d in target)
        return self.facts.shape(op.outputs[0])

    def owned(self, core: list[ir.Node]) -> list[ir.Node]:
        joins = owners.shape_arithmetic(self.graph)
        return list(owners.grow(self.graph, dict.fromkeys(core, 0), joins))

    def avg_pool(self, source: ir.Value, kernel: list[int], anchor: ir.Node, name: str) -> ir.Value:
        return self._node(
            "AveragePool", [source], anchor, name, kernel_shape=kernel, strides=kernel
        )

    def mean(self, source: ir.Value, axis: int, anchor: ir.Node, name: str) -> ir.Value:
        return self._axes_node("ReduceMean", source, [axis], anchor, name, keepdims=1)

    def clone(
        self, op: ir.Node, env: dict[ir.Value, ir.Value], anchor: ir.Node, name: str
    ) -> ir.Node:
        copy = ir.Node(
            op.domain,
            op.op_type,
            [env.get(i, i) if i is not None else None for i in op.inputs],
            [ir.Attr(a.name, a.type, a.value) for a in op.attributes.values()],
            overload=op.overload,
            num_outputs=len(op.outputs),
            version=op.version,
            name=self._fresh(f"{name}/{op.name or op.op_type}"),
            doc_string=op.doc_string,
            metadata_props=dict(op.metadata_props),
        )
        for out, new in zip(op.outputs, copy.outputs, strict=True):
            new.name = self._fresh(f"{name}/{out.name}") if out.name else ""
            env[out] = new
        self.graph.insert_before(anchor, copy)
        return copy

    def squeeze(self, value: ir.Value, axis: int, anchor: ir.Node, name: str) -> ir.Value:
        return self._axes_node("Squeeze", value, [axis], anchor, name)

    def unsqueeze(self, value: ir.Value, axis: int, anchor: ir.Node, name: str) -> ir.Value:
        return self._axes_node("Unsqueeze", value, [axis], anchor, name)

    def reshape(self, value: ir.Value, shape: list[int], anchor: ir.Node, name: str) -> ir.Value:
        dims = self._initializer(np.array(shape, dtype=np.int64), f"{name}_shape")
        return self._node("Reshape", [value, dims], anchor, name)

    def hardswish(self, value: ir.Value, anchor: ir.Node, name: str) -> ir.Value:
        """``HardSwish`` from opset 14; below it ``x * HardSigmoid(x, 1/6, 1/2)``, the form
        ``export.opset`` writes too (measured as fast as HardSwish on ONNX Runtime CPU)."""
        if self.opset >= 14:
            return self._node("HardSwish", [value], anchor, name)
        gate = self._node("HardSigmoid", [value], anchor, f"{name}/gate", alpha=1 / 6, beta=0.5)
        return self.binary("mul", value, gate, anchor, name)

    def binary(self, kind: str, a: ir.Value, b: ir.Value, anchor: ir.Node, name: str) -> ir.Value:
        return self._node(MAKE[kind], [a, b], anchor, name)

    def binary_kind(self, op: ir.Node) -> str | None:
        return next((k for k, t in MAKE.items() if op.op_type == t), None)

    def operands(self, op: ir.Node) -> list[ir.Value]:
        return [i for i in op.inputs if i is not None]

    def set_operands(self, op: ir.Node, values: list[ir.Value]) -> None:
        for i, value in enumerate(values):
            op.replace_input_with(i, value)

    def channel_params(self, op: ir.Node) -> list[tuple[ir.Value, int]] | None:
        inputs = [i for i in op.inputs[1:] if i is not None]
        if op.op_type in ("Conv", "BatchNormalization"):
            return [(i, 0) for i in inputs]
        if op.op_type in BINARY:
            found = []
            for value in inputs:
                dims = self.facts.shape(value)
                if dims is None:
                    return None
                if len(dims) >= 3 and dims[-3] != 1:
                    found.append((value, len(dims) - 3))
            return found
        if op.op_type in UNARY or op.op_type in ("Squeeze", "Unsqueeze", "Clip"):
            return []
        return None

    def pad(self, value: ir.Value, axis: int, size: int, anchor: ir.Node, name: str) -> ir.Value:
        const = self.facts.const(value)
        if const is not None:
            widths = [(0, 0)] * const.ndim
            widths[axis] = (0, size - const.shape[axis])
            return self._initializer(np.pad(const, widths), f"{name}_padded")
        dims = self.facts.shape(value)
        assert dims is not None
        pads = [0] * (2 * len(dims))
        # The padded axis of a value that is not constant has a static size here.
        pads[len(dims) + axis] = size - int(cast(int, dims[axis]))
        widths_value = self._initializer(np.array(pads, dtype=np.int64), f"{name}_pads")
        return self._node("Pad", [value, widths_value], anchor, name)

    def upsample(
        self, value: ir.Value, scales: tuple[int, int], anchor: ir.Node, name: str
    ) -> ir.Value:
        factors = np.array([1, 1, *scales], dtype=np.float32)
        if self.opset < 9:
            listed = [float(f) for f in factors]
            return self._node("Upsample", [value], anchor, name, mode="nearest", scales=listed)
        scales_value = self._initializer(factors, f"{name}_scales")
        if self.opset == 9:
            return self._node("Upsample", [value, scales_value], anchor, name, mode="nearest")
        if self.opset < 11:
            return self._node("Resize", [value, scales_value], anchor, name, mode="nearest")
        roi = None
        if self.opset < 13:
            roi = self._initializer(np.zeros(0, dtype=np.float32), f"{name}_roi")
        return self._node(
            "Resize",
            [value, roi, scales_value],
            anchor,
            name,
            mode="nearest",
            coordinate_transformation_mode="asymmetric",
            nearest_mode="floor",
        )

    def filled(
        self, shape: list[int], fill: float, like: ir.Value, anchor: ir.Node, name: str
    ) -> ir.Value:
        return self._initializer(np.full(shape, fill, dtype=np.float32), name)

    def replace_input(self, op: ir.Node, old: ir.Value, new: ir.Value) -> None:
        for i, value in enumerate(op.inputs):
            if value is old:
                op.replace_input_with(i, new)

    def replace_uses(self, old: ir.Value, new: ir.Value) -> None:
        for op in dict.fromkeys(self.users(old)):
            self.replace_input(op, old, new)

    def finish(self) -> int:
        self.graph.sort()
        before = len(self.graph)
        ir_passes.RemoveUnusedNodesPass()(self.model)
        return before - len(self.graph)
