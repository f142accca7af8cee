"""Weight compression of a converted ML program with ``coremltools.optimize.coreml``.

Modes: ``int8`` is ``linear_quantize_weights`` (``linear_symmetric``, int8, one scale per
output channel); ``palette4``/``palette6``/``palette8`` are ``palettize_weights`` (k-means,
one 2**n-entry table per tensor; k-means needs scikit-learn). Activations and compute
precision are unchanged: Core ML decompresses the weights at load time.

What is compressed: every weight of at least ``WEIGHT_THRESHOLD`` elements (coremltools'
own default), CA gate convs included. Measured on ``mobilenetv2_ca`` at 224 (fp16, iOS16,
``python -m benchmarks.coreml_compress --ca-ablation``): keeping the CA blocks' weights
uncompressed costs 0.38 MB (int8: 4.75 against 4.37 MB) to 0.61 MB (palette4) and moves
the output no closer to PyTorch for int8 (rel err 0.647 against 0.622, cosine 0.980
against 0.979) or palette6 (1.79 against 1.71), only a little for palette4 (2.34 against
2.56, both far past its bound), so they are compressed like every other weight. The
smaller CA convs (``mip x C`` under 2048 elements in the early blocks) stay in fp16 by the
threshold, as do biases and batch-norm terms folded into them.

The ops these produce depend on the deployment target: iOS16 and iOS17 get
``constexpr_affine_dequantize`` (int8) and ``constexpr_lut_to_dense`` with bit-packed
indices (palettes); iOS18 gets ``constexpr_blockwise_shift_scale`` and the iOS18
``constexpr_lut_to_dense`` (one table per block). They need iOS16, so compression
requires ``--min-target iOS16`` or later.
"""

from __future__ import annotations

import contextlib
import io
from collections import Counter
from collections.abc import Collection
from typing import Any

from torch import nn

from ca_export.errors import BadInputError
from ca_export.export.coreml import coremltools

MODES = ("int8", "palette4", "palette6", "palette8")
WEIGHT_THRESHOLD = 2048
"""Weights with fewer elements stay as they are (coremltools' default threshold)."""
MIN_TARGET = "iOS16"
COMPRESSION = "ca_export.weight_compression"
"""The model metadata entry that records the mode."""
CONSTEXPR_OPS = (
    "constexpr_affine_dequantize",
    "constexpr_blockwise_shift_scale",
    "constexpr_lut_to_dense",
)


def op_config(mode: str) -> Any:
    """The coremltools op config of ``mode``."""
    cto = coremltools().optimize.coreml
    if mode == "int8":
        return cto.OpLinearQuantizerConfig(
            mode="linear_symmetric", dtype="int8", weight_threshold=WEIGHT_THRESHOLD
        )
    if mode in MODES:
        return cto.OpPalettizerConfig(
            mode="kmeans",
            nbits=int(mode.removeprefix("palette")),
            weight_threshold=WEIGHT_THRESHOLD,
        )
    raise BadInputError(f"unknown weight compression {mode!r}; choose from {', '.join(MODES)}")


def check_compressible(module: nn.Module, mode: str) -> None:
    """Refuse (exit 2) a model none of whose weights is large enough to be compressed."""
    if not any(p.numel() >= WEIGHT_THRESHOLD for p in module.parameters()):
        raise BadInputError(
            f"--compress {mode}: the model has no weight of {WEIGHT_THRESHOLD} elements or "
            "more, the smallest Core ML compresses; nothing would be compressed"
        )


def compress(model: Any, mode: str, keep: Collection[str] = ()) -> Any:
    """``model`` (an in-memory ML program) with its weights compressed as ``mode`` says.

    The weights of the ops named in ``keep`` stay as they are.
    """
    cto = coremltools().optimize.coreml
    config = cto.OptimizationConfig(
        global_config=op_config(mode), op_name_configs=dict.fromkeys(keep)
    )
    method = cto.linear_quantize_weights if mode == "int8" else cto.palettize_weights
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            return method(model, config=config)
    except ModuleNotFoundError as err:
        raise BadInputError(f"--compress {mode}: {err}") from None


def constexpr_counts(ops: list[tuple[str, str]]) -> dict[str, int]:
    """How many ops of a saved program decompress weights, by type."""
    return dict(Counter(kind for kind, _ in ops if kind.startswith("constexpr_")))
