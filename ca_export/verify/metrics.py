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


def compare(name: str, reference: np.ndarray, actual: np.ndarray, tol: Tolerance) -> Comparison:
    """Max abs error, that error over the reference's RMS, and cosine similarity."""
    ref = np.asarray(reference, dtype=np.float64).ravel()
    got = np.asarray(actual, dtype=np.float64).ravel()
    if reference.shape != actual.shape:
        return Comparison(name, tuple(actual.shape), float("inf"), float("inf"), 0.0, False)
    max_abs = float(np.max(np.abs(ref - got))) if ref.size else 0.0
    scale = float(np.sqrt(np.mean(ref**2))) if ref.size else 0.0
    rel = max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else float("inf"))
    norms = float(np.linalg.norm(ref) * np.linalg.norm(got))
    cosine = float(ref @ got / norms) if norms > 0 else float(max_abs == 0)
    finite = bool(np.isfinite(got).all())
    passed = finite and rel <= tol.rel and cosine >= tol.cosine
    return Comparison(name, tuple(reference.shape), max_abs, rel, cosine, passed)
