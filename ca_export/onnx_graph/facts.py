"""Shapes and constant values of an onnx_ir graph, which onnx_ir does not infer itself.

Shapes come from ONNX shape inference on the model as read (with data propagation, then
without it if that fails, then from the file's own ``value_info``); they are taken once,
by tensor name, so values a rewrite adds have none. A failure is kept (``shape_error``),
and ``shape_gap`` says where inference stopped for a tensor whose shape is unknown (a
custom-domain op, say): callers report it as the reason, never as "no match". A value is
constant when it is an initializer, a ``Constant`` output, a ``Shape`` of a tensor whose
shape is static, or the output of a small shape-arithmetic op whose inputs are all
constant (evaluated with ``onnx.reference``); this is how Slice bounds computed from
``Shape`` become numbers.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
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


def default_opset(model: ir.Model) -> int:
    """The model's opset of the default ONNX domain (0 if it imports none)."""
    return model.opset_imports.get("", model.opset_imports.get("ai.onnx", 0))


def attr(node: ir.Node, name: str, default: object = None) -> object:
    """A node attribute's value (strings as ``str``, lists as sequences), or ``default``."""
    found = node.attributes.get(name)
    return default if found is None or found.is_ref() else found.value


class GraphFacts:
    """Inferred shapes and constant values of a model's main graph."""

    def __init__(self, model: ir.Model, proto: onnx.ModelProto) -> None:
        """``proto`` is ``model`` as a protobuf, which ONNX shape inference reads."""
        self.model = model
        self.opset = default_opset(model)
        self.shapes, self.shape_error = _inferred_shapes(proto)
        self._values: dict[ir.Value, np.ndarray | None] = {}

    def shape(self, value: ir.Value | None) -> tuple[Dim, ...] | None:
        """The inferred shape of a value (None where unknown)."""
        return None if value is None or value.name is None else self.shapes.get(value.name)

    def shape_gap(self, value: ir.Value) -> str:
        """Why the shape of ``value`` is unknown: the failure of shape inference itself, or
        the first node on its way back whose inputs have shapes and whose output has none."""
        if self.shape_error:
            return f"shape inference failed: {self.shape_error}"
        seen: set[ir.Value] = set()
        stack = [value]
        while stack:
            current = stack.pop()
            node = current.producer()
            if current in seen or node is None:
                continue
            seen.add(current)
            unknown = [i for i in node.inputs if i is not None and self.shape(i) is None]
            if not unknown:
                where = f"'{node.name or node.outputs[0].name}'"
                if node.domain not in ("", "ai.onnx"):
                    return (
                        f"shape inference stops at {where}, an op of the custom domain "
                        f"'{node.domain}' ({node.op_type})"
                    )
                return f"shape inference stops at {where} ({node.op_type})"
            stack.extend(unknown)
        return f"the shape of '{value.name}' is unknown"

    def const(self, value: ir.Value | None) -> np.ndarray | None:
        """The value of a tensor that does not depend on the graph inputs, else None."""
        if value is None:
            return None
        if value not in self._values:
            self._values[value] = None
            self._values[value] = self._evaluate(value)
        return self._values[value]

    def _evaluate(self, value: ir.Value) -> np.ndarray | None:
        if value.is_initializer() and value.const_value is not None:
            return value.const_value.numpy()
        node = value.producer()
        if node is None:
            return None
        if node.op_type == "Constant":
            return _constant_value(node)
        if node.op_type == "Shape":
            shape = self.shape(node.inputs[0])
            if shape is None or any(d is None for d in shape):
                return None
            dims = np.array(shape, dtype=np.int64)
            start, end = attr(node, "start", 0), attr(node, "end", len(dims))
            return dims[start:end]
        if node.op_type not in SHAPE_ARITHMETIC or len(node.outputs) != 1:
            return None
        present = [i for i in node.inputs if i is not None]
        values = [self.const(i) for i in present]
        if any(v is None for v in values):
            return None
        return _run_node(node, present, values, self.opset)  # type: ignore[arg-type]


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


def _constant_value(node: ir.Node) -> np.ndarray | None:
    """The value a ``Constant`` node holds."""
    for name, found in node.attributes.items():
        if name == "value" and isinstance(found.value, ir.TensorProtocol):
            return found.value.numpy()
        if name in ("value_float", "value_int", "value_floats", "value_ints"):
            return np.array(found.value)
    return None


def _run_node(
    node: ir.Node, inputs: list[ir.Value], values: list[np.ndarray], opset: int
) -> np.ndarray | None:
    """Evaluate one node on constant inputs with the ONNX reference evaluator."""
    from onnx.reference import ReferenceEvaluator

    try:
        evaluator = ReferenceEvaluator(ir.serde.serialize_node(node), opsets={"": opset})
        feeds = {str(v.name): x for v, x in zip(inputs, values, strict=True)}
        (out,) = evaluator.run(None, feeds)
    except Exception:
        return None
    return np.asarray(out)
