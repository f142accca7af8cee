"""Reading and editing the ATen graphs that `torch.export` produces.

Shapes come from each node's ``meta["val"]`` (a FakeTensor); new nodes get theirs by
running their op on the fake values of their arguments, so that the edited
`ExportedProgram` stays exportable (ONNX, CoreML) with its dynamic dimensions.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch._guards import detect_fake_mode
from torch.fx import Graph, Node

aten = torch.ops.aten

LAYOUT_OPS = (aten.permute.default, aten.transpose.int)


def val(node: Any) -> Any:
    """The traced value of a node (FakeTensor, SymInt) or the literal itself."""
    return node.meta.get("val") if isinstance(node, Node) else node


def shape(node: Node) -> tuple[Any, ...]:
    """The traced shape of a tensor node (entries are ints or SymInts)."""
    value = val(node)
    if not isinstance(value, torch.Tensor):
        return ()
    return tuple(value.shape)


def same_size(a: Any, b: Any) -> bool:
    """Whether two sizes (ints, SymInts or nodes holding them) are the same expression."""
    return str(val(a)) == str(val(b))


def norm_dim(dim: int, rank: int) -> int:
    """A possibly negative dimension index as a non-negative one."""
    return dim + rank if dim < 0 else dim


def layout_perm(node: Node) -> tuple[int, ...]:
    """The permutation a permute/transpose node applies, as a full permute list."""
    rank = len(shape(node))
    if node.target == aten.permute.default:
        return tuple(norm_dim(d, rank) for d in node.args[1])
    a, b = (norm_dim(d, rank) for d in node.args[1:3])
    perm = list(range(rank))
    perm[a], perm[b] = perm[b], perm[a]
    return tuple(perm)


def is_getitem(node: Node, index: int | None = None) -> bool:
    """Whether the node is ``operator.getitem`` (with that index, if given)."""
    return (
        node.op == "call_function"
        and node.target is operator.getitem
        and (index is None or node.args[1] == index)
    )


def fake_mode_of(graph: Graph, values: Any = ()) -> Any:
    """The FakeTensorMode the graph was traced with: that of ``values`` (fake arguments of
    a new node) where they hold a fake tensor, else found by scanning the graph."""
    return detect_fake_mode(values) or detect_fake_mode(
        [n.meta["val"] for n in graph.nodes if "val" in n.meta]
    )


def add_node(
    graph: Graph,
    target: Callable[..., Any],
    args: tuple[Any, ...],
    like: Node,
    kwargs: dict[str, Any] | None = None,
) -> Node:
    """Insert ``target(*args)`` before ``like``, with a traced value and ``like``'s scope."""
    with graph.inserting_before(like):
        node = graph.call_function(target, args, kwargs or {})
    copy_meta(node, like)
    fake_args, fake_kwargs = torch.fx.node.map_arg((args, kwargs or {}), val)
    with fake_mode_of(graph, (fake_args, fake_kwargs)):
        node.meta["val"] = target(*fake_args, **fake_kwargs)
    return node


def copy_node(graph: Graph, node: Node, env: dict[Node, Node], before: Node) -> Node:
    """Clone ``node`` before ``before``, mapping its inputs through ``env``."""
    with graph.inserting_before(before):
        clone = graph.node_copy(node, lambda a: env.get(a, a))
    fake_args, fake_kwargs = torch.fx.node.map_arg((clone.args, clone.kwargs), val)
    with fake_mode_of(graph, (fake_args, fake_kwargs)):
        # A call_function node's target is callable.
        clone.meta["val"] = clone.target(*fake_args, **fake_kwargs)  # type: ignore[operator]
    return clone


def copy_meta(node: Node, like: Node) -> None:
    """Give ``node`` the module scope and source trace of ``like``."""
    for key in ("nn_module_stack", "stack_trace", "source_fn_stack"):
        if key in like.meta:
            node.meta[key] = like.meta[key]


def module_path(node: Node) -> str:
    """The qualified name of the innermost module whose forward created the node."""
    stack = node.meta.get("nn_module_stack") or {}
    paths = [path for path, _ in stack.values() if path]
    return paths[-1] if paths else ""


def owning_block(node: Node, modules: Sequence[str]) -> int | None:
    """The index of the last of ``modules`` on the node's module stack, or None.

    Nodes created by a rewrite carry the scope of the node they replace (``copy_meta``),
    so they stay attributed to their CA block.
    """
    paths = {path for path, _ in (node.meta.get("nn_module_stack") or {}).values()}
    found = [i for i, module in enumerate(modules) if module in paths]
    return found[-1] if found else None
