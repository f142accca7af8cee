"""Capture a model with `torch.export`, with static or dynamic batch/H/W.

The user's module is never traced itself: `torch.export` runs a deep copy, so a
``forward`` that caches tensors on the module (as YOLO detection heads cache anchors)
leaves its tracing tensors on the copy. The copy returns its outputs as a flat tuple
of tensors (``tensor_leaves``), the same order the gates read the original's outputs in.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
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

from ca_export.errors import BadInputError
from ca_export.fx import shape


@dataclass
class Traced:
    """A decomposed ExportedProgram and what the later stages need to know about it."""

    program: ExportedProgram
    example: torch.Tensor
    dynamic: bool
    input_names: list[str]
    output_names: list[str]
    notices: list[str] = field(default_factory=list)

    @property
    def square_only(self) -> bool:
        """Whether the traced program ties H to W (the model only runs on square inputs)."""
        dims = shape(self._input_node())
        return self.dynamic and str(dims[2]) == str(dims[3])

    def _input_node(self) -> torch.fx.Node:
        return next(n for n in self.program.graph.nodes if n.name == self.input_names[0])


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
    flat_forward.__signature__ = own.replace(  # type: ignore[attr-defined]
        parameters=[this, *own.parameters.values()]
    )
    clone.forward = types.MethodType(flat_forward, clone)  # type: ignore[method-assign]
    return clone, skipped


def trace(model: nn.Module, input_shape: tuple[int, ...], dynamic: bool) -> Traced:
    """Export a copy of ``model`` on one image tensor; with ``dynamic``, batch, H and W are
    symbolic. ``model`` itself is not run or changed.

    A dynamic trace uses batch 2 at least, since `torch.export` specialises size-1 dims.
    """
    if dynamic and input_shape[0] == 1:
        input_shape = (2, *input_shape[1:])
    example = example_input(input_shape)
    dynamic_shapes = ({0: Dim.DYNAMIC, 2: Dim.DYNAMIC, 3: Dim.DYNAMIC},) if dynamic else None
    try:
        clone, skipped = traceable_copy(model)
        with torch.no_grad():
            program = torch.export.export(clone, (example,), dynamic_shapes=dynamic_shapes)
        program = program.run_decompositions({})
    except Exception as err:
        first = (str(err).strip().splitlines() or [""])[0]
        shape_text = ",".join(map(str, input_shape))
        raise BadInputError(
            f"torch.export cannot trace the model at {shape_text}"
            f"{' with dynamic batch/H/W' if dynamic else ''}: {type(err).__name__}: {first}"
        ) from None
    inputs = list(program.graph_signature.user_inputs)
    if len(inputs) != 1:
        raise BadInputError(f"the model takes {len(inputs)} inputs; ca-export handles one image")
    outputs = len(program.graph_signature.user_outputs)
    if outputs == 0:
        raise BadInputError("the model returns no tensor; ca-export compares tensor outputs")
    names = ["output"] if outputs == 1 else [f"output_{i}" for i in range(outputs)]
    notices = [f"model output {s} is not a tensor; it is left out" for s in skipped]
    return Traced(program, example, dynamic, [str(inputs[0])], names, notices)


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


def guard_memory(model: nn.Module, input_shape: tuple[int, ...]) -> None:
    """Refuse (exit 2) an input shape whose run would need more memory than is available."""
    largest = largest_activation(model, input_shape)
    if largest is None:
        return
    need, have = MEMORY_FACTOR * largest, available_memory()
    if need > have:
        shape_text = ",".join(map(str, input_shape))
        raise BadInputError(
            f"input shape {shape_text} needs about {need / 2**30:.1f} GiB "
            f"({MEMORY_FACTOR}x its largest activation, {largest / 2**30:.1f} GiB) and "
            f"{have / 2**30:.1f} GiB is available; use a smaller --input-shape "
            "or --no-memory-check"
        )
