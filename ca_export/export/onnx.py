"""Emit ONNX from an `ExportedProgram` with the dynamo-based exporter, then simplify.

The exporter records each node's module scope; ``attribute`` uses it to tell which
ONNX nodes a CA block produced, so that the structural check counts per block.
"""

from __future__ import annotations

import ast
import contextlib
import io
import logging
import re
from collections import Counter

import onnx
import onnx_ir as ir
import torch
from torch.export import ExportedProgram

from ca_export.errors import BadInputError, CheckFailedError
from ca_export.onnx_graph import owners
from ca_export.patterns.coordatt import CA_ONLY_OPS
from ca_export.tracing import Traced

SCOPE_KEY = "pkg.torch.onnx.name_scopes"


def emit(program: ExportedProgram, traced: Traced, opset: int) -> onnx.ModelProto:
    """Export ``program`` to an ONNX model at opset ``opset`` with the traced names."""
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            exported = torch.onnx.export(
                program,
                (traced.example,),
                dynamo=True,
                opset_version=opset,
                input_names=traced.input_names,
                output_names=traced.output_names,
                optimize=True,
                verbose=False,
            )
    except Exception as err:
        raise BadInputError(f"ONNX export failed at opset {opset}: {_root_cause(err)}") from None
    return exported.model_proto


def _root_cause(err: BaseException) -> str:
    """The innermost exception's type and first line (the exporter wraps the real reason)."""
    while err.__cause__ is not None:
        err = err.__cause__
    lines = [line for line in str(err).strip().splitlines() if line.strip()]
    return re.sub(r"\x1b\[[0-9;]*m", "", f"{type(err).__name__}: {lines[0] if lines else ''}")


def simplify(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[str]]:
    """onnxsim's simplification; on failure the model is kept as it is, with a warning."""
    import onnxsim

    try:
        simplified, ok = onnxsim.simplify(model, check_n=0)
    except Exception as err:
        first = (str(err).strip().splitlines() or [""])[0]
        return model, [f"onnxsim failed, kept the unsimplified model: {first}"]
    if not ok:
        return model, ["onnxsim could not validate its result; kept the unsimplified model"]
    return simplified, []


def keep_scopes(model: onnx.ModelProto, raw: onnx.ModelProto) -> None:
    """Keep only each node's module scope, copied from ``raw`` by node name.

    Simplification drops node metadata but keeps names; scopes let later checks and
    ``verify`` tell which module a node belongs to. Stack traces (machine paths) go.
    """
    found = {n.name: scopes(n) for n in raw.graph.node}
    for node in model.graph.node:
        del node.metadata_props[:]
        if found.get(node.name):
            node.metadata_props.add(key=SCOPE_KEY, value=repr(found[node.name]))


def check(model: onnx.ModelProto) -> None:
    """The ONNX checker with shape inference; a failure is a failed check."""
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as err:
        first = (str(err).strip().splitlines() or [""])[0]
        raise CheckFailedError(f"the ONNX checker rejects the model: {first}") from None


def scopes(node: onnx.NodeProto) -> list[str]:
    """The module paths an ONNX node was emitted under (from the exporter's metadata)."""
    for prop in node.metadata_props:
        if prop.key == SCOPE_KEY:
            return [str(s) for s in ast.literal_eval(prop.value)]
    return []


def attribute(model: onnx.ModelProto, modules: list[str]) -> dict[str, int]:
    """Map ONNX node names to the index of the CA block (by owning module) they belong to.

    Nodes the exporter emitted under a block's module belong to it; so do the unscoped
    nodes (the optimizer's Split, shape arithmetic) that ``onnx_graph.owners`` gives it.
    Read this on the model before simplification, which drops scopes but keeps node names.
    """
    graph = ir.from_proto(model).graph
    seeds: dict[ir.Node, int] = {}
    for node in graph:
        found = [i for i, module in enumerate(modules) if module in _scopes(node)]
        if found:
            seeds[node] = found[-1]
    owner = owners.grow(graph, seeds, lambda node: not _scopes(node))
    return {node.name: block for node, block in owner.items() if node.name}  # type: ignore[misc]


def _scopes(node: ir.Node) -> list[str]:
    """The module paths an onnx_ir node was emitted under."""
    found = node.metadata_props.get(SCOPE_KEY)
    return [str(s) for s in ast.literal_eval(found)] if found else []


def op_counts(model: onnx.ModelProto) -> dict[str, int]:
    """Node counts by op type, most frequent first."""
    return dict(Counter(n.op_type for n in model.graph.node).most_common())


def ca_only_nodes(model: onnx.ModelProto, owner: dict[str, int], block: int) -> dict[str, int]:
    """Counts of Transpose/Concat/Split/Slice/Shape/Gather that belong to one block."""
    nodes = model.graph.node
    return dict(
        Counter(n.op_type for n in nodes if n.op_type in CA_ONLY_OPS and owner.get(n.name) == block)
    )


def set_metadata(model: onnx.ModelProto, entries: dict[str, str]) -> None:
    """Replace the model's metadata_props with ``entries`` (sorted for stable output)."""
    del model.metadata_props[:]
    for key in sorted(entries):
        model.metadata_props.add(key=key, value=entries[key])
