"""Exact rewrites of CA blocks, applied to an `ExportedProgram`.

Per block, in order: ``pool_to_reduce`` (strip pools that are right at every size),
``distribute_stem`` (no concat/split/transpose left), ``hardswish`` (a written-out
h_swish in the stem as one op), ``drop_expand`` (no shape arithmetic on the gates),
then the gate, by target form: ``onnx`` (default) ``gate_once`` (the H x W gate built
once, one same-shape multiply, fastest on ONNX Runtime), ``xnnpack``
``global_strip_pool`` (a dynamic strip pool as a global mean between permutes),
``swap_as_view`` (the seed quirk's squeeze/unsqueeze as one view, or
``swap_as_permute`` at symbolic sizes), ``broadcast_gate`` (two
broadcasting multiplies) and ``float_hardsigmoid`` (hard-sigmoid gates with float
constants): ops ExecuTorch lowers into one XNNPACK delegate.
Dead nodes are removed and the graph is linted. The pass is idempotent: a rewritten graph has no
concat left for the detector to match.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

from torch.export import ExportedProgram

from ca_export.patterns import CABlock, Rejection, find
from ca_export.rewrites.broadcast_gate import broadcast_gate
from ca_export.rewrites.distribute_stem import distribute_stem
from ca_export.rewrites.drop_expand import drop_expand
from ca_export.rewrites.float_hardsigmoid import float_hardsigmoid
from ca_export.rewrites.gate_once import gate_once
from ca_export.rewrites.global_strip_pool import global_strip_pool
from ca_export.rewrites.hardswish import fuse_hardswish
from ca_export.rewrites.pool_to_reduce import pool_to_reduce
from ca_export.rewrites.swap_as_permute import swap_as_permute
from ca_export.rewrites.swap_as_view import swap_as_view

FORMS = ("onnx", "xnnpack")
"""Target forms of the rewritten block; they differ in how the gate is applied."""


@dataclass
class BlockRewrite:
    """One rewritten block: its module, and the nodes that bound it in the new graph."""

    module: str
    source: str
    output: str


@dataclass
class RewriteResult:
    """A pass result: the program after the pass and whether anything changed."""

    program: ExportedProgram
    blocks: list[BlockRewrite]
    rejections: list[Rejection]

    @property
    def modified(self) -> bool:
        """Whether the pass changed the program."""
        return bool(self.blocks)


def rewrite_block(
    program: ExportedProgram, block: CABlock, static: bool, form: str = "onnx"
) -> BlockRewrite:
    """Apply every rewrite to one block of ``program``'s graph, in place."""
    graph = program.graph
    pooled = {b.axis: pool_to_reduce(graph, b, static) for b in block.branches}
    fuse_hardswish(graph, distribute_stem(graph, block, pooled))
    drop_expand(graph, block)
    if form == "xnnpack":
        for pool in pooled.values():
            global_strip_pool(graph, pool)
        swap_as_view(graph, block)
        swap_as_permute(graph, block)
        broadcast_gate(graph, block)
        float_hardsigmoid(graph, block)
    else:
        gate_once(graph, block)
    return BlockRewrite(block.module, block.source.name, block.output.name)


def _copy(program: ExportedProgram) -> ExportedProgram:
    """A deep copy whose placeholders keep their names (a copy renames ``input`` to ``input_1``,
    which no longer matches the graph signature)."""
    copied = copy.deepcopy(program)
    for node in copied.graph.nodes:
        if node.op == "placeholder" and node.name != node.target:
            node.name = node.target
    copied.graph_module.recompile()
    return copied


def rewrite(program: ExportedProgram, static: bool, form: str = "onnx") -> RewriteResult:
    """Rewrite every CA block of a copy of ``program`` into ``form``; the input is untouched."""
    if form not in FORMS:
        raise ValueError(f"unknown rewrite form {form!r}; expected one of {FORMS}")
    program = _copy(program)
    blocks, rejections = find(program.graph)
    done = [rewrite_block(program, block, static, form) for block in blocks]
    program.graph.eliminate_dead_code()
    program.graph.lint()
    program.graph_module.recompile()
    return RewriteResult(program, done, rejections)
