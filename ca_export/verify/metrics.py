"""Error metrics between a reference tensor and an artifact's output."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ca_export.verify.tolerances import Tolerance


@dataclass
class Comparison:
    """How far one output is from its reference, and whether that passes.

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
    top1: float | None = None
    top5: float | None = None


def compare(
    name: str, reference: np.ndarray, actual: np.ndarray, tol: Tolerance, noise: float = 0.0
) -> Comparison:
    """Max abs error, that error over the reference's RMS, cosine, PSNR and top-k agreement.

    ``noise`` is the reference model's own fp32 error on this input (see ``Tolerance``).
    """
    if reference.shape != actual.shape:
        inf = float("inf")
        return Comparison(name, tuple(actual.shape), inf, inf, 0.0, -inf, False, noise)
    ref = np.asarray(reference, dtype=np.float64).ravel()
    got = np.asarray(actual, dtype=np.float64).ravel()
    max_abs = float(np.max(np.abs(ref - got))) if ref.size else 0.0
    rel = relative_error(reference, actual)
    norms = float(np.linalg.norm(ref) * np.linalg.norm(got))
    cosine = float(ref @ got / norms) if norms > 0 else float(max_abs == 0)
    max_rel, min_cosine = tol.allowed(noise)
    passed = bool(np.isfinite(got).all()) and rel <= max_rel and cosine >= min_cosine
    if tol.atol is not None:
        passed = passed and max_abs <= tol.atol
    top1, top5 = top_k_agreement(reference, actual)
    return Comparison(
        name,
        tuple(reference.shape),
        max_abs,
        rel,
        cosine,
        psnr(ref, got),
        passed,
        noise,
        top1,
        top5,
    )


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
