"""The Core ML conversion stage: one ``Conversion`` in, one ``Converted`` model out.

The program's CA ops are tagged with their block first, so the converted ops can be
attributed to blocks (``owner``); an fp16 ML program is converted a second time in fp32
for its twin (``verify.mil.fp32_arithmetic`` checks the fp16 program's ops against it);
a neural network in fp16 gets fp16 weights; weights are compressed last, then the
metadata is set.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch.export import ExportedProgram

from ca_export.export import coreml as coreml_export
from ca_export.export import coreml_compress
from ca_export.export.coreml import InputSpec, Target
from ca_export.verify.mil.fp32_arithmetic import twin_function


@dataclass(frozen=True)
class Conversion:
    """What to convert: the program, its CA blocks' module names, the input, the target, the
    output names, class labels, a compression mode, and the user's and the tool's metadata."""

    program: ExportedProgram
    modules: tuple[str, ...]
    spec: InputSpec
    target: Target
    output_names: tuple[str, ...]
    labels: tuple[str, ...] = ()
    compress: str | None = None
    user_metadata: dict[str, str] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Converted:
    """The converted model, which block (by index) owns each of its ops, and the fp32 twin
    function of an fp16 ML program (else None)."""

    model: Any
    owner: dict[str, int]
    twin: Any = None


def convert(request: Conversion) -> Converted:
    """Convert the program as ``request`` asks."""
    target, names = request.target, list(request.output_names)
    blocks = coreml_export.tag(request.program, request.modules)
    model = coreml_export.convert(request.program, request.spec, target, names, request.labels)
    owner = coreml_export.owners(model, blocks)
    twin = None
    if target.format == "mlprogram" and target.precision == "fp16":
        fp32 = Target(target.format, "fp32", target.min_target)
        twin = twin_function(
            coreml_export.convert(request.program, request.spec, fp32, names, request.labels)
        )
    if target.format == "neuralnetwork" and target.precision == "fp16":
        model = coreml_export.half_weights(model)
    if request.compress:
        model = coreml_compress.compress(model, request.compress)
    coreml_export.set_metadata(model, request.user_metadata, request.metadata)
    return Converted(model, owner, twin)
