"""The ONNX-level CA pass: find blocks, rewrite each exactly, drop what is dead.

Per block, in order: ``pool_to_reduce`` (a strip pool in the form the target sizes
need), ``distribute_stem`` (no Concat/Split/Slice/Transpose left), ``drop_expand`` (no
shape arithmetic on the gates). Then nodes are put back in topological order and
dead nodes and initializers are removed. Graph inputs, outputs, their names, the
opset and metadata are untouched. The pass is idempotent: a rewritten graph has no
concat left for the matcher.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import onnx

from ca_export.onnx_graph.distribute_stem import distribute_stem
from ca_export.onnx_graph.drop_expand import drop_expand
from ca_export.onnx_graph.edit import Editor
from ca_export.onnx_graph.index import GraphIndex, prune, topo_sort
from ca_export.onnx_graph.pattern import CA_ONLY_OPS, OnnxBlock, OnnxRejection, find
from ca_export.onnx_graph.pool_to_reduce import pool_to_reduce


@dataclass
class RewriteResult:
    """A pass result: the model after the pass, the blocks found, the candidates skipped."""

    model: onnx.ModelProto
    blocks: list[OnnxBlock]
    rejections: list[OnnxRejection]
    shape_error: str | None = None
    removed_nodes: int = 0
    removed_initializers: int = 0
    expands_dropped: int = 0
    left: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def modified(self) -> bool:
        """Whether the pass changed the model."""
        return bool(self.blocks)


def rewrite_model(model: onnx.ModelProto, static: bool) -> RewriteResult:
    """Rewrite every CA block of a copy of ``model``; the input is left untouched."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    index = GraphIndex(out)
    blocks, rejections = find(index)
    result = RewriteResult(out, blocks, rejections, index.shape_error)
    if not blocks:
        return result
    edit = Editor(index)
    for block in blocks:
        pooled = {b.axis: pool_to_reduce(edit, block, b, static) for b in block.branches}
        distribute_stem(edit, block, pooled)
        result.expands_dropped += drop_expand(index, block)
    topo_sort(out.graph)
    result.removed_nodes, result.removed_initializers = prune(out.graph)
    result.left = {b.name: ca_only_left(out, b) for b in blocks}
    return result


def ca_only_left(model: onnx.ModelProto, block: OnnxBlock) -> dict[str, int]:
    """Transpose/Concat/Split/Slice/Shape/Gather nodes of a block still in ``model``.

    They are the block's own nodes that survived, and any the rewrite added.
    """
    owned = {o for n in block.owned for o in n.output}
    prefix = f"{block.name}/ca_"
    counts: dict[str, int] = {}
    for node in model.graph.node:
        if node.op_type in CA_ONLY_OPS and (
            node.name.startswith(prefix) or any(o in owned for o in node.output)
        ):
            counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts
