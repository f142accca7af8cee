"""Pass: bring an ONNX file as an exporter wrote it into the form the matcher reads.

The TorchScript-based exporter without a simplifier leaves constants as ``Constant``
nodes, constant sub-graphs (shape arithmetic, casts) unevaluated, and writes no
``value_info``. This pass uses maintained code for all of it, no folding of our own:

1. onnxscript's constant folder (``onnxscript.optimizer.fold_constants`` with per-node
   ONNX shape inference) evaluates what does not depend on the input and records the
   shapes it infers node by node, so one node whose inference fails does not cost the
   shapes of the rest of the graph.
2. onnx_ir's ``RemoveUnusedNodesPass`` drops what folding left dead.
3. onnx_ir's ``LiftConstantsToInitializersPass`` turns the ``Constant`` nodes left into
   initializers.

With ``keep_sizes`` (``--dynamic``), H and W of the 4-D inputs are symbolic while
folding, so nothing computed from the input size (a ``Shape`` of a feature map, an
anchor grid) is baked into the file; the static sizes are put back afterwards.
Graph inputs, outputs, their names, the opset imports (as written) and metadata are
untouched.

Before (plain ``torch.onnx.export(..., dynamo=False)``)::

    Constant ─┐             x ─ Shape ─ Gather ─ Unsqueeze ─┐
    Constant ─ Concat ─┐                          Constant ─ Concat ─ Slice(y) ...
                       Reshape(z)

After::

    init ─ Reshape(z)       init ─ Slice(y) ...   (+ value_info for every inferred tensor)
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx
import onnx_ir as ir
import onnx_ir.passes.common as ir_passes
from onnxscript.optimizer import fold_constants


@dataclass
class NormalizeResult:
    """A pass result: the model after the pass, what it changed, or why it did nothing."""

    model: onnx.ModelProto
    constants_before: int
    nodes_before: int
    constants_after: int
    nodes_after: int
    reason: str = ""

    @property
    def modified(self) -> bool:
        """Whether the pass changed the model."""
        return (self.constants_before, self.nodes_before) != (
            self.constants_after,
            self.nodes_after,
        )


def _count(model: onnx.ModelProto, op: str | None = None) -> int:
    return sum(op is None or n.op_type == op for n in model.graph.node)


def _symbolic_sizes(model: ir.Model) -> dict[str, ir.Shape]:
    """Make H and W of every 4-D graph input symbolic; return the shapes to restore."""
    saved: dict[str, ir.Shape] = {}
    for value in model.graph.inputs:
        shape = value.shape
        if value.name is None or shape is None or len(shape) != 4 or value.is_initializer():
            continue
        saved[value.name] = shape
        value.shape = ir.Shape([shape[0], shape[1], ir.SymbolicDim(None), ir.SymbolicDim(None)])
    return saved


def normalize(model: onnx.ModelProto, keep_sizes: bool = False) -> NormalizeResult:
    """A normalised copy of ``model``; the input is left untouched.

    Args:
        model: The model as read from the file.
        keep_sizes: Do not bake values computed from the input's H and W.

    Returns:
        The result; when folding fails the model is a plain copy and ``reason`` says why.
    """
    before = (_count(model, "Constant"), _count(model))
    work = ir.serde.deserialize_model(model)
    saved = _symbolic_sizes(work) if keep_sizes else {}
    try:
        fold_constants(work, onnx_shape_inference=True)
    except RuntimeError as err:
        copy = onnx.ModelProto()
        copy.CopyFrom(model)
        cause = err.__cause__ or err
        return NormalizeResult(copy, *before, *before, f"constant folding failed: {err} ({cause})")
    ir_passes.RemoveUnusedNodesPass()(work)
    ir_passes.LiftConstantsToInitializersPass(lift_all_constants=True, size_limit=0)(work)
    for value in work.graph.inputs:
        if value.name in saved:
            value.shape = saved[value.name]
    out = ir.serde.serialize_model(work)
    del out.opset_import[:]
    out.opset_import.extend(model.opset_import)
    return NormalizeResult(out, *before, _count(out, "Constant"), _count(out))
