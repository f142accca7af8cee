"""Pass: make the input's H and W dynamic, where nothing left in the graph is baked for them.

After the CA rewrite with ``static=False`` the blocks hold no size. The rest of the
graph may: a pool whose kernel spans the whole map (an adaptive pool baked by the
exporter) or a ``Resize`` to constant sizes gives wrong values elsewhere without
failing, so either keeps the file static and says why; so does a pool whose input
shape inference could not tell (the reason names where inference stopped). Otherwise
H and W of every 4-D input get dim_params (one shared name when a block is valid for
square inputs only), stale value_info is cleared and output shapes are inferred again.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import onnx
import onnx_ir as ir
from onnx.checker import ValidationError
from onnx.shape_inference import InferenceError

from ca_export.onnx_graph.facts import GraphFacts, attr

POOLS = ("AveragePool", "MaxPool", "LpPool")


@dataclass
class DynamicResult:
    """Whether H/W were made dynamic, the dim names given, or why not."""

    model: onnx.ModelProto
    applied: bool
    reason: str = ""
    dims: dict[str, list[str]] = field(default_factory=dict)

    @property
    def modified(self) -> bool:
        """Whether the pass changed the model."""
        return self.applied


def baked_sizes(model: onnx.ModelProto) -> str | None:
    """Why the graph outside the CA blocks only holds at its traced size (None if it does not)."""
    graph = ir.from_proto(model)
    facts = GraphFacts(graph, model)
    for node in graph.graph:
        if node.op_type in POOLS:
            shape = facts.shape(node.inputs[0])
            if shape is None:
                gap = facts.shape_gap(node.inputs[0])  # type: ignore[arg-type]
                return f"cannot tell whether {node.op_type} '{node.name}' is baked for HxW: {gap}"
            kernel = list(attr(node, "kernel_shape", []))  # type: ignore[call-overload]
            if shape is not None and len(shape) == 4 and len(kernel) == 2:
                spans = [k == s and k > 1 for k, s in zip(kernel, shape[2:], strict=True)]
                if any(spans):
                    return f"{node.op_type} '{node.name}' has a kernel {kernel} baked for HxW"
        sizes = node.inputs[3] if node.op_type == "Resize" and len(node.inputs) > 3 else None
        if sizes is not None and facts.const(sizes) is not None:
            return f"Resize '{node.name}' resizes to constant sizes"
    return None


def make_dynamic(model: onnx.ModelProto, square: bool) -> DynamicResult:
    """A copy of ``model`` with dynamic H/W on its 4-D inputs, or the reason it stays static."""
    reason = baked_sizes(model)
    if reason is not None:
        return DynamicResult(model, False, reason)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    names = ["size", "size"] if square else ["height", "width"]
    dims: dict[str, list[str]] = {}
    initializers = {i.name for i in graph.initializer}
    for info in graph.input:
        shape = info.type.tensor_type.shape
        if info.name in initializers or len(shape.dim) != 4:
            continue
        for dim, name in zip(shape.dim[2:], names, strict=True):
            dim.dim_param = name
        dims[info.name] = names
    if not dims:
        return DynamicResult(model, False, "no 4-D graph input to make dynamic")
    del graph.value_info[:]
    for info in graph.output:
        info.type.tensor_type.ClearField("shape")
    try:
        inferred = onnx.shape_inference.infer_shapes(out, strict_mode=False)
    except (InferenceError, ValidationError, RuntimeError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        return DynamicResult(out, True, f"output shapes left unset: {first}", dims)
    for info, new in zip(graph.output, inferred.graph.output, strict=True):
        if new.type.tensor_type.HasField("shape"):
            info.type.tensor_type.shape.CopyFrom(new.type.tensor_type.shape)
    return DynamicResult(out, True, dims=dims)
