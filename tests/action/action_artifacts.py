"""The artifacts the CI action and pre-commit hook tests verify."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from ca_export.report import ExportReport


def seed_artifacts(
    exported: Callable[..., tuple[ExportReport, Path]], folder: Path
) -> tuple[Path, Path, Path]:
    """A static and a dynamic ``seed_ca`` export at 32x32 (``exported``'s), and the static
    one with its largest weight scaled by 1.05, copied into ``folder``."""
    static = folder / "seed.onnx"
    static.write_bytes(exported("seed_ca", False)[1].read_bytes())
    dynamic = folder / "seed_dyn.onnx"
    dynamic.write_bytes(exported("seed_ca", True)[1].read_bytes())
    model = onnx.load(static)
    floats = [t for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT]
    weight = max(floats, key=lambda t: int(np.prod(t.dims)))
    scaled = numpy_helper.to_array(weight) * np.float32(1.05)
    weight.CopyFrom(numpy_helper.from_array(scaled, weight.name))
    wrong = folder / "seed_wrong.onnx"
    onnx.save(model, wrong)
    return static, dynamic, wrong
