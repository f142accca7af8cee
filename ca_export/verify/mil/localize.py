"""Where a Core ML ML program starts to diverge from PyTorch, module by module.

coremltools names each MIL value after the torch.export node it comes from (an fp16
program adds ``_cast_fp16``; a conv fused with its batch norm keeps the batch norm's
name, which is the module's output). The model is traced again at the input's size;
a module's output is the one node of its ``nn_module_stack`` scope that is used
outside it. Every module that ran once is compared, in the order the modules ran,
with the evaluator's value of that name (``evaluate(..., every=True)``); the first
past the bound is named. Modules whose value was fused away or renamed are skipped.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ca_export.errors import BadInputError
from ca_export.tracing import trace
from ca_export.verify.localize import Localization, compare_layers, torch_module_outputs
from ca_export.verify.mil.program import MilProgram, evaluate

SUFFIXES = ("", "_cast_fp16")


def module_exits(model: nn.Module, shape: tuple[int, ...]) -> dict[str, str]:
    """For each module scope of ``model``'s trace, the single node that leaves it."""
    graph = trace(model, shape, dynamic=False).program.graph
    members: dict[str, set[str]] = {}
    for node in graph.nodes:
        for path, _ in (node.meta.get("nn_module_stack") or {}).values():
            members.setdefault(path, set()).add(node.name)
    by_name = {node.name: node for node in graph.nodes}
    exits = {}
    for path, names in members.items():
        leaving = {
            name for name in names if any(user.name not in names for user in by_name[name].users)
        }
        if len(leaving) == 1:
            exits[path] = leaving.pop()
    return exits


def localize_mil(
    model: nn.Module,
    program: MilProgram,
    x: np.ndarray,
    model_input: torch.Tensor,
    bound: float,
    ca_modules: set[str],
) -> Localization:
    """Compare every matchable module output of the program on ``x`` with ``model``'s.

    ``model_input`` is what PyTorch gets for ``x`` (they differ for image inputs).
    """
    try:
        exits = module_exits(model, tuple(model_input.shape))
    except BadInputError as err:
        return Localization(note=f"the model does not trace for localisation: {err}")
    values = evaluate(program, {program.input_names[0]: x}, every=True)
    reference = torch_module_outputs(model, model_input)
    pairs = []
    for name, expected in reference.items():
        node = exits.get(name)
        found = next((values[node + s] for s in SUFFIXES if node and node + s in values), None)
        if found is not None:
            pairs.append((name, expected, found))
    return compare_layers(pairs, bound, ca_modules, "the program")
