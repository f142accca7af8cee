"""Capture a model with `torch.export`, with static or dynamic batch/H/W."""

from __future__ import annotations

from dataclasses import dataclass

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


def trace(model: nn.Module, input_shape: tuple[int, ...], dynamic: bool) -> Traced:
    """Export ``model`` on one image tensor; with ``dynamic``, batch, H and W are symbolic.

    A dynamic trace uses batch 2 at least, since `torch.export` specialises size-1 dims.
    """
    if dynamic and input_shape[0] == 1:
        input_shape = (2, *input_shape[1:])
    example = example_input(input_shape)
    dynamic_shapes = ({0: Dim.DYNAMIC, 2: Dim.DYNAMIC, 3: Dim.DYNAMIC},) if dynamic else None
    try:
        with torch.no_grad():
            program = torch.export.export(model, (example,), dynamic_shapes=dynamic_shapes)
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
    names = ["output"] if outputs == 1 else [f"output_{i}" for i in range(outputs)]
    return Traced(program, example, dynamic, [str(inputs[0])], names)
