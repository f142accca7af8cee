"""The Coordinate Attention pattern in an ATen graph, matched by structure.

Match rules, in order (the first one broken is the reason a candidate is rejected):

1. A ``cat`` of two 4-D tensors along a spatial axis.
2. Each input is a pooled tensor reached through permute/transpose only. Pools are
   ``adaptive_avg_pool2d`` to (H, 1) or (1, W), or ``mean`` over one spatial axis
   with ``keepdim``. Both pools read the same tensor ``x`` and reduce different axes.
   Permutes keep batch and channels in place and bring both kept axes onto the
   concat axis.
3. From the concat to the split, every op is spatially pointwise (1x1 conv, batch
   norm, activations, arithmetic with scalars), and only the split reads its end.
4. A ``split``/``split_with_sizes`` or two ``slice`` ops along the concat axis give
   back exactly the two concat inputs.
5. Each piece reaches, through permute/transpose only, a 1x1 conv with C output
   channels and a gate: sigmoid, hardsigmoid or ``relu6(x + 3) / 6``, optionally
   expanded.
6. A tree of ``mul`` ops multiplies ``x`` by both gates, in any order.

Before (the official form)::

    x ─┬─ pool_h ──────────────┐
       ├─ pool_w ── permute ── cat ── conv1 ── bn ── act ── split ─┬─ conv_h ── sig ─┐
       │                                                          └─ permute ── conv_w ── sig ─┤
       └──────────────────────────────────────────────────── mul ── mul ── out ─────┘
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch.fx import Graph, Node

from ca_export.fx import (
    LAYOUT_OPS,
    compose,
    is_getitem,
    layout_perm,
    module_path,
    norm_dim,
    same_size,
    shape,
    single_user,
    topo_index,
)
from ca_export.patterns.pointwise import UNARY, is_pointwise_conv, pointwise_kind

aten = torch.ops.aten

IDENTITY = (0, 1, 2, 3)
AXIS_NAME = {2: "h", 3: "w"}
POOL_OPS = (aten.adaptive_avg_pool2d.default, aten._adaptive_avg_pool2d.default)
SPLIT_OPS = (aten.split_with_sizes.default, aten.split.Tensor)
INT_MAX = 2**63 - 1


class NoMatch(Exception):
    """A candidate is not a CA block; the message says which rule it broke."""


@dataclass
class Branch:
    """One direction of a CA block: the pool that keeps one spatial axis and its gate."""

    axis: str
    pool: Node
    pool_kind: str
    cat_input: Node
    in_perm: tuple[int, ...]
    piece: Node
    gate_input: Node
    out_perm: tuple[int, ...]
    gate_conv: Node
    gate: Node
    gate_kind: str
    gate_leaf: Node

    @property
    def perm(self) -> tuple[int, ...]:
        """The permutation from the pooled tensor to the gate conv's input."""
        return compose(self.in_perm, self.out_perm)


@dataclass
class CABlock:
    """A matched CA block and everything the rewrites and the report need."""

    module: str
    source: Node
    cat: Node
    stem: list[Node]
    stem_end: Node
    splits: list[Node]
    branches: tuple[Branch, Branch]
    output: Node
    channels: int
    mip: int
    variant: dict[str, str]
    findings: list[str] = field(default_factory=list)

    def branch(self, axis: str) -> Branch:
        """The branch that keeps the given spatial axis ("h" or "w")."""
        return next(b for b in self.branches if b.axis == axis)

    @property
    def square_only(self) -> bool:
        """Whether a gate lands on the other spatial axis (no transpose back), so the block
        is valid for square inputs only."""
        return any(b.perm != IDENTITY for b in self.branches)

    def ca_only_nodes(self) -> dict[str, int]:
        """The block's transposes, concat and split in the traced graph, by ONNX op name."""
        counts = {"Concat": 1, "Transpose": 0}
        for split in self.splits:
            name = "Split" if split.target in SPLIT_OPS else "Slice"
            counts[name] = counts.get(name, 0) + 1
        for b in self.branches:
            counts["Transpose"] += _layout_steps(b.cat_input, b.pool)
            counts["Transpose"] += _layout_steps(b.gate_input, b.piece)
        return {k: v for k, v in counts.items() if v}


def _layout_steps(end: Node, start: Node) -> int:
    """How many permutes lead back from ``end`` to ``start``."""
    steps = 0
    while end is not start and end.op == "call_function" and end.target in LAYOUT_OPS:
        steps += 1
        end = end.args[0]
    return steps


@dataclass
class Rejection:
    """A concat of pooled tensors that is not a CA block, and why."""

    module: str
    node: str
    reason: str


def pool_of(node: Node) -> tuple[Node, int, str] | None:
    """(source, kept axis, kind) if the node averages one spatial axis away, else None."""
    if node.op != "call_function":
        return None
    if node.target in POOL_OPS:
        src = node.args[0]
        in_shape, out_shape = shape(src), shape(node)
        if len(in_shape) != 4 or len(out_shape) != 4:
            return None
        for kept, gone in ((2, 3), (3, 2)):
            if (
                out_shape[gone] == 1
                and same_size(out_shape[kept], in_shape[kept])
                and not same_size(in_shape[gone], 1)
            ):
                return src, kept, "adaptive_avg_pool2d"
        return None
    if node.target == aten.mean.dim:
        src = node.args[0]
        dims = node.args[1] if len(node.args) > 1 else None
        keep = node.args[2] if len(node.args) > 2 else node.kwargs.get("keepdim", False)
        if not keep or dims is None or len(dims) != 1 or len(shape(src)) != 4:
            return None
        gone = norm_dim(dims[0], 4)
        if gone in (2, 3):
            return src, 5 - gone, "mean"
    return None


def _back_to_pool(node: Node) -> tuple[Node, tuple[int, ...]]:
    """Walk from a concat input back through permutes to its producer."""
    perm = IDENTITY
    chain: list[Node] = []
    while node.op == "call_function" and node.target in LAYOUT_OPS:
        chain.append(node)
        node = node.args[0]
    for step in reversed(chain):
        perm = compose(perm, layout_perm(step))
    return node, perm


def _forward_through_layout(node: Node) -> tuple[Node, tuple[int, ...]]:
    """Follow single users that are permutes; return the last node and the permutation."""
    perm = IDENTITY
    while (user := single_user(node)) is not None and user.target in LAYOUT_OPS:
        perm = compose(perm, layout_perm(user))
        node = user
    return node, perm


def _stem(graph: Graph, cat: Node, order: dict[Node, int]) -> tuple[list[Node], Node, list[Node]]:
    """The pointwise nodes between the concat and the split, the stem's end, the splits."""
    inside = {cat}
    stem: list[Node] = []
    splits: list[Node] = []
    for node in list(graph.nodes)[order[cat] + 1 :]:
        feeds = [a for a in node.all_input_nodes if a in inside]
        if not feeds:
            continue
        if _is_split(node, cat):
            splits.append(node)
            continue
        kind = pointwise_kind(node, lambda a: a in inside)
        if kind is None:
            op = getattr(node.target, "__name__", str(node.target))
            raise NoMatch(f"'{op}' reads the concatenated tensor but is not spatially pointwise")
        inside.add(node)
        stem.append(node)
    if not splits:
        raise NoMatch("the concatenated tensor is never split back")
    ends = {s.args[0] for s in splits}
    if len(ends) != 1:
        raise NoMatch("the split reads more than one tensor of the shared branch")
    end = ends.pop()
    leaks = [n for n in [cat, *stem] if n is not end and any(u not in inside for u in n.users)]
    if leaks or any(u not in splits for u in end.users):
        raise NoMatch("a tensor of the shared branch is used outside the block")
    return stem, end, splits


def _is_split(node: Node, cat: Node) -> bool:
    """A split or slice along the concat axis."""
    dim = norm_dim(cat.args[1] if len(cat.args) > 1 else 0, 4)
    if node.target in SPLIT_OPS:
        return norm_dim(node.args[2] if len(node.args) > 2 else 0, 4) == dim
    if node.target == aten.slice.Tensor:
        return norm_dim(node.args[1] if len(node.args) > 1 else 0, 4) == dim
    return False


def _pieces(splits: list[Node], cat: Node) -> list[Node]:
    """The two pieces of the split, in concat input order.

    Splits count as one when they cut the same sizes (export may duplicate a split
    whose input was written in place, one per piece used).
    """
    inputs = cat.args[0]
    dim = norm_dim(cat.args[1], 4)
    sizes = [shape(i)[dim] for i in inputs]
    ordered: list[list[Node]] = [[], []]
    for split in splits:
        if split.target in SPLIT_OPS:
            for item in split.users:
                if not is_getitem(item) or item.args[1] not in (0, 1):
                    raise NoMatch("the split does not give back exactly two pieces")
                ordered[item.args[1]].append(item)
            cut = [shape(u)[dim] for u in split.meta["val"]] if split.meta.get("val") else []
            if len(cut) != 2 or not all(map(same_size, cut, sizes)):
                raise NoMatch("the split sizes do not undo the concat")
        else:
            ordered[_slice_index(split, dim, sizes)].append(split)
    if any(len(p) != 1 for p in ordered):
        raise NoMatch("the split does not give back each concat input exactly once")
    return [ordered[0][0], ordered[1][0]]


def _slice_index(piece: Node, dim: int, sizes: list) -> int:
    """Which concat input a slice along the concat axis gives back."""
    start = piece.args[2] if len(piece.args) > 2 else 0
    end = piece.args[3] if len(piece.args) > 3 else INT_MAX
    step = piece.args[4] if len(piece.args) > 4 else 1
    if step != 1:
        raise NoMatch("a slice of the shared branch has a step")
    if start in (0, None) and same_size(shape(piece)[dim], sizes[0]):
        return 0
    if same_size(start, sizes[0]) and (end == INT_MAX or same_size(shape(piece)[dim], sizes[1])):
        return 1
    raise NoMatch("the slices do not undo the concat")


def _gate(piece: Node, channels: int) -> tuple[Node, tuple[int, ...], Node, Node, str, Node]:
    """Follow a piece to its gate: (gate input, perm, conv, gate, kind, leaf)."""
    gate_input, perm = _forward_through_layout(piece)
    conv = single_user(gate_input)
    if conv is None or not is_pointwise_conv(conv) or conv.args[0] is not gate_input:
        raise NoMatch("a split piece does not feed a single 1x1 conv")
    if shape(conv)[1] != channels:
        raise NoMatch("a gate conv does not restore the input's channel count")
    act = single_user(conv)
    if act is None:
        raise NoMatch("a gate conv has no single activation")
    gate, kind = _gate_activation(act)
    leaf = gate
    user = single_user(gate)
    if user is not None and user.target in (aten.expand.default, aten.expand_as.default):
        leaf = user
    return gate_input, perm, conv, gate, kind, leaf


def _gate_activation(act: Node) -> tuple[Node, str]:
    """The gate node and its kind: sigmoid, hardsigmoid, or h_sigmoid written out."""
    if act.target == aten.sigmoid.default:
        return act, "sigmoid"
    if act.target in (aten.hardsigmoid.default, aten.hardsigmoid_.default):
        return act, "hardsigmoid"
    if act.target in (aten.add.Tensor, aten.add.Scalar) and act.args[1] == 3:
        clip = single_user(act)
        if clip is not None and UNARY.get(clip.target) in ("relu6", "hardtanh"):
            div = single_user(clip)
            if div is not None and (
                (div.target in (aten.div.Tensor, aten.div.Scalar) and div.args[1] == 6)
                or (div.target in (aten.mul.Tensor, aten.mul.Scalar) and div.args[1] == 1 / 6)
            ):
                return div, "h_sigmoid"
    raise NoMatch("a gate conv is not followed by sigmoid or hardsigmoid")


def _output(source: Node, leaf_h: Node, leaf_w: Node) -> Node:
    """The mul that completes ``x * gate_h * gate_w`` (any order and grouping)."""
    leaves = {source: "x", leaf_h: "h", leaf_w: "w"}

    def covered(node: Node) -> set[str] | None:
        if node in leaves:
            return {leaves[node]}
        if node.target != aten.mul.Tensor:
            return None
        parts = [covered(a) if isinstance(a, Node) else None for a in node.args[:2]]
        if any(p is None for p in parts):
            return None
        return set().union(*parts)  # type: ignore[arg-type]

    node = single_user(leaf_h)
    for _ in range(3):
        if node is None or node.target != aten.mul.Tensor:
            break
        got = covered(node)
        if got is None:
            break
        if got == {"x", "h", "w"}:
            return node
        node = single_user(node)
    raise NoMatch("the gates are not multiplied into the pooled input")


def match(graph: Graph, cat: Node, order: dict[Node, int]) -> CABlock:
    """Match a CA block whose concat is ``cat``; raise NoMatch with the reason otherwise."""
    inputs = cat.args[0]
    if len(inputs) != 2 or any(len(shape(i)) != 4 for i in inputs):
        raise NoMatch("the concat does not join two 4-D tensors")
    dim = norm_dim(cat.args[1] if len(cat.args) > 1 else 0, 4)
    if dim not in (2, 3):
        axis = "batch" if dim == 0 else "channels"
        raise NoMatch(f"pool over one spatial axis found, but the concat axis is {axis}")
    traced = [(_back_to_pool(i), i) for i in inputs]
    pools = [(pool_of(p), p, perm, i) for (p, perm), i in traced]
    if any(info is None for info, *_ in pools):
        raise NoMatch("a concat input is not a pool over one spatial axis")
    (src_a, kept_a, _), (src_b, kept_b, _) = (info for info, *_ in pools)  # type: ignore[misc]
    if src_a is not src_b:
        raise NoMatch("the two pools read different tensors")
    if kept_a == kept_b:
        raise NoMatch(f"both pools keep the same axis ({AXIS_NAME[kept_a].upper()})")
    for info, _, perm, _ in pools:
        if perm[:2] != (0, 1):
            raise NoMatch("a permute moves batch or channels")
        if perm.index(info[1]) != dim:
            raise NoMatch("a pooled axis is not brought onto the concat axis")
    stem, end, splits = _stem(graph, cat, order)
    pieces = _pieces(splits, cat)
    channels = shape(src_a)[1]
    if not isinstance(channels, int):
        raise NoMatch("the channel count is not static")
    branches = []
    for (info, pool, perm, cat_input), piece in zip(pools, pieces, strict=True):
        gate_input, out_perm, conv, gate, kind, leaf = _gate(piece, channels)
        branches.append(
            Branch(
                AXIS_NAME[info[1]],
                pool,
                info[2],
                cat_input,
                perm,
                piece,
                gate_input,
                out_perm,
                conv,
                gate,
                kind,
                leaf,
            )
        )
    by_axis = {b.axis: b for b in branches}
    output = _output(src_a, by_axis["h"].gate_leaf, by_axis["w"].gate_leaf)
    block = CABlock(
        module=module_path(cat) or "<model>",
        source=src_a,
        cat=cat,
        stem=stem,
        stem_end=end,
        splits=splits,
        branches=(by_axis["h"], by_axis["w"]),
        output=output,
        channels=channels,
        mip=int(shape(end)[1]),
        variant=_variant(branches, stem, splits),
    )
    block.findings = lint(block)
    return block


def _variant(branches: list[Branch], stem: list[Node], splits: list[Node]) -> dict[str, str]:
    """A short description of how this block is written."""
    layouts = {n.target for b in branches for n in _layout_nodes(b)}
    kinds: list[str] = []
    for node in stem:
        kind = pointwise_kind(node, lambda _: True)
        if kind and (not kinds or kinds[-1] != kind):
            kinds.append(kind)
    return {
        "pool": branches[0].pool_kind,
        "swap": "permute" if aten.permute.default in layouts else "transpose",
        "split": "slice" if splits[0].target == aten.slice.Tensor else "split",
        "stem": "+".join(kinds) or "none",
        "gate": branches[0].gate_kind,
        "expand": "yes" if any(b.gate_leaf is not b.gate for b in branches) else "no",
    }


def _layout_nodes(branch: Branch) -> list[Node]:
    """The permute/transpose nodes on a branch, before and after the split."""
    nodes = []
    node = branch.cat_input
    while node is not branch.pool:
        nodes.append(node)
        node = node.args[0]
    node = branch.gate_input
    while node is not branch.piece:
        nodes.append(node)
        node = node.args[0]
    return nodes


def lint(block: CABlock) -> list[str]:
    """Findings about a block that is valid but not what the paper describes."""
    findings = []
    for branch in block.branches:
        if branch.perm != IDENTITY:
            kept = 2 if branch.axis == "h" else 3
            lands = AXIS_NAME[branch.perm.index(kept)].upper()
            findings.append(
                f"warning: the {branch.axis.upper()} gate is applied along {lands} "
                "(no transpose back after the split): valid for square inputs only"
            )
    return findings


def _tiny_pool(node: Node) -> bool:
    """A pool over a map with a spatial size of 1, where the kept axis cannot be told."""
    if node.op != "call_function" or node.target not in (*POOL_OPS, aten.mean.dim):
        return False
    dims = shape(node.args[0])
    return len(dims) == 4 and (same_size(dims[2], 1) or same_size(dims[3], 1))


TINY_MAP = (
    "its pools read a map with a spatial size of 1 at this input size, so which axis each "
    "keeps cannot be told; trace at a larger --input-shape"
)


def candidates(graph: Graph) -> list[Node]:
    """Concat nodes with at least one input pooled over a spatial axis (or over a map too
    small to tell which)."""
    found = []
    for node in graph.nodes:
        if node.op == "call_function" and node.target == aten.cat.default:
            sources = [_back_to_pool(i)[0] for i in node.args[0]]
            if any(pool_of(s) is not None or _tiny_pool(s) for s in sources):
                found.append(node)
    return found


def find(graph: Graph) -> tuple[list[CABlock], list[Rejection]]:
    """All CA blocks in a graph, and the pooled concats that are not, with reasons."""
    order = topo_index(graph)
    blocks: list[CABlock] = []
    rejections: list[Rejection] = []
    for cat in candidates(graph):
        try:
            if any(_tiny_pool(_back_to_pool(i)[0]) for i in cat.args[0]):
                raise NoMatch(TINY_MAP)
            blocks.append(match(graph, cat, order))
        except NoMatch as why:
            rejections.append(Rejection(module_path(cat) or "<model>", cat.name, str(why)))
    return blocks, rejections
