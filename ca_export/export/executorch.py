"""Lower an `ExportedProgram` to an ExecuTorch program (.pte) with the XNNPACK delegate.

``to_edge_transform_and_lower`` with ``XnnpackPartitioner`` puts every run of ops that
XNNPACK takes into one delegate call; whatever XNNPACK does not take stays outside
and splits the graph into segments (each split costs layout conversions on the way
out and back). ``outside_ops`` names each op left outside and the CA block it came
from: edge nodes keep the ``nn_module_stack`` of the ATen node they were made from.

ExecuTorch is an optional extra (``pip install -e ".[executorch]"``); it is imported
on first use, and its absence is one clear error.
"""

from __future__ import annotations

import contextlib
import io
import logging
import operator
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.export import ExportedProgram

from ca_export.errors import BadInputError
from ca_export.extras import Extra
from ca_export.fx import module_path, owning_block

BACKEND = "executorch-xnnpack"
DELEGATE = "executorch_call_delegate"
NO_MODULE = "_empty_nn_module_stack"
"""The placeholder module name ExecuTorch gives nodes it makes (the size reads of a dynamic
program); reported as no module."""
EXTRA = Extra("executorch", "ExecuTorch is", ("executorch.exir",))


@dataclass
class OutsideOp:
    """An op left outside every XNNPACK delegate, and the CA block it belongs to."""

    op: str
    node: str
    module: str
    block: int | None


@dataclass
class Lowered:
    """A lowered program: its delegate segments, the ops left outside, the serialised .pte."""

    segments: int
    outside: list[OutsideOp]
    buffer: bytes


def lower(program: ExportedProgram, modules: Sequence[str] = ()) -> Lowered:
    """Lower ``program`` with the XNNPACK partitioner and serialise it.

    Segments and outside ops are read from the edge graph before serialisation, whose
    memory planning rewrites ops into their ``out`` variants.
    """
    EXTRA.require()
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    logging.getLogger("executorch").setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            edge = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()])
            graph = edge.exported_program().graph
            counted, outside = segments(graph), outside_ops(graph, modules)
            buffer = bytes(edge.to_executorch().buffer)
    except Exception as err:
        first = (str(err).strip().splitlines() or [""])[0]
        raise BadInputError(
            f"ExecuTorch cannot lower the program: {type(err).__name__}: {first}"
        ) from None
    return Lowered(counted, outside, buffer)


def op_name(node: torch.fx.Node) -> str:
    """An edge op's name without its dialect prefix, e.g. ``aten.expand_copy.default``."""
    return getattr(node.target, "__name__", str(node.target))


def segments(graph: torch.fx.Graph) -> int:
    """How many XNNPACK delegate calls the program makes."""
    return sum(n.op == "call_function" and op_name(n) == DELEGATE for n in graph.nodes)


def outside_ops(graph: torch.fx.Graph, modules: Sequence[str]) -> list[OutsideOp]:
    """Every op left outside the delegates, with the CA block (index into ``modules``)."""
    found = []
    for node in graph.nodes:
        if node.op != "call_function" or node.target is operator.getitem:
            continue
        name = op_name(node)
        if name == DELEGATE:
            continue
        module = module_path(node)
        if module.startswith(NO_MODULE):
            module = ""
        found.append(OutsideOp(name, node.name, module, owning_block(node, modules)))
    return found


def outside_counts(ops: Sequence[OutsideOp], block: int | None = None) -> dict[str, int]:
    """Counts of outside ops by name; with ``block``, only that block's."""
    chosen = [o.op for o in ops if block is None or o.block == block]
    return dict(Counter(chosen).most_common())


def set_threads(threads: int) -> None:
    """Size ExecuTorch's thread pool (XNNPACK runs its ops on it)."""
    EXTRA.require()
    from executorch.extension.pybindings import _C

    with contextlib.redirect_stderr(io.StringIO()):
        _C._unsafe_reset_threadpool(threads)


class PteRunner:
    """A .pte program loaded in ExecuTorch's Python runtime, its ``forward`` ready to run."""

    def __init__(self, buffer: bytes, name: str = "program") -> None:
        EXTRA.require()
        from executorch.runtime import Runtime

        self.buffer = buffer
        try:
            self.program = Runtime.get().load_program(buffer)
            self.method = self.program.load_method("forward")
        except Exception as err:
            first = (str(err).strip().splitlines() or [""])[0]
            raise BadInputError(f"ExecuTorch cannot load {name}: {first}") from None
        meta = self.method.metadata
        self.input_sizes = [
            tuple(meta.input_tensor_meta(i).sizes()) for i in range(meta.num_inputs())
        ]
        self.num_outputs = meta.num_outputs()

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        """Run ``forward`` on one float32 input; outputs as arrays."""
        outputs = self.method.execute([torch.from_numpy(np.ascontiguousarray(x, np.float32))])
        return [
            np.asarray(o.detach().numpy() if isinstance(o, torch.Tensor) else o) for o in outputs
        ]
