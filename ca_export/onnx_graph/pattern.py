"""The Coordinate Attention pattern in an ONNX graph, as stock exporters write it.

Match rules, in order (the first one broken is the reason a candidate is rejected):

0. Shapes are known. A concat fed by an ``AveragePool``/``ReduceMean`` through a
   ``Transpose``, or whose shapes shape inference could not tell, is a candidate too,
   and is rejected with the reason (where inference stopped, the rule it broke).

1. A ``Concat`` of two 4-D tensors along a spatial axis (2 or 3).
2. Each input is a strip pool reached through ``Transpose`` only. A strip pool is an
   ``AveragePool`` whose kernel spans the whole W (or H) and 1 on the other axis, with
   no padding, or a ``ReduceMean`` over axis 3 (or 2) with ``keepdims``. Both pools read
   the same tensor ``x`` and keep different axes. Transposes keep batch and channels
   in place and bring both kept axes onto the concat axis.
3. From the concat to the split, every node is spatially pointwise: a 1x1 ``Conv``
   with stride 1 and no padding, ``BatchNormalization``, unary activations
   (``Relu``, ``Clip``, ``HardSwish``, ``Sigmoid``, ...) and arithmetic whose other
   operand is a constant without spatial extent (so ``Add``/``Clip``/``Mul``/``Div``
   h_swish and ``Sigmoid``*``Mul`` SiLU count). Only the split reads its end.
4. A ``Split`` (sizes as input or attribute) or two ``Slice`` nodes along the concat
   axis (bounds constant or computed from ``Shape``) give back exactly the two
   concat inputs.
5. Each piece reaches, through ``Transpose`` only, a 1x1 ``Conv`` with C output
   channels and a gate: ``Sigmoid``, ``HardSigmoid`` or ``Add(3)``/``Clip(0, 6)``/
   ``Div(6)`` (Clip bounds as inputs, or as attributes up to opset 10), optionally
   followed by ``Expand``.
6. A tree of ``Mul`` nodes multiplies ``x`` by both gates, in any order.

Before (TorchScript-based export of the official block)::

    x ─┬─ AveragePool[1,W] ─────────────┐
       ├─ AveragePool[H,1] ─ Transpose ─ Concat ─ Conv ─ h_swish ─ Slice ─ Conv ─ Sigmoid ─┐
       │                                                    └─ Slice ─ Transpose ─ Conv ─ Sigmoid ─┤
       └──────────────────────────────────────────────────────────────── Mul ─ Mul ─ out ─┘
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx

from ca_export.onnx_graph.index import GraphIndex

IDENTITY = (0, 1, 2, 3)
AXIS_NAME = {2: "h", 3: "w"}
INT_MAX = 2**62
UNARY = frozenset(
    {
        "Abs",
        "Celu",
        "Elu",
        "Erf",
        "Exp",
        "Gelu",
        "HardSigmoid",
        "HardSwish",
        "Identity",
        "LeakyRelu",
        "Mish",
        "Neg",
        "Relu",
        "Selu",
        "Sigmoid",
        "Softplus",
        "Softsign",
        "Tanh",
        "ThresholdedRelu",
    }
)
BINARY = frozenset({"Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "PRelu"})
POOL_OPS = frozenset({"AveragePool", "ReduceMean"})
CA_ONLY_OPS = frozenset({"Transpose", "Concat", "Split", "Slice", "Shape", "Gather"})


class NoMatch(Exception):
    """A candidate is not a CA block; the message says which rule it broke."""


@dataclass
class OnnxBranch:
    """One direction of a CA block: the strip pool that keeps one axis, and its gate."""

    axis: str
    pool: onnx.NodeProto
    pool_kind: str
    in_chain: list[onnx.NodeProto]
    piece: str
    out_chain: list[onnx.NodeProto]
    perm: tuple[int, ...]
    gate_conv: onnx.NodeProto
    gate_nodes: list[onnx.NodeProto]
    gate_kind: str
    expand: onnx.NodeProto | None

    @property
    def gate_output(self) -> str:
        """The gate's value before any Expand."""
        return self.gate_nodes[-1].output[0]

    @property
    def leaf(self) -> str:
        """The tensor the output Mul reads: the gate, or its Expand."""
        return self.expand.output[0] if self.expand is not None else self.gate_output


@dataclass
class OnnxBlock:
    """A matched CA block in an ONNX graph."""

    name: str
    source: str
    concat: onnx.NodeProto
    axis: int
    stem: list[onnx.NodeProto]
    stem_end: str
    splits: list[onnx.NodeProto]
    branches: tuple[OnnxBranch, OnnxBranch]
    output: str
    channels: int
    mip: int
    spatial: tuple[int, int]
    variant: dict[str, str]
    owned: list[onnx.NodeProto] = field(default_factory=list)
    findings: list[str] = field(default_factory=list)

    def ca_only_nodes(self) -> dict[str, int]:
        """Counts of Transpose/Concat/Split/Slice/Shape/Gather nodes the block owns."""
        counts: dict[str, int] = {}
        for node in self.owned:
            if node.op_type in CA_ONLY_OPS:
                counts[node.op_type] = counts.get(node.op_type, 0) + 1
        return counts


@dataclass
class OnnxRejection:
    """A concat of strip-pooled tensors that is not a CA block, and why."""

    node: str
    reason: str


def _perm(index: GraphIndex, node: onnx.NodeProto) -> tuple[int, ...]:
    """A Transpose's permutation (reversal when the attribute is absent)."""
    perm = index.attr(node, "perm")
    return tuple(perm) if perm is not None else (3, 2, 1, 0)  # type: ignore[arg-type]


def _compose(first: tuple[int, ...], then: tuple[int, ...]) -> tuple[int, ...]:
    """The permutation of applying ``first`` and then ``then``."""
    return tuple(first[i] for i in then)


def strip_pool(index: GraphIndex, node: onnx.NodeProto) -> tuple[str, int, str] | None:
    """(source, kept axis, kind) if the node averages one spatial axis away, else None."""
    src = node.input[0] if node.input else ""
    shape = index.shape(src)
    if shape is None or len(shape) != 4:
        return None
    if node.op_type == "AveragePool":
        kernel = list(index.attr(node, "kernel_shape", []))  # type: ignore[arg-type]
        pads = list(index.attr(node, "pads", [0, 0, 0, 0]))  # type: ignore[arg-type]
        auto_pad = index.attr(node, "auto_pad", b"NOTSET")
        dilations = list(index.attr(node, "dilations", [1, 1]))  # type: ignore[arg-type]
        if len(kernel) != 2 or any(pads) or auto_pad not in (b"NOTSET", b"VALID"):
            return None
        if dilations != [1, 1]:
            return None
        h, w = shape[2], shape[3]
        if kernel == [1, w] and w not in (None, 1):
            return src, 2, "AveragePool"
        if kernel == [h, 1] and h not in (None, 1):
            return src, 3, "AveragePool"
        return None
    if node.op_type == "ReduceMean":
        if index.attr(node, "keepdims", 1) != 1:
            return None
        if index.opset >= 18:
            axes = index.const(node.input[1]) if len(node.input) > 1 else None
        else:
            axes = index.attr(node, "axes")
        if axes is None or len(list(np.ravel(axes))) != 1:
            return None
        gone = int(np.ravel(axes)[0]) % 4
        if gone in (2, 3) and shape[gone] != 1:
            return src, 5 - gone, "ReduceMean"
    return None


def _back_to_pool(
    index: GraphIndex, name: str
) -> tuple[onnx.NodeProto | None, list[onnx.NodeProto], tuple[int, ...]]:
    """Walk from a concat input back through Transposes to its producer."""
    chain: list[onnx.NodeProto] = []
    node = index.producer.get(name)
    while node is not None and node.op_type == "Transpose":
        chain.append(node)
        node = index.producer.get(node.input[0])
    perm = IDENTITY
    for step in reversed(chain):
        perm = _compose(perm, _perm(index, step))
    return node, list(reversed(chain)), perm


def _spatially_constant(index: GraphIndex, name: str) -> bool:
    """A constant that broadcasts over a 4-D tensor without spatial extent."""
    value = index.const(name)
    if value is None:
        return False
    shape = (1,) * (4 - value.ndim) + tuple(value.shape) if value.ndim <= 4 else None
    return shape is not None and shape[2] == 1 and shape[3] == 1


def _pointwise(index: GraphIndex, node: onnx.NodeProto, inside: set[str]) -> str | None:
    """Why a node that reads the shared branch is not spatially pointwise (None if it is)."""
    op = node.op_type
    data = [i for i in node.input if i in inside]
    others = [i for i in node.input if i and i not in inside]
    if op == "Conv":
        weight = index.shape(node.input[1])
        if node.input[0] not in inside or others != list(node.input[1:]):
            return "a Conv reads the shared branch as its weight"
        if weight is None or len(weight) != 4 or tuple(weight[2:]) != (1, 1):
            return "a Conv on the shared branch is not 1x1"
        strides = list(index.attr(node, "strides", [1, 1]))  # type: ignore[arg-type]
        pads = list(index.attr(node, "pads", [0, 0, 0, 0]))  # type: ignore[arg-type]
        auto_pad = index.attr(node, "auto_pad", b"NOTSET")
        if strides != [1, 1] or any(pads) or auto_pad not in (b"NOTSET", b"VALID"):
            return "a 1x1 Conv on the shared branch has stride or padding"
        return None
    if op == "BatchNormalization":
        if len(node.output) != 1 or node.input[0] not in inside or len(data) != 1:
            return "a BatchNormalization on the shared branch is in training mode"
        return None
    if op in UNARY and len(node.input) == 1:
        return None
    if op == "Clip" and all(index.const(i) is not None for i in others):
        return None
    if op in BINARY and all(_spatially_constant(index, i) for i in others):
        return None
    return f"'{op}' reads the concatenated tensor but is not spatially pointwise"


def _stem(
    index: GraphIndex, concat: onnx.NodeProto, axis: int
) -> tuple[list[onnx.NodeProto], str, list[onnx.NodeProto]]:
    """The pointwise nodes between the concat and the split, the stem's end, the splits."""
    inside = {concat.output[0]}
    stem: list[onnx.NodeProto] = []
    splits: list[onnx.NodeProto] = []
    nodes = list(index.graph.node)
    start = next(i for i, n in enumerate(nodes) if n is concat)
    for node in nodes[start + 1 :]:
        if not any(i in inside for i in node.input):
            continue
        if node.op_type in ("Split", "Slice") and node.input[0] in inside:
            splits.append(node)
            continue
        why = _pointwise(index, node, inside)
        if why is not None:
            raise NoMatch(why)
        inside.update(node.output)
        stem.append(node)
    if not splits:
        raise NoMatch("the concatenated tensor is never split back")
    ends = {s.input[0] for s in splits}
    if len(ends) != 1:
        raise NoMatch("the split reads more than one tensor of the shared branch")
    end = ends.pop()
    members = {id(n) for n in stem} | {id(n) for n in splits}
    tensors = [concat.output[0], *(o for n in stem for o in n.output)]
    for name in tensors:
        if name in index.outputs or any(id(u) not in members for u in index.consumers[name]):
            raise NoMatch("a tensor of the shared branch is used outside the block")
    if any(u.op_type not in ("Split", "Slice") for u in index.consumers[end]):
        raise NoMatch("a tensor of the shared branch is used outside the block")
    return stem, end, splits


def _pieces(
    index: GraphIndex, splits: list[onnx.NodeProto], axis: int, sizes: list[int]
) -> list[str]:
    """The two pieces of the split (tensor names), in concat input order."""
    ordered: list[set[str]] = [set(), set()]
    for split in splits:
        if split.op_type == "Split":
            if int(index.attr(split, "axis", 0)) % 4 != axis:  # type: ignore[arg-type]
                raise NoMatch("the split is not along the concat axis")
            cut = _split_sizes(index, split, sum(sizes))
            if cut != sizes:
                raise NoMatch("the split sizes do not undo the concat")
            for i, out in enumerate(split.output):
                if index.consumers.get(out) or out in index.outputs:
                    ordered[i].add(out)
        else:
            ordered[_slice_index(index, split, axis, sizes)].add(split.output[0])
    if any(len(p) != 1 for p in ordered):
        raise NoMatch("the split does not give back each concat input exactly once")
    return [ordered[0].pop(), ordered[1].pop()]


def _split_sizes(index: GraphIndex, split: onnx.NodeProto, total: int) -> list[int] | None:
    """The sizes a Split cuts, from its input, attribute or output count."""
    if len(split.input) > 1 and split.input[1]:
        value = index.const(split.input[1])
        return None if value is None else [int(v) for v in np.ravel(value)]
    attr = index.attr(split, "split")
    if attr is not None:
        return [int(v) for v in attr]  # type: ignore[union-attr]
    count = len(split.output)
    return [total // count] * count if total % count == 0 else None


def _slice_index(index: GraphIndex, node: onnx.NodeProto, axis: int, sizes: list[int]) -> int:
    """Which concat input a Slice along the concat axis gives back."""
    values = [index.const(i) if i else None for i in list(node.input[1:5]) + [""] * 4]
    starts, ends, axes, steps = values[:4]
    if starts is None or ends is None or (len(node.input) > 3 and node.input[3] and axes is None):
        raise NoMatch("a slice of the shared branch has bounds that are not constant")
    starts, ends = np.ravel(starts), np.ravel(ends)
    axes = np.ravel(axes) % 4 if axes is not None else np.arange(len(starts))
    steps = np.ravel(steps) if steps is not None else np.ones(len(starts), dtype=np.int64)
    total = sum(sizes)
    cut = None
    for ax, start, end, step in zip(axes, starts, ends, steps, strict=True):
        if int(ax) != axis:
            raise NoMatch("a slice of the shared branch cuts another axis")
        if int(step) != 1:
            raise NoMatch("a slice of the shared branch has a step")
        lo = min(max(int(start) + (total if start < 0 else 0), 0), total)
        hi = min(max(int(end) + (total if end < 0 else 0), 0), total)
        cut = (lo, hi)
    if cut == (0, sizes[0]):
        return 0
    if cut == (sizes[0], total):
        return 1
    raise NoMatch("the slices do not undo the concat")


def _forward_through_transposes(
    index: GraphIndex, name: str
) -> tuple[str, list[onnx.NodeProto], tuple[int, ...]]:
    """Follow single consumers that are Transposes; return the last tensor and the chain."""
    chain: list[onnx.NodeProto] = []
    perm = IDENTITY
    while (user := index.single_consumer(name)) is not None and user.op_type == "Transpose":
        chain.append(user)
        perm = _compose(perm, _perm(index, user))
        name = user.output[0]
    return name, chain, perm


def _scalar(index: GraphIndex, name: str) -> float | None:
    """A constant's value if it holds a single number."""
    value = index.const(name)
    return float(np.ravel(value)[0]) if value is not None and value.size == 1 else None


def _other(node: onnx.NodeProto, name: str) -> str:
    """The input of a binary node that is not ``name``."""
    return node.input[1] if node.input[0] == name else node.input[0]


def _clip_bounds(index: GraphIndex, clip: onnx.NodeProto) -> list[float | None]:
    """A Clip's [min, max]: constant inputs (opset 11+) or attributes (opset 10 and older).

    A bound that is absent is infinite; one that is not constant is None.
    """
    if index.opset <= 10:
        lo = index.attr(clip, "min", -np.inf)
        hi = index.attr(clip, "max", np.inf)
        return [float(lo), float(hi)]  # type: ignore[arg-type]
    names = [*clip.input[1:3], "", ""][:2]
    defaults = (-np.inf, np.inf)
    return [_scalar(index, n) if n else d for n, d in zip(names, defaults, strict=True)]


def _gate(index: GraphIndex, conv: onnx.NodeProto) -> tuple[list[onnx.NodeProto], str]:
    """The gate nodes after a gate conv and their kind."""
    act = index.single_consumer(conv.output[0])
    if act is None:
        raise NoMatch("a gate conv has no single activation")
    if act.op_type == "Sigmoid":
        return [act], "sigmoid"
    if act.op_type == "HardSigmoid":
        return [act], "hardsigmoid"
    if act.op_type == "Add" and _scalar(index, _other(act, conv.output[0])) == 3.0:
        clip = index.single_consumer(act.output[0])
        if clip is not None and clip.op_type == "Clip":
            bounds = _clip_bounds(index, clip)
            div = index.single_consumer(clip.output[0])
            if bounds == [0.0, 6.0] and div is not None:
                other = _scalar(index, _other(div, clip.output[0]))
                if (div.op_type == "Div" and other == 6.0) or (
                    div.op_type == "Mul" and other is not None and abs(other - 1 / 6) < 1e-7
                ):
                    return [act, clip, div], "h_sigmoid"
    raise NoMatch("a gate conv is not followed by Sigmoid or HardSigmoid")


def _branch_gate(
    index: GraphIndex, piece: str, channels: int
) -> tuple[list[onnx.NodeProto], tuple[int, ...], onnx.NodeProto, list[onnx.NodeProto], str]:
    """Follow a piece to its gate: (transposes, perm, conv, gate nodes, kind)."""
    name, chain, perm = _forward_through_transposes(index, piece)
    conv = index.single_consumer(name)
    if conv is None or conv.op_type != "Conv" or conv.input[0] != name:
        raise NoMatch("a split piece does not feed a single 1x1 Conv")
    weight = index.shape(conv.input[1])
    if weight is None or len(weight) != 4 or tuple(weight[2:]) != (1, 1):
        raise NoMatch("a gate conv is not 1x1")
    strides = list(index.attr(conv, "strides", [1, 1]))  # type: ignore[arg-type]
    if strides != [1, 1] or any(index.attr(conv, "pads", [0, 0, 0, 0])):  # type: ignore[arg-type]
        raise NoMatch("a gate conv has stride or padding")
    if weight[0] != channels:
        raise NoMatch("a gate conv does not restore the input's channel count")
    gate_nodes, kind = _gate(index, conv)
    return chain, perm, conv, gate_nodes, kind


def _output(index: GraphIndex, source: str, leaf_h: str, leaf_w: str) -> str:
    """The Mul that completes ``x * gate_h * gate_w`` (any order and grouping)."""
    leaves = {source: "x", leaf_h: "h", leaf_w: "w"}

    def covered(name: str) -> set[str] | None:
        if name in leaves:
            return {leaves[name]}
        node = index.producer.get(name)
        if node is None or node.op_type != "Mul":
            return None
        parts = [covered(i) for i in node.input[:2]]
        if any(p is None for p in parts):
            return None
        return set().union(*parts)  # type: ignore[arg-type]

    node = index.single_consumer(leaf_h)
    for _ in range(3):
        if node is None or node.op_type != "Mul":
            break
        got = covered(node.output[0])
        if got is None:
            break
        if got == {"x", "h", "w"}:
            return node.output[0]
        node = index.single_consumer(node.output[0])
    raise NoMatch("the gates are not multiplied into the pooled input")


def match(index: GraphIndex, concat: onnx.NodeProto) -> OnnxBlock:
    """Match a CA block whose concat is ``concat``; raise NoMatch with the reason otherwise."""
    inputs = list(concat.input)
    shapes = [index.shape(i) for i in inputs]
    unknown = [i for i in inputs if index.shape(i) is None]
    if unknown:
        raise NoMatch(
            f"shapes unknown, so the pools cannot be checked: {index.shape_gap(unknown[0])}"
        )
    if len(inputs) != 2 or any(s is None or len(s) != 4 for s in shapes):
        raise NoMatch("the concat does not join two 4-D tensors")
    axis = int(index.attr(concat, "axis", 0)) % 4  # type: ignore[arg-type]
    if axis not in (2, 3):
        name = "batch" if axis == 0 else "channels"
        raise NoMatch(f"pool over one spatial axis found, but the concat axis is {name}")
    traced = [_back_to_pool(index, i) for i in inputs]
    for pool, _, _ in traced:
        if pool is not None and pool.op_type in POOL_OPS and index.shape(pool.input[0]) is None:
            gap = index.shape_gap(pool.input[0])
            raise NoMatch(f"shapes unknown, so the pools cannot be checked: {gap}")
    infos = [strip_pool(index, p) if p is not None else None for p, _, _ in traced]
    if any(info is None for info in infos):
        raise NoMatch("a concat input is not a pool over one spatial axis")
    (src_a, kept_a, _), (src_b, kept_b, _) = infos  # type: ignore[misc]
    if src_a != src_b:
        raise NoMatch("the two pools read different tensors")
    if kept_a == kept_b:
        raise NoMatch(f"both pools keep the same axis ({AXIS_NAME[kept_a].upper()})")
    for info, (_, _, perm) in zip(infos, traced, strict=True):
        if perm[:2] != (0, 1):
            raise NoMatch("a Transpose moves batch or channels")
        if perm.index(info[1]) != axis:  # type: ignore[index]
            raise NoMatch("a pooled axis is not brought onto the concat axis")
    source_shape = index.shape(src_a)
    assert source_shape is not None
    channels = source_shape[1]
    if channels is None or any(s[axis] is None for s in shapes):  # type: ignore[index]
        raise NoMatch("the channel count or pooled sizes are not static")
    sizes = [int(s[axis]) for s in shapes]  # type: ignore[index]
    stem, end, splits = _stem(index, concat, axis)
    pieces = _pieces(index, splits, axis, sizes)
    end_shape = index.shape(end)
    if end_shape is None or end_shape[1] is None:
        raise NoMatch("the shared branch's channel count is not static")
    branches = []
    for info, (pool, in_chain, in_perm), piece in zip(infos, traced, pieces, strict=True):
        chain, out_perm, conv, gate_nodes, gate_kind = _branch_gate(index, piece, channels)
        leaf = index.single_consumer(gate_nodes[-1].output[0])
        expand = leaf if leaf is not None and leaf.op_type == "Expand" else None
        branches.append(
            OnnxBranch(
                axis=AXIS_NAME[info[1]],  # type: ignore[index]
                pool=pool,  # type: ignore[arg-type]
                pool_kind=info[2],  # type: ignore[index]
                in_chain=in_chain,
                piece=piece,
                out_chain=chain,
                perm=_compose(in_perm, out_perm),
                gate_conv=conv,
                gate_nodes=gate_nodes,
                gate_kind=gate_kind,
                expand=expand,
            )
        )
    by_axis = {b.axis: b for b in branches}
    output = _output(index, src_a, by_axis["h"].leaf, by_axis["w"].leaf)
    block = OnnxBlock(
        name=concat.name or concat.output[0],
        source=src_a,
        concat=concat,
        axis=axis,
        stem=stem,
        stem_end=end,
        splits=splits,
        branches=(by_axis["h"], by_axis["w"]),
        output=output,
        channels=int(channels),
        mip=int(end_shape[1]),
        spatial=(int(source_shape[2] or 0), int(source_shape[3] or 0)),
        variant=_variant(branches, stem, splits),
    )
    block.owned = _owned(index, block)
    block.findings = [
        f"warning: the {b.axis.upper()} gate is applied along {AXIS_NAME[b.perm.index(k)].upper()}"
        " (no transpose back after the split): valid for square inputs only"
        for b, k in ((b, 2 if b.axis == "h" else 3) for b in block.branches)
        if b.perm != IDENTITY
    ]
    return block


def _variant(
    branches: list[OnnxBranch], stem: list[onnx.NodeProto], splits: list[onnx.NodeProto]
) -> dict[str, str]:
    """A short description of how this block is written."""
    ops: list[str] = []
    for node in stem:
        if not ops or ops[-1] != node.op_type:
            ops.append(node.op_type)
    return {
        "pool": branches[0].pool_kind,
        "split": splits[0].op_type,
        "stem": "+".join(ops),
        "gate": branches[0].gate_kind,
        "expand": "yes" if any(b.expand is not None for b in branches) else "no",
    }


def _owned(index: GraphIndex, block: OnnxBlock) -> list[onnx.NodeProto]:
    """The nodes only this block uses: its layout, concat, stem, splits, bounds and expands."""
    core: list[onnx.NodeProto] = [block.concat, *block.stem, *block.splits]
    for b in block.branches:
        core += [*b.in_chain, *b.out_chain]
        if b.expand is not None:
            core.append(b.expand)
    owned = {id(n): n for n in core}
    changed = True
    while changed:
        changed = False
        for node in list(owned.values()):
            if node.op_type == "Shape":
                continue
            for name in node.input:
                producer = index.producer.get(name)
                if producer is None or id(producer) in owned or producer is block.concat:
                    continue
                if index.const(name) is None and producer.op_type != "Shape":
                    continue
                users = [u for o in producer.output for u in index.consumers.get(o, [])]
                if all(id(u) in owned for u in users) and not set(producer.output) & index.outputs:
                    owned[id(producer)] = producer
                    changed = True
    return list(owned.values())


def candidates(index: GraphIndex) -> list[onnx.NodeProto]:
    """Concat nodes with an input that is strip-pooled (through Transposes), or that comes from
    an AveragePool/ReduceMean through a Transpose or with an unknown input shape: the pool ->
    transpose -> concat shape of a CA block, which the matcher then accepts or says why not."""
    found = []
    for node in index.graph.node:
        if node.op_type == "Concat":
            for name in node.input:
                pool, chain, _ = _back_to_pool(index, name)
                if pool is None or pool.op_type not in POOL_OPS:
                    continue
                unknown = index.shape(pool.input[0]) is None
                if chain or unknown or strip_pool(index, pool) is not None:
                    found.append(node)
                    break
    return found


def find(index: GraphIndex) -> tuple[list[OnnxBlock], list[OnnxRejection]]:
    """All CA blocks of a graph, and the pooled concats that are not, with reasons."""
    blocks: list[OnnxBlock] = []
    rejections: list[OnnxRejection] = []
    for concat in candidates(index):
        try:
            blocks.append(match(index, concat))
        except NoMatch as why:
            rejections.append(OnnxRejection(concat.name or concat.output[0], str(why)))
    return blocks, rejections
