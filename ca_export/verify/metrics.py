"""Error metrics between a reference tensor and an artifact's output."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ca_export.verify.tolerances import Tolerance


@dataclass
class Comparison:
    """How far one output is from its reference, and whether that passes."""

    name: str
    shape: tuple[int, ...]
    max_abs_err: float
    rel_err: float
    cosine: float
    passed: bool
    noise: float = 0.0


def compare(
    name: str, reference: np.ndarray, actual: np.ndarray, tol: Tolerance, noise: float = 0.0
) -> Comparison:
    """Max abs error, that error over the reference's RMS, and cosine similarity.

    ``noise`` is the reference model's own fp32 error on this input (see ``Tolerance``).
    """
    ref = np.asarray(reference, dtype=np.float64).ravel()
    got = np.asarray(actual, dtype=np.float64).ravel()
    if reference.shape != actual.shape:
        return Comparison(name, tuple(actual.shape), float("inf"), float("inf"), 0.0, False, noise)
    max_abs = float(np.max(np.abs(ref - got))) if ref.size else 0.0
    scale = float(np.sqrt(np.mean(ref**2))) if ref.size else 0.0
    rel = max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else float("inf"))
    norms = float(np.linalg.norm(ref) * np.linalg.norm(got))
    cosine = float(ref @ got / norms) if norms > 0 else float(max_abs == 0)
    finite = bool(np.isfinite(got).all())
    max_rel, min_cosine = tol.allowed(noise)
    passed = finite and rel <= max_rel and cosine >= min_cosine
    return Comparison(name, tuple(reference.shape), max_abs, rel, cosine, passed, noise)


def relative_error(reference: np.ndarray, actual: np.ndarray) -> float:
    """Max abs error over the reference's RMS."""
    ref = np.asarray(reference, dtype=np.float64)
    scale = float(np.sqrt(np.mean(ref**2)))
    error = float(np.max(np.abs(ref - np.asarray(actual, dtype=np.float64))))
    if scale > 0:
        return error / scale
    return 0.0 if error == 0 else float("inf")
