"""Which nodes of an ONNX graph belong to which CA block: one rule for every caller.

Each caller names the nodes it knows belong to a block (the *seeds*): the exporter's module
scopes (``export.onnx``), the ops the matcher read as the block (``OnnxView.owned``), or
those and the nodes a rewrite added under the block's name (``pipeline.optimize``). A node
that is not seeded then belongs to a block when it may join one, every node reading its
outputs belongs to that block and none of its outputs is a graph output. Which nodes may
join is the evidence the graph carries: in an exporter's graph, the nodes without a module
scope (its optimizer's Split, shape arithmetic); in a file, the shape arithmetic
(``shape_arithmetic``: what computes sizes and bounds, never the tensor data). The rule is
applied until nothing changes, so a chain ``Shape -> Gather -> Unsqueeze`` feeding a
block's ``Slice`` joins it whole.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Collection, Hashable, Mapping

import onnx_ir as ir


def shape_arithmetic(graph: ir.Graph) -> Callable[[ir.Node], bool]:
    """Whether a node computes only from sizes and constants: a ``Shape``, a ``Constant``,
    or a node whose every input is an initializer or made by such a node."""
    known: dict[ir.Node, bool] = {}
    for node in graph:
        known[node] = node.op_type in ("Shape", "Constant") or all(
            i is None
            or (i.is_initializer() and not i.is_graph_input())
            or known.get(i.producer(), False)  # type: ignore[arg-type]
            for i in node.inputs
        )
    return lambda node: known.get(node, False)


def grow(
    graph: ir.Graph, seeds: Mapping[ir.Node, Hashable], may_join: Callable[[ir.Node], bool]
) -> dict[ir.Node, Hashable]:
    """``seeds`` (node -> block) and every node that may join whose readers all belong to
    one block."""
    owner = dict(seeds)
    changed = True
    while changed:
        changed = False
        for node in reversed(list(graph)):
            if node in owner or not may_join(node):
                continue
            if any(out.is_graph_output() for out in node.outputs):
                continue
            readers = {owner.get(use.node) for out in node.outputs for use in out.uses()}
            if len(readers) == 1 and None not in readers:
                owner[node] = readers.pop()
                changed = True
    return owner


def counts(
    owner: Mapping[ir.Node, Hashable], block: Hashable, ops: Collection[str]
) -> dict[str, int]:
    """How many nodes of each op type in ``ops`` belong to ``block``."""
    return dict(Counter(n.op_type for n, b in owner.items() if b == block and n.op_type in ops))
