"""A saved Core ML model as a ``verify`` artifact: run by Core ML on macOS, else by the evaluator.

Off macOS an ``.mlpackage`` runs through the NumPy MIL evaluator; a model it cannot
evaluate (a neural network, an op it lacks) refuses every input with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ca_export.errors import BadInputError
from ca_export.export.coreml import CAN_PREDICT, coremltools
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
    program: MilProgram | None
    allowed: list[tuple[int, ...]] | None = None
    ranges: list[tuple[int, int]] | None = None
    unverifiable: str | None = None

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
        return None if ok else "artifact's input does not take " + "x".join(map(str, shape))

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        """The outputs on ``x``: Core ML's prediction on macOS, else the MIL evaluator's."""
        if CAN_PREDICT:
            model = coremltools().models.MLModel(str(self.path))
            got = model.predict({model.get_spec().description.input[0].name: x})
            return [np.asarray(got[name], dtype=np.float32) for name in self.output_names]
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
    reason = "not verified: op " + ", ".join(gaps) if gaps and not CAN_PREDICT else None
    return _describe(path, program.spec, program, program.dtype, reason)


def _describe(
    path: Path, spec: Any, program: MilProgram | None, dtype: str, reason: str | None
) -> MilArtifact:
    """The artifact's input sizes and outputs, from its model description."""
    inputs = spec.description.input
    if not inputs or not spec.description.output:
        raise BadInputError(f"{str(path)!r} is not a usable Core ML model (no inputs or outputs)")
    if len(inputs) != 1 or inputs[0].type.WhichOneof("Type") != "multiArrayType":
        reason = reason or "not verified: verify feeds one tensor input, not images"
    array = inputs[0].type.multiArrayType
    flexible = array.WhichOneof("ShapeFlexibility")
    artifact = MilArtifact(
        path,
        [int(d) for d in array.shape],
        [o.name for o in spec.description.output],
        dtype,
        program,
        unverifiable=reason,
    )
    if flexible == "enumeratedShapes":
        artifact.allowed = [tuple(s.shape) for s in array.enumeratedShapes.shapes]
    elif flexible == "shapeRange":
        artifact.ranges = [
            (r.lowerBound, r.upperBound if r.upperBound > 0 else 1 << 30)
            for r in array.shapeRange.sizeRanges
        ]
    return artifact
