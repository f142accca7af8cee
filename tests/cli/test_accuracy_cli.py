"""``--eval-data`` and ``--max-accuracy-drop`` on the commands, on the trained ``digits_ca``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result

from ca_export.export.precision import calibration_inputs
from ca_export.report import ExportReport, load
from ca_export.report.figures import AccuracyFigures
from cli.main import cli
from sample_models.digits import CALIBRATION_DIR, EVAL_DIR, INPUT_SHAPE

DIGITS = ["digits_ca", "--input-shape", ",".join(map(str, INPUT_SHAPE))]
EVAL = ["--eval-data", str(EVAL_DIR)]


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def _checks(report: Path) -> dict:
    return json.loads(report.read_text())["checks"]


def test_max_accuracy_drop_needs_eval_data(tmp_path: Path) -> None:
    result = run("onnx", *DIGITS, "-o", str(tmp_path / "m.onnx"), "--max-accuracy-drop", "1")
    assert result.exit_code == 2
    assert "--max-accuracy-drop needs --eval-data" in result.output
    assert not (tmp_path / "m.onnx").exists()


def test_eval_data_must_be_an_image_folder_layout(tmp_path: Path) -> None:
    result = run("onnx", *DIGITS, "-o", str(tmp_path / "m.onnx"), "--eval-data", str(tmp_path))
    assert result.exit_code == 2
    assert "no class folders" in result.output


@pytest.mark.slow
@pytest.mark.parametrize(
    "options",
    [
        ["--precision", "fp16"],
        ["--precision", "int8", "--calibration", str(CALIBRATION_DIR)],
    ],
    ids=["fp16", "int8"],
)
def test_onnx_lossy_keeps_the_trained_accuracy(tmp_path: Path, options: list[str]) -> None:
    """Default bounds: the drop is within 1 point (measured: 0.00 for both)."""
    report = tmp_path / "r.json"
    out = tmp_path / "m.onnx"
    result = run("onnx", *DIGITS, "-o", str(out), *options, *EVAL, "--report", str(report))
    assert result.exit_code == 0, result.output
    accuracy = _checks(report)["accuracy"]
    assert accuracy["verdict"] == "passed" and accuracy["samples"] == 360
    assert accuracy["reference_top1"] > 0.95 and accuracy["drop"] <= 1.0
    loaded = load(json.loads(report.read_text()))
    assert isinstance(loaded, ExportReport)
    assert isinstance(loaded.checks["accuracy"].figures, AccuracyFigures)
    verified = run("verify", *DIGITS, str(out), *EVAL)
    assert verified.exit_code == 0, verified.output
    assert "check accuracy: passed" in verified.output


@pytest.mark.slow
def test_clipped_calibration_fails_the_accuracy_gate(tmp_path: Path) -> None:
    """Calibration inputs scaled by 0.5 clip every real digit's activations: int8 top-1
    falls from 98.3 % to about 12 %; the gate fails at the default bound and passes only
    when the bound admits the drop (the lossy agreement gate fails as well)."""
    clipped = tmp_path / "clipped"
    clipped.mkdir()
    real = np.concatenate([x for _, x in calibration_inputs(CALIBRATION_DIR, INPUT_SHAPE)])
    np.save(clipped / "half.npy", real * 0.5)
    report = tmp_path / "r.json"
    out = tmp_path / "m.onnx"
    args = ["onnx", *DIGITS, "-o", str(out), "--precision", "int8", "--calibration", str(clipped)]
    result = run(*args, *EVAL, "--report", str(report))
    assert result.exit_code == 1
    assert "failed: top-1 drop" in result.output
    accuracy = _checks(report)["accuracy"]
    assert accuracy["verdict"] == "failed" and accuracy["drop"] > 50
    assert not out.exists()
    wide = run(*args, *EVAL, "--max-accuracy-drop", "99", "--report", str(report))
    assert wide.exit_code == 1
    assert _checks(report)["accuracy"]["verdict"] == "passed"


@pytest.mark.slow
@pytest.mark.parametrize("mode", [None, "int8", "palette8"])
def test_coreml_keeps_the_trained_accuracy(tmp_path: Path, mode: str | None) -> None:
    report = tmp_path / "r.json"
    compress = ["--compress", mode] if mode else []
    out = tmp_path / "m.mlpackage"
    result = run("coreml", *DIGITS, "-o", str(out), *compress, *EVAL, "--report", str(report))
    assert result.exit_code == 0, result.output
    accuracy = _checks(report)["accuracy"]
    assert accuracy["verdict"] == "passed" and accuracy["drop"] <= 1.0
