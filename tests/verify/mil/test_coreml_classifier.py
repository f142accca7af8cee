"""Core ML classifiers (``--labels``): the evaluator gives their scores, so parity is numeric.

Packages are made once per module from ``seed_ca`` at 32x32 and from a copy with one
CA gate conv scaled by 1.5 (a package of other weights).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import CPU_FP32, assert_within

from ca_export.tracing import example_input
from ca_export.verify.mil.program import evaluate, load_program, run_program
from cli.main import cli
from sample_models import build

SHAPE = "1,3,32,32"
LABELS = [f"class {i}" for i in range(10)]
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
def packages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("classifier")
    labels = folder / "labels.txt"
    labels.write_text("\n".join(LABELS) + "\n")
    factory = folder / "perturbed.py"
    factory.write_text(PERTURBED)
    made = {}
    for name, model in (("right", "seed_ca"), ("wrong", f"{factory}:seed_perturbed")):
        output = folder / f"{name}.mlpackage"
        result = CliRunner().invoke(
            cli,
            ["coreml", model, "-o", str(output), "--input-shape", SHAPE, "--labels", str(labels),
             "--precision", "fp32"],
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        assert "check mil_parity: passed" in result.output
        made[name] = output
    return made


def test_classifier_scores_and_label_match_pytorch(packages: dict[str, Path]) -> None:
    program = load_program(packages["right"])
    x = example_input((1, 3, 32, 32), 1)
    with torch.no_grad():
        expected = build("seed_ca").eval()(x).numpy()
    outputs = evaluate(program, {program.input_names[0]: x.numpy()})
    assert program.classes == LABELS
    assert outputs["classLabel"] == LABELS[int(np.argmax(expected))]
    (scores,) = run_program(program, x.numpy())
    assert_within(expected, scores, CPU_FP32)


def test_verify_compares_a_classifier_numerically(packages: dict[str, Path]) -> None:
    result = CliRunner().invoke(
        cli, ["verify", "seed_ca", str(packages["right"]), "--input-shape", SHAPE]
    )
    assert result.exit_code == 0, result.output
    assert "ok   1x3x32x32 seed 1 classLabel_probs: margin" in result.output
    assert "top-1 1.00" in result.output


def test_verify_fails_a_classifier_of_other_weights(packages: dict[str, Path]) -> None:
    result = CliRunner().invoke(
        cli, ["verify", "seed_ca", str(packages["wrong"]), "--input-shape", SHAPE]
    )
    assert result.exit_code == 1, result.output
    assert "FAIL 1x3x32x32 seed 1 classLabel_probs" in result.output
