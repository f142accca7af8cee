"""A read-mostly view of an ONNX graph: producers, consumers, inferred shapes, constants.

Shapes come from ONNX shape inference on a copy of the model (with data propagation,
then without it if that fails, then from the file's own ``value_info``). A failure is
kept (``shape_error``), and ``shape_gap`` says where inference stopped for a tensor
whose shape is unknown (a custom-domain op, say): callers report it as the reason,
never as "no match". A tensor is constant
when it is an initializer, a ``Constant`` output, a ``Shape`` of a tensor whose shape
is static, or the output of a small shape-arithmetic op whose inputs are all constant
(evaluated with ``onnx.reference``); this is how Slice bounds computed from ``Shape``
become numbers.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import onnx
from onnx import helper, numpy_helper
from onnx.checker import ValidationError
from onnx.shape_inference import InferenceError

Dim = int | None
SHAPE_ARITHMETIC = frozenset(
    {
        "Add",
        "Cast",
        "Concat",
        "ConstantOfShape",
        "Div",
        "Equal",
        "Gather",
        "Identity",
        "Mul",
        "Range",
        "Reshape",
        "Slice",
        "Squeeze",
        "Sub",
        "Unsqueeze",
        "Where",
    }
)


class GraphIndex:
    """Producers, consumers, shapes and constant values of a model's main graph."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.model = model
        self.graph = model.graph
        self.opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
        self.producer: dict[str, onnx.NodeProto] = {}
        self.consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
        for node in self.graph.node:
            for out in node.output:
                self.producer[out] = node
            for name in node.input:
                if name:
                    self.consumers[name].append(node)
        self.outputs = {o.name for o in self.graph.output}
        self.initializers = {i.name: i for i in self.graph.initializer}
        self.shapes, self.shape_error = _inferred_shapes(model)
        self._values: dict[str, np.ndarray | None] = {}

    def shape(self, name: str) -> tuple[Dim, ...] | None:
        """The inferred shape of a tensor (None where unknown)."""
        return self.shapes.get(name)

    def shape_gap(self, name: str) -> str:
        """Why the shape of ``name`` is unknown: the failure of shape inference itself, or the
        first node on its way back whose inputs have shapes and whose output has none."""
        if self.shape_error:
            return f"shape inference failed: {self.shape_error}"
        seen: set[str] = set()
        stack = [name]
        while stack:
            current = stack.pop()
            node = self.producer.get(current)
            if current in seen or node is None:
                continue
            seen.add(current)
            unknown = [i for i in node.input if i and self.shape(i) is None]
            if not unknown:
                where = f"'{node.name or node.output[0]}'"
                if node.domain not in ("", "ai.onnx"):
                    return (
                        f"shape inference stops at {where}, an op of the custom domain "
                        f"'{node.domain}' ({node.op_type})"
                    )
                return f"shape inference stops at {where} ({node.op_type})"
            stack.extend(unknown)
        return f"the shape of '{name}' is unknown"

    def single_consumer(self, name: str) -> onnx.NodeProto | None:
        """The only node reading ``name``, if it is not also a graph output."""
        users = self.consumers.get(name, [])
        if len(users) != 1 or name in self.outputs:
            return None
        return users[0]

    def const(self, name: str) -> np.ndarray | None:
        """The value of a tensor that does not depend on the graph inputs, else None."""
        if not name:
            return None
        if name not in self._values:
            self._values[name] = None
            self._values[name] = self._evaluate(name)
        return self._values[name]

    def _evaluate(self, name: str) -> np.ndarray | None:
        if name in self.initializers:
            return numpy_helper.to_array(self.initializers[name])
        node = self.producer.get(name)
        if node is None:
            return None
        if node.op_type == "Constant":
            return _constant_value(node)
        if node.op_type == "Shape":
            shape = self.shape(node.input[0])
            if shape is None or any(d is None for d in shape):
                return None
            attrs = {a.name: a.i for a in node.attribute}
            dims = np.array(shape, dtype=np.int64)
            return dims[attrs.get("start", 0) : attrs.get("end", len(dims))]
        if node.op_type not in SHAPE_ARITHMETIC or len(node.output) != 1:
            return None
        values = [self.const(i) for i in node.input if i]
        if any(v is None for v in values):
            return None
        return _run_node(node, [i for i in node.input if i], values, self.opset)

    def attr(self, node: onnx.NodeProto, name: str, default: object = None) -> object:
        """An attribute's value, or ``default``."""
        for a in node.attribute:
            if a.name == name:
                return helper.get_attribute_value(a)
        return default


def _inferred_shapes(model: onnx.ModelProto) -> tuple[dict[str, tuple[Dim, ...]], str | None]:
    """Shapes of every tensor ONNX shape inference can tell, and why inference failed (if it
    did; the file's own value_info is then all there is)."""
    inferred, error = model, None
    for data_prop in (True, False):
        try:
            inferred = onnx.shape_inference.infer_shapes(
                model, strict_mode=False, data_prop=data_prop
            )
        except (InferenceError, ValidationError, RuntimeError) as err:
            error = (str(err).strip().splitlines() or [type(err).__name__])[0]
            continue
        break
    else:
        inferred = model
    shapes: dict[str, tuple[Dim, ...]] = {}
    graph = inferred.graph
    for info in [*graph.input, *graph.output, *graph.value_info]:
        tensor = info.type.tensor_type
        if tensor.HasField("shape"):
            shapes[info.name] = tuple(
                d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim
            )
    for init in graph.initializer:
        shapes[init.name] = tuple(init.dims)
    return shapes, error if inferred is model else None


def _constant_value(node: onnx.NodeProto) -> np.ndarray | None:
    """The value a ``Constant`` node holds."""
    for a in node.attribute:
        if a.name == "value":
            return numpy_helper.to_array(a.t)
        if a.name in ("value_float", "value_int", "value_floats", "value_ints"):
            return np.array(helper.get_attribute_value(a))
    return None


def _run_node(
    node: onnx.NodeProto, names: list[str], values: list[np.ndarray], opset: int
) -> np.ndarray | None:
    """Evaluate one node on constant inputs with the ONNX reference evaluator."""
    from onnx.reference import ReferenceEvaluator

    try:
        evaluator = ReferenceEvaluator(node, opsets={"": opset})
        (out,) = evaluator.run(None, dict(zip(names, values, strict=True)))
    except Exception:
        return None
    return np.asarray(out)


def topo_sort(graph: onnx.GraphProto) -> None:
    """Order the graph's nodes so every input is produced before it is read."""
    nodes = list(graph.node)
    produced_by = {out: i for i, n in enumerate(nodes) for out in n.output}
    order: list[int] = []
    state = [0] * len(nodes)
    for root in range(len(nodes)):
        stack = [(root, False)]
        while stack:
            i, done = stack.pop()
            if done:
                state[i] = 2
                order.append(i)
                continue
            if state[i]:
                continue
            state[i] = 1
            stack.append((i, True))
            deps = [produced_by[n] for n in nodes[i].input if n in produced_by]
            stack += [(d, False) for d in reversed(deps) if not state[d]]
    del graph.node[:]
    graph.node.extend(nodes[i] for i in order)


def prune(graph: onnx.GraphProto) -> tuple[int, int]:
    """Remove nodes and initializers no graph output needs; return how many of each."""
    live = {o.name for o in graph.output}
    keep: list[onnx.NodeProto] = []
    for node in reversed(graph.node):
        if any(out in live for out in node.output):
            keep.append(node)
            live.update(node.input)
            live.update(_subgraph_names(node))
    removed_nodes = len(graph.node) - len(keep)
    del graph.node[:]
    graph.node.extend(reversed(keep))
    inputs = {i.name for i in graph.input}
    used = [i for i in graph.initializer if i.name in live or i.name in inputs]
    removed_inits = len(graph.initializer) - len(used)
    del graph.initializer[:]
    graph.initializer.extend(used)
    produced = {o for n in graph.node for o in n.output} | inputs | {i.name for i in used}
    stale = [v for v in graph.value_info if v.name not in produced]
    for info in stale:
        graph.value_info.remove(info)
    return removed_nodes, removed_inits


def _subgraph_names(node: onnx.NodeProto) -> set[str]:
    """Names a node's subgraphs (If/Loop/Scan bodies) read from the outer scope."""
    names: set[str] = set()
    for a in node.attribute:
        graphs = [a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs)
        for g in graphs:
            for inner in g.node:
                names.update(inner.input)
                names.update(_subgraph_names(inner))
    return names
