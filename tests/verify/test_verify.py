"""Parity metrics and the tolerance table."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from ca_export.errors import BadInputError
from ca_export.verify import metrics, parity
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
    exact = [t for k, t in TOLERANCES.items() if k[0] == "float32"]
    assert all(t.rel <= 1e-3 and t.cosine is None and t.floor < 1e-5 for t in exact)
    assert all(t.ceiling is not None and t.ceiling <= 3e-3 for t in exact if t.noise_factor)
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

    def alike(noise: float) -> list[np.ndarray]:
        other = ref.copy()
        other[0, 1] += noise * scale
        return [other]

    assert not compare("y", ref, got, TOL).passed
    assert not compare("y", ref, got, TOL, alike(1e-4)).passed
    assert compare("y", ref, got, TOL, alike(5e-4)).passed


def test_noise_widening_stops_at_the_ceiling() -> None:
    ref = np.random.default_rng(3).normal(size=(1, 100)).astype(np.float32)
    got = ref + np.float32(0.5)
    assert TOL.ceiling is not None
    result = compare("y", ref, got, TOL, [ref + np.float32(0.9)])
    assert not result.passed and result.slack == pytest.approx(TOL.ceiling)


def _detections(seed: int) -> np.ndarray:
    """A YOLOv5-like output: 300 boxes of xywh in pixels, objectness and 3 class scores."""
    rng = np.random.default_rng(seed)
    boxes = rng.uniform(0, 320, size=(1, 300, 4))
    scores = rng.uniform(0, 0.2, size=(1, 300, 4))
    return np.concatenate([boxes, scores], axis=2)


def test_each_column_of_a_detector_output_is_judged_on_its_own_scale() -> None:
    ref = _detections(4)
    fp32 = ref.copy()
    fp32[..., :4] += 0.05
    noisy_boxes = ref.copy()
    noisy_boxes[..., :4] += 0.1
    result = compare("y", ref, noisy_boxes, TOL, [fp32])
    assert result.passed and result.margin < 1
    wrong_score = ref.copy()
    wrong_score[0, 7, 5] += 2e-3
    result = compare("y", ref, wrong_score, TOL, [fp32])
    assert not result.passed and result.worst_slice == "sample 0, column 5"
    assert result.rel_err < TOL.rel


def test_slices_follow_the_feature_axis() -> None:
    assert metrics.slices((2, 6300, 85)) == (0, 2)
    assert metrics.slices((2, 84, 8400)) == (0, 1)
    assert metrics.slices((2, 16, 8, 8)) == (0, 1)
    assert metrics.slices((2, 16, 1, 1)) == (0,)
    assert metrics.slices((2, 1000)) == (0,)
    assert metrics.slices((7,)) == ()


def test_nan_and_inf_fail_and_say_so() -> None:
    ref = np.ones((1, 8, 4, 4), dtype=np.float32)
    got = ref.copy()
    got[0, 1, 2, 2] = np.inf
    result = compare("y", ref, got, TOL)
    assert not result.passed and "Inf at 1 of 128" in result.note
    both = ref.copy()
    both[0, 0, 0, 0] = np.nan
    result = compare("y", both, both.copy(), TOL)
    assert not result.passed and "reference (PyTorch) output is NaN" in result.note
    assert "the artifact too at 1" in result.note
    ref_inf = ref.copy()
    ref_inf[0, 0, 0, 0] = -np.inf
    assert compare("y", ref_inf, ref_inf.copy(), TOL).passed
    flipped = ref_inf.copy()
    flipped[0, 0, 0, 0] = np.inf
    assert not compare("y", ref_inf, flipped, TOL).passed


def test_boolean_and_integer_outputs_must_be_equal() -> None:
    mask = np.array([[True, False, True]])
    assert compare("mask", mask, mask.copy(), TOL).passed
    result = compare("mask", mask, ~mask, TOL)
    assert not result.passed and result.note == "3 of 3 values differ"
    labels = np.array([[1, 2, 3]], dtype=np.int64)
    assert not compare("labels", labels, labels + 1, TOL).passed


def test_a_lossy_row_judges_the_whole_output() -> None:
    lossy = tolerance("int8-weights", "coreml")
    ref = np.random.default_rng(5).normal(size=(1, 1000)).astype(np.float32)
    assert compare("y", ref, ref * 1.01, lossy).passed
    assert not compare("y", ref, -ref, lossy).passed


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


class _KernelNoise(torch.nn.Module):
    """A linear layer whose fp32 output moves by 4e-4 of itself when oneDNN is off: a
    model whose two fp32 kernel choices disagree by that much."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.linear(x)
        if x.dtype == torch.float32 and not torch._C._get_mkldnn_enabled():
            return y * (1 + 4e-4)
        return y


@pytest.mark.parametrize(("moved", "passes"), [(5e-5, True), (1e-3, True), (3e-3, False)])
def test_noise_is_the_larger_of_two_fp32_runs(moved: float, passes: bool) -> None:
    """An artifact 1e-3 off is within 4 times the second run's noise (4e-4), though far
    beyond the first run's (about 1e-7) and ``rel``; 3e-3 is beyond both."""
    torch.manual_seed(0)
    model = _KernelNoise().eval()
    inputs = [(1, torch.randn(2, 8))]

    def artifact(x: np.ndarray) -> list[np.ndarray]:
        with torch.no_grad():
            return [model(torch.from_numpy(x)).numpy() * (1 + moved)]

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gate = parity.runner_gate(model, artifact, ["y"], inputs, "onnxruntime-cpu")
    assert gate.passed is passes


class _ConvKernelNoise(torch.nn.Module):
    """``_KernelNoise`` as a 1x1 convolution of an image."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        if x.dtype == torch.float32 and not torch._C._get_mkldnn_enabled():
            return y * (1 + 4e-4)
        return y


@pytest.mark.parametrize(("moved", "passes"), [(5e-4, True), (2e-3, False)])
def test_core_ml_prediction_noise_is_the_larger_of_two_fp32_runs(
    moved: float, passes: bool
) -> None:
    """macOS's prediction gate, with a stand-in for the model's ``predict``: 5e-4 off (a
    relative error of 1.6e-3, over ``rel``) is within the second run's noise; 2e-3 is not."""
    from ca_export.export.coreml import InputSpec
    from ca_export.verify.coreml_prediction import prediction_gate

    torch.manual_seed(0)
    model = _ConvKernelNoise().eval()

    class Predicted:
        def predict(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            with torch.no_grad():
                return {"y": model(torch.from_numpy(feeds["x"])).numpy() * (1 + moved)}

    gate = prediction_gate(Predicted(), model, InputSpec("x", (1, 3, 8, 8)), ["y"], "fp32")
    assert gate.passed is passes
