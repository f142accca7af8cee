"""The gate of a lossy format (fp16, int8): agreement with the fp32 model, per output.

An exact format is held to the exact tolerances (``verify.parity``); an fp16 or int8
model cannot be, so it is judged against the fp32 PyTorch model over every gate input
at once: top-1 agreement and the reference's top-1 in the artifact's top five (for
class scores, 2-D [N, K]), the smallest cosine and the largest max-abs error over the
reference's RMS (and, where a user set ``--atol``, the largest max-abs error). Bounds come
from the tolerance table (``("fp16" | "int8", "onnxruntime-cpu")``). The figures say on
which inputs they were measured. ``ca-export onnx --precision`` runs this gate before it
writes a file, ``ca-export verify`` runs it again on the written file, on the same seeds at
each shape it checks (``judge`` on outputs it computed, skipping inputs the file or the
model cannot take).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from ca_export.tracing import output_arrays
from ca_export.verify.metrics import relative_error, top_k_agreement
from ca_export.verify.runtime import Runner
from ca_export.verify.tolerances import Tolerance

GATE_SEEDS = tuple(range(1, 9))
"""The seeds of the gate's inputs (at each shape): a top-1 share needs enough inputs to mean
something (with 3, a 7/8 or 6/8 bound would need all to agree)."""


@dataclass
class OutputAgreement:
    """How one output of the lossy model agrees with the fp32 model over all inputs.

    ``top1``, ``top1_in_top5`` and ``top5`` (the share of rows whose top-5 sets are equal,
    reported, not gated) are None for outputs that are not class scores. ``margin`` is
    the reference's smallest gap between its top two classes over the std of its scores:
    a top-1 figure means little where that gap is small against the error.
    """

    name: str
    shape: list[int]
    rows: int
    min_cosine: float
    max_rel_err: float
    finite: bool
    top1: float | None = None
    top1_in_top5: float | None = None
    top5: float | None = None
    margin: float | None = None
    max_abs_err: float = 0.0
    equal: float | None = None
    """For an integer or boolean output, the share of values equal to the reference's (over
    ``values`` values): the figure it is gated on, against the top-1 bound; None otherwise."""
    values: int = 0
    cosines: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """Whether every bound held."""
        return not self.failures


@dataclass
class LossyGate:
    """The lossy gate's verdict, its bounds, the inputs it ran on and each output's figures."""

    precision: str
    backend: str
    bounds: dict[str, float | None]
    inputs: list[str]
    outputs: list[OutputAgreement]

    @property
    def passed(self) -> bool:
        """Whether every output met every bound."""
        return all(o.passed for o in self.outputs)

    def failures(self) -> list[str]:
        """One line per broken bound, naming the output."""
        return [f"{o.name}: {line}" for o in self.outputs for line in o.failures]


def torch_runner(model: nn.Module) -> Runner:
    """The PyTorch model as a ``Runner`` (no grad; outputs in the traced order)."""

    def run(x: np.ndarray) -> list[np.ndarray]:
        with torch.no_grad():
            return output_arrays(model(torch.from_numpy(x)))

    return run


def lossy_gate(
    reference: Runner,
    run: Runner,
    output_names: Sequence[str],
    inputs: Sequence[tuple[str, np.ndarray]],
    precision: str,
    backend: str,
    tol: Tolerance,
) -> LossyGate:
    """Run the fp32 reference and the lossy artifact on every named input; judge each output.

    The reference is the PyTorch model for ``ca-export onnx`` (``torch_runner``); any other
    fp32 runner (an fp32 ONNX file in ONNX Runtime) fits the same gate.
    """
    references = [reference(x) for _, x in inputs]
    actuals = [run(x) for _, x in inputs]
    labels = [n for n, _ in inputs]
    return judge(references, actuals, output_names, labels, precision, backend, tol)


def judge(
    references: Sequence[list[np.ndarray]],
    actuals: Sequence[list[np.ndarray]],
    output_names: Sequence[str],
    labels: Sequence[str],
    precision: str,
    backend: str,
    tol: Tolerance,
) -> LossyGate:
    """The gate's verdict on outputs already computed: per input (named by ``labels``), the
    reference's and the lossy artifact's output arrays."""
    outputs = []
    for i, name in enumerate(output_names):
        refs = [r[i] for r in references]
        gots = [a[i] for a in actuals]
        outputs.append(_agreement(name, refs, gots, tol))
    bounds = {
        "top1": tol.top1,
        "top1_in_top5": tol.top1_in_top5,
        "cosine": tol.cosine,
        "rel": tol.rel,
    }
    if tol.atol is not None:
        bounds["atol"] = tol.atol
    return LossyGate(precision, backend, bounds, list(labels), outputs)


def _agreement(
    name: str, refs: list[np.ndarray], gots: list[np.ndarray], tol: Tolerance
) -> OutputAgreement:
    """One output's figures over all inputs, and the bounds it breaks."""
    if any(r.shape != g.shape for r, g in zip(refs, gots, strict=True)):
        shapes = sorted({str(g.shape) for g in gots})
        result = OutputAgreement(name, list(refs[0].shape), len(refs), 0.0, float("inf"), False)
        result.failures.append(f"shape {', '.join(shapes)}, not {refs[0].shape}")
        return result
    cosines = [_cosine(r, g) for r, g in zip(refs, gots, strict=True)]
    rels = [relative_error(r, g) for r, g in zip(refs, gots, strict=True)]
    finite = all(bool(np.isfinite(g).all()) for g in gots)
    result = OutputAgreement(
        name, list(refs[0].shape), len(refs), min(cosines), max(rels), finite, cosines=cosines
    )
    result.max_abs_err = max(_max_abs(r, g) for r, g in zip(refs, gots, strict=True))
    if not np.issubdtype(refs[0].dtype, np.floating):
        return _equality(result, refs, gots, tol)
    if not finite:
        result.failures.append("non-finite values")
    if tol.cosine is None:
        raise ValueError(f"the lossy gate needs a tolerance row with a cosine bound, not {tol}")
    if result.min_cosine < tol.cosine:
        result.failures.append(f"cosine {result.min_cosine:.4f} < {tol.cosine}")
    if result.max_rel_err > tol.rel:
        result.failures.append(f"rel err {result.max_rel_err:.3g} > {tol.rel}")
    if tol.atol is not None and result.max_abs_err > tol.atol:
        result.failures.append(f"max abs err {result.max_abs_err:.3g} > {tol.atol:.3g}")
    if refs[0].ndim == 2 and refs[0].shape[1] > 1:
        ref, got = np.concatenate(refs), np.concatenate(gots)
        rows = len(ref)
        result.rows = rows
        result.top1, result.top5 = top_k_agreement(ref, got)
        top5 = np.argsort(-got, axis=1)[:, :5]
        result.top1_in_top5 = float(np.mean((top5 == ref.argmax(1)[:, None]).any(axis=1)))
        ordered = np.sort(ref, axis=1)
        gaps = (ordered[:, -1] - ordered[:, -2]) / np.maximum(ref.std(axis=1), 1e-30)
        result.margin = float(gaps.min())
        for label, got_share, bound in (
            ("top-1 agreement", result.top1, tol.top1),
            ("reference top-1 in top-5", result.top1_in_top5, tol.top1_in_top5),
        ):
            if bound is not None and got_share is not None and got_share < bound - 1e-9:
                agree, needed = round(got_share * rows), math.ceil(bound * rows - 1e-9)
                result.failures.append(f"{label} {agree}/{rows}, needs {needed}/{rows}")
    return result


def _equality(
    result: OutputAgreement, refs: list[np.ndarray], gots: list[np.ndarray], tol: Tolerance
) -> OutputAgreement:
    """An integer or boolean output (a class index, a mask): the share of values equal to
    the reference's, held to the top-1 bound (an argmax output's share is its top-1
    agreement; a threshold near a lossy score flips as a close top-1 does). Its cosine and
    rel err are reported, not gated: they mean nothing for labels."""
    equal = sum(int(np.count_nonzero(r == g)) for r, g in zip(refs, gots, strict=True))
    result.values = sum(r.size for r in refs)
    result.equal = equal / result.values if result.values else 1.0
    bound = tol.top1 if tol.top1 is not None else 1.0
    if result.equal < bound - 1e-9:
        needed = math.ceil(bound * result.values - 1e-9)
        result.failures.append(f"equal values {equal}/{result.values}, needs {needed}")
    return result


def _cosine(ref: np.ndarray, got: np.ndarray) -> float:
    """Cosine of two arrays as flat vectors (1 for two zero arrays)."""
    a = np.asarray(ref, np.float64).ravel()
    b = np.asarray(got, np.float64).ravel()
    norms = float(np.linalg.norm(a) * np.linalg.norm(b))
    if norms == 0:
        return float(np.array_equal(a, b))
    return float(a @ b / norms)


def _max_abs(ref: np.ndarray, got: np.ndarray) -> float:
    """The largest absolute difference of two arrays (0 for empty ones)."""
    diff = np.abs(np.asarray(ref, np.float64) - np.asarray(got, np.float64))
    return float(diff.max()) if diff.size else 0.0
