"""Convert an `ExportedProgram` to a LiteRT flatbuffer (.tflite), run it, and read its ops.

``litert-torch`` converts the program's module straight from ``torch.export`` (no
TensorFlow); ``channels_last_io`` wraps it in litert-torch's ``to_channel_last_io`` first,
so the file takes NHWC input (and gives NHWC maps) and its layout pass needs no TRANSPOSE
at the input. ``ai_edge_litert``'s ``Interpreter`` runs the file with its default XNNPACK
delegate; ``inspect`` reads the flatbuffer (``schema_py_generated``) for the op list and
the interpreter's node list for the delegate partitions.

Which ops stay outside XNNPACK: the interpreter keeps every original node and appends one
``DELEGATE`` node per partition; a partition covers the nodes found walking back from its
outputs to its inputs, and every other node runs on LiteRT's own kernels. Which CA block
an op comes from: litert-torch names each op's output tensor after the module path it was
traced from (``Type_attr`` segments joined by ``/``), matched here against the blocks'
module paths.

LiteRT is an optional extra (``pip install -e ".[litert]"``); it is imported on first use,
and its absence is one clear error.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.export import ExportedProgram

from ca_export.errors import BadInputError
from ca_export.extras import Extra
from ca_export.silence import silenced

BACKEND = "litert-xnnpack"
EXTRA = Extra("litert", "LiteRT is", ("ai_edge_litert.interpreter", "litert_torch"))
DELEGATE = "DELEGATE"


def _first_line(err: Exception) -> str:
    return (str(err).strip().splitlines() or [""])[0]


def convert(
    program: ExportedProgram, example: torch.Tensor, channels_last_io: bool = False
) -> bytes:
    """``program`` as a .tflite flatbuffer; with ``channels_last_io``, NHWC input and 4-D
    outputs (``example`` stays NCHW)."""
    EXTRA.require()
    import litert_torch

    litert_torch.config.show_progress = False
    module: torch.nn.Module = program.module()
    for part in module.modules():
        part.training = False  # the program was exported from the model in eval mode
    sample = example
    if channels_last_io:
        with torch.no_grad():
            outputs = module(example)
        outputs = outputs if isinstance(outputs, (tuple, list)) else [outputs]
        maps = [i for i, o in enumerate(outputs) if isinstance(o, torch.Tensor) and o.dim() == 4]
        module = litert_torch.to_channel_last_io(module, args=[0], outputs=maps)
        sample = example.permute(0, 2, 3, 1).contiguous()
    try:
        with silenced():
            return bytes(litert_torch.convert(module, (sample,)).model_content())
    except Exception as err:
        raise BadInputError(
            f"litert-torch cannot convert the program: {type(err).__name__}: {_first_line(err)}"
        ) from None


QUANTIZATIONS = {
    "fp16": "fp16 weights, fp32 compute (ai-edge-quantizer weight-only, FLOAT_CASTING)",
    "int8": "int8 weights per channel, fp32 compute (ai-edge-quantizer weight-only)",
    "int8-static": "int8 weights and activations, MinMax calibration (ai-edge-quantizer "
    "static_wi8_ai8)",
}
"""What each ``quantize`` kind does."""


def quantize(
    buffer: bytes, kind: str, calibration: Sequence[np.ndarray] = (), channels_last: bool = False
) -> bytes:
    """``buffer`` quantized by ai-edge-quantizer as ``kind`` (``QUANTIZATIONS``); the static
    kind calibrates on ``calibration`` (NCHW arrays, fed in the file's layout) and keeps
    the file's input and outputs float (its ``*`` recipe would make them int8)."""
    EXTRA.require()
    from ai_edge_quantizer import qtyping, quantizer
    from ai_edge_quantizer.algorithm_manager import AlgorithmName

    ops = qtyping.TFLOperationName.ALL_SUPPORTED
    try:
        with silenced():
            tool = quantizer.Quantizer(buffer)
            if kind == "fp16":
                tool.add_weight_only_config(
                    ".*", ops, 16, algorithm_key=AlgorithmName.FLOAT_CASTING
                )
            elif kind == "int8":
                tool.add_weight_only_config(".*", ops, 8)
            else:
                tool.add_static_config(".*", ops, 8, 8)
                for end in (qtyping.TFLOperationName.INPUT, qtyping.TFLOperationName.OUTPUT):
                    tool.update_quantization_recipe(
                        ".*", end, algorithm_key=AlgorithmName.NO_QUANTIZE
                    )
            result = None
            if tool.need_calibration:
                signatures = _interpreter(buffer).get_signature_list()
                key = next(iter(signatures))
                (name,) = signatures[key]["inputs"]
                feeds = [x.transpose(0, 2, 3, 1) if channels_last else x for x in calibration]
                data = {key: [{name: np.ascontiguousarray(x, np.float32)} for x in feeds]}
                result = tool.calibrate(data, num_threads=1)
            return bytes(tool.quantize(result).quantized_model)
    except Exception as err:
        raise BadInputError(
            f"ai-edge-quantizer cannot quantize the file as {kind}: {type(err).__name__}: "
            f"{_first_line(err)}"
        ) from None


@dataclass
class LiteOp:
    """One op of the file: its index, its name, the CA block it comes from, and whether it
    runs inside an XNNPACK partition."""

    index: int
    op: str
    block: int | None
    delegated: bool


@dataclass
class Inspection:
    """What the file runs: every op, and the XNNPACK partitions."""

    ops: list[LiteOp]
    partitions: int
    input_shape: list[int] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        """Ops by name, most frequent first."""
        return dict(Counter(o.op for o in self.ops).most_common())

    @property
    def transposes(self) -> list[LiteOp]:
        """The TRANSPOSE ops."""
        return [o for o in self.ops if o.op == "TRANSPOSE"]

    @property
    def outside(self) -> list[LiteOp]:
        """The ops no XNNPACK partition runs."""
        return [o for o in self.ops if not o.delegated]


def _block_of(name: str, modules: Sequence[str]) -> int | None:
    """The index of the CA block (module path) a tensor named ``name`` was traced in."""
    for path in name.split(";"):
        segments = path.split("/")[1:]
        for i, module in enumerate(modules):
            parts = module.split(".")
            if len(segments) >= len(parts) and all(
                s.endswith("_" + p) for s, p in zip(segments, parts, strict=False)
            ):
                return i
    return None


def _interpreter(buffer: bytes, threads: int = 1) -> Any:
    """An allocated ``ai_edge_litert`` interpreter of ``buffer``."""
    EXTRA.require()
    from ai_edge_litert.interpreter import Interpreter

    try:
        with silenced():
            interpreter = Interpreter(model_content=buffer, num_threads=threads)
            interpreter.allocate_tensors()
    except Exception as err:
        raise BadInputError(f"LiteRT cannot load the file: {_first_line(err)}") from None
    return interpreter


def inspect(buffer: bytes, modules: Sequence[str] = ()) -> Inspection:
    """The ops of a .tflite (main subgraph), their CA blocks, and the XNNPACK partitions."""
    interpreter = _interpreter(buffer)
    details = interpreter._get_ops_details()
    producer = {
        int(t): d["index"] for d in details if d["op_name"] != DELEGATE for t in d["outputs"]
    }
    inside: set[int] = set()
    partitions = 0
    for node in details:
        if node["op_name"] != DELEGATE:
            continue
        partitions += 1
        stop = {int(t) for t in node["inputs"]}
        todo = [int(t) for t in node["outputs"]]
        while todo:
            tensor = todo.pop()
            index = producer.get(tensor)
            if tensor in stop or index is None or index in inside:
                continue
            inside.add(index)
            todo += [int(t) for t in details[index]["inputs"] if t >= 0]
    from ai_edge_litert import schema_py_generated as schema

    tensors = schema.Model.GetRootAs(buffer, 0).Subgraphs(0)
    ops = []
    for node in details:
        if node["op_name"] == DELEGATE:
            continue
        name = tensors.Tensors(int(node["outputs"][0])).Name().decode()
        block = _block_of(name, modules)
        ops.append(LiteOp(node["index"], node["op_name"], block, node["index"] in inside))
    shape = [int(d) for d in interpreter.get_input_details()[0]["shape"]]
    return Inspection(ops, partitions, shape)


class LiteRunner:
    """A .tflite loaded in LiteRT's interpreter (XNNPACK, ``threads`` threads), taking NCHW
    input whatever the file's layout: a channels-last file is fed NHWC and its 4-D outputs
    are turned back to NCHW."""

    def __init__(self, buffer: bytes, channels_last: bool = False, threads: int = 1) -> None:
        self.interpreter = _interpreter(buffer, threads)
        self.channels_last = channels_last
        details = self.interpreter.get_input_details()
        if len(details) != 1:
            raise BadInputError(f"the file has {len(details)} inputs; ca-export handles one image")
        self.input = details[0]
        self.outputs = self.interpreter.get_output_details()
        shape = [int(d) for d in self.input["shape"]]
        self.input_shape = [shape[0], shape[3], shape[1], shape[2]] if channels_last else shape

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        """Run on one NCHW float32 input; outputs as arrays (4-D ones NCHW)."""
        if self.channels_last:
            x = x.transpose(0, 2, 3, 1)
        self.interpreter.set_tensor(self.input["index"], np.ascontiguousarray(x, np.float32))
        self.interpreter.invoke()
        got = [np.array(self.interpreter.get_tensor(o["index"])) for o in self.outputs]
        if self.channels_last:
            got = [g.transpose(0, 3, 1, 2) if g.ndim == 4 else g for g in got]
        return got
