"""Localisation for Core ML ML programs: ``verify`` names the first diverging module.

One ``seed_ca`` package (fp32, 32x32) is checked against a copy with one CA gate conv
scaled by 1.5 (diverges at ``stages.3.yfc``) and against ``seed_ca`` itself.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from ca_export.verify.mil.localize import localize_mil, module_exits
from ca_export.verify.mil.program import load_program
from ca_export.verify.tolerances import tolerance
from cli.main import cli
from sample_models import build

PERTURBED = """
import torch
from sample_models import build

def seed_perturbed():
    model = build("seed_ca")
    with torch.no_grad():
        model.stages[3].yfc.weight.mul_(1.5)
    return model
"""


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("localize")
    output = folder / "seed.mlpackage"
    result = CliRunner().invoke(
        cli, ["coreml", "seed_ca", "-o", str(output), "--input-shape", "1,3,32,32",
              "--precision", "fp32"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    (folder / "perturbed.py").write_text(PERTURBED)
    return output


def test_verify_names_the_first_diverging_module(package: Path) -> None:
    factory = package.parent / "perturbed.py"
    report = package.parent / "report.json"
    result = CliRunner().invoke(
        cli, ["verify", f"{factory}:seed_perturbed", str(package), "--input-shape", "1,3,32,32",
              "--report", str(report)],
    )  # fmt: skip
    assert result.exit_code == 1, result.output
    assert "first divergence: module stages.3.yfc (inside a CA block)" in result.output
    layers = json.loads(report.read_text())["artifacts"][0]["localization"]["layers"]
    before = [x for x in layers[: [x["module"] for x in layers].index("stages.3.yfc")]]
    assert len(before) >= 5 and not any(x["diverged"] for x in before)


def test_the_right_model_diverges_nowhere(package: Path) -> None:
    model = build("seed_ca").eval()
    x = torch.randn(1, 3, 32, 32)
    found = localize_mil(
        model, load_program(package), x.numpy(), x, tolerance("float32", "coreml").rel, set()
    )
    assert found.first_divergence is None and len(found.layers) >= 10
    assert module_exits(model, (1, 3, 32, 32))["stages.3.yfc"]
