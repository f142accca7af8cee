"""Parity metrics and the tolerance table."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ca_export.errors import BadInputError
from ca_export.verify import parity
from ca_export.verify.metrics import compare
from ca_export.verify.tolerances import TOLERANCES, tolerance, user_tolerance

TOL = tolerance("float32", "onnxruntime-cpu")


def test_identical_outputs_pass_with_zero_error() -> None:
    ref = np.random.default_rng(0).normal(size=(2, 10)).astype(np.float32)
    result = compare("logits", ref, ref.copy(), TOL)
    assert result.passed and result.max_abs_err == 0 and result.cosine == pytest.approx(1)


def test_error_is_relative_to_the_signal_scale() -> None:
    ref = np.full((4,), 1000.0, dtype=np.float32)
    small = compare("y", ref, ref + 0.01, TOL)
    assert small.rel_err == pytest.approx(1e-5, rel=1e-3)
    assert small.passed
    tiny = compare("y", ref / 1000, ref / 1000 + 0.01, TOL)
    assert not tiny.passed


def test_rounding_passes_but_a_real_difference_fails() -> None:
    ref = np.random.default_rng(1).normal(size=(1, 32, 8, 8)).astype(np.float32)
    rounding = ref * (1 + np.float32(1e-6))
    assert compare("y", ref, rounding, TOL).passed
    swapped = ref.copy()
    swapped[:, :, 0] = ref[:, :, 1]
    assert not compare("y", ref, swapped, TOL).passed


def test_shape_mismatch_and_nan_fail() -> None:
    ref = np.ones((2, 3), dtype=np.float32)
    assert not compare("y", ref, np.ones((3, 2), dtype=np.float32), TOL).passed
    assert not compare("y", ref, np.full((2, 3), np.nan, dtype=np.float32), TOL).passed


def test_tolerance_table_has_no_loose_defaults() -> None:
    assert all(
        t.rel <= 1e-3 and t.cosine >= 1 - 1e-5 for k, t in TOLERANCES.items() if k[0] == "float32"
    )
    with pytest.raises(BadInputError, match="no parity tolerance"):
        tolerance("int8", "executorch-xnnpack")


def test_user_tolerance_keeps_a_lossy_rows_top1_bounds() -> None:
    base = tolerance("fp16", "onnxruntime-cpu")
    strict = user_tolerance(base, 1e-3, 1e-5)
    assert (strict.rel, strict.atol, strict.cosine) == (1e-3, 1e-5, base.cosine)
    assert (strict.top1, strict.top1_in_top5) == (base.top1, base.top1_in_top5)
    assert base.top1 is not None


def test_model_noise_widens_the_bound_only_by_its_factor() -> None:
    ref = np.random.default_rng(2).normal(size=(1, 1000)).astype(np.float32)
    scale = float(np.sqrt(np.mean(ref.astype(np.float64) ** 2)))
    got = ref.copy()
    got[0, 0] += 1e-3 * scale
    assert not compare("y", ref, got, TOL).passed
    assert not compare("y", ref, got, TOL, noise=1e-4).passed
    assert compare("y", ref, got, TOL, noise=5e-4).passed


def test_noise_widening_stops_at_the_ceiling() -> None:
    ref = np.random.default_rng(3).normal(size=(1, 100)).astype(np.float32)
    got = ref + np.float32(0.5)
    assert TOL.ceiling is not None
    assert not compare("y", ref, got, TOL, noise=0.9).passed
    assert TOL.allowed(0.9)[0] == TOL.ceiling


def test_model_noise_is_measured_only_where_the_bound_fails(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    torch.manual_seed(0)
    model = torch.nn.Linear(8, 4).eval()
    inputs = [(1, torch.randn(2, 8))]
    copies: list[int] = []
    real_copy = parity.float64_copy
    monkeypatch.setattr(parity, "float64_copy", lambda m: copies.append(1) or real_copy(m))

    def exact(x: np.ndarray) -> list[np.ndarray]:
        return [model(torch.from_numpy(x)).detach().numpy()]

    def off(x: np.ndarray) -> list[np.ndarray]:
        return [exact(x)[0] + 0.5]

    assert parity.runner_gate(model, exact, ["y"], inputs, "onnxruntime-cpu").passed
    assert copies == []
    gate = parity.runner_gate(model, off, ["y"], inputs, "onnxruntime-cpu")
    assert not gate.passed and copies == [1]
    assert gate.cases[0].comparisons[0].noise < 1e-6
