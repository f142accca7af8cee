"""ONNX Runtime CPU sessions, as every gate opens them: quiet, CPU provider, and a model
ONNX Runtime cannot load reported in one line; and runners, a session as a function of
one input array."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import onnx
import onnxruntime as ort

from ca_export.errors import BadInputError, CheckFailedError

BACKEND = "onnxruntime-cpu"
"""ONNX Runtime on the CPU, as the tolerance table and the reports name it."""

Runner = Callable[[np.ndarray], list[np.ndarray]]
"""Runs a model on one input array and returns its output arrays."""


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


def cpu_runner(
    model: str | bytes | onnx.ModelProto,
    name: str,
    input_name: str,
    output_names: Sequence[str],
    error: type[Exception] = CheckFailedError,
) -> Runner:
    """``model`` in a CPU session (``cpu_session``) as a runner of its one input and
    ``output_names``."""
    session = cpu_session(model, name, error=error)
    outputs = list(output_names)

    def run(x: np.ndarray) -> list[np.ndarray]:
        outs: list[np.ndarray] = session.run(outputs, {input_name: x})
        return outs

    return run
