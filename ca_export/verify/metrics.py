"""Error metrics between a reference tensor and an artifact's output, and the exact verdict.

An output is judged slice by slice (``slices``): per sample and per feature (channel of
an NCHW map, column of a ``[N, boxes, 5 + classes]`` detector output), so a box in
pixels and a class probability are each held to their own scale. For each slice the
largest error of the artifact from the reference must stay within its bound
(``Tolerance.bounds``): a share of the slice's RMS, or a multiple of how far the
reference computation itself moves when run again at the artifact's precision (the
``alike`` runs: PyTorch fp32 against fp64, ONNX Runtime at another optimisation level).
The figure a report gives is the ``margin``: the largest error over bound, so 1 is
the edge and a wrong export sits far above it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ca_export.verify.tolerances import Tolerance

MIN_SLICE = 16
"""Fewest elements a slice holds; a finer slicing is merged into per-sample slices."""


@dataclass
class Comparison:
    """How far one output is from its reference, and whether that passes.

    ``rel_err`` is the max abs error over the whole output's RMS; ``margin`` the largest
    slice error over its bound (at most 1 passes); ``noise`` the alike runs' max abs
    error over the output's RMS (0 where not measured); ``slack`` the RMS of the
    per-element bound over the output's RMS (at 1 or above any output would pass).
    ``note`` says what made a comparison fail other than its size (a shape, NaN, Inf).
    ``top1``/``top5`` are the shares of samples whose top-1 class (top-5 set) agree,
    for classifier outputs (N, K) only.
    """

    name: str
    shape: tuple[int, ...]
    max_abs_err: float
    rel_err: float
    cosine: float
    psnr: float
    passed: bool
    noise: float = 0.0
    margin: float = 0.0
    slack: float = 0.0
    worst_slice: str = ""
    note: str = ""
    top1: float | None = None
    top5: float | None = None

    def describe(self) -> str:
        """One line of figures: margin, errors and, where set, what failed it."""
        if self.note:
            return self.note
        where = f" at {self.worst_slice}" if self.worst_slice else ""
        return (
            f"margin {self.margin:.3g}{where}, rel err {self.rel_err:.3g}, "
            f"max abs err {self.max_abs_err:.3g}"
        )


def slices(shape: tuple[int, ...]) -> tuple[int, ...]:
    """The axes a slice keeps apart (batch first), for ``shape``.

    4-D and more: batch and channel (axis 1). 3-D: batch and the shorter of axes 1 and 2
    (the 85 columns of ``[N, 6300, 85]``, the 84 rows of ``[N, 84, 8400]``). 2-D: batch.
    Slices of fewer than ``MIN_SLICE`` elements merge into one per sample; 0-D/1-D outputs
    are one slice.
    """
    if len(shape) < 2:
        return ()
    if len(shape) == 2:
        return (0,)
    feature = 1 if len(shape) > 3 or shape[1] <= shape[2] else 2
    if math.prod(shape) // max(1, shape[0] * shape[feature]) < MIN_SLICE:
        return (0,)
    return (0, feature)


def _grouped(array: np.ndarray, keep: tuple[int, ...]) -> np.ndarray:
    """``array`` as rows, one row per slice (the ``keep`` axes), each holding its elements."""
    rest = [a for a in range(array.ndim) if a not in keep]
    moved = np.transpose(array, (*keep, *rest))
    rows = math.prod(array.shape[a] for a in keep) if keep else 1
    return moved.reshape(rows, -1)


def _slice_name(index: int, shape: tuple[int, ...], keep: tuple[int, ...]) -> str:
    """``sample 0, column 4`` style name of slice ``index``."""
    if not keep:
        return ""
    position = np.unravel_index(index, tuple(shape[a] for a in keep))
    names = ["sample", "column" if len(shape) == 3 and keep[-1] == 2 else "channel"]
    return ", ".join(f"{names[i]} {int(p)}" for i, p in enumerate(position))


def compare(
    name: str,
    reference: np.ndarray,
    actual: np.ndarray,
    tol: Tolerance,
    alike: Sequence[np.ndarray] = (),
) -> Comparison:
    """Judge ``actual`` against ``reference`` slice by slice under ``tol``.

    ``reference`` is the most exact answer at hand (the fp64 model where it runs);
    ``alike`` are runs of the same computation at the artifact's precision, whose
    distance from ``reference`` is the noise a bound may widen to. Integer and boolean
    outputs must be equal. A NaN or Inf in the artifact where the reference is finite
    fails; so does any NaN in the reference, which cannot be judged.
    """
    shape = tuple(reference.shape)
    inf = float("inf")
    if shape != tuple(actual.shape):
        note = f"shape {tuple(actual.shape)} where the reference has {shape}"
        return Comparison(name, tuple(actual.shape), inf, inf, 0.0, -inf, False, note=note)
    if not np.issubdtype(np.asarray(reference).dtype, np.floating):
        return _exact(name, np.asarray(reference), np.asarray(actual))
    ref = np.asarray(reference, dtype=np.float64)
    got = np.asarray(actual, dtype=np.float64)
    note = _non_finite(ref, got)
    finite = np.isfinite(ref) & np.isfinite(got)
    ref_f = np.where(finite, ref, 0.0)
    got_f = np.where(finite, got, 0.0)
    error = np.abs(ref_f - got_f)
    max_abs = float(error.max()) if error.size else 0.0
    scale = float(np.sqrt(np.mean(ref_f**2))) if ref.size else 0.0
    rel = max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else inf)
    keep = slices(shape)
    noise_abs = np.zeros_like(error)
    for other in alike:
        if other.shape == shape:
            other_f = np.where(finite, np.asarray(other, dtype=np.float64), 0.0)
            deviation = np.abs(other_f - ref_f)
            noise_abs = np.maximum(noise_abs, np.where(np.isfinite(deviation), deviation, 0))
    err_s = _grouped(error, keep).max(axis=1) if error.size else np.zeros(0)
    noise_s = _grouped(noise_abs, keep).max(axis=1) if error.size else np.zeros(0)
    grouped_ref = _grouped(ref_f, keep)
    scale_s = np.sqrt(np.mean(grouped_ref**2, axis=1)) if error.size else np.zeros(0)
    norms = float(np.linalg.norm(ref_f) * np.linalg.norm(got_f))
    cosine = float(ref_f.ravel() @ got_f.ravel() / norms) if norms > 0 else float(max_abs == 0)
    if tol.cosine is None:
        bound_s = tol.bounds(scale_s, noise_s, scale)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratios = np.where(bound_s > 0, err_s / bound_s, np.where(err_s > 0, inf, 0.0))
        counts = grouped_ref.shape[1] if error.size else 0
        slack = (
            float(np.sqrt(np.sum(bound_s**2) * counts / ref.size)) / scale
            if scale > 0 and ref.size
            else 0.0
        )
    else:
        ratios = np.array([rel / tol.rel, (1 - cosine) / max(1 - tol.cosine, 1e-300)])
        keep, slack = (), tol.rel
    worst = int(np.argmax(ratios)) if ratios.size else 0
    margin = float(ratios.max()) if ratios.size else 0.0
    passed = not note and margin <= 1.0
    if tol.atol is not None:
        passed = passed and max_abs <= tol.atol
    noise = float(noise_abs.max()) / scale if scale > 0 and noise_abs.size else 0.0
    top1, top5 = top_k_agreement(ref_f, got_f)
    return Comparison(
        name,
        shape,
        max_abs,
        rel,
        cosine,
        psnr(ref_f.ravel(), got_f.ravel()),
        passed,
        noise,
        margin,
        slack,
        _slice_name(worst, shape, keep) if ratios.size > 1 else "",
        note,
        top1,
        top5,
    )


def _exact(name: str, reference: np.ndarray, actual: np.ndarray) -> Comparison:
    """An integer or boolean output: equal element for element, or failed."""
    differ = int(np.count_nonzero(reference != actual))
    note = f"{differ} of {reference.size} values differ" if differ else ""
    share = differ / reference.size if reference.size else 0.0
    shape = tuple(reference.shape)
    return Comparison(
        name, shape, float(differ), share, 1.0 - share, math.inf, not differ, note=note
    )


def _non_finite(ref: np.ndarray, got: np.ndarray) -> str:
    """Why NaN or Inf values make the comparison fail, or an empty string."""
    ref_nan = np.isnan(ref)
    if ref_nan.any():
        both = int(np.count_nonzero(ref_nan & np.isnan(got)))
        return (
            f"the reference (PyTorch) output is NaN at {int(ref_nan.sum())} of {ref.size} "
            f"values (the artifact too at {both}): it cannot be judged"
        )
    wrong = np.isfinite(ref) & ~np.isfinite(got)
    if wrong.any():
        kind = "NaN" if np.isnan(got[wrong]).any() else "Inf"
        return f"{kind} at {int(wrong.sum())} of {ref.size} values where the reference is finite"
    inf_ref = np.isinf(ref)
    if inf_ref.any() and not np.array_equal(ref[inf_ref], got[inf_ref]):
        return "the artifact does not match the reference's Inf values"
    return ""


def relative_error(reference: np.ndarray, actual: np.ndarray) -> float:
    """Max abs error over the reference's RMS."""
    ref = np.asarray(reference, dtype=np.float64)
    if ref.size == 0:
        return 0.0
    scale = float(np.sqrt(np.mean(ref**2)))
    error = float(np.max(np.abs(ref - np.asarray(actual, dtype=np.float64))))
    if scale > 0:
        return error / scale
    return 0.0 if error == 0 else float("inf")


def psnr(ref: np.ndarray, got: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB, the peak being the reference's largest magnitude."""
    mse = float(np.mean((ref - got) ** 2)) if ref.size else 0.0
    peak = float(np.max(np.abs(ref))) if ref.size else 0.0
    if mse == 0:
        return float("inf")
    if peak == 0:
        return float("-inf")
    return 10 * math.log10(peak * peak / mse)


def top_k_agreement(reference: np.ndarray, actual: np.ndarray) -> tuple[float | None, float | None]:
    """Shares of rows whose top-1 class and top-5 set agree, for (N, K) outputs with K > 1."""
    if reference.ndim != 2 or reference.shape[1] < 2:
        return None, None
    k = min(5, reference.shape[1])
    top1 = float(np.mean(reference.argmax(1) == actual.argmax(1)))
    ref5 = np.sort(np.argsort(-reference, axis=1)[:, :k], axis=1)
    got5 = np.sort(np.argsort(-actual, axis=1)[:, :k], axis=1)
    return top1, float(np.mean(np.all(ref5 == got5, axis=1)))
