"""Capture a model with `torch.export`, with static or dynamic batch/H/W.

The user's module is never traced itself: `torch.export` runs a deep copy, so a
``forward`` that caches tensors on the module (as YOLO detection heads cache anchors)
leaves its tracing tensors on the copy. The copy returns its outputs as a flat tuple
of tensors (``tensor_leaves``), the same order the gates read the original's outputs in.

A bounded trace (for ExecuTorch, whose memory plan needs upper bounds) keeps the batch
static and bounds H and W; where the model needs multiples (e.g. a stride-32 neck that
concatenates upsampled maps), torch.export's own suggested fixes
(``refine_dynamic_shapes_from_suggested_fixes``) make each a multiple, ``32 * Dim``.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import operator
import os
import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.export import Dim, ExportedProgram
from torch.export.dynamic_shapes import refine_dynamic_shapes_from_suggested_fixes

from ca_export.errors import BadInputError
from ca_export.fx import shape


@dataclass(frozen=True)
class Bounds:
    """The sizes H and W may take in a bounded dynamic trace."""

    h: tuple[int, ...]
    w: tuple[int, ...]

    def describe(self, axis: str) -> dict[str, int]:
        """The smallest and largest size of ``axis`` ("h" or "w") and the step between."""
        sizes = self.h if axis == "h" else self.w
        step = sizes[1] - sizes[0] if len(sizes) > 1 else 0
        return {"min": sizes[0], "max": sizes[-1], "multiple_of": step}

    def other_sizes(self, square_only: bool) -> list[tuple[int, int]]:
        """Two sizes to gate besides the traced one: the largest H with a middle W and the
        reverse, or, for a square-only model, the largest and a middle square size."""
        if square_only:
            common = sorted(set(self.h) & set(self.w))
            middle = common[len(common) // 2]
            return [(common[-1], common[-1]), (middle, middle)]
        h, w = self.h[len(self.h) // 2], self.w[len(self.w) // 2]
        return [(self.h[-1], w), (h, self.w[-1])]


@dataclass
class Traced:
    """An ExportedProgram (functional: decomposed, or with its in-place ops made out of
    place) and what the later stages need to know about it."""

    program: ExportedProgram
    example: torch.Tensor
    dynamic: bool
    input_names: list[str]
    output_names: list[str]
    notices: list[str] = field(default_factory=list)
    bounds: Bounds | None = None

    @property
    def square_only(self) -> bool:
        """Whether the traced program ties H to W (the model only runs on square inputs)."""
        dims = shape(self._input_node())
        return self.dynamic and str(dims[2]) == str(dims[3])

    def _input_node(self) -> torch.fx.Node:
        node: torch.fx.Node = next(
            n for n in self.program.graph.nodes if n.name == self.input_names[0]
        )
        return node


def example_input(input_shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    """A seeded standard-normal tensor of the given shape."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(*input_shape, generator=generator)


def tensor_leaves(out: Any) -> tuple[list[torch.Tensor], list[str]]:
    """The tensors in a model's output, in order, and a description of each other leaf.

    Tuples, lists, dicts (in key order as built), namedtuples and dataclasses are
    walked; ``None``, numbers and strings are skipped.
    """
    tensors: list[torch.Tensor] = []
    skipped: list[str] = []

    def walk(item: Any, where: str) -> None:
        if isinstance(item, torch.Tensor):
            tensors.append(item)
        elif isinstance(item, Mapping):
            for key, value in item.items():
                walk(value, f"{where}[{key!r}]")
        elif isinstance(item, (tuple, list)):
            for i, value in enumerate(item):
                walk(value, f"{where}[{i}]")
        elif dataclasses.is_dataclass(item) and not isinstance(item, type):
            for f in dataclasses.fields(item):
                walk(getattr(item, f.name), f"{where}.{f.name}")
        else:
            skipped.append(f"{where} ({type(item).__name__})")

    walk(out, "output")
    return tensors, skipped


def output_arrays(out: Any) -> list[np.ndarray]:
    """A model's output tensors as arrays, in the order the traced program returns them.

    A tensor subclass is read as a plain tensor; one that holds no data (a tracing
    tensor a model kept from an earlier trace) is a clear error.
    """
    arrays = []
    for i, tensor in enumerate(tensor_leaves(out)[0]):
        tensor = tensor.detach()
        try:
            if type(tensor) is not torch.Tensor:
                tensor = tensor.as_subclass(torch.Tensor)
            arrays.append(tensor.numpy())
        except Exception:
            raise BadInputError(
                f"output tensor {i} is a {type(tensor).__name__} without data; "
                "ca-export cannot compare it"
            ) from None
    return arrays


def traceable_copy(model: nn.Module) -> tuple[nn.Module, list[str]]:
    """A deep copy of ``model`` whose forward (same signature, so the same input names)
    returns its output tensors as a flat tuple."""
    clone = copy.deepcopy(model)
    forward = clone.forward
    skipped: list[str] = []

    def flat_forward(self: nn.Module, *args: Any, **kwargs: Any) -> tuple[torch.Tensor, ...]:
        tensors, others = tensor_leaves(forward(*args, **kwargs))
        skipped[:] = others
        return tuple(tensors)

    own = inspect.signature(forward)
    this = inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)
    # Functions take attributes; inspect reads __signature__ (PEP 362).
    flat_forward.__signature__ = own.replace(  # type: ignore[attr-defined]
        parameters=[this, *own.parameters.values()]
    )
    clone.forward = types.MethodType(flat_forward, clone)
    return clone, skipped


BOUND_LOW = 64
"""The smallest H and W of a bounded trace (or the traced size, if smaller); the largest is
twice the traced size. (At 32 a stride-32 network's last map is 1x1, a size torch.export
specialises, so the range must start above it.)"""

REFINES = 3
"""How many times a bounded trace is refined by torch.export's suggested fixes."""


def _bounded_shapes(input_shape: tuple[int, ...]) -> tuple[dict[int, Any]]:
    """H and W each in [min(64, size), 2 * size]; the batch static."""
    h, w = input_shape[2:]
    return (
        {
            2: Dim("h", min=min(BOUND_LOW, h), max=2 * h),
            3: Dim("w", min=min(BOUND_LOW, w), max=2 * w),
        },
    )


def _within(spec: Any, input_shape: tuple[int, ...]) -> Any:
    """A refined spec whose multiples (``m * Dim``) keep the bounds: torch.export suggests
    such a root dim without its lower bound (``Dim('_h', max=4)``)."""
    dims = dict(spec[0])
    for axis, dim in dims.items():
        root = getattr(dim, "root", None)
        if root is None:
            continue
        offset, multiple = dim.fn(0), dim.fn(1) - dim.fn(0)
        low = min(BOUND_LOW, input_shape[axis])
        least = max(root.min, -(-(low - offset) // multiple))
        dims[axis] = multiple * Dim(root.__name__, min=least, max=root.max) + offset
    return (dims,)


def _export(
    module: nn.Module, example: torch.Tensor, dynamic_shapes: Any, bounded: bool
) -> ExportedProgram:
    """`torch.export`; a bounded trace the model constrains further (multiples, a smaller
    range) is exported again with torch.export's suggested fixes."""
    for _ in range(REFINES):
        try:
            return torch.export.export(module, (example,), dynamic_shapes=dynamic_shapes)
        except torch._dynamo.exc.UserError as err:
            if not bounded or "Suggested fixes" not in err.msg:
                raise
            refined = refine_dynamic_shapes_from_suggested_fixes(err.msg, dynamic_shapes)
            dynamic_shapes = _within(refined, tuple(example.shape))
    return torch.export.export(module, (example,), dynamic_shapes=dynamic_shapes)


def _sizes(program: ExportedProgram, size: Any) -> tuple[int, ...]:
    """Every value a traced input size takes over its symbol's range (an int: itself)."""
    if isinstance(size, int):
        return (size,)
    expr = size.node.expr
    (symbol,) = expr.free_symbols
    span = program.range_constraints[symbol]
    return tuple(
        sorted({int(expr.subs(symbol, k)) for k in range(int(span.lower), int(span.upper) + 1)})
    )


def _functional_twin(op: torch._ops.OpOverload) -> torch._ops.OpOverload | None:
    """The out-of-place overload of an in-place ATen op (``hardtanh_`` -> ``hardtanh``,
    ``transpose_`` -> ``transpose.int``): same name without the underscore, same arguments."""
    name = op._schema.name.split("::")[-1]
    packet = getattr(torch.ops.aten, name.removesuffix("_"), None)
    if not name.endswith("_") or packet is None:
        return None
    types = [str(a.type) for a in op._schema.arguments]
    for overload in packet.overloads():
        candidate: torch._ops.OpOverload = getattr(packet, overload)
        if [str(a.type) for a in candidate._schema.arguments] == types:
            return candidate
    return None


def _aliases(node: torch.fx.Node) -> bool:
    """Whether the node's value may share memory with another value: a graph input,
    parameter or buffer, or the result of a view op (a split's piece included)."""
    if node.op != "call_function":
        return True
    # A getitem's first argument is a Node.
    op = node.args[0].target if node.target is operator.getitem else node.target  # type: ignore[union-attr]
    if not isinstance(op, torch._ops.OpOverload):
        return True
    return any(r.alias_info is not None for r in op._schema.returns)


def out_of_place(program: ExportedProgram) -> bool:
    """Make every in-place op of ``program`` out of place, if each one is safe to: it writes
    only its first argument, a fresh tensor (not aliased, or the result of an in-place op
    made out of place) that nothing else reads. Returns False, changing nothing, when one
    is not, so that the caller functionalizes the program with ``run_decompositions``."""
    twins: dict[torch.fx.Node, torch._ops.OpOverload] = {}
    for node in program.graph.nodes:
        op = node.target
        if node.op != "call_function" or not isinstance(op, torch._ops.OpOverload):
            continue
        written = [a.alias_info is not None and a.alias_info.is_write for a in op._schema.arguments]
        if not any(written):
            continue
        twin = _functional_twin(op)
        source = node.args[0] if node.args else None
        if (
            twin is None
            or written != [True] + [False] * (len(written) - 1)
            or not isinstance(source, torch.fx.Node)
            or (source not in twins and _aliases(source))
            or list(source.users) != [node]
        ):
            return False
        twins[node] = twin
    for node, twin in twins.items():
        node.target = twin
    if twins:
        program.graph_module.recompile()
    return True


def trace(
    model: nn.Module,
    input_shape: tuple[int, ...],
    dynamic: bool,
    bounded: bool = False,
    decompose: bool = True,
) -> Traced:
    """Export a copy of ``model`` on one image tensor; with ``dynamic``, batch, H and W are
    symbolic, or with ``bounded`` too, H and W only, within bounds (see ``Bounds``).
    ``model`` itself is not run or changed.

    With ``decompose`` the program is decomposed to the inference IR (Core ML and
    ExecuTorch need it); without, it stays in torch.export's IR with its in-place ops made
    out of place (``out_of_place``), for the ONNX exporter, which decomposes it itself:
    one decomposition instead of two. A program whose in-place ops cannot all be made out
    of place safely is decomposed anyway.

    A dynamic trace uses batch 2 at least, since `torch.export` specialises size-1 dims.
    """
    bounded = dynamic and bounded
    if dynamic and not bounded and input_shape[0] == 1:
        input_shape = (2, *input_shape[1:])
    example = example_input(input_shape)
    dynamic_shapes: Any = None
    if bounded:
        dynamic_shapes = _bounded_shapes(input_shape)
    elif dynamic:
        dynamic_shapes = ({0: Dim.DYNAMIC, 2: Dim.DYNAMIC, 3: Dim.DYNAMIC},)
    try:
        clone, skipped = traceable_copy(model)
        with torch.no_grad():
            program = _export(clone, example, dynamic_shapes, bounded)
        if decompose or not out_of_place(program):
            program = program.run_decompositions({})
    except Exception as err:
        first = (str(err).strip().splitlines() or [""])[0]
        shape_text = ",".join(map(str, input_shape))
        raise BadInputError(
            f"torch.export cannot trace the model at {shape_text}"
            f"{' with dynamic batch/H/W' if dynamic and not bounded else ''}"
            f"{' with bounded H/W' if bounded else ''}: {type(err).__name__}: {first}"
        ) from None
    inputs = list(program.graph_signature.user_inputs)
    if len(inputs) != 1:
        raise BadInputError(f"the model takes {len(inputs)} inputs; ca-export handles one image")
    outputs = len(program.graph_signature.user_outputs)
    if outputs == 0:
        raise BadInputError("the model returns no tensor; ca-export compares tensor outputs")
    names = ["output"] if outputs == 1 else [f"output_{i}" for i in range(outputs)]
    notices = [f"model output {s} is not a tensor; it is left out" for s in skipped]
    bounds = None
    if bounded:
        size = next(n for n in program.graph.nodes if n.name == str(inputs[0])).meta["val"].shape
        bounds = Bounds(_sizes(program, size[2]), _sizes(program, size[3]))
    return Traced(program, example, dynamic, [str(inputs[0])], names, notices, bounds)


MEMORY_FACTOR = 8
"""Peak bytes per byte of the largest fp32 activation: its layer's input and output in
PyTorch (2), again in float64 for the noise reference (4), and in ONNX Runtime (2)."""


def largest_activation(model: nn.Module, input_shape: tuple[int, ...]) -> int | None:
    """Bytes (fp32) of the largest tensor a leaf module produces, from a meta-device copy
    (no memory is allocated); None where the model cannot run on the meta device."""
    try:
        clone = copy.deepcopy(model).to("meta")
    except Exception:
        return None
    largest = 4 * int(np.prod(input_shape))

    def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
        nonlocal largest
        for tensor in tensor_leaves(output)[0]:
            largest = max(largest, 4 * tensor.numel())

    leaves = [m for m in clone.modules() if next(m.children(), None) is None]
    handles = [m.register_forward_hook(hook) for m in leaves]
    try:
        with torch.no_grad():
            clone(torch.empty(input_shape, device="meta"))
    except Exception:
        return None
    finally:
        for handle in handles:
            handle.remove()
    return largest


def available_memory() -> int:
    """Bytes of memory available to a new allocation (MemAvailable, else physical)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def guard_memory(
    model: nn.Module, input_shape: tuple[int, ...], option: str = "--input-shape"
) -> None:
    """Refuse (exit 2) an input shape whose run would need more memory than is available;
    ``option`` is the one that asked for the shape."""
    largest = largest_activation(model, input_shape)
    if largest is None:
        return
    need, have = MEMORY_FACTOR * largest, available_memory()
    if need > have:
        shape_text = ",".join(map(str, input_shape))
        raise BadInputError(
            f"input shape {shape_text} needs about {need / 2**30:.1f} GiB "
            f"({MEMORY_FACTOR}x its largest activation, {largest / 2**30:.1f} GiB) and "
            f"{have / 2**30:.1f} GiB is available; use a smaller {option} "
            "or --no-memory-check"
        )
