"""Fault cases of issue 27 about odd outputs and untrue messages (items 6, 15 and 17):
boolean and integer outputs, NaN in a model's output or in a user's input, a
``KeyboardInterrupt`` no signal sent, and failure lines printed twice.

Each gives exit 0, 1 or 2 with one true line, never a traceback or exit 3.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_faults import one_error, run

from ca_export.report import Check, ExportReport, render_export
from ca_export.report.figures import WeightsFigures
from ca_export.verify import lossy
from ca_export.verify.tolerances import tolerance

MODELS = """
import torch
import torch.nn as nn


class Flags(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 10, 3)

    def forward(self, x):
        logits = self.conv(x).mean((2, 3))
        return logits, logits > 0, logits.argmax(1)


class NaNOut(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)

    def forward(self, x):
        return self.conv(x) * float("nan")


def flags():
    torch.manual_seed(0)
    return Flags().eval()


def nan_out():
    torch.manual_seed(0)
    return NaNOut().eval()


def plain():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 4, 1)).eval()


def interrupted():
    raise KeyboardInterrupt
"""

SMALL = ["--input-shape", "1,3,32,32"]


@pytest.fixture
def models(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The working folder, holding ``m.py`` with the models above."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "m.py").write_text(MODELS)
    return tmp_path


# ------------------------------------------------ 17: each failure line printed once


def test_each_failed_line_of_a_check_is_printed_once() -> None:
    """``coreml --compress palette4`` printed the compressed_weights failures twice."""
    failures = ["output at 1x3x32x32 (seed 2): margin 2.12", "output at 1x3x32x32 (seed 3): x"]
    figures = WeightsFigures(
        "torch",
        3,
        max_abs_err=0.9,
        max_rel_err=1.7,
        max_margin=2.12,
        min_cosine=0.56,
        bounds=None,
        failures=tuple(failures),
        format="palette4-weights",
        min_top1=0.0,
        weights_placed=3,
    )
    report = ExportReport("seed_ca", "0", "coreml", [1, 3, 32, 32], False, True, 0)
    report.add(Check.judged("compressed_weights", False, figures))
    text = render_export(report)
    assert "palette4-weights in PyTorch vs fp32: rel err 1.7" in text
    for line in failures:
        assert text.count(f"failed: {line}") == 1, text


# ------------------------------------------- 17: a KeyboardInterrupt that no signal sent


def test_keyboard_interrupt_raised_by_the_model_is_not_called_a_signal(models: Path) -> None:
    """No SIGINT came: the run says what did happen (exit 3), not ``interrupted (SIGINT)``.
    (A real SIGINT still exits 130: ``test_faults``' signal tests.)"""
    result = run("onnx", "m.py:interrupted", *SMALL, "-o", "i.onnx")
    one_error(result, 3, "KeyboardInterrupt raised with no SIGINT received")
    assert "SIGINT)" not in result.stderr
    assert not (models / "i.onnx").exists()


# ------------------------------------------------------- 6: boolean and integer outputs


@pytest.mark.parametrize("command", ["onnx", pytest.param("executorch", marks=pytest.mark.slow)])
def test_boolean_and_integer_outputs_export_and_verify(command: str, models: Path) -> None:
    """``(logits, logits > 0, argmax)``: the gate judges the bool and int64 outputs by
    equality, and ``verify`` of the written file passes the same way."""
    if command == "executorch":
        from ca_export.export import executorch as et

        if not et.EXTRA.available():
            pytest.skip(et.EXTRA.hint)
    out = "f.onnx" if command == "onnx" else "f.pte"
    result = run(command, "m.py:flags", *SMALL, "-o", out, "--report", "r.json")
    assert result.exit_code == 0, result.output
    assert "3 inputs): passed" in result.output
    args = ["verify", "m.py:flags", out, *SMALL, "--junit", "v.xml", "--markdown", "v.md"]
    result = run(*args)
    assert result.exit_code == 0, result.output
    assert "seed 1 output_1: margin 0" in result.output
    assert "seed 1 output_2: margin 0" in result.output


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_boolean_and_integer_outputs_pass_the_lossy_gate(precision: str, models: Path) -> None:
    """The lossy gate judges a bool or int64 output by the share of equal values, not by
    cosine or top-k (which crashed: ``numpy boolean negative``); ``verify`` agrees."""
    out = f"f.{precision}.onnx"
    result = run("onnx", "m.py:flags", *SMALL, "-o", out, "--precision", precision)
    assert result.exit_code == 0, result.output
    assert "output_1: passed; equal values" in result.output
    result = run("verify", "m.py:flags", out, *SMALL)
    assert result.exit_code == 0, result.output
    assert "output_2: passed; equal values" in result.output


@pytest.mark.parametrize("differ", [1, 3])
def test_lossy_gate_holds_integer_outputs_to_the_top1_bound(differ: int) -> None:
    """fp16's top-1 bound is 7/8: one class index of eight may differ, three may not."""
    refs = [[np.array([k], np.int64)] for k in range(8)]
    gots = [[np.array([k + (k < differ)], np.int64)] for k in range(8)]
    gate = lossy.judge(
        refs,
        gots,
        ["label"],
        [str(k) for k in range(8)],
        "fp16",
        "ort",
        tolerance("fp16", "onnxruntime-cpu"),
    )
    assert gate.passed == (differ == 1), gate.failures()
    assert gate.outputs[0].equal == (8 - differ) / 8


# ------------------------------------------------------------------- 15: NaN messages


def test_a_model_whose_own_output_is_nan_is_told_so(models: Path) -> None:
    """Not ``rel err inf, max abs err nan, cosine 0``: PyTorch's output is NaN."""
    result = run("onnx", "m.py:nan_out", *SMALL, "-o", "n.onnx")
    one_error(result, 1, "check failed: parity")
    assert "the reference (PyTorch) output is NaN at 4096 of 4096 values" in result.stdout
    assert not (models / "n.onnx").exists()


def _with(value: float, path: Path) -> Path:
    """A finite 1,3,32,32 array with ``value`` at one element, saved at ``path``."""
    x = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
    x[0, 1, 2, 3] = value
    np.save(path, x)
    return path


@pytest.mark.parametrize("value", [float("nan"), float("inf"), 0.5], ids=["nan", "inf", "finite"])
def test_verify_refuses_a_non_finite_input_naming_the_file(value: float, models: Path) -> None:
    """A NaN input makes both sides NaN: nothing can be judged, and no module is to blame.
    Refused (exit 2) naming the file; the finite twin verifies."""
    assert run("onnx", "m.py:plain", *SMALL, "-o", "p.onnx").exit_code == 0
    result = run(
        "verify", "m.py:plain", "p.onnx", *SMALL, "--inputs", _with(value, models / "x.npy")
    )
    if value == 0.5:
        assert result.exit_code == 0, result.output
    else:
        kind = "NaN" if np.isnan(value) else "Inf"
        one_error(result, 2, f"input x.npy holds {kind} at 1 of 3072 values")
        assert "first divergence" not in result.output


@pytest.mark.parametrize("value", [float("nan"), float("-inf")], ids=["nan", "inf"])
def test_a_non_finite_calibration_sample_is_refused_naming_the_file(
    value: float, models: Path
) -> None:
    (models / "cal").mkdir()
    _with(0.5, models / "cal" / "a.npy")
    _with(value, models / "cal" / "b.npy")
    args = ["onnx", "m.py:plain", *SMALL, "-o", "q.onnx", "--precision", "int8"]
    result = run(*args, "--calibration", "cal")
    kind = "NaN" if np.isnan(value) else "Inf"
    one_error(result, 2, f"input b.npy holds {kind} at 1 of 3072 values")
    assert not (models / "q.onnx").exists()
    (models / "cal" / "b.npy").unlink()
    assert run(*args, "--calibration", "cal").exit_code == 0
