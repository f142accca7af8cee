"""Find where an artifact's outputs start to diverge from PyTorch, module by module.

PyTorch side: a forward hook on every module records its output. ONNX side: each
node carries the module scopes it was exported under; a module's output is the one
value that leaves the set of nodes in its scope. Both are compared in the order the
modules ran; the first module whose error passes the bound is where it starts.

ncnn keeps no module names: its CA blocks are found in the param file and matched to the
model's (``NcnnRunner.locate_blocks``), and each is fed the model's own input to it, so
each block's error is its own (``localize_ncnn``).
"""

from __future__ import annotations

import ast
import copy
from dataclasses import dataclass, field

import numpy as np
import onnx
import torch
from torch import nn
from torch.export import ExportedProgram

from ca_export.errors import CheckFailedError
from ca_export.export.ncnn import ca_blocks
from ca_export.export.onnx import SCOPE_KEY
from ca_export.patterns import AtenBlock
from ca_export.verify.artifacts import OnnxArtifact
from ca_export.verify.metrics import relative_error
from ca_export.verify.ncnn_runtime import NcnnRunner
from ca_export.verify.parity import block_values
from ca_export.verify.runtime import cpu_session


@dataclass
class LayerError:
    """One module's output error, in the order the modules ran."""

    module: str
    rel_err: float
    diverged: bool
    ca_block: bool


@dataclass
class Localization:
    """Per-module errors and the first module past the bound (None if none is)."""

    layers: list[LayerError] = field(default_factory=list)
    first_divergence: str | None = None
    note: str = ""


def scope_exits(model: onnx.ModelProto) -> dict[str, str]:
    """For each module scope, the single value that leaves it (scopes with several skipped)."""
    members: dict[str, set[int]] = {}
    for index, node in enumerate(model.graph.node):
        for prop in node.metadata_props:
            if prop.key == SCOPE_KEY:
                for scope in ast.literal_eval(prop.value)[1:-1]:
                    members.setdefault(str(scope), set()).add(index)
    consumers: dict[str, set[int]] = {}
    for index, node in enumerate(model.graph.node):
        for name in node.input:
            consumers.setdefault(name, set()).add(index)
    graph_outputs = {o.name for o in model.graph.output}
    exits = {}
    for scope, nodes in members.items():
        leaving = {
            out
            for i in nodes
            for out in model.graph.node[i].output
            if out in graph_outputs or consumers.get(out, set()) - nodes
        }
        if len(leaving) == 1:
            exits[scope] = leaving.pop()
    return exits


def torch_module_outputs(model: nn.Module, x: torch.Tensor) -> dict[str, np.ndarray]:
    """Outputs of every module that ran exactly once and returned one tensor, in run order."""
    outputs: dict[str, np.ndarray] = {}
    calls: dict[str, int] = {}
    handles = []
    for name, module in model.named_modules():
        if not name:
            continue

        def hook(_: nn.Module, __: object, out: object, name: str = name) -> None:
            calls[name] = calls.get(name, 0) + 1
            if isinstance(out, torch.Tensor):
                outputs[name] = out.detach().numpy().copy()

        handles.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad():
            model(x)
    finally:
        for handle in handles:
            handle.remove()
    return {name: value for name, value in outputs.items() if calls[name] == 1}


def localize(
    model: nn.Module,
    artifact: OnnxArtifact,
    x: torch.Tensor,
    bound: float,
    ca_modules: set[str],
) -> Localization:
    """Compare every matchable module output of ``artifact`` with ``model``'s on ``x``."""
    exits = scope_exits(artifact.model)
    if not exits:
        return Localization(
            note="the artifact carries no module scopes (not exported by ca-export)"
        )
    reference = torch_module_outputs(model, x)
    matched = [(name, exits[name]) for name in reference if name in exits]
    if not matched:
        return Localization(
            note="no module output could be matched between PyTorch and the artifact"
        )
    probe = copy.deepcopy(artifact.model)
    known = {o.name for o in probe.graph.output}
    elem = probe.graph.input[0].type.tensor_type.elem_type
    for _, value in matched:
        if value not in known:
            probe.graph.output.append(onnx.helper.make_tensor_value_info(value, elem, None))
            known.add(value)
    session = cpu_session(probe, "the probed artifact", error=CheckFailedError)
    values = list(dict.fromkeys(value for _, value in matched))
    got = dict(
        zip(
            values,
            session.run(values, {artifact.input_name: x.numpy().astype(artifact.dtype)}),
            strict=True,
        )
    )
    pairs = [(name, reference[name], got[value]) for name, value in matched]
    return compare_layers(pairs, bound, ca_modules, "the artifact")


def compare_layers(
    pairs: list[tuple[str, np.ndarray, np.ndarray]], bound: float, ca_modules: set[str], what: str
) -> Localization:
    """Each module's (PyTorch, artifact) values in run order; the first past ``bound`` diverges.

    Pairs whose shapes differ (a value a conversion changed) are passed over.
    """
    result = Localization()
    for name, expected, found in pairs:
        if found.shape != expected.shape:
            continue
        error = relative_error(expected, found.astype(np.float32))
        in_ca = any(name == m or name.startswith(m + ".") for m in ca_modules)
        result.layers.append(LayerError(name, error, error > bound, in_ca))
        if error > bound and result.first_divergence is None:
            result.first_divergence = name
    if not result.layers:
        result.note = f"no module output could be matched between PyTorch and {what}"
    return result


def localize_ncnn(
    program: ExportedProgram | None,
    blocks: list[AtenBlock],
    runner: NcnnRunner,
    x: torch.Tensor,
    bound: float,
) -> Localization:
    """Each CA block of an ncnn model on ``x``'s first sample, fed the input to the block
    of ``program`` (the model's static trace at ``x``'s shape, with its ``blocks``); the
    first whose output is past ``bound`` is where the model goes wrong."""
    if program is None:
        return Localization(note="the model cannot be traced to find its CA blocks")
    if not blocks:
        return Localization(note="the model has no CA blocks to look in")
    sources = [b.source.name for b in blocks]
    located = runner.locate_blocks(ca_blocks(runner.layers), program, sources, x)
    if isinstance(located, str):
        return Localization(note=f"the CA blocks of the param file: {located}")
    values = block_values(program, set(sources) | {b.output.name for b in blocks}, x[:1])
    result = Localization(note="CA blocks only, each fed the model's input to it")
    for block, at in zip(blocks, located, strict=True):
        want = values[block.output.name].numpy()
        got = runner.run_block(at, values[block.source.name].numpy())
        error = relative_error(want, got) if got.shape == want.shape else float("inf")
        result.layers.append(LayerError(block.module, error, error > bound, True))
        if error > bound and result.first_divergence is None:
            result.first_divergence = block.module
    return result
