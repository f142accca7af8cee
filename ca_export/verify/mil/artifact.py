"""A saved Core ML model as a ``verify`` artifact: run by Core ML on macOS, else by the evaluator.

Off macOS an ``.mlpackage`` runs through the NumPy MIL evaluator and an ``.mlmodel``
neural network through the layer evaluator; a model they cannot evaluate (an op or
layer they lack) refuses every input with the reason.
A model with an image input takes RGB pixels (0..255) and applies its own
preprocessing; ``recorded`` is the preprocessing ca-export recorded in its metadata.
A flexible model whose upsamples ca-export turned into scale factors is exact only at
H, W multiples it records (``ca_export.hw_multiple``); other sizes are refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ca_export.errors import BadInputError
from ca_export.export.coreml import CAN_PREDICT, HW_MULTIPLE, ImageInput, coremltools
from ca_export.verify.mil.network import NetworkProgram
from ca_export.verify.mil.ops import Unsupported
from ca_export.verify.mil.parity import BACKEND
from ca_export.verify.mil.program import MilProgram, load_program, run_program, uncovered

SUFFIXES = (".mlpackage", ".mlmodel")


@dataclass
class MilArtifact:
    """A Core ML model, its input sizes, and why it cannot be checked (None if it can)."""

    path: Path
    input_dims: list[int | str]
    output_names: list[str]
    dtype: str
    program: MilProgram | NetworkProgram | None
    allowed: list[tuple[int, ...]] | None = None
    ranges: list[tuple[int, int]] | None = None
    unverifiable: str | None = None
    image: bool = False
    recorded: ImageInput | None = None
    multiple: tuple[int, int] = (1, 1)

    @property
    def backend(self) -> str:
        """What computes the outputs: Core ML itself on macOS, else the evaluator."""
        return "coreml" if CAN_PREDICT else BACKEND

    @property
    def dynamic(self) -> bool:
        """Whether the model takes more than one input size."""
        return self.allowed is not None or self.ranges is not None

    def refuses(self, shape: tuple[int, ...]) -> str | None:
        """Why the artifact cannot take an input of ``shape``, or None if it can."""
        if self.unverifiable:
            return self.unverifiable
        if self.allowed is not None:
            ok = shape in self.allowed
        elif self.ranges is not None:
            ok = len(shape) == len(self.ranges) and all(
                low <= s <= high for s, (low, high) in zip(shape, self.ranges, strict=True)
            )
        else:
            ok = list(shape) == self.input_dims
        if not ok:
            return "artifact's input does not take " + "x".join(map(str, shape))
        mh, mw = self.multiple
        if len(shape) == 4 and (shape[2] % mh or shape[3] % mw):
            return f"the model is exact only where H is a multiple of {mh} and W of {mw}"
        return None

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        """The outputs on ``x``: Core ML's prediction on macOS, else the MIL evaluator's."""
        if CAN_PREDICT:
            model = coremltools().models.MLModel(str(self.path))
            feed: Any = x
            if self.image:
                from PIL import Image

                rgb = np.clip(np.round(x[0]), 0, 255).astype(np.uint8).transpose(1, 2, 0)
                feed = Image.fromarray(rgb, "RGB")
            got = model.predict({model.get_spec().description.input[0].name: feed})
            classes = self.program.classes if self.program is not None else []
            return [
                np.asarray([[got[name][c] for c in classes]], dtype=np.float32)
                if isinstance(got[name], dict)
                else np.asarray(got[name], dtype=np.float32)
                for name in self.output_names
            ]
        if self.program is None:
            raise Unsupported(self.unverifiable or "no program")
        return run_program(self.program, x)


def open_mil(path: Path) -> MilArtifact:
    """Load a saved Core ML model for ``verify``; bad files raise ``BadInputError``."""
    try:
        program = load_program(path)
    except Unsupported as err:
        spec = coremltools().utils.load_spec(str(path))
        return _describe(path, spec, None, "float32", f"not verified: {err}")
    gaps = uncovered(program)
    reason = (
        f"not verified: {program.unit} " + ", ".join(gaps) if gaps and not CAN_PREDICT else None
    )
    artifact = _describe(path, program.spec, program, program.dtype, reason)
    recorded = program.spec.description.metadata.userDefined.get(HW_MULTIPLE)
    if recorded:
        mh, mw = (int(m) for m in recorded.split("x"))
        artifact.multiple = (mh, mw)
    return artifact


def _describe(
    path: Path,
    spec: Any,
    program: MilProgram | NetworkProgram | None,
    dtype: str,
    reason: str | None,
) -> MilArtifact:
    """The artifact's input sizes and outputs, from its model description."""
    inputs = spec.description.input
    if not inputs or not spec.description.output:
        raise BadInputError(f"{str(path)!r} is not a usable Core ML model (no inputs or outputs)")
    artifact = MilArtifact(path, [], _compared_outputs(spec), dtype, program, unverifiable=reason)
    kind = inputs[0].type.WhichOneof("Type") if len(inputs) == 1 else None
    if kind == "imageType":
        _size_image(artifact, spec)
        return artifact
    if kind != "multiArrayType":
        artifact.unverifiable = reason or "not verified: verify feeds one tensor or image input"
    array = inputs[0].type.multiArrayType
    artifact.input_dims = [int(d) for d in array.shape]
    flexible = array.WhichOneof("ShapeFlexibility")
    if flexible == "enumeratedShapes":
        artifact.allowed = [tuple(s.shape) for s in array.enumeratedShapes.shapes]
    elif flexible == "shapeRange":
        artifact.ranges = [_bounds(r) for r in array.shapeRange.sizeRanges]
    return artifact


def _size_image(artifact: MilArtifact, spec: Any) -> None:
    """Describe ``artifact``'s one input as the RGB image its description says."""
    image = spec.description.input[0].type.imageType
    if image.colorSpace != image.RGB:
        artifact.unverifiable = (
            artifact.unverifiable or "not verified: verify feeds RGB images only"
        )
    artifact.input_dims = [1, 3, int(image.height), int(image.width)]
    artifact.image = True
    artifact.recorded = ImageInput.from_metadata(spec.description.metadata.userDefined)
    flexible = image.WhichOneof("SizeFlexibility")
    if flexible == "enumeratedSizes":
        artifact.allowed = [(1, 3, s.height, s.width) for s in image.enumeratedSizes.sizes]
    elif flexible == "imageSizeRange":
        ranges = (image.imageSizeRange.heightRange, image.imageSizeRange.widthRange)
        artifact.ranges = [(1, 1), (3, 3)] + [_bounds(r) for r in ranges]


def _bounds(size_range: Any) -> tuple[int, int]:
    """A Core ML size range as (low, high); an unbounded top (-1) as a very large size."""
    high = size_range.upperBound
    return int(size_range.lowerBound), int(high) if high > 0 else 1 << 30


def _compared_outputs(spec: Any) -> list[str]:
    """The outputs compared with PyTorch: all but a classifier's label (a string)."""
    return [o.name for o in spec.description.output if o.type.WhichOneof("Type") != "stringType"]
