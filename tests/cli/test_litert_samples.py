"""``ca-export litert`` on every sample at its default size, static fp32 (slow).

``mobilenetv2_ca`` and ``seed_ca`` are covered by ``tests/export/test_litert_export.py``
(``seed_ca``'s square-only quirk keeps its TRANSPOSE pairs); every other sample converts
with no TRANSPOSE from a CA block.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from cli.main import cli

SAMPLES = ("ca_segnet", "mobilenext_ca", "mobilenetv2", "yolo_ca", "yolo_cls_ca", "digits_ca")


def _litert(model: str, out: Path) -> tuple[int, str]:
    pytest.importorskip("litert_torch", reason="the litert extra is not installed")
    result = CliRunner().invoke(cli, ["litert", model, "-o", str(out)])
    return result.exit_code, result.output


@pytest.mark.slow
@pytest.mark.parametrize("model", SAMPLES)
def test_litert_converts_and_gates_the_sample(model: str, tmp_path: Path) -> None:
    out = tmp_path / f"{model}.tflite"
    code, output = _litert(model, out)
    assert code == 0, output
    assert "parity vs PyTorch (litert-xnnpack, 3 inputs): passed" in output
    assert "come from CA blocks" not in output
    assert out.is_file()


@pytest.mark.slow
def test_litert_converts_yolov5_with_its_squares_as_multiplies(tmp_path: Path) -> None:
    out = tmp_path / "yolov5_ca.tflite"
    code, output = _litert("yolov5_ca", out)
    assert code == 0, output
    assert output.count("x ** 2 becomes x * x") == 3
    assert "come from CA blocks" not in output
    assert out.is_file()
