"""``GraphView`` over the ATen graph of a functional `ExportedProgram` (``tracing.trace``).

Ops and values are both fx ``Node``s (a split's pieces are its ``getitem`` nodes). Shapes come
from the nodes' fake values; new nodes get theirs by running their op on the fake values of
their arguments (``ca_export.fx``), so the edited program stays exportable with its
dynamic dimensions. Names are ignored: fx names its nodes itself, and new nodes carry
the module scope of their anchor, so they stay attributed to their CA block.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch
from torch.fx import Graph, Node

from ca_export.fx import (
    LAYOUT_OPS,
    add_node,
    copy_node,
    is_getitem,
    layout_perm,
    module_path,
    norm_dim,
    same_size,
    shape,
    val,
)
from ca_export.patterns.pointwise import (
    BATCH_NORM,
    CONV,
    UNARY,
    is_eval_batch_norm,
    is_pointwise_conv,
    pointwise_kind,
)
from ca_export.patterns.pointwise import (
    BINARY as POINTWISE_BINARY,
)
from ca_export.patterns.view import OPTIONAL_EDITS, Dim, GraphView, NoMatch

aten = torch.ops.aten

POOL_OPS = (aten.adaptive_avg_pool2d.default, aten._adaptive_avg_pool2d.default)
UPSAMPLES = (aten.upsample_bilinear2d.vec, aten.upsample_nearest2d.vec)
SPLIT_OPS = (aten.split_with_sizes.default, aten.split.Tensor)
INT_MAX = 2**63 - 1
# The tables are keyed by OpOverload and looked up with any fx target (str | Callable).
ONNX_TYPES: dict[object, str] = {
    aten.cat.default: "Concat",
    aten.split_with_sizes.default: "Split",
    aten.split.Tensor: "Split",
    aten.slice.Tensor: "Slice",
    aten.permute.default: "Transpose",
    aten.transpose.int: "Transpose",
    aten.squeeze.dims: "Squeeze",
    aten.unsqueeze.default: "Unsqueeze",
}
SCALAR_ARITH: dict[object, str] = {
    aten.add.Tensor: "add",
    aten.add.Scalar: "add",
    aten.mul.Tensor: "mul",
    aten.mul.Scalar: "mul",
    aten.div.Tensor: "div",
    aten.div.Scalar: "div",
}
BINARY = {"mul": aten.mul.Tensor, "matmul": aten.matmul.default}


def _arg(node: Node, i: int, default: object) -> object:
    """The node's i-th positional argument, or ``default``."""
    return node.args[i] if len(node.args) > i else default


def _dim_arg(node: Node, i: int, rank: int) -> int:
    """The node's i-th positional argument (0 if absent) as a non-negative dim."""
    # fx types args as Argument; a dim is an int in the ATen schemas.
    return norm_dim(cast(int, _arg(node, i, 0)), rank)


class AtenView(GraphView[Node, Node]):
    """The CA questions and edits, answered on an fx graph."""

    def __init__(self, graph: Graph) -> None:
        self.graph = graph

    def ops(self) -> Sequence[Node]:
        return list(self.graph.nodes)

    def producer(self, value: Node) -> Node | None:
        return value if value.op == "call_function" else None

    def users(self, value: Node) -> list[Node]:
        return list(value.users)

    def single_user(self, value: Node) -> Node | None:
        users = list(value.users)
        return users[0] if len(users) == 1 and users[0].op != "output" else None

    def is_output(self, value: Node) -> bool:
        return any(u.op == "output" for u in value.users)

    def output(self, op: Node) -> Node:
        return op

    def outputs(self, op: Node) -> list[Node]:
        return [op]

    def data(self, op: Node) -> Node:
        first = op.args[0]
        assert isinstance(first, Node)
        return first

    def shape(self, value: Node) -> tuple[Dim, ...] | None:
        return shape(value)

    def shape_gap(self, value: Node) -> str:
        return f"'{value.name}' has no traced shape"

    def same_size(self, a: Dim, b: Dim) -> bool:
        return same_size(a, b)

    def name(self, op: Node) -> str:
        return module_path(op) or "<model>"

    def node_name(self, op: Node) -> str:
        return op.name

    def label(self, op: Node) -> str:
        if op.target in LAYOUT_OPS:
            return "permute" if op.target == aten.permute.default else "transpose"
        if op.target in SPLIT_OPS:
            return "split"
        if op.target == aten.slice.Tensor:
            return "slice"
        kind = pointwise_kind(op, lambda _: True)
        return kind or str(getattr(op.target, "__name__", op.target))

    def onnx_type(self, op: Node) -> str:
        return ONNX_TYPES.get(op.target, self.label(op))

    def concat(self, op: Node) -> tuple[list[Node], int] | None:
        if op.op != "call_function" or op.target != aten.cat.default:
            return None
        # fx types args as Argument; aten.cat's first is a list of Nodes.
        inputs = list(cast("list[Node]", op.args[0]))
        rank = len(shape(inputs[0])) if inputs else 4
        return inputs, _dim_arg(op, 1, rank)

    def perm(self, op: Node) -> tuple[int, ...] | None:
        if op.op != "call_function" or op.target not in LAYOUT_OPS:
            return None
        return layout_perm(op)

    def strip_pool(self, op: Node) -> tuple[Node, int, str] | None:
        source = self.pool_source(op)
        if source is None or len(shape(source)) != 4:
            return None
        if op.target in POOL_OPS:
            out, src = shape(op), shape(source)
            for kept, gone in ((2, 3), (3, 2)):
                if (
                    out[gone] == 1
                    and same_size(out[kept], src[kept])
                    and not same_size(src[gone], 1)
                ):
                    return source, kept, "adaptive_avg_pool2d"
            return None
        # fx types args as Argument; mean's dim is a list of ints in the ATen schema.
        dims = cast("list[int] | None", _arg(op, 1, None))
        keep = _arg(op, 2, op.kwargs.get("keepdim", False))
        if not keep or dims is None or len(dims) != 1:
            return None
        gone = norm_dim(dims[0], 4)
        return (source, 5 - gone, "mean") if gone in (2, 3) else None

    def pool_source(self, op: Node) -> Node | None:
        if op.op != "call_function" or op.target not in (*POOL_OPS, aten.mean.dim):
            return None
        return self.data(op)

    def pointwise(self, op: Node, inside: set[Node]) -> str:
        kind = pointwise_kind(op, lambda a: a in inside)
        if kind is None:
            name = getattr(op.target, "__name__", str(op.target))
            raise NoMatch(f"'{name}' reads the concatenated tensor but is not spatially pointwise")
        return kind

    def cuts(self, op: Node, value: Node) -> bool:
        return op.target in (*SPLIT_OPS, aten.slice.Tensor) and op.args[0] is value

    def pieces(self, op: Node, axis: int, sizes: list[Dim]) -> list[tuple[int, Node]]:
        if op.target in SPLIT_OPS:
            if _dim_arg(op, 2, 4) != axis:
                raise NoMatch("the split is not along the concat axis")
            cut = [shape(u)[axis] for u in op.meta["val"]] if op.meta.get("val") else []
            if len(cut) != 2 or not all(map(same_size, cut, sizes)):
                raise NoMatch("the split sizes do not undo the concat")
            found = []
            for item in op.users:
                if not is_getitem(item) or item.args[1] not in (0, 1):
                    raise NoMatch("the split does not give back exactly two pieces")
                # fx types args as Argument; checked above to be 0 or 1.
                found.append((int(cast(int, item.args[1])), item))
            return found
        if _dim_arg(op, 1, 4) != axis:
            raise NoMatch("a slice of the shared branch cuts another axis")
        start, end, step = _arg(op, 2, 0), _arg(op, 3, INT_MAX), _arg(op, 4, 1)
        if step != 1:
            raise NoMatch("a slice of the shared branch has a step")
        if start in (0, None) and same_size(shape(op)[axis], sizes[0]):
            return [(0, op)]
        if same_size(start, sizes[0]) and (end == INT_MAX or same_size(shape(op)[axis], sizes[1])):
            return [(1, op)]
        raise NoMatch("the slices do not undo the concat")

    def gate_conv_channels(self, op: Node, data: Node) -> int | None:
        if not is_pointwise_conv(op) or op.args[0] is not data:
            return None
        channels = shape(op)[1]
        return channels if isinstance(channels, int) else None

    def activation(self, op: Node) -> str | None:
        if op.target == aten.sigmoid.default:
            return "sigmoid"
        if op.target in (aten.hardsigmoid.default, aten.hardsigmoid_.default):
            return "hardsigmoid"
        kind = UNARY.get(op.target)
        bounds = tuple(op.args[1:3])
        if kind == "relu6" or (kind in ("hardtanh", "clamp") and bounds == (0.0, 6.0)):
            return "relu6"
        return None

    def scalar_arith(self, op: Node) -> tuple[str, Node, float] | None:
        kind = SCALAR_ARITH.get(op.target)
        if kind is None or len(op.args) < 2:
            return None
        a, b = op.args[:2]
        if isinstance(a, Node) and isinstance(b, (int, float)):
            return kind, a, float(b)
        if kind != "div" and isinstance(b, Node) and isinstance(a, (int, float)):
            return kind, b, float(a)
        return None

    def mul_operands(self, op: Node) -> tuple[Node, Node] | None:
        if op.target != aten.mul.Tensor:
            return None
        a, b = op.args[:2]
        return (a, b) if isinstance(a, Node) and isinstance(b, Node) else None

    def is_expand(self, op: Node) -> bool:
        return op.target in (aten.expand.default, aten.expand_as.default)

    def expand_target(self, op: Node) -> tuple[Dim, ...] | None:
        return shape(op)

    def owned(self, core: list[Node]) -> list[Node]:
        return list(core)

    def avg_pool(self, source: Node, kernel: list[int], anchor: Node, name: str) -> Node:
        return add_node(self.graph, aten.avg_pool2d.default, (source, kernel, kernel), anchor)

    def mean(self, source: Node, axis: int, anchor: Node, name: str) -> Node:
        return add_node(self.graph, aten.mean.dim, (source, [axis], True), anchor)

    def clone(self, op: Node, env: dict[Node, Node], anchor: Node, name: str) -> Node:
        env[op] = copy_node(self.graph, op, env, before=anchor)
        return env[op]

    def squeeze(self, value: Node, axis: int, anchor: Node, name: str) -> Node:
        return add_node(self.graph, aten.squeeze.dims, (value, [axis]), anchor)

    def unsqueeze(self, value: Node, axis: int, anchor: Node, name: str) -> Node:
        return add_node(self.graph, aten.unsqueeze.default, (value, axis), anchor)

    def reshape(self, value: Node, shape: list[int], anchor: Node, name: str) -> Node:
        return add_node(self.graph, aten.view.default, (value, shape), anchor)

    def hardswish(self, value: Node, anchor: Node, name: str) -> Node:
        return add_node(self.graph, aten.hardswish.default, (value,), anchor)

    def binary(self, kind: str, a: Node, b: Node, anchor: Node, name: str) -> Node:
        return add_node(self.graph, BINARY[kind], (a, b), anchor)

    def binary_kind(self, op: Node) -> str | None:
        return next((k for k, t in BINARY.items() if op.target == t), None)

    def operands(self, op: Node) -> list[Node]:
        return list(op.all_input_nodes)

    def set_operands(self, op: Node, values: list[Node]) -> None:
        op.args = (*values, *op.args[len(values) :])

    def channel_params(self, op: Node) -> list[tuple[Node, int]] | None:
        params = [a for a in op.args[1:] if isinstance(a, Node)]
        if op.target in CONV or op.target == BATCH_NORM or is_eval_batch_norm(op):
            return [(p, 0) for p in params]
        if op.target in UNARY or is_getitem(op, 0):
            return [] if not params else None
        if op.target in POINTWISE_BINARY:
            found: list[tuple[Node, int]] = []
            for a in op.args[:2]:
                dims = shape(a) if isinstance(a, Node) else ()
                if isinstance(a, Node) and a is not op.args[0] and len(dims) >= 3 and dims[-3] != 1:
                    found.append((a, len(dims) - 3))
            return found
        return None

    def pad(self, value: Node, axis: int, size: int, anchor: Node, name: str) -> Node:
        dims = shape(value)
        widths = [0, 0] * (len(dims) - 1 - axis) + [0, size - int(dims[axis])]
        return add_node(self.graph, aten.constant_pad_nd.default, (value, widths, 0.0), anchor)

    def upsample(self, value: Node, scales: tuple[int, int], anchor: Node, name: str) -> Node:
        factors = [float(s) for s in scales]
        return add_node(self.graph, aten.upsample_nearest2d.vec, (value, None, factors), anchor)

    def filled(self, shape: list[int], fill: float, like: Node, anchor: Node, name: str) -> Node:
        dtype = val(like).dtype
        kwargs = {"dtype": dtype, "device": torch.device("cpu"), "pin_memory": False}
        return add_node(self.graph, aten.full.default, (shape, fill), anchor, kwargs)

    def supports(self, edit: str) -> bool:
        return edit in OPTIONAL_EDITS

    def permute(self, value: Node, perm: list[int], anchor: Node, name: str) -> Node:
        return add_node(self.graph, aten.permute.default, (value, perm), anchor)

    def global_mean(self, value: Node, anchor: Node, name: str) -> Node:
        return add_node(self.graph, aten.mean.dim, (value, [2, 3], True), anchor)

    def float_hardsigmoid(self, value: Node, anchor: Node, name: str) -> list[Node]:
        added = add_node(self.graph, aten.add.Tensor, (value, 3.0), anchor)
        clamped = add_node(self.graph, aten.clamp.default, (added, 0.0, 6.0), anchor)
        return [added, clamped, add_node(self.graph, aten.div.Tensor, (clamped, 6.0), anchor)]

    def float_scalars(self, op: Node) -> bool:
        if not any(type(a) is int for a in op.args):
            return False
        op.args = tuple(float(a) if type(a) is int else a for a in op.args)
        return True

    def upsamples(self) -> list[Node]:
        return [n for n in self.graph.nodes if n.op == "call_function" and n.target in UPSAMPLES]

    def upsample_sizes(self, op: Node) -> tuple[tuple[Dim, ...], tuple[Dim, ...]]:
        if op.args[1] is None:
            raise NoMatch("already by scale factor")
        source = op.args[0]
        if not isinstance(source, Node):
            raise NoMatch("its input is not a graph value")
        return tuple(source.meta["val"].shape[2:]), tuple(op.meta["val"].shape[2:])

    def scale_upsample(self, op: Node, ratio: tuple[int, int]) -> None:
        scales = [float(ratio[0]), float(ratio[1])]
        if op.target is aten.upsample_bilinear2d.vec:
            op.args = (op.args[0], None, op.args[2], scales)
        else:
            op.args = (op.args[0], None, scales)

    def powers(self) -> list[tuple[Node, float]]:
        return [
            (n, float(n.args[1]))
            for n in self.graph.nodes
            if n.op == "call_function"
            and n.target is aten.pow.Tensor_Scalar
            and isinstance(n.args[1], (int, float))
        ]

    def square_pow(self, op: Node) -> Node:
        base = op.args[0]
        square = add_node(self.graph, aten.mul.Tensor, (base, base), op)
        op.replace_all_uses_with(square)
        return square

    def replace_input(self, op: Node, old: Node, new: Node) -> None:
        op.replace_input_with(old, new)

    def replace_uses(self, old: Node, new: Node) -> None:
        old.replace_all_uses_with(new)

    def finish(self) -> int:
        before = len(self.graph.nodes)
        self.graph.eliminate_dead_code()
        self.graph.lint()
        module = self.graph.owning_module
        if module is not None:
            module.recompile()
        return before - len(self.graph.nodes)
