"""Fault cases of issue 27 about odd outputs and untrue messages (items 6, 15 and 17):
boolean and integer outputs, NaN in a model's output or in a user's input, a
``KeyboardInterrupt`` no signal sent, and failure lines printed twice.

Each gives exit 0, 1 or 2 with one true line, never a traceback or exit 3.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from test_faults import one_error, run

from ca_export.report import ExportReport, render_export

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
    check = {
        "ran": True,
        "passed": False,
        "failures": failures,
        "format": "palette4-weights",
        "max_rel_err": 1.7,
        "min_cosine": 0.56,
        "min_top1": 0.0,
        "weights_placed": 3,
        "factors_fitted": 0,
        "weights_unmatched": 0,
    }
    report = ExportReport("seed_ca", "0", "coreml", [1, 3, 32, 32], False, True, 0)
    report.checks["compressed_weights"] = check
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
