"""ONNX Runtime CPU sessions, as every gate opens them: quiet, CPU provider, and a model
ONNX Runtime cannot load reported in one line."""

from __future__ import annotations

import onnx
import onnxruntime as ort

from ca_export.errors import BadInputError


def cpu_session(
    model: str | bytes | onnx.ModelProto,
    name: str,
    level: ort.GraphOptimizationLevel | None = None,
    error: type[Exception] = BadInputError,
) -> ort.InferenceSession:
    """A session of ``model`` (a path, bytes or a proto) at ``level`` (default: all
    optimisations). A model it cannot load raises ``error`` naming ``name``: bad input for
    a user's file, a failed check for a file ca-export made."""
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if level is not None:
        options.graph_optimization_level = level
    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else model
    try:
        return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    except Exception as err:
        lines = [line for line in str(err).strip().splitlines() if line.strip()]
        first = lines[0] if lines else type(err).__name__
        raise error(f"ONNX Runtime cannot load {name}: {first}") from None
