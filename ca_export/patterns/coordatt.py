"""The Coordinate Attention block, matched by structure on any ``GraphView``.

Match rules, in order (the first one broken is the reason a candidate is rejected):

0. Shapes are known where the rules read them (an ONNX file whose shape inference
   stopped is rejected with where it stopped), and no pool reads a map with a spatial
   size of 1 (which axis it keeps cannot be told).
1. A concat of two 4-D tensors along a spatial axis.
2. Each input is a strip pool reached through transposes only: an average over one
   spatial axis (adaptive pool to (H, 1) or (1, W), a mean with kept dims, an
   ``AveragePool`` whose kernel spans the axis). Both pools read the same tensor ``x``
   and keep different axes. Transposes keep batch and channels in place and bring both
   kept axes onto the concat axis.
3. From the concat to the split, every op is spatially pointwise (1x1 conv, batch
   norm, activations, arithmetic with constants without spatial extent), and only the
   split reads its end.
4. A split or two slices along the concat axis give back exactly the two concat inputs.
5. Each piece reaches, through transposes only, a 1x1 conv with C output channels and a
   gate: sigmoid, hardsigmoid or ``relu6(x + 3) / 6``, optionally expanded.
6. A tree of multiplies multiplies ``x`` by both gates, in any order.

Before (the official form)::

    x ─┬─ pool_h ──────────────┐
       ├─ pool_w ── permute ── cat ── conv1 ── bn ── act ── split ─┬─ conv_h ── sig ─┐
       │                                                          └─ permute ── conv_w ── sig ─┤
       └──────────────────────────────────────────────────── mul ── mul ── out ─────┘

The rules are written once here; ``patterns.aten`` and ``patterns.onnx`` answer the
questions they ask (``GraphView``) for ATen graphs and ONNX files.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Generic

from ca_export.patterns.hswish import h_sigmoid
from ca_export.patterns.view import Dim, GraphView, NoMatch, OpT, ValueT

IDENTITY = (0, 1, 2, 3)
AXIS_NAME = {2: "h", 3: "w"}
CA_ONLY_OPS = frozenset({"Transpose", "Concat", "Split", "Slice", "Shape", "Gather"})
TINY_MAP = (
    "its pools read a map with a spatial size of 1 at this input size, so which axis each "
    "keeps cannot be told; trace at a larger --input-shape"
)


def compose(first: tuple[int, ...], then: tuple[int, ...]) -> tuple[int, ...]:
    """The permutation of applying ``first`` and then ``then``."""
    return tuple(first[i] for i in then)


@dataclass(frozen=True)
class Branch(Generic[OpT, ValueT]):
    """One direction of a CA block: the pool that keeps one spatial axis and its gate.

    ``pool`` is the op the rewrites read the pooled tensor from; a rewrite that replaces
    it (``pool_to_reduce``) returns a copy of the block that points at the replacement.
    """

    axis: str
    pool: OpT
    pool_kind: str
    in_chain: list[OpT]
    piece: ValueT
    out_chain: list[OpT]
    perm: tuple[int, ...]
    gate_conv: OpT
    gate_ops: list[OpT]
    gate_kind: str
    expand: OpT | None

    @property
    def gate(self) -> OpT:
        """The op whose output is the gate, before any expand."""
        return self.gate_ops[-1]


@dataclass(frozen=True)
class CABlock(Generic[OpT, ValueT]):
    """A matched CA block and everything the rewrites and the report need.

    ``id`` is unique in its graph: the module, then the node name of the block's output
    multiply as matched (two blocks in one module's forward share the module). Frozen: a
    pass never edits the block it is handed; ``with_branch`` makes a changed copy.
    """

    id: str
    module: str
    source: ValueT
    concat: OpT
    axis: int
    stem: list[OpT]
    stem_end: ValueT
    splits: list[OpT]
    branches: tuple[Branch[OpT, ValueT], Branch[OpT, ValueT]]
    output: OpT
    channels: int
    mip: int
    spatial: tuple[Dim, Dim]
    variant: dict[str, str]
    owned: list[OpT] = field(default_factory=list)
    ca_only: dict[str, int] = field(default_factory=dict)
    findings: list[str] = field(default_factory=list)

    def ca_only_nodes(self) -> dict[str, int]:
        """The block's transposes, concat, splits and their bound arithmetic as matched, by
        ONNX op name: what the rewrite is there to remove."""
        return dict(self.ca_only)

    def branch(self, axis: str) -> Branch[OpT, ValueT]:
        """The branch that keeps the given spatial axis ("h" or "w")."""
        return next(b for b in self.branches if b.axis == axis)

    def with_branch(self, branch: Branch[OpT, ValueT], **changes: Any) -> CABlock[OpT, ValueT]:
        """A copy whose branch on ``branch``'s axis is ``branch`` with ``changes``."""
        # Any: the changes are Branch fields of several types, checked by replace at run time.
        new = replace(branch, **changes)
        first, second = self.branches
        branches = (
            new if first.axis == new.axis else first,
            new if second.axis == new.axis else second,
        )
        return replace(self, branches=branches)

    @property
    def name(self) -> str:
        """The block's name in reports (its module, or its concat node)."""
        return self.module

    @property
    def square_only(self) -> bool:
        """Whether a gate lands on the other spatial axis (no transpose back), so the block
        is valid for square inputs only."""
        return any(b.perm != IDENTITY for b in self.branches)


@dataclass
class Rejection:
    """A concat of pooled tensors that is not a CA block, and why."""

    module: str
    node: str
    reason: str


def _back_to_pool(
    view: GraphView[OpT, ValueT], value: ValueT
) -> tuple[OpT | None, list[OpT], tuple[int, ...]]:
    """Walk from a concat input back through transposes: (producer, transposes, permutation)."""
    chain: list[OpT] = []
    steps: list[tuple[int, ...]] = []
    op = view.producer(value)
    while op is not None and (step := view.perm(op)) is not None:
        chain.append(op)
        steps.append(step)
        op = view.producer(view.data(op))
    chain.reverse()
    perm: tuple[int, ...] = IDENTITY
    for step in reversed(steps):
        perm = compose(perm, step)
    return op, chain, perm


def _forward_through_transposes(
    view: GraphView[OpT, ValueT], value: ValueT
) -> tuple[ValueT, list[OpT], tuple[int, ...]]:
    """Follow single readers that are transposes: (last value, transposes, permutation)."""
    chain: list[OpT] = []
    perm: tuple[int, ...] = IDENTITY
    while (user := view.single_user(value)) is not None and (step := view.perm(user)):
        chain.append(user)
        perm = compose(perm, step)
        value = view.output(user)
    return value, chain, perm


def _stem(view: GraphView[OpT, ValueT], concat: OpT) -> tuple[list[OpT], ValueT, list[OpT]]:
    """The pointwise ops between the concat and the split, the stem's end, the splits."""
    inside = {view.output(concat)}
    stem: list[OpT] = []
    splits: list[OpT] = []
    ops = list(view.ops())
    for op in ops[ops.index(concat) + 1 :]:
        read = [v for v in view.operands(op) if v in inside]
        if not read:
            continue
        if len(read) == 1 and view.cuts(op, read[0]):
            splits.append(op)
            continue
        view.pointwise(op, inside)
        inside.update(view.outputs(op))
        stem.append(op)
    if not splits:
        raise NoMatch("the concatenated tensor is never split back")
    ends = {view.data(s) for s in splits}
    if len(ends) != 1:
        raise NoMatch("the split reads more than one tensor of the shared branch")
    end = ends.pop()
    members = set(stem) | set(splits)
    for value in [view.output(concat), *(v for op in stem for v in view.outputs(op))]:
        readers = view.users(value)
        if view.is_output(value) or any(u not in members for u in readers):
            raise NoMatch("a tensor of the shared branch is used outside the block")
        if value == end and any(u not in splits for u in readers):
            raise NoMatch("a tensor of the shared branch is used outside the block")
    return stem, end, splits


def _pieces(
    view: GraphView[OpT, ValueT], splits: list[OpT], axis: int, sizes: list[Dim]
) -> list[ValueT]:
    """The two pieces of the split, in concat input order."""
    ordered: list[list[ValueT]] = [[], []]
    for split in splits:
        for i, value in view.pieces(split, axis, sizes):
            if value not in ordered[i]:
                ordered[i].append(value)
    if any(len(p) != 1 for p in ordered):
        raise NoMatch("the split does not give back each concat input exactly once")
    return [ordered[0][0], ordered[1][0]]


def _gate(view: GraphView[OpT, ValueT], conv: OpT) -> tuple[list[OpT], str]:
    """The ops after a gate conv that make the gate, and its kind."""
    act = view.single_user(view.output(conv))
    if act is None:
        raise NoMatch("a gate conv has no single activation")
    kind = view.activation(act)
    if kind in ("sigmoid", "hardsigmoid"):
        return [act], kind
    clip = view.single_user(view.output(act))
    end = view.single_user(view.output(clip)) if clip is not None else None
    found = h_sigmoid(view, end) if end is not None else None
    if found is not None and found[0] == view.output(conv):
        return found[1], "h_sigmoid"
    raise NoMatch("a gate conv is not followed by Sigmoid or HardSigmoid")


def _branch_gate(
    view: GraphView[OpT, ValueT], piece: ValueT, channels: int
) -> tuple[list[OpT], tuple[int, ...], OpT, list[OpT], str, OpT | None]:
    """Follow a piece to its gate: (transposes, perm, conv, gate ops, kind, expand)."""
    value, chain, perm = _forward_through_transposes(view, piece)
    conv = view.single_user(value)
    found = view.gate_conv_channels(conv, value) if conv is not None else None
    if conv is None or found is None:
        raise NoMatch("a split piece does not feed a single 1x1 conv")
    if found != channels:
        raise NoMatch("a gate conv does not restore the input's channel count")
    gate_ops, kind = _gate(view, conv)
    leaf = view.single_user(view.output(gate_ops[-1]))
    expand = leaf if leaf is not None and view.is_expand(leaf) else None
    return chain, perm, conv, gate_ops, kind, expand


def _output(view: GraphView[OpT, ValueT], source: ValueT, leaf_h: ValueT, leaf_w: ValueT) -> OpT:
    """The multiply that completes ``x * gate_h * gate_w`` (any order and grouping)."""
    leaves = {source: "x", leaf_h: "h", leaf_w: "w"}

    def covered(value: ValueT) -> set[str] | None:
        if value in leaves:
            return {leaves[value]}
        op = view.producer(value)
        operands = view.mul_operands(op) if op is not None else None
        if operands is None:
            return None
        parts = [covered(v) for v in operands]
        known = [p for p in parts if p is not None]
        if len(known) != len(parts):
            return None
        return set[str]().union(*known)

    op = view.single_user(leaf_h)
    for _ in range(3):
        if op is None or view.mul_operands(op) is None:
            break
        got = covered(view.output(op))
        if got is None:
            break
        if got == {"x", "h", "w"}:
            return op
        op = view.single_user(view.output(op))
    raise NoMatch("the gates are not multiplied into the pooled input")


def leaf(view: GraphView[OpT, ValueT], branch: Branch[OpT, ValueT]) -> ValueT:
    """The value the multiplies read for this gate: its expand if one is still read."""
    if branch.expand is not None and view.users(view.output(branch.expand)):
        return view.output(branch.expand)
    return view.output(branch.gate)


Strip = tuple[ValueT, int, str]
"""A strip pool's source, kept axis and kind (``GraphView.strip_pool``)."""


def _concat(view: GraphView[OpT, ValueT], op: OpT) -> tuple[list[ValueT], int]:
    """``view.concat`` of an op known to be a concat (from ``candidates``)."""
    found = view.concat(op)
    if found is None:
        raise NoMatch("the op is not a concat")
    return found


def _pools(
    view: GraphView[OpT, ValueT], concat: OpT, inputs: list[ValueT], axis: int
) -> list[tuple[Strip[ValueT], OpT, list[OpT], tuple[int, ...]]]:
    """Rule 2: each concat input's strip pool, transposes and permutation."""
    traced = [_back_to_pool(view, v) for v in inputs]
    for pool, _, _ in traced:
        source = view.pool_source(pool) if pool is not None else None
        if source is not None and view.shape(source) is None:
            raise NoMatch(
                f"shapes unknown, so the pools cannot be checked: {view.shape_gap(source)}"
            )
    pooled = []
    for pool, chain, perm in traced:
        info = view.strip_pool(pool) if pool is not None else None
        if pool is None or info is None:
            raise NoMatch("a concat input is not a pool over one spatial axis")
        pooled.append((info, pool, chain, perm))
    infos = [info for info, _, _, _ in pooled]
    (src_a, kept_a, _), (src_b, kept_b, _) = infos
    if src_a != src_b:
        raise NoMatch("the two pools read different tensors")
    if kept_a == kept_b:
        raise NoMatch(f"both pools keep the same axis ({AXIS_NAME[kept_a].upper()})")
    for (_, kept, _), _, _, perm in pooled:
        if perm[:2] != (0, 1):
            raise NoMatch("a transpose moves batch or channels")
        if perm.index(kept) != axis:
            raise NoMatch("a pooled axis is not brought onto the concat axis")
    return pooled


def match(view: GraphView[OpT, ValueT], concat: OpT) -> CABlock[OpT, ValueT]:
    """Match a CA block whose concat is ``concat``; raise NoMatch with the reason otherwise."""
    inputs, axis = _concat(view, concat)
    found = [view.shape(v) for v in inputs]
    unknown = [v for v, s in zip(inputs, found, strict=True) if s is None]
    if unknown:
        raise NoMatch(
            f"shapes unknown, so the pools cannot be checked: {view.shape_gap(unknown[0])}"
        )
    shapes = [s for s in found if s is not None]
    if len(inputs) != 2 or any(len(s) != 4 for s in shapes):
        raise NoMatch("the concat does not join two 4-D tensors")
    if axis not in (2, 3):
        name = "batch" if axis == 0 else "channels"
        raise NoMatch(f"pool over one spatial axis found, but the concat axis is {name}")
    pools = _pools(view, concat, inputs, axis)
    source = pools[0][0][0]
    source_shape = view.shape(source)
    assert source_shape is not None
    channels = source_shape[1]
    if not isinstance(channels, int):
        raise NoMatch("the channel count is not static")
    stem, end, splits = _stem(view, concat)
    pieces = _pieces(view, splits, axis, [s[axis] for s in shapes])
    end_shape = view.shape(end)
    if end_shape is None or not isinstance(end_shape[1], int):
        raise NoMatch("the shared branch's channel count is not static")
    branches = []
    for ((_, kept, kind), pool, in_chain, in_perm), piece in zip(pools, pieces, strict=True):
        chain, out_perm, conv, gate_ops, gate_kind, expand = _branch_gate(view, piece, channels)
        branches.append(
            Branch(
                AXIS_NAME[kept],
                pool,
                kind,
                in_chain,
                piece,
                chain,
                compose(in_perm, out_perm),
                conv,
                gate_ops,
                gate_kind,
                expand,
            )
        )
    by_axis = {b.axis: b for b in branches}
    output = _output(view, source, leaf(view, by_axis["h"]), leaf(view, by_axis["w"]))
    block = CABlock(
        id=f"{view.name(concat)}:{view.node_name(output)}",
        module=view.name(concat),
        source=source,
        concat=concat,
        axis=axis,
        stem=stem,
        stem_end=end,
        splits=splits,
        branches=(by_axis["h"], by_axis["w"]),
        output=output,
        channels=channels,
        mip=end_shape[1],
        spatial=(source_shape[2], source_shape[3]),
        variant=_variant(view, branches, stem, splits),
    )
    core = [concat, *stem, *splits]
    for b in branches:
        core += [*b.in_chain, *b.out_chain, *([b.expand] if b.expand is not None else [])]
    owned = view.owned(core)
    ca_only: dict[str, int] = {}
    for op in owned:
        kind = view.onnx_type(op)
        if kind in CA_ONLY_OPS:
            ca_only[kind] = ca_only.get(kind, 0) + 1
    block = replace(block, owned=owned, ca_only=ca_only)
    return replace(block, findings=lint(block))


def _variant(
    view: GraphView[OpT, ValueT],
    branches: list[Branch[OpT, ValueT]],
    stem: list[OpT],
    splits: list[OpT],
) -> dict[str, str]:
    """A short description of how this block is written."""
    kinds: list[str] = []
    for op in stem:
        kind = view.label(op)
        if not kinds or kinds[-1] != kind:
            kinds.append(kind)
    swaps = sorted({view.label(op) for b in branches for op in [*b.in_chain, *b.out_chain]})
    return {
        "pool": branches[0].pool_kind,
        "swap": "+".join(swaps) or "none",
        "split": view.label(splits[0]),
        "stem": "+".join(kinds) or "none",
        "gate": branches[0].gate_kind,
        "expand": "yes" if any(b.expand is not None for b in branches) else "no",
    }


def lint(block: CABlock[OpT, ValueT]) -> list[str]:
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


def _tiny(view: GraphView[OpT, ValueT], pool: OpT | None) -> bool:
    """A pool over a map with a spatial size of 1, where the kept axis cannot be told."""
    source = view.pool_source(pool) if pool is not None else None
    dims = view.shape(source) if source is not None else None
    return dims is not None and len(dims) == 4 and 1 in (dims[2], dims[3])


def candidates(view: GraphView[OpT, ValueT]) -> list[OpT]:
    """Concats with an input that is strip-pooled (through transposes), or pooled through a
    transpose, or pooled from a map whose shape is unknown or has a spatial size of 1: the
    pool -> transpose -> concat shape of a CA block, which ``match`` accepts or says why not."""
    found = []
    for op in view.ops():
        concat = view.concat(op)
        if concat is None:
            continue
        for value in concat[0]:
            pool, chain, _ = _back_to_pool(view, value)
            source = view.pool_source(pool) if pool is not None else None
            if pool is None or source is None:
                continue
            if chain or view.shape(source) is None or _tiny(view, pool) or view.strip_pool(pool):
                found.append(op)
                break
    return found


def find(view: GraphView[OpT, ValueT]) -> tuple[list[CABlock[OpT, ValueT]], list[Rejection]]:
    """All CA blocks of a graph, and the pooled concats that are not, with reasons."""
    blocks: list[CABlock[OpT, ValueT]] = []
    rejections: list[Rejection] = []
    for concat in candidates(view):
        try:
            inputs = _concat(view, concat)[0]
            if any(_tiny(view, _back_to_pool(view, v)[0]) for v in inputs):
                raise NoMatch(TINY_MAP)
            blocks.append(match(view, concat))
        except NoMatch as why:
            rejections.append(Rejection(view.name(concat), view.node_name(concat), str(why)))
    return blocks, rejections
