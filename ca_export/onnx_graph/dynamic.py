"""Pass: make the input's H and W dynamic, where nothing left in the graph is baked for them.

After the CA rewrite with ``static=False`` the blocks hold no size. The rest of the
graph may: a pool whose kernel spans the whole map (an adaptive pool baked by the
exporter) or a ``Resize`` to constant sizes gives wrong values elsewhere without
failing, so either keeps the file static and says why; so does a pool whose input
shape inference could not tell (the reason names where inference stopped). Otherwise
H and W of every 4-D input get dim_params (one shared name when a block is valid for
square inputs only), stale shapes are cleared and output shapes are inferred again.
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


def baked_sizes(facts: GraphFacts) -> str | None:
    """Why the graph outside the CA blocks only holds at its traced size (None if it does not)."""
    for node in facts.model.graph:
        if node.op_type in POOLS:
            shape = facts.shape(node.inputs[0])
            if shape is None:
                gap = facts.shape_gap(node.inputs[0])  # type: ignore[arg-type]
                return f"cannot tell whether {node.op_type} '{node.name}' is baked for HxW: {gap}"
            kernel = list(attr(node, "kernel_shape", []))  # type: ignore[call-overload]
            if len(shape) == 4 and len(kernel) == 2:
                spans = [k == s and k > 1 for k, s in zip(kernel, shape[2:], strict=True)]
                if any(spans):
                    return f"{node.op_type} '{node.name}' has a kernel {kernel} baked for HxW"
        sizes = node.inputs[3] if node.op_type == "Resize" and len(node.inputs) > 3 else None
        if sizes is not None and facts.const(sizes) is not None:
            return f"Resize '{node.name}' resizes to constant sizes"
    return None


def make_dynamic(model: onnx.ModelProto, square: bool) -> DynamicResult:
    """A copy of ``model`` with dynamic H/W on its 4-D inputs, or the reason it stays static."""
    work = ir.from_proto(model)
    reason = baked_sizes(GraphFacts(work, model))
    if reason is not None:
        return DynamicResult(model, False, reason)
    names = ["size", "size"] if square else ["height", "width"]
    dims: dict[str, list[str]] = {}
    for value in work.graph.inputs:
        shape = value.shape
        if value.is_initializer() or value.name is None or shape is None or len(shape) != 4:
            continue
        value.shape = ir.Shape([shape[0], shape[1], *names])
        dims[value.name] = names
    if not dims:
        return DynamicResult(model, False, "no 4-D graph input to make dynamic")
    for value in [*work.graph.initializers.values(), *(o for n in work.graph for o in n.outputs)]:
        if not value.is_graph_input():
            value.shape = None
        if not (value.is_graph_input() or value.is_graph_output()):
            value.type, value.doc_string = None, None
            value.metadata_props.clear()
    out = ir.to_proto(work)
    del out.opset_import[:]
    out.opset_import.extend(model.opset_import)
    try:
        inferred = onnx.shape_inference.infer_shapes(out, strict_mode=False)
    except (InferenceError, ValidationError, RuntimeError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        return DynamicResult(out, True, f"output shapes left unset: {first}", dims)
    for info, new in zip(out.graph.output, inferred.graph.output, strict=True):
        if new.type.tensor_type.HasField("shape"):
            info.type.tensor_type.shape.CopyFrom(new.type.tensor_type.shape)
    return DynamicResult(out, True, dims=dims)
