"""The ONNX Runtime Mobile format: ``OUT.ort`` and the operator config a reduced build needs.

ONNX Runtime's own converter (``onnxruntime.tools.convert_onnx_models_to_ort``) does
the work: it loads the model in an ONNX Runtime session with every graph optimisation
that runs on any CPU (the x86-only NCHWc layout is left out for a phone target) and
saves the optimised graph in the ORT flatbuffer format, then lists the operators the
saved model uses (``<stem>.required_operators.config``, the input of ONNX Runtime's
``--include_ops_by_config`` reduced build). Its fixed optimisation style is used: the
runtime-optimisation style replays saved optimisations only in minimal builds that
opt in, which ONNX Runtime's desktop packages cannot run, so it could not be gated here.

The converter writes beside its input, so it runs in a scratch folder; the caller
gates the .ort in ONNX Runtime and renames both files into place.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np
import onnx
import onnxruntime as ort

from ca_export.errors import BadInputError

CONFIG_SUFFIX = ".required_operators.config"
"""How the converter names the operator config it writes beside ``<stem>.ort``."""


class OrtFiles(NamedTuple):
    """The .ort model and its operator config."""

    model: Path
    config: Path


def paths_for(output: Path) -> OrtFiles:
    """Where ``--ort-format`` writes, beside the ONNX file ``output``."""
    return OrtFiles(output.with_suffix(".ort"), output.with_suffix(CONFIG_SUFFIX))


def convert(model: onnx.ModelProto, folder: Path, output: Path) -> OrtFiles:
    """Convert ``model`` with ONNX Runtime's tool in ``folder``, named after ``output``.

    The config's header names the model it was made from: there, ``output``'s .ort
    file name, not the scratch path.
    """
    from onnxruntime.tools.convert_onnx_models_to_ort import (
        OptimizationStyle,
        convert_onnx_models_to_ort,
    )

    final = paths_for(output)
    source = folder / f"{output.stem}.onnx"
    onnx.save_model(model, source)
    tool_log = logging.getLogger("ort_format_model.utils")
    level = tool_log.level
    tool_log.setLevel(logging.WARNING)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            convert_onnx_models_to_ort(
                source,
                output_dir=folder,
                optimization_styles=[OptimizationStyle.Fixed],
                target_platform="arm",
            )
    except Exception as err:
        lines = [line for line in str(err).strip().splitlines() if line.strip()]
        raise BadInputError(
            f"ONNX Runtime cannot convert the model to its ORT format: "
            f"{lines[0] if lines else type(err).__name__}"
        ) from None
    finally:
        tool_log.setLevel(level)
        source.unlink(missing_ok=True)
    staged = OrtFiles(folder / final.model.name, folder / final.config.name)
    lines = staged.config.read_text().splitlines()
    header = [f"# - {final.model.name}" if line.startswith("# - ") else line for line in lines]
    staged.config.write_text("\n".join(header) + "\n")
    return staged


def session(path: Path) -> ort.InferenceSession:
    """An ONNX Runtime CPU session on a .ort file; one that does not load is bad input."""
    options = ort.SessionOptions()
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as err:
        lines = [line for line in str(err).strip().splitlines() if line.strip()]
        raise BadInputError(
            f"ONNX Runtime cannot load {path.name}: {lines[0] if lines else type(err).__name__}"
        ) from None


def runner(
    path: Path, input_name: str, output_names: list[str]
) -> Callable[[np.ndarray], list[np.ndarray]]:
    """A function running the .ort at ``path`` on one input array."""
    loaded = session(path)

    def run(x: np.ndarray) -> list[np.ndarray]:
        return list(loaded.run(output_names, {input_name: x}))

    return run
