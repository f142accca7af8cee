"""Exact rewrites of CA blocks, written once over ``GraphView``, run as passes.

A *form* is the declared order of passes that puts a block into the shape one runtime runs
fastest; every form is exact. ``onnx``: ``pool_to_reduce`` (strip pools right at every size),
``distribute_stem`` (no concat/split/transpose left), ``hardswish`` (a written-out h_swish as
one op), ``drop_expand`` (no shape arithmetic on the gates), ``gate_once`` (the H x W gate
built once, one same-shape multiply). ``xnnpack`` (ExecuTorch) ends with
``global_strip_pool`` (a dynamic strip pool as a global mean between permutes),
``swap_as_view`` (``swap_as_permute`` at symbolic sizes), ``broadcast_gate`` and
``float_hardsigmoid`` instead: ops ExecuTorch lowers into one XNNPACK delegate. ``litert``
(``ca-export litert``, static sizes only) is measured for LiteRT on its own
(``benchmarks/litert_forms.py``, ``benchmarks/litert_floor.py``): ``strip_mean`` (strip
pools as MEAN) in place of ``pool_to_reduce``, ``distribute_stem``, ``drop_expand``, the
swaps, ``broadcast_gate``, ``float_hardsigmoid`` and ``relu6_hswish`` (h_swish as ADD with
RELU6 and MUL, not HARD_SWISH): litert-torch's layout pass converts them without a
TRANSPOSE and XNNPACK runs them in one partition in fp32 and in static int8 (AVERAGE_POOL_2D
and HARD_SWISH are not delegated in int8; ``global_strip_pool`` would add TRANSPOSE pairs;
``resize_gate``'s RESIZE_NEAREST_NEIGHBOR is not delegated; ``matmul_pool`` and
``gate_once`` leave TRANSPOSE pairs). ``ncnn``
is the ``xnnpack`` list without ``global_strip_pool`` (a dynamic strip pool stays a ``mean``, ncnn's
``Reduction``) and with ``stem_before_pool`` (dynamic traces: the stem's 1x1 conv and batch
norm run on ``x`` once and both means read their ``mip`` channels, not ``x``'s ``C``);
measured fastest for ncnn by ``benchmarks/ncnn_forms.py``. ``TARGETS``
maps each ONNX runtime to the form measured fastest there (``benchmarks/target_forms.py``):
``ort-x86`` (blocked NCHWc layout, the default) to ``resize_pad`` (``pad_mip`` and
``resize_gate``: nothing leaves the blocked layout), ``ort-plain`` (plain NCHW) to
``matmul_pool`` (strip pools as MatMul). ``resize`` (``resize_pad`` without ``pad_mip``)
serves the benchmarks only. ``skip`` leaves named passes out (ablations); the results say
per pass and per block what changed and why the rest was skipped.

``rewrite`` edits a copy of an `ExportedProgram`, ``rewrite_model`` a copy of an ONNX
model; the input is untouched. Both are idempotent: a rewritten graph has no concat left
for the matcher.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic

import onnx
import onnx_ir as ir
from torch.export import ExportedProgram
from torch.fx import Node

from ca_export.errors import BadInputError
from ca_export.patterns import CABlock, Rejection, find
from ca_export.patterns.aten import AtenView
from ca_export.patterns.onnx_proto import OnnxView
from ca_export.patterns.view import GraphView, OpT, ValueT
from ca_export.rewrites.broadcast_gate import broadcast_gate
from ca_export.rewrites.distribute_stem import distribute_stem
from ca_export.rewrites.drop_expand import drop_expand
from ca_export.rewrites.float_hardsigmoid import float_hardsigmoid
from ca_export.rewrites.gate_once import gate_once
from ca_export.rewrites.global_strip_pool import global_strip_pool
from ca_export.rewrites.hardswish import fuse_hardswish
from ca_export.rewrites.matmul_pool import matmul_pool
from ca_export.rewrites.pad_mip import pad_mip
from ca_export.rewrites.passes import GraphPass, Pass, PassResult, run
from ca_export.rewrites.pool_to_reduce import pool_to_reduce
from ca_export.rewrites.relu6_hswish import relu6_hswish
from ca_export.rewrites.resize_gate import resize_gate
from ca_export.rewrites.size_to_scale import size_to_scale
from ca_export.rewrites.square_pow import square_pow
from ca_export.rewrites.stem_before_pool import stem_before_pool
from ca_export.rewrites.strip_mean import strip_mean
from ca_export.rewrites.swap_as_permute import swap_as_permute
from ca_export.rewrites.swap_as_view import swap_as_view

PASSES = {
    p.name: p
    for p in (
        Pass("pool_to_reduce", pool_to_reduce, "strip pools as averages right at every size"),
        Pass("distribute_stem", distribute_stem, "the shared stem copied per branch"),
        Pass("hardswish", fuse_hardswish, "a written-out h_swish as one op"),
        Pass("drop_expand", drop_expand, "no expand on the gates"),
        Pass("gate_once", gate_once, "x * (a_h @ a_w): one same-shape multiply"),
        Pass("swap_as_view", swap_as_view, "the seed quirk's axis swap as one view"),
        Pass("broadcast_gate", broadcast_gate, "x * a_h * a_w: two broadcasting multiplies"),
        Pass("pad_mip", pad_mip, "the bottleneck zero-padded to a multiple of 16 channels"),
        Pass("resize_gate", resize_gate, "gates expanded by nearest Resize, same-shape Muls"),
        Pass("matmul_pool", matmul_pool, "strip pools as MatMul with a 1/W (1/H) vector"),
        Pass("global_strip_pool", global_strip_pool, "a dynamic strip pool as a global mean"),
        Pass("swap_as_permute", swap_as_permute, "the seed quirk's axis swap as one permute"),
        Pass("float_hardsigmoid", float_hardsigmoid, "hard-sigmoid gates with float constants"),
        Pass("strip_mean", strip_mean, "strip pools as means over their axis at every size"),
        Pass("relu6_hswish", relu6_hswish, "a written-out h_swish as (relu6(x + 3) * x) / 6"),
        Pass("stem_before_pool", stem_before_pool, "the stem's conv/bn on x, strip means after"),
    )
}
SIZE_TO_SCALE = GraphPass(
    "size_to_scale", size_to_scale, "size-driven integer-ratio upsamples by scale factor"
)
"""Not a CA rewrite: Core ML's dynamic traces need it (``scale_upsamples``)."""
SQUARE_POW = GraphPass("square_pow", square_pow, "x ** 2 as x * x")
"""Not a CA rewrite: litert-torch cannot legalize ``tfl.pow`` (``square_pows``)."""
COMMON = ("pool_to_reduce", "distribute_stem", "hardswish", "drop_expand")
XNNPACK = (
    *COMMON,
    "global_strip_pool",
    "swap_as_view",
    "swap_as_permute",
    "broadcast_gate",
    "float_hardsigmoid",
)
"""The passes measured fastest for XNNPACK under ExecuTorch; LiteRT's ``litert`` form
differs where litert-torch's conversion and XNNPACK's int8 coverage ask for it."""
FORMS: dict[str, tuple[str, ...]] = {
    "onnx": (*COMMON, "gate_once"),
    "xnnpack": XNNPACK,
    "litert": (
        "strip_mean",
        "distribute_stem",
        "drop_expand",
        "swap_as_view",
        "swap_as_permute",
        "broadcast_gate",
        "float_hardsigmoid",
        "relu6_hswish",
    ),
    "ncnn": (
        *COMMON,
        "stem_before_pool",
        "swap_as_view",
        "swap_as_permute",
        "broadcast_gate",
        "float_hardsigmoid",
    ),
    "resize": (*COMMON, "gate_once", "resize_gate"),
    "resize_pad": (*COMMON, "pad_mip", "gate_once", "resize_gate"),
    "matmul_pool": ("pool_to_reduce", "matmul_pool", *COMMON[1:], "gate_once"),
}
"""Target forms of the rewritten block: the passes each runs, in order."""

TARGETS: dict[str, str] = {
    "ort-x86": "resize_pad",
    "ort-plain": "matmul_pool",
}
"""Runtimes ``onnx`` and ``optimize`` emit for, and the form measured fastest on each
(``benchmarks/target_forms.py``): ``ort-x86`` is ONNX Runtime with its blocked NCHWc layout
(x86, the default session); ``ort-plain`` a runtime that runs plain NCHW (ONNX Runtime on
ARM, or with ``ORT_ENABLE_EXTENDED``)."""
DEFAULT_TARGET = "ort-x86"


def form_of(target: str) -> str:
    """The form ``target`` is emitted in."""
    if target not in TARGETS:
        raise BadInputError(f"unknown target {target!r}; expected one of {sorted(TARGETS)}")
    return TARGETS[target]


def passes_for(form: str, skip: Sequence[str] = ()) -> list[Pass]:
    """The passes of ``form`` without those named in ``skip``."""
    if form not in FORMS:
        raise BadInputError(f"unknown rewrite form {form!r}; expected one of {sorted(FORMS)}")
    unknown = sorted(set(skip) - set(PASSES))
    if unknown:
        raise BadInputError(f"unknown rewrite pass {unknown[0]!r}; passes: {', '.join(PASSES)}")
    return [PASSES[name] for name in FORMS[form] if name not in skip]


@dataclass
class RewriteResult(Generic[OpT, ValueT]):
    """What the rewrite found, and what each pass did to it."""

    blocks: list[CABlock[OpT, ValueT]]
    rejections: list[Rejection]
    passes: list[PassResult]
    removed: int

    @property
    def modified(self) -> bool:
        """Whether any pass changed the graph."""
        return any(p.modified for p in self.passes)


@dataclass
class ProgramRewrite(RewriteResult[Node, Node]):
    """``rewrite``'s result: the rewritten copy of the program."""

    program: ExportedProgram


@dataclass
class ModelRewrite(RewriteResult[ir.Node, ir.Value]):
    """``rewrite_model``'s result: the rewritten copy of the ONNX model."""

    model: onnx.ModelProto
    shape_error: str | None


def _apply(
    view: GraphView[OpT, ValueT], form: str, static: bool, skip: Sequence[str]
) -> RewriteResult[OpT, ValueT]:
    """Find the blocks and run the form's passes on them."""
    passes = passes_for(form, skip)
    blocks, rejections = find(view)
    results = run(view, blocks, passes, static)[0] if blocks else []
    removed = view.finish() if blocks else 0
    return RewriteResult(blocks, rejections, results, removed)


def _copy(program: ExportedProgram) -> ExportedProgram:
    """A deep copy whose placeholders keep their names (a copy renames ``input`` to ``input_1``,
    which no longer matches the graph signature)."""
    copied = copy.deepcopy(program)
    for node in copied.graph.nodes:
        if node.op == "placeholder" and node.name != node.target:
            node.name = node.target
    copied.graph_module.recompile()
    return copied


def rewrite(
    program: ExportedProgram, static: bool, form: str = "onnx", skip: Sequence[str] = ()
) -> ProgramRewrite:
    """Rewrite every CA block of a copy of ``program`` into ``form``."""
    program = _copy(program)
    done = _apply(AtenView(program.graph), form, static, skip)
    return ProgramRewrite(**vars(done), program=program)


def rewrite_model(
    model: onnx.ModelProto, static: bool, form: str = "onnx", skip: Sequence[str] = ()
) -> ModelRewrite:
    """Rewrite every CA block of a copy of ``model`` into ``form``."""
    view = OnnxView(model)
    done = _apply(view, form, static, skip)
    if done.blocks:
        out = view.to_proto()
    else:
        out = onnx.ModelProto()
        out.CopyFrom(model)
    return ModelRewrite(**vars(done), model=out, shape_error=view.shape_error)


def scale_upsamples(program: ExportedProgram) -> PassResult:
    """Run ``size_to_scale`` on ``program`` in place (symbolic sizes: not static)."""
    view = AtenView(program.graph)
    (result,), _ = run(view, [], [SIZE_TO_SCALE], static=False)
    if result.modified:
        view.finish()
    return result


def square_pows(program: ExportedProgram) -> PassResult:
    """Run ``square_pow`` on ``program`` in place."""
    view = AtenView(program.graph)
    (result,), _ = run(view, [], [SQUARE_POW], static=True)
    if result.modified:
        view.finish()
    return result
