"""Core ML image inputs end to end: a real RGB photo through the package against PyTorch.

The package takes RGB pixels and applies ``scale * pixel + bias`` itself; PyTorch gets
the same photo normalised by hand the usual way, ``(pixel / 255 - mean) / std``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import CPU_FP32, assert_within, comparisons
from PIL import Image

from ca_export.export.coreml import ImageInput, pixels
from ca_export.verify.mil.parity import mil_parity
from ca_export.verify.mil.program import load_program, run_program
from ca_export.verify.parity import GateResult
from ca_export.verify.tolerances import tolerance
from cli.main import cli
from sample_models import build

skimage_data = pytest.importorskip("skimage.data")

SHAPE = "1,3,32,32"
MEAN = (0.485, 0.456, 0.406)
STD = 0.226
SCALE = 1 / (255 * STD)
BIAS = tuple(-m / STD for m in MEAN)
BIAS_ARG = ",".join(repr(b) for b in BIAS)


def _photo(size: int) -> np.ndarray:
    """scikit-image's astronaut photo resized to ``size``: RGB pixels 1,3,H,W as float32."""
    image = Image.fromarray(skimage_data.astronaut()).resize(
        (size, size), Image.Resampling.BILINEAR
    )
    return np.asarray(image, dtype=np.float32).transpose(2, 0, 1)[None].copy()


def _by_hand(rgb: np.ndarray) -> torch.Tensor:
    """The photo normalised for PyTorch without ca-export's code."""
    mean = np.array(MEAN, dtype=np.float32).reshape(1, 3, 1, 1)
    return torch.from_numpy(((rgb / 255 - mean) / STD).astype(np.float32))


def _export(folder: Path, name: str, bias: str) -> tuple[int, str, Path]:
    output = folder / f"{name}.mlpackage"
    result = CliRunner().invoke(
        cli,
        ["coreml", "seed_ca", "-o", str(output), "--input-shape", SHAPE, "--precision", "fp32",
         "--image-input", "--scale", repr(SCALE), "--bias", bias],
    )  # fmt: skip
    return result.exit_code, result.output, output


@pytest.fixture(scope="module")
def packages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The right package (exit 0), and one whose bias is wrong (built, then copied aside)."""
    folder = tmp_path_factory.mktemp("image")
    code, text, right = _export(folder, "right", BIAS_ARG)
    assert code == 0, text
    code, text, wrong = _export(folder, "wrong", "0,0,0")
    assert code == 0, text
    photo = folder / "astronaut.png"
    Image.fromarray(skimage_data.astronaut()).save(photo)
    return {"right": right, "wrong": wrong, "photo": photo}


def test_photo_through_the_package_matches_pytorch(packages: dict[str, Path]) -> None:
    rgb = _photo(32)
    got = run_program(load_program(packages["right"]), rgb)[0]
    with torch.no_grad():
        expected = build("seed_ca").eval()(_by_hand(rgb)).numpy()
    assert_within(expected, got, CPU_FP32)
    wrong = run_program(load_program(packages["wrong"]), rgb)[0]
    assert not any(c.passed for c in comparisons(expected, wrong, tolerance("float32", "coreml")))


def test_parity_feeds_pixels_to_the_package_and_normalised_pixels_to_pytorch(
    packages: dict[str, Path],
) -> None:
    model = build("seed_ca").eval()
    image = ImageInput(SCALE, BIAS)
    inputs = [(1, pixels((1, 3, 32, 32), 1))]
    right = mil_parity(packages["right"], model, inputs, "fp32", image)
    assert isinstance(right, GateResult) and right.passed, right
    wrong = mil_parity(packages["wrong"], model, inputs, "fp32", image)
    assert isinstance(wrong, GateResult) and not wrong.passed


def test_verify_reads_the_recorded_preprocessing_and_takes_a_photo(
    packages: dict[str, Path],
) -> None:
    result = CliRunner().invoke(
        cli,
        ["verify", "seed_ca", str(packages["right"]), "--input-shape", SHAPE,
         "--inputs", str(packages["photo"])],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "astronaut.png" in result.output and "skipped" not in result.output
    assert "from the package's ca-export metadata" in result.output


def test_verify_fails_a_package_with_the_wrong_bias(packages: dict[str, Path]) -> None:
    result = CliRunner().invoke(
        cli,
        ["verify", "seed_ca", str(packages["wrong"]), "--input-shape", SHAPE,
         "--scale", repr(SCALE), "--bias", BIAS_ARG],
    )  # fmt: skip
    assert result.exit_code == 1, result.output
    assert "FAIL " in result.output and "from --scale/--bias" in result.output
