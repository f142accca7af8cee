"""Which ATen ops act on each spatial position on its own (commute with the CA concat).

An op is *spatially pointwise* when its output at (h, w) depends only on its input
at (h, w): 1x1 convolutions with stride 1 and no padding, eval-mode batch norm,
elementwise activations, and elementwise arithmetic with scalars or per-channel
constants. Such ops commute with concat/split/transpose along the spatial axes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

import torch
from torch.fx import Node

from ca_export.fx import is_getitem, shape, val

aten = torch.ops.aten

# Keyed by OpOverload; looked up with any fx target (str | Callable).
UNARY: dict[object, str] = {
    aten.relu.default: "relu",
    aten.relu_.default: "relu",
    aten.relu6.default: "relu6",
    aten.hardtanh.default: "hardtanh",
    aten.hardtanh_.default: "hardtanh",
    aten.hardswish.default: "hardswish",
    aten.hardswish_.default: "hardswish",
    aten.hardsigmoid.default: "hardsigmoid",
    aten.silu.default: "silu",
    aten.silu_.default: "silu",
    aten.sigmoid.default: "sigmoid",
    aten.tanh.default: "tanh",
    aten.gelu.default: "gelu",
    aten.leaky_relu.default: "leaky_relu",
    aten.elu.default: "elu",
    aten.mish.default: "mish",
    aten.clamp.default: "clamp",
    aten.clone.default: "clone",
}

BINARY = {
    aten.add.Tensor: "add",
    aten.sub.Tensor: "sub",
    aten.mul.Tensor: "mul",
    aten.div.Tensor: "div",
    aten.add.Scalar: "add",
    aten.sub.Scalar: "sub",
    aten.mul.Scalar: "mul",
    aten.div.Scalar: "div",
    aten.maximum.default: "maximum",
    aten.minimum.default: "minimum",
}

CONV = (aten.conv2d.default, aten.convolution.default)
BATCH_NORM = aten._native_batch_norm_legit_no_training.default
"""Eval-mode batch norm after decomposition: a tuple whose item 0 is the output."""
EVAL_BATCH_NORM = aten.batch_norm.default
"""Batch norm in torch.export's IR, the output itself; eval mode when ``training`` is False."""


def is_pointwise_conv(node: Node) -> bool:
    """A 2-D convolution with a 1x1 kernel, stride 1, no padding and not transposed."""
    if node.target not in CONV:
        return False
    weight = node.args[1]
    if not isinstance(weight, Node) or shape(weight)[2:] != (1, 1):
        return False
    args = list(node.args) + [None] * 9
    # A convolution's stride and padding are int lists (or omitted).
    stride, padding = cast("list[int] | None", args[3]), cast("list[int] | None", args[4])
    if node.target == aten.convolution.default and args[6]:
        return False
    return all(s == 1 for s in (stride or [1])) and all(p == 0 for p in (padding or [0]))


def pointwise_kind(node: Node, inside: Callable[[object], bool]) -> str | None:
    """The op's name if it is spatially pointwise on tensors for which ``inside`` holds.

    Operands that are not inside must be constants that broadcast per channel at most.
    """
    if node.op != "call_function":
        return None
    if node.target in CONV:
        return "conv1x1" if is_pointwise_conv(node) and inside(node.args[0]) else None
    if node.target == BATCH_NORM or is_eval_batch_norm(node):
        return "bn" if inside(node.args[0]) else None
    if is_getitem(node, 0) and isinstance(node.args[0], Node):
        return "bn" if node.args[0].target == BATCH_NORM else None
    if node.target in UNARY:
        extra = [a for a in node.args[1:] if isinstance(a, Node)]
        return UNARY[node.target] if not extra and inside(node.args[0]) else None
    if node.target in BINARY:
        operands = node.args[:2]
        if not any(isinstance(a, Node) and inside(a) for a in operands):
            return None
        ok = all(not isinstance(a, Node) or inside(a) or _channel_constant(a) for a in operands)
        return BINARY[node.target] if ok else None
    return None


def is_eval_batch_norm(node: Node) -> bool:
    """``aten.batch_norm`` (torch.export's IR) in eval mode (``training`` False)."""
    return node.target == EVAL_BATCH_NORM and len(node.args) > 5 and node.args[5] is False


def _channel_constant(node: Node) -> bool:
    """A parameter or constant that broadcasts over the spatial axes unchanged."""
    if node.op not in ("get_attr", "placeholder"):
        return False
    value = val(node)
    if not isinstance(value, torch.Tensor):
        return True
    return value.numel() == 1 or (value.dim() == 4 and tuple(value.shape[2:]) == (1, 1))
