"""Neural-network ``.mlmodel`` files evaluated layer by layer: numeric parity, wrong ones fail.

Models are made once per module from ``seed_ca`` at 32x32 (one with an image input
and labels) and from a copy with one CA gate conv scaled by 1.5.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from conftest import CPU_FP32, assert_within

from ca_export.export.coreml import pixels
from ca_export.verify.mil.network import LAYERS, NetworkProgram
from ca_export.verify.mil.program import load_program, run_program
from cli.main import cli
from sample_models import build

SHAPE = "1,3,32,32"
PERTURBED = """
import torch
from sample_models import build

def seed_perturbed():
    model = build("seed_ca")
    with torch.no_grad():
        model.stages[3].yfc.weight.mul_(1.5)
    return model
"""


def _coreml(model: str, output: Path, *extra: str) -> Path:
    args = ["coreml", model, "-o", str(output), "--input-shape", SHAPE, "--format", "neuralnetwork"]
    result = CliRunner().invoke(cli, [*args, *extra])
    assert result.exit_code == 0, result.output
    assert "check mil_parity: passed" in result.output
    return output


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("nn")
    factory = folder / "perturbed.py"
    factory.write_text(PERTURBED)
    labels = folder / "labels.txt"
    labels.write_text("\n".join(f"class {i}" for i in range(10)) + "\n")
    image = ("--image-input", "--scale", "0.02", "--bias", "-2.1,-2.0,-1.8")
    return {
        "right": _coreml("seed_ca", folder / "right.mlmodel", "--precision", "fp16"),
        "wrong": _coreml(f"{factory}:seed_perturbed", folder / "wrong.mlmodel"),
        "image": _coreml("seed_ca", folder / "image.mlmodel", *image, "--labels", str(labels)),
    }


def test_layers_match_pytorch(models: dict[str, Path]) -> None:
    program = load_program(models["image"])
    assert isinstance(program, NetworkProgram) and program.uncovered() == []
    assert {layer.WhichOneof("layer") for layer in program.network.layers} <= set(LAYERS)
    rgb = pixels((1, 3, 32, 32), 1)
    x = rgb * 0.02 + torch.tensor([-2.1, -2.0, -1.8]).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = build("seed_ca").eval()(x).numpy()
    (scores,) = run_program(program, rgb.numpy())
    assert_within(expected, scores, CPU_FP32)


@pytest.mark.parametrize("name", ["right", "image"])
def test_verify_passes_a_neural_network(models: dict[str, Path], name: str) -> None:
    result = CliRunner().invoke(
        cli, ["verify", "seed_ca", str(models[name]), "--input-shape", SHAPE]
    )
    assert result.exit_code == 0, result.output
    assert "ok   1x3x32x32 seed 1" in result.output and "skipped" not in result.output


def test_verify_fails_a_neural_network_of_other_weights(models: dict[str, Path]) -> None:
    result = CliRunner().invoke(
        cli, ["verify", "seed_ca", str(models["wrong"]), "--input-shape", SHAPE]
    )
    assert result.exit_code == 1, result.output
    assert "FAIL 1x3x32x32 seed 1 output" in result.output
