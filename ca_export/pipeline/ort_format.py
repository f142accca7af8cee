"""``ca-export onnx --ort-format``: the .ort beside the ONNX file, gated like it.

The .ort and its operator config are made in a scratch folder beside the output,
loaded back in ONNX Runtime and run against the original PyTorch model with the same
exact gate as the ONNX file; they are renamed into place only after every gate of the
run passed, and the scratch folder goes in every case.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import onnx

from ca_export import files
from ca_export.export import ort_format
from ca_export.files import publish, write_onnx
from ca_export.pipeline.common import Prepared
from ca_export.report import Check
from ca_export.report.figures import OrtFormatFigures
from ca_export.verify.parity import gate_inputs, runner_gate


@contextmanager
def scratch(output: Path, wanted: bool) -> Iterator[Path | None]:
    """A scratch folder beside ``output`` when ``wanted``, removed afterwards."""
    if not wanted:
        yield None
        return
    with files.scratch(output) as folder:
        yield folder


def build_and_gate(
    prepared: Prepared,
    model: onnx.ModelProto,
    output: Path,
    folder: Path,
    shape: tuple[int, ...],
) -> tuple[ort_format.OrtFiles, Check]:
    """Convert ``model`` to .ort in ``folder`` and run the exact gate on the .ort file."""
    staged = ort_format.convert(model, folder, output)
    traced = prepared.traced
    inputs = gate_inputs(traced, shape, prepared.square_only)
    run = ort_format.runner(staged.model, traced.input_names[0], traced.output_names)
    backend = "onnxruntime-cpu"
    names = traced.output_names
    gate = runner_gate(prepared.module, run, names, inputs, backend, prepared.gates.bounds)
    operators = [
        line for line in staged.config.read_text().splitlines() if not line.startswith("#")
    ]
    figures = OrtFormatFigures.of(gate, len(inputs), operators=tuple(operators))
    return staged, Check.judged("ort_format", gate.passed, figures)


def write_all(
    model: onnx.ModelProto, output: Path, staged: ort_format.OrtFiles | None, folder: Path | None
) -> dict[str, Any]:
    """Write the ONNX file, then rename the staged .ort and config beside it."""
    artifact = write_onnx(model, output)
    if staged is not None and folder is not None:
        final = ort_format.paths_for(output)
        for source, target in ((staged.model, final.model), (staged.config, final.config)):
            publish(source, target)
        artifact["ort"] = str(final.model)
        artifact["ort_bytes"] = staged.model.stat().st_size
        artifact["ort_config"] = str(final.config)
    return artifact
