"""Convert a PyTorch program to ncnn (``.ncnn.param`` + ``.ncnn.bin``) through pnnx.

The route: ``torch.jit.trace`` of the program's module on one example, saved as
TorchScript, then pnnx's converter, which writes the ncnn files. ``pnnx.export`` cannot
take a torch.export module (it calls ``.eval()``, which that module refuses), and
``pnnx.convert`` is not used either: it ignores the converter's exit status, prints its
log, and imports the Python module pnnx generates. The converter binary the wheel ships
(``pnnx.EXEC_PATH``) is run here instead, with its log captured and every file it writes
(its own ``.pnnx.*`` files, a Python module, an ONNX file) in a private folder, removed
afterwards; only the param text and the weights are kept.

pnnx writes fp16 weights unless told ``fp16=0``; fp32 weights are the default here, as
fp16 ones alone move ``mobilenetv2_ca``'s logits by 2.7e-2 of their scale.

ncnn has no static shapes: a param file runs at any input size, and is silently wrong
where pnnx baked a traced size into a layer. ``baked_sizes`` names such layers (a
``Slice`` with fixed sizes behind a ``Concat``, an adaptive ``Pooling`` with a fixed
output size): the stock conversion of a CA block holds both.

The TorchScript trace itself fixes every size the program computes from the input's H and
W (the exported module reads them with ``sym_size`` as plain integers): an ``arange`` of
a feature map's height, a ``full`` of its area, a ``view`` to it, an ``interpolate`` to
another map's size. ``pinned_ops`` names such ops before converting, so a size-safe model
that would be right at the traced size only is refused rather than written. Given a
second input shape (``inputshape2``), pnnx writes a reshape's ``-1`` as a size expression
of the input's H and W; without one it resolves the ``-1`` at the traced size.

pnnx and ncnn are an optional extra (``pip install -e ".[ncnn]"``), imported on first
use; their absence is one clear error.
"""

from __future__ import annotations

import json
import subprocess
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.export import ExportedProgram

from ca_export.errors import BadInputError
from ca_export.extras import Extra
from ca_export.files import private_tempdir

EXTRA = Extra("ncnn", "pnnx and ncnn are", ("ncnn", "pnnx"))
PARAM_SUFFIX, BIN_SUFFIX = ".ncnn.param", ".ncnn.bin"
MAGIC = "7767517"
"""The first line of every ncnn param file."""
INPUT = "in0"
"""The input blob pnnx names."""
FIXED = -233
"""ncnn's marker for a size taken from the input at run time."""
BACKEND = "ncnn"
STOCK_DANGER = (
    "ncnn: pnnx converts each CA block as it is with the traced H and W baked into a Slice "
    "after the shared stem (and strip pools given explicit sizes pinned to them); ncnn runs "
    "such a .ncnn.param at other sizes without an error and gives wrong outputs. "
    "`ca-export ncnn` converts the blocks size-safe and checks three sizes."
)
"""What ``inspect`` says of a model with CA blocks, for users who convert with pnnx."""
METADATA_SUFFIX = ".ncnn.json"


def metadata_path(stem: Path) -> Path:
    """The companion metadata file of an ncnn model's stem."""
    return stem.with_name(stem.name + METADATA_SUFFIX)


def read_metadata(stem: Path) -> dict[str, Any] | None:
    """What ca-export recorded beside the model (None for a file it did not write)."""
    path = metadata_path(stem)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        raise BadInputError(f"{str(path)!r} is not ca-export's ncnn metadata (not JSON)") from None
    if not isinstance(data, dict) or data.get("format") != "ncnn":
        raise BadInputError(f"{str(path)!r} is not ca-export's ncnn metadata")
    return data


def stem_of(path: Path) -> Path:
    """``OUT`` for ``OUT.ncnn.param`` or ``OUT.ncnn.bin``; a path with neither suffix is
    taken as the stem itself."""
    for suffix in (PARAM_SUFFIX, BIN_SUFFIX):
        if path.name.endswith(suffix) and len(path.name) > len(suffix):
            return path.with_name(path.name[: -len(suffix)])
    return path


def files_of(stem: Path) -> tuple[Path, Path]:
    """The param and weight files of ``stem``."""
    return stem.with_name(stem.name + PARAM_SUFFIX), stem.with_name(stem.name + BIN_SUFFIX)


@dataclass
class Converted:
    """An ncnn model as pnnx wrote it: the param text and the weights."""

    param: str
    weights: bytes


def convert(
    module: nn.Module,
    example: torch.Tensor,
    fp16: bool = False,
    second: tuple[int, ...] | None = None,
) -> Converted:
    """Trace ``module`` on ``example`` with TorchScript and convert it with pnnx; fp32
    weights unless ``fp16``. With a ``second`` input shape (pnnx's ``inputshape2``), pnnx
    writes a reshape's ``-1`` as a size expression of the input's H and W instead of the
    traced number. A module or op pnnx cannot convert is one clear error."""
    EXTRA.require()
    import pnnx

    shape = ",".join(map(str, example.shape))
    with private_tempdir() as folder:
        script = folder / "model.pt"
        try:
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")
                # torch.jit.trace carries no annotations.
                traced = torch.jit.trace(  # type: ignore[no-untyped-call]
                    module, example, check_trace=False, strict=False
                )
            traced.save(str(script))
        except Exception as err:
            first = (str(err).strip().splitlines() or [""])[0]
            raise BadInputError(
                f"TorchScript cannot trace the program for pnnx: {type(err).__name__}: {first}"
            ) from None
        param, weights = folder / f"model{PARAM_SUFFIX}", folder / f"model{BIN_SUFFIX}"
        command = [
            pnnx.EXEC_PATH,
            str(script),
            f"inputshape=[{shape}]f32",
            *([f"inputshape2=[{','.join(map(str, second))}]f32"] if second else []),
            "device=cpu",
            f"fp16={int(fp16)}",
            f"ncnnparam={param}",
            f"ncnnbin={weights}",
        ]
        done = subprocess.run(command, capture_output=True, text=True, cwd=folder, check=False)
        if done.returncode != 0 or not (param.is_file() and weights.is_file()):
            log = [line for line in (done.stderr + done.stdout).splitlines() if line.strip()]
            last = log[-1].strip() if log else f"exit status {done.returncode}"
            raise BadInputError(f"pnnx cannot convert the program: {last}")
        return Converted(param.read_text(), weights.read_bytes())


@dataclass
class Layer:
    """One layer of an ncnn param file."""

    type: str
    name: str
    inputs: list[str]
    outputs: list[str]
    params: dict[str, str] = field(default_factory=dict)


def parse_param(text: str, name: str = "the param file") -> list[Layer]:
    """The layers of an ncnn param file's text; a file that is not one is one clear error."""
    lines = [line.split() for line in text.splitlines() if line.strip()]
    if len(lines) < 2 or lines[0] != [MAGIC] or len(lines[1]) != 2:
        raise BadInputError(f"{name} is not an ncnn param file (no {MAGIC} header)")
    layers = []
    for fields in lines[2:]:
        try:
            n_in, n_out = int(fields[2]), int(fields[3])
            inputs, outputs = fields[4 : 4 + n_in], fields[4 + n_in : 4 + n_in + n_out]
            rest = fields[4 + n_in + n_out :]
            params = dict(item.split("=", 1) for item in rest)
        except (IndexError, ValueError):
            raise BadInputError(f"{name} has a malformed layer line: {' '.join(fields)}") from None
        layers.append(Layer(fields[0], fields[1], inputs, outputs, params))
    return layers


def output_blobs(layers: list[Layer]) -> list[str]:
    """The blobs no layer reads, in pnnx's output order (``out0``, ``out1``, ...)."""
    read = {blob for layer in layers for blob in layer.inputs}
    made = [blob for layer in layers for blob in layer.outputs if blob not in read]
    return sorted(made, key=lambda b: (not b.startswith("out"), len(b), b))


def input_blobs(layers: list[Layer]) -> list[str]:
    """The blobs of the ``Input`` layers."""
    return [blob for layer in layers if layer.type == "Input" for blob in layer.outputs]


def layer_counts(layers: list[Layer]) -> dict[str, int]:
    """How many layers of each type, most frequent first."""
    counts: dict[str, int] = {}
    for layer in layers:
        counts[layer.type] = counts.get(layer.type, 0) + 1
    return dict(sorted(counts.items(), key=lambda item: -item[1]))


@dataclass(frozen=True)
class BlockBlobs:
    """Where a CA block sits in an ncnn model: the blob it reads and the blob it writes."""

    source: str
    output: str


def ca_blocks(layers: list[Layer]) -> list[BlockBlobs]:
    """Every CA block of an ncnn model, in file order: a two-input multiply ``x * a`` read
    by a second one, ``(x * a) * b``, where both gates ``a`` and ``b`` are computed from
    ``x``. ``source`` is ``x`` before ncnn's ``Split`` copies of it, so that an extractor
    fed it runs the whole block and nothing before it."""
    producer = {blob: layer for layer in layers for blob in layer.outputs}

    def root(blob: str) -> str:
        while (layer := producer.get(blob)) is not None and layer.type == "Split":
            blob = layer.inputs[0]
        return blob

    def computed_from(blob: str, source: str) -> bool:
        stack, seen = [blob], set()
        while stack:
            at = stack.pop()
            if at == source:
                return True
            if at not in seen and (layer := producer.get(at)) is not None:
                seen.add(at)
                stack.extend(layer.inputs)
        return False

    found = []
    for second in filter(_is_mul, layers):
        for inner, b in (second.inputs, second.inputs[::-1]):
            first = producer.get(inner)
            if first is None or not _is_mul(first):
                continue
            for identity, a in (first.inputs, first.inputs[::-1]):
                x = root(identity)
                if x != root(a) and computed_from(a, x) and computed_from(b, x):
                    found.append(BlockBlobs(x, second.outputs[0]))
                    break
            else:
                continue
            break
    return found


def _is_mul(layer: Layer) -> bool:
    """Whether a layer multiplies two blobs."""
    return layer.type == "BinaryOp" and layer.params.get("0") == "2" and len(layer.inputs) == 2


def _ints(value: str) -> list[int]:
    """An array parameter (``-23300=2,56,56``) without its count; a scalar as one item."""
    items = [float(v) for v in value.split(",")]
    return [int(v) for v in (items[1:] if len(items) > 1 else items)]


def baked_sizes(layers: list[Layer]) -> list[str]:
    """Layers that hold a size of the traced input, one line each: a ``Slice`` along a
    spatial axis into fixed sizes of pooled strips (a CA block's split after its shared
    stem: the ``Concat`` it follows joins ``Pooling``/``Reduction`` outputs), and an
    adaptive ``Pooling`` to a fixed output size other than 1 (a strip pool of pinned
    length), and an ``Interp`` to a fixed output size (``F.interpolate`` to another map's
    size, pinned by pnnx). Each is right at the traced size only; the last can crash ncnn
    elsewhere. A channel split (axis 0) is not one."""
    producer = {blob: layer for layer in layers for blob in layer.outputs}

    def upstream(blob: str, stop: tuple[str, ...]) -> Layer | None:
        """The first ``stop`` layer up a chain of one-input layers from ``blob``."""
        layer = producer.get(blob)
        while layer is not None and layer.type not in stop:
            if len(layer.inputs) != 1:
                return None
            layer = producer.get(layer.inputs[0])
        return layer

    def pooled_strips(blob: str) -> bool:
        concat = upstream(blob, ("Concat", "Input"))
        if concat is None or concat.type != "Concat":
            return False
        sources = [upstream(b, ("Pooling", "Reduction", "Input")) for b in concat.inputs]
        return all(s is not None and s.type in ("Pooling", "Reduction") for s in sources)

    found = []
    for layer in layers:
        if layer.type == "Slice" and "-23300" in layer.params and layer.params.get("1", "0") != "0":
            sizes = _ints(layer.params["-23300"])
            if len(sizes) > 1 and all(s > 0 for s in sizes) and pooled_strips(layer.inputs[0]):
                found.append(f"{layer.name}: Slice into fixed sizes {sizes}")
        if layer.type == "Interp" and len(layer.inputs) == 1:
            out = [int(layer.params.get(k, "0")) for k in ("3", "4")]
            if all(v > 0 for v in out):
                found.append(f"{layer.name}: Interp to a fixed size {out[0]}x{out[1]}")
        if layer.type == "Pooling" and layer.params.get("7") == "1":
            out = [int(layer.params.get(k, "0")) for k in ("18", "8")]
            if any(v not in (FIXED, 0, 1) for v in out):
                found.append(f"{layer.name}: adaptive Pooling to a fixed size {out[0]}x{out[1]}")
    return found


_SIZE_READERS = {
    torch.ops.aten.sym_size.int,
    torch.ops.aten.sym_numel.default,
    torch.ops.aten.sym_stride.int,
    torch.ops.aten._assert_scalar.default,
    torch.ops.aten.sym_constrain_range_for_size.default,
}
"""Ops that read or check sizes without taking one as an operand."""

_RESHAPES = {
    torch.ops.aten.view.default,
    torch.ops.aten.reshape.default,
    torch.ops.aten._unsafe_view.default,
    torch.ops.aten.flatten.using_ints,
    torch.ops.aten.unflatten.int,
}
"""Ops pnnx writes as a ``Reshape`` to the sizes it infers at the traced size, ``-1``
resolved: fixed wherever the output's shape holds the input's H or W."""


def _symbols(value: object) -> set[Any]:
    """The free symbols of a SymInt operand (in a list or not)."""
    if isinstance(value, (list, tuple)):
        return set().union(*(_symbols(v) for v in value))
    if isinstance(value, torch.SymInt):
        return set(value.node.expr.free_symbols)
    if isinstance(value, torch.fx.Node):
        return _symbols(value.meta.get("val"))
    return set()


@dataclass(frozen=True)
class Pinned:
    """An op that takes a size computed from the input's H or W (``pinned_ops``)."""

    op: str
    """The op and where it is (``aten.arange.default in detect``)."""
    by_shape: bool
    """A reshape that holds such a size only in its output's shape: pnnx given a second
    input shape writes its ``-1`` as a size expression."""


def pinned_ops(program: ExportedProgram) -> list[Pinned]:
    """The ops of ``program`` that take a size computed from the input's H or W, one
    each: TorchScript traces them with the traced size fixed, so the converted model is
    right at that size only; and the reshapes whose output's shape holds such a size
    (``by_shape``; pnnx resolves even a ``-1`` at the traced size unless given a second
    input shape). Sizes of the batch axis alone are not listed (ncnn runs one sample at a
    time)."""
    graph = program.graph
    user = set(program.graph_signature.user_inputs)
    spatial: set[Any] = set()
    for node in graph.nodes:
        if node.op == "placeholder" and node.name in user:
            shape = getattr(node.meta.get("val"), "shape", ())
            spatial |= _symbols(list(shape[2:]))
    found = []
    for node in graph.nodes:
        if node.op != "call_function" or not isinstance(node.target, torch._ops.OpOverload):
            continue
        if node.target in _SIZE_READERS:
            continue
        operands = spatial & set().union(
            *(_symbols(a) for a in [*node.args, *node.kwargs.values()])
        )
        shape = list(getattr(node.meta.get("val"), "shape", ())) if node.target in _RESHAPES else []
        if operands or spatial & _symbols(shape):
            stack = node.meta.get("nn_module_stack") or {}
            where = next(reversed(stack.values()))[0] if stack else ""
            op = f"{node.target}" + (f" in {where}" if where else "")
            found.append(Pinned(op, by_shape=not operands))
    return found
