"""fp32-arithmetic parity of fp16 ML programs: exact constants, fp32 bound, wrong ones fail.

Packages are made once per module from ``seed_ca`` at 32x32 and from a copy whose
gate conv is scaled by 1.01, a change the fp16 gate's bound lets through.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ca_export.export import coreml as coreml_export
from ca_export.export.coreml import InputSpec, Target
from ca_export.pipeline.common import Front, Stages, prepare
from ca_export.pipeline.coreml import CoreMLJob, export_coreml
from ca_export.report import ExportReport
from ca_export.report.figures import ArithmeticFigures
from ca_export.tracing import example_input
from ca_export.verify.mil.fp32_arithmetic import fp32_arithmetic_parity, twin_function
from ca_export.verify.mil.parity import mil_parity
from ca_export.verify.parity import GateResult
from ca_export.verify.tolerances import tolerance
from sample_models import build

SHAPE = (1, 3, 32, 32)
SAMPLES = {
    "seed_ca": (1, 3, 32, 32),
    "mobilenetv2_ca": (1, 3, 64, 64),
    "mobilenext_ca": (1, 3, 64, 64),
    "ca_segnet": (1, 3, 64, 64),
    "mobilenetv2": (1, 3, 64, 64),
}
NUDGED = """
import torch
from sample_models import build

def seed_nudged():
    model = build("seed_ca")
    with torch.no_grad():
        model.stages[3].yfc.weight.mul_(1.01)
    return model
"""


def _convert(spec_name: str, folder: Path, name: str) -> tuple[Path, dict[str, Any]]:
    """The fp16 package of a model spec, and its fp32 twin."""
    report = ExportReport(spec_name, "test", "coreml", list(SHAPE), False, True, 0)
    prep = prepare(Front(spec_name, None, SHAPE, False, True), Stages(lambda _: None), report)
    spec = InputSpec(prep.traced.input_names[0], SHAPE)
    names = prep.traced.output_names
    model = coreml_export.convert(prep.program, spec, Target("mlprogram", "fp16"), names)
    path = folder / f"{name}.mlpackage"
    coreml_export.save(model, path)
    twin = coreml_export.convert(prep.program, spec, Target("mlprogram", "fp32"), names)
    return path, twin_function(twin)


@pytest.fixture(scope="module")
def programs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, dict[str, Any]]]:
    folder = tmp_path_factory.mktemp("fp32a")
    factory = folder / "nudged.py"
    factory.write_text(NUDGED)
    return {
        "right": _convert("seed_ca", folder, "right"),
        "nudged": _convert(f"{factory}:seed_nudged", folder, "nudged"),
    }


FP32_COREML = tolerance("float32", "coreml")
"""The row fp32-arithmetic parity judges with."""
INPUTS = [(seed, example_input(SHAPE, seed)) for seed in (1, 2)]


def test_fp16_program_in_fp32_arithmetic_meets_the_fp32_bound(programs: dict[str, Any]) -> None:
    path, twin = programs["right"]
    result = fp32_arithmetic_parity(path, build("seed_ca").eval(), INPUTS, twin)
    figures = ArithmeticFigures.of(result)
    assert figures.passed, figures
    assert 0 < figures.rel_err <= FP32_COREML.rel
    assert figures.fp16_constants > 0 and figures.constant_mismatches == ()


def test_a_wrong_program_under_fp16_noise_fails_in_fp32_arithmetic(
    programs: dict[str, Any],
) -> None:
    path, twin = programs["nudged"]
    model = build("seed_ca").eval()
    fp16 = mil_parity(path, model, INPUTS, "fp16")
    assert isinstance(fp16, GateResult) and fp16.passed
    result = fp32_arithmetic_parity(path, model, INPUTS, twin)
    assert not result.passed and not result.mismatches
    assert ArithmeticFigures.of(result).rel_err > FP32_COREML.rel


def test_constants_that_are_not_the_twin_rounded_fail(programs: dict[str, Any]) -> None:
    path, _ = programs["right"]
    _, other = programs["nudged"]
    result = fp32_arithmetic_parity(path, build("seed_ca").eval(), INPUTS, other)
    assert not result.passed
    assert result.mismatches and "not the twin's value rounded" in result.mismatches[0]


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_default_fp16_export_of_every_sample_passes_fp32_arithmetic(
    name: str, tmp_path: Path
) -> None:
    job = CoreMLJob(name, tmp_path / f"{name}.mlpackage", input_shape=SAMPLES[name])
    report = export_coreml(job)
    arithmetic = report.checks["mil_parity"].figures.fp32_arithmetic
    assert arithmetic.passed and arithmetic.rel_err <= FP32_COREML.rel, arithmetic
    assert report.passed and report.artifact is not None
