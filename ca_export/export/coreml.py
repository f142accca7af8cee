"""Convert an `ExportedProgram` to Core ML with coremltools' torch.export frontend, and check it.

Before conversion each graph node gets its position as ``debug_handle``; coremltools
carries it onto every MIL op it makes from that node, through its graph passes, as an
``EXIR_DEBUG_HANDLE`` scope. ``owners`` maps MIL values back to the CA block whose module
created the node, so ``ca_only_ops`` counts transpose/concat/split/slice per block in the
saved artifact, read back from disk (``milproto.load`` for an ML program, the layer list
for a neural network).

coremltools converts and saves on Linux; it predicts on macOS only.
"""

from __future__ import annotations

import contextlib
import io
import logging
import sys
import tempfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.export import ExportedProgram

from ca_export import interrupts
from ca_export.errors import BadInputError, CheckFailedError
from ca_export.files import space_note
from ca_export.fx import owning_block
from ca_export.silence import silenced

EXTENSIONS = {"mlprogram": ".mlpackage", "neuralnetwork": ".mlmodel"}
PRECISIONS = {"fp16": "float16", "fp32": "float32"}
TARGETS = ("iOS13", "iOS14", "iOS15", "iOS16", "iOS17", "iOS18")
CA_ONLY_OPS = {
    "mlprogram": ("transpose", "concat", "split", "slice_by_index", "slice_by_size"),
    "neuralnetwork": (
        "transpose",
        "concat",
        "concatND",
        "split",
        "splitND",
        "slice",
        "sliceStatic",
        "sliceDynamic",
    ),
}
CLASS_LABEL, PROBABILITIES = "classLabel", "classLabel_probs"
HW_MULTIPLE = "ca_export.hw_multiple"
IMAGE_SCALE, IMAGE_BIAS = "ca_export.image_scale", "ca_export.image_bias"
CAN_PREDICT = sys.platform == "darwin"
NO_PREDICTION = "coremltools cannot predict off macOS"


@dataclass(frozen=True)
class Target:
    """The artifact asked for: format, compute precision and minimum deployment target."""

    format: str = "mlprogram"
    precision: str = "fp16"
    min_target: str = "iOS15"


@dataclass(frozen=True)
class ImageInput:
    """An image input: Core ML computes ``scale * pixel + bias[channel]`` before the model."""

    scale: float = 1.0
    bias: tuple[float, float, float] = (0.0, 0.0, 0.0)

    @classmethod
    def of(cls, scale: Sequence[float], bias: Sequence[float]) -> ImageInput:
        """From one scale (or three equal ones) and three biases, as the user gives them.

        Core ML's image input has one scale for every channel; coremltools 9 would
        broadcast a per-channel list along W, so distinct scales are refused.
        """
        if len(scale) not in (1, 3) or len(set(scale)) != 1:
            raise BadInputError(
                "Core ML image inputs apply one --scale to every channel (only --bias is "
                "per channel); give one value"
            )
        if len(bias) != 3:
            raise BadInputError("--bias takes three values, R,G,B")
        return cls(float(scale[0]), (float(bias[0]), float(bias[1]), float(bias[2])))

    def normalise(self, rgb: torch.Tensor) -> torch.Tensor:
        """What Core ML feeds the model for RGB pixels (N, 3, H, W): scale * pixel + bias."""
        return rgb * self.scale + torch.tensor(self.bias).view(1, 3, 1, 1)

    def metadata(self) -> dict[str, str]:
        """The preprocessing as user-defined metadata entries (``verify`` reads them back)."""
        return {
            IMAGE_SCALE: repr(self.scale),
            IMAGE_BIAS: ",".join(repr(b) for b in self.bias),
        }

    @classmethod
    def from_metadata(cls, entries: Any) -> ImageInput | None:
        """The preprocessing ca-export recorded in a model's metadata, or None (also if garbled)."""
        if IMAGE_SCALE not in entries or IMAGE_BIAS not in entries:
            return None
        try:
            bias = [float(b) for b in entries[IMAGE_BIAS].split(",")]
            return cls.of((float(entries[IMAGE_SCALE]),), bias)
        except (ValueError, BadInputError):
            return None


def pixels(shape: Sequence[int], seed: int) -> torch.Tensor:
    """A seeded RGB image of ``shape`` (N, 3, H, W): integer pixel values 0..255 as float32."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, tuple(shape), generator=generator).float()


@dataclass(frozen=True)
class InputSpec:
    """The model input: name, traced shape, flexible H/W (a range or a list) and image mode."""

    name: str
    shape: tuple[int, int, int, int]
    hw_range: tuple[int, int] | None = None
    shapes: tuple[tuple[int, int], ...] = ()
    image: ImageInput | None = None


def coremltools() -> Any:
    """coremltools, imported on first use with its import-time warnings and what it
    prints on import (torchao's, where the LiteRT extra installed it) silenced."""
    logging.getLogger("coremltools").setLevel(logging.ERROR)
    with silenced():
        import coremltools as ct

    return ct


def tag(program: ExportedProgram, modules: Sequence[str]) -> dict[int, int]:
    """Set each node's ``debug_handle`` to its position; map handles to CA block indices.

    A node belongs to the last block whose module is on its module stack.
    """
    blocks: dict[int, int] = {}
    for handle, node in enumerate(program.graph.nodes, start=1):
        node.meta["debug_handle"] = handle
        block = owning_block(node, modules)
        if block is not None:
            blocks[handle] = block
    return blocks


def convert(
    program: ExportedProgram,
    spec: InputSpec,
    target: Target,
    output_names: Sequence[str],
    labels: Sequence[str] | None = None,
) -> Any:
    """Convert a tagged ``program`` to an in-memory ``MLModel`` (not yet saved)."""
    ct = coremltools()
    kwargs: dict[str, Any] = {
        "convert_to": target.format,
        "minimum_deployment_target": getattr(ct.target, target.min_target),
        "inputs": [_input_type(ct, spec)],
        "outputs": [ct.TensorType(name=name) for name in output_names],
    }
    if target.format == "mlprogram":
        kwargs["compute_precision"] = getattr(ct.precision, PRECISIONS[target.precision].upper())
    if labels:
        kwargs["classifier_config"] = ct.ClassifierConfig(list(labels))
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            return ct.convert(program, **kwargs)
    except Exception as err:
        first = (str(err).strip().splitlines() or [""])[0]
        raise BadInputError(
            f"coremltools cannot convert the program to {target.format}: "
            f"{type(err).__name__}: {first}{space_note(Path(tempfile.gettempdir()))}"
        ) from None
    finally:
        interrupts.check()


def half_weights(model: Any) -> Any:
    """A neural network with its weights stored in fp16 (it still computes in fp32)."""
    from coremltools.models.neural_network import quantization_utils

    ct = coremltools()
    with contextlib.redirect_stdout(io.StringIO()):
        quantized = quantization_utils.quantize_weights(model, nbits=16)
    return quantized if isinstance(quantized, ct.models.MLModel) else ct.models.MLModel(quantized)


def _input_type(ct: Any, spec: InputSpec) -> Any:
    """The ``ct.TensorType`` or ``ct.ImageType`` of ``spec``, flexible where asked."""
    n, c, h, w = spec.shape
    shape: Any = spec.shape
    if spec.hw_range is not None:
        low, high = spec.hw_range
        shape = (n, c, ct.RangeDim(low, high, h), ct.RangeDim(low, high, w))
    elif spec.shapes:
        shape = ct.EnumeratedShapes([(n, c, sh, sw) for sh, sw in spec.shapes], (n, c, h, w))
    if spec.image is None:
        return ct.TensorType(name=spec.name, shape=shape, dtype=np.float32)
    return ct.ImageType(
        name=spec.name,
        shape=shape,
        scale=spec.image.scale,
        bias=list(spec.image.bias),
        color_layout=ct.colorlayout.RGB,
    )


def owners(model: Any, blocks: dict[int, int]) -> dict[str, int]:
    """Map the names of a converted model's MIL values to the CA block that produced them.

    An op belongs to the block of its debug handle. Ops without one (made by a pass
    from nothing, or the image preprocessing) belong to a block when all their
    consumers, or all their producers, do.
    """
    from coremltools.converters.mil.mil.scope import ScopeSource

    ops = [op for f in model._mil_program.functions.values() for op in f.operations]
    owner: dict[int, int] = {}
    unscoped = []
    for op in ops:
        handles = op.scopes.get(ScopeSource.EXIR_DEBUG_HANDLE) or [None]
        if handles[-1] is None:
            unscoped.append(op)
        elif handles[-1] in blocks:
            owner[id(op)] = blocks[handles[-1]]
    changed = True
    while changed:
        changed = False
        for op in unscoped:
            if id(op) in owner:
                continue
            after = {owner.get(id(child)) for out in op.outputs for child in out.child_ops}
            before = {owner.get(id(var.op)) for var in _input_vars(op) if var.op is not None}
            for side in (after, before):
                block = next(iter(side)) if len(side) == 1 else None
                if block is not None:
                    owner[id(op)] = block
                    changed = True
                    break
    return {out.name: owner[id(op)] for op in ops if id(op) in owner for out in op.outputs}


def _input_vars(op: Any) -> list[Any]:
    """The MIL values an op reads (some inputs are tuples of values)."""
    found = []
    for value in op.inputs.values():
        found += list(value) if isinstance(value, (list, tuple)) else [value]
    return found


@dataclass
class Reloaded:
    """A saved model read back from disk: its spec and its ops as (type, first output)."""

    spec: Any
    ops: list[tuple[str, str]]


def save(model: Any, path: Path) -> None:
    """Save ``model`` to ``path`` (a package folder or a single file)."""
    try:
        model.save(str(path))
    except Exception as err:
        interrupts.check()
        raise BadInputError(f"cannot save {str(path)!r}: {err}{space_note(path.parent)}") from None


def reload(path: Path, fmt: str) -> Reloaded:
    """Read a saved model back: an ML program op by op with ``milproto.load``."""
    ct = coremltools()
    try:
        spec = ct.utils.load_spec(str(path))
        if fmt == "mlprogram":
            from coremltools.converters.mil.frontend.milproto.load import load

            weights = path / "Data" / "com.apple.CoreML" / "weights"
            program = load(spec, spec.specificationVersion, str(weights))
            functions = program.functions.values()
            ops = [(op.op_type, op.outputs[0].name) for f in functions for op in f.operations]
        else:
            network = getattr(spec, spec.WhichOneof("Type"))
            ops = [(layer.WhichOneof("layer"), layer.output[0]) for layer in network.layers]
    except Exception as err:
        first = (str(err).strip().splitlines() or [""])[0]
        raise CheckFailedError(f"the saved model does not load back: {first}") from None
    return Reloaded(spec, ops)


def op_counts(reloaded: Reloaded) -> dict[str, int]:
    """MIL op (or layer) counts by type, most frequent first, without ``const``."""
    return dict(Counter(kind for kind, _ in reloaded.ops if kind != "const").most_common())


def ca_only_ops(reloaded: Reloaded, fmt: str, owner: dict[str, int], block: int) -> dict[str, int]:
    """Counts of transpose/concat/split/slice ops that belong to one block."""
    kinds = CA_ONLY_OPS[fmt]
    return dict(Counter(k for k, name in reloaded.ops if k in kinds and owner.get(name) == block))


def expected_io(
    spec: InputSpec,
    fmt: str,
    output_names: Sequence[str],
    output_shapes: Sequence[tuple[int, ...]],
    labels: Sequence[str] | None = None,
) -> dict[str, dict[str, dict[str, Any]]]:
    """The inputs and outputs the model description must show.

    Output shapes are checked for a static ML program only: a flexible model's
    description shows default sizes, and a neural network's shows none. A neural-network
    classifier keeps the model's output name for its probabilities, listed first.
    """
    n, c, h, w = spec.shape
    if spec.image is not None:
        feature: dict[str, Any] = {"kind": "image", "size": [h, w]}
        if spec.hw_range is not None:
            feature["range"] = [list(spec.hw_range)] * 2
        elif spec.shapes:
            feature["sizes"] = [list(s) for s in spec.shapes]
    else:
        feature = {"kind": "tensor", "shape": [n, c, h, w]}
        if spec.hw_range is not None:
            feature["range"] = [[n, n], [c, c], list(spec.hw_range), list(spec.hw_range)]
        elif spec.shapes:
            feature["shapes"] = [[n, c, sh, sw] for sh, sw in spec.shapes]
    outputs: dict[str, dict[str, Any]]
    if labels and fmt == "neuralnetwork":
        outputs = {output_names[0]: {"kind": "dictionary"}, CLASS_LABEL: {"kind": "string"}}
    elif labels:
        outputs = {CLASS_LABEL: {"kind": "string"}, PROBABILITIES: {"kind": "dictionary"}}
    else:
        static = fmt == "mlprogram" and spec.hw_range is None and not spec.shapes
        outputs = {
            name: {"kind": "tensor", "shape": list(shape)} if static else {"kind": "tensor"}
            for name, shape in zip(output_names, output_shapes, strict=True)
        }
    return {"inputs": {spec.name: feature}, "outputs": outputs}


def describe(spec: Any) -> dict[str, dict[str, dict[str, Any]]]:
    """The inputs and outputs of a model description, in ``expected_io``'s form."""
    return {
        "inputs": {f.name: _feature(f) for f in spec.description.input},
        "outputs": {f.name: _feature(f) for f in spec.description.output},
    }


def _feature(feature: Any) -> dict[str, Any]:
    """One feature description: kind, shape or size, and its flexibility."""
    kind = feature.type.WhichOneof("Type")
    if kind == "multiArrayType":
        array = feature.type.multiArrayType
        found: dict[str, Any] = {"kind": "tensor", "shape": list(array.shape)}
        flexible = array.WhichOneof("ShapeFlexibility")
        if flexible == "shapeRange":
            found["range"] = [[r.lowerBound, r.upperBound] for r in array.shapeRange.sizeRanges]
        elif flexible == "enumeratedShapes":
            found["shapes"] = [list(s.shape) for s in array.enumeratedShapes.shapes]
        return found
    if kind == "imageType":
        image = feature.type.imageType
        found = {"kind": "image", "size": [image.height, image.width]}
        flexible = image.WhichOneof("SizeFlexibility")
        if flexible == "imageSizeRange":
            ranges = (image.imageSizeRange.heightRange, image.imageSizeRange.widthRange)
            found["range"] = [[r.lowerBound, r.upperBound] for r in ranges]
        elif flexible == "enumeratedSizes":
            found["sizes"] = [[s.height, s.width] for s in image.enumeratedSizes.sizes]
        return found
    return {"kind": {"dictionaryType": "dictionary", "stringType": "string"}.get(kind, kind)}


def io_mismatches(expected: dict[str, Any], found: dict[str, Any]) -> list[str]:
    """Where the description differs from what was expected, one line each."""
    problems = []
    for side in ("inputs", "outputs"):
        if list(found[side]) != list(expected[side]):
            problems.append(f"{side} are {list(found[side])}, expected {list(expected[side])}")
            continue
        for name, want in expected[side].items():
            got = found[side][name]
            for key, value in want.items():
                if not _same(key, got.get(key), value):
                    problems.append(f"{name}: {key} is {got.get(key)}, expected {value}")
    return problems


def _same(key: str, got: Any, want: Any) -> bool:
    """Whether a described field is as expected; enumerated shapes and sizes are a set
    (Core ML lists the default first, whatever order ``--sizes`` gave)."""
    if key in ("shapes", "sizes") and isinstance(got, list):
        return sorted(got) == sorted(want)
    return bool(got == want)


def set_metadata(model: Any, fields: dict[str, str], entries: dict[str, str]) -> None:
    """Set author/license/version/short_description and the user-defined entries."""
    for name, value in fields.items():
        setattr(model, name, value)
    for key in sorted(entries):
        model.user_defined_metadata[key] = entries[key]


def prediction_inputs(
    spec: InputSpec, multiple: tuple[int, int] = (1, 1)
) -> list[tuple[int, tuple[int, int, int, int]]]:
    """(seed, shape) pairs: three at the traced shape, one at each other allowed size.

    In a range, the other sizes are the smallest and a larger non-square one, rounded
    up to ``multiple`` (the sizes a rewritten upsample is exact at).
    """
    n, c, h, w = spec.shape
    cases = [(seed, spec.shape) for seed in (1, 2, 3)]
    if spec.hw_range is not None:
        low, high = spec.hw_range
        others = [
            (_round_up(sh, multiple[0]), _round_up(sw, multiple[1]))
            for sh, sw in ((low, low), (min(h + 32, high), min(w + 64, high)))
        ]
        others = [(sh, sw) for sh, sw in others if max(sh, sw) <= high and (sh, sw) != (h, w)]
    else:
        others = [s for s in spec.shapes if s != (h, w)]
    return cases + [(4 + i, (n, c, sh, sw)) for i, (sh, sw) in enumerate(dict.fromkeys(others))]


def _round_up(size: int, multiple: int) -> int:
    return -(-size // multiple) * multiple
