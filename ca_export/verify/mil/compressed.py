"""Compressed weights in PyTorch: the reference a compressed package is checked against.

A package whose weights ``coremltools.optimize`` compressed (``constexpr_*`` ops) is lossy
by design. Its check is split in two, so the lossy part is measured without the evaluator:

- **Exact part.** Every compressed weight is decompressed by coremltools' own
  decompression (``materialized_val_inference`` of the constexpr op) and put into a copy
  of the PyTorch model in place of the parameter it came from. The package must compute
  what that copy computes, under the exact rows of the tolerance table (``float16`` or
  ``float32`` on ``coreml``), as an uncompressed package must match the model. A wrong
  decompression in the package or in the evaluator fails here.
- **Lossy part.** The copy against the fp32 model, both in PyTorch: what compression
  alone does to the outputs, judged by the weight format's row (``("int8-weights",
  "coreml")``, ``("palette6-weights", "coreml")``, ...; see ``verify.tolerances``).

Conversion folds a batch norm into the conv before it, so a MIL weight is the torch
weight times ``gamma / sqrt(var + eps)`` per output channel. The factors are read from
the model's ``torch.export`` graph (a conv whose one user is a batch norm); the copy gets
``decompressed / factor`` and keeps its batch norm. Each compressed weight pairs with the
parameter of its shape it fits best as ``factor * W`` (relative residual under ``FIT``).
Where that fails (a conv folded with something else), the factors are fitted by least
squares per output channel (counted in ``fitted``; inexact by the compression error over
the square root of a channel's size); a weight that fits no parameter at all is counted
in ``unmatched`` and left as it is in the copy.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.export import ExportedProgram

from ca_export.export.coreml_compress import CONSTEXPR_OPS
from ca_export.tracing import output_arrays, trace
from ca_export.verify.metrics import Comparison, compare
from ca_export.verify.mil.program import MilProgram
from ca_export.verify.parity import CaseResult, GateResult
from ca_export.verify.tolerances import tolerance

FIT = 0.5
"""Largest relative residual of ``decompressed - factor * W`` for a weight to pair with W."""
WEIGHT_OPS = ("aten.conv2d.default", "aten.convolution.default", "aten.linear.default")
BATCH_NORMS = (
    "aten._native_batch_norm_legit_no_training.default",
    "aten.batch_norm.default",
)


def weight_format(program: MilProgram) -> str | None:
    """The tolerance key of a program's compressed weights, or None if it has none.

    ``palette<n>-weights`` for lookup tables of 2**n entries, ``int<n>-weights`` for
    n-bit linear quantization; the fewest bits present win, palettes over ints.
    """
    from coremltools.converters.mil.mil import types

    palettes, ints = [], []
    for op in program.function.operations:
        if op.op_type == "constexpr_lut_to_dense":
            lut = op.inputs["lut"]
            entries = lut.shape[0] if "shape" in op.inputs else lut.shape[-2]
            palettes.append(int(entries).bit_length() - 1)
        elif op.op_type in ("constexpr_affine_dequantize", "constexpr_blockwise_shift_scale"):
            data = op.inputs.get("quantized_data", op.inputs.get("data"))
            name = types.builtin_to_string(data.dtype)
            if name.startswith(("int", "uint")):
                ints.append(int(name.removeprefix("u").removeprefix("int")))
    if palettes:
        return f"palette{min(palettes)}-weights"
    if ints:
        return f"int{min(ints)}-weights"
    return None


def decompressed(program: MilProgram) -> list[np.ndarray]:
    """Every compressed weight, decompressed by coremltools, as float32."""
    return [
        np.asarray(op.materialized_val_inference(), dtype=np.float32)
        for op in program.function.operations
        if op.op_type in CONSTEXPR_OPS
    ]


def folded_factors(program: ExportedProgram) -> dict[str, np.ndarray]:
    """Per-output-channel factors a conversion folds into each conv weight, by parameter name.

    A conv (or linear) whose one user is an inference batch norm gets
    ``gamma / sqrt(running_var + eps)``; other weights are not listed (factor 1).
    """
    signature = program.graph_signature
    names = {**signature.inputs_to_parameters, **signature.inputs_to_buffers}
    state = program.state_dict
    factors: dict[str, np.ndarray] = {}
    for node in program.graph.nodes:
        if str(node.target) not in WEIGHT_OPS or len(node.users) != 1:
            continue
        weight = names.get(getattr(node.args[1], "name", ""))
        norm = next(iter(node.users))
        if weight is None or str(norm.target) not in BATCH_NORMS:
            continue
        gamma, var = names.get(getattr(norm.args[1], "name", "")), names.get(norm.args[4].name)
        eps = float(norm.args[-1])
        scale = state[var].detach().double().add(eps).rsqrt()
        if gamma is not None:
            scale = scale * state[gamma].detach().double()
        factors[weight] = scale.numpy()
    return factors


def _residual(weight: np.ndarray, target: np.ndarray, factor: np.ndarray) -> float:
    """Relative residual of ``target - factor * weight`` (factor per output channel)."""
    w = weight.reshape(weight.shape[0], -1).astype(np.float64)
    t = target.reshape(target.shape[0], -1).astype(np.float64)
    error = np.linalg.norm(t - factor[:, None] * w)
    return float(error / max(float(np.linalg.norm(t)), 1e-30))


def _least_squares(weight: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Per-output-channel factors f minimising ``|target - f * weight|``."""
    w = weight.reshape(weight.shape[0], -1).astype(np.float64)
    t = target.reshape(target.shape[0], -1).astype(np.float64)
    norms = (w * w).sum(axis=1)
    return np.where(norms > 0, (w * t).sum(axis=1) / np.where(norms > 0, norms, 1), 0.0)


@dataclass
class CompressedCopy:
    """A copy of the model holding the package's decompressed weights."""

    key: str
    model: nn.Module
    matched: int = 0
    fitted: int = 0
    unmatched: int = 0

    def loss(
        self, original: nn.Module, x: torch.Tensor, names: list[str], outputs: list[np.ndarray]
    ) -> list[Comparison]:
        """The copy's ``outputs`` on ``x`` against the fp32 ``original``'s, by the format's row.

        Each comparison is named ``<output> (<format> in PyTorch)``.
        """
        with torch.no_grad():
            expected = output_arrays(original(x))
        tol = tolerance(self.key, "coreml")
        return [
            compare(f"{name} ({self.key} in PyTorch)", ref, out, tol)
            for name, ref, out in zip(names, expected, outputs, strict=True)
        ]


def weight_loss(
    weights: CompressedCopy,
    model: nn.Module,
    inputs: list[tuple[int, torch.Tensor]],
    names: list[str],
) -> GateResult:
    """The lossy part: the copy against the fp32 ``model`` on each (seed, input), in PyTorch."""
    result = GateResult("torch")
    for seed, x in inputs:
        with torch.no_grad():
            outputs = output_arrays(weights.model(x))
        comparisons = weights.loss(model, x, names, outputs)
        result.cases.append(CaseResult(tuple(x.shape), seed, comparisons))
    return result


def compressed_copy(
    program: MilProgram,
    model: nn.Module,
    shape: tuple[int, ...],
    exported: ExportedProgram | None = None,
) -> CompressedCopy | None:
    """``model``'s copy with the program's decompressed weights, or None if none are compressed.

    ``exported`` is a ``torch.export`` trace of ``model`` (for its batch-norm factors);
    without it, ``model`` is traced at ``shape``.
    """
    key = weight_format(program)
    if key is None:
        return None
    if exported is None:
        exported = trace(model, shape, dynamic=False).program
    factors = folded_factors(exported)
    result = CompressedCopy(key, copy.deepcopy(model).float().eval())
    free = {name: p for name, p in result.model.named_parameters() if p.ndim >= 2}
    for weight in decompressed(program):
        best: tuple[float, str, np.ndarray] | None = None
        for name, param in free.items():
            if tuple(param.shape) != weight.shape:
                continue
            value = param.detach().numpy()
            factor = factors.get(name, np.ones(weight.shape[0]))
            residual = _residual(value, weight, factor)
            if residual < FIT and (best is None or residual < best[0]):
                best = (residual, name, factor)
        fitted = best is None
        if fitted:
            best = _best_fit(free, weight)
        if best is None:
            result.unmatched += 1
            continue
        _, name, factor = best
        param = free.pop(name)
        result.fitted += fitted
        result.matched += not fitted
        shape = (-1,) + (1,) * (weight.ndim - 1)
        safe = np.where(factor != 0, factor, 1.0).reshape(shape)
        value = np.where(factor.reshape(shape) != 0, weight / safe, param.detach().numpy())
        with torch.no_grad():
            param.copy_(torch.from_numpy(value.astype(np.float32)))
    return result


def _best_fit(
    free: dict[str, nn.Parameter], weight: np.ndarray
) -> tuple[float, str, np.ndarray] | None:
    """The parameter ``weight`` fits best with least-squares factors, if any fits under FIT."""
    best: tuple[float, str, np.ndarray] | None = None
    for name, param in free.items():
        if tuple(param.shape) != weight.shape:
            continue
        value = param.detach().numpy()
        factor = _least_squares(value, weight)
        residual = _residual(value, weight, factor)
        if residual < FIT and (best is None or residual < best[0]):
            best = (residual, name, factor)
    return best
