"""``ca-export verify``: passes good artifacts, fails and localises bad ones, writes CI reports."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result
from PIL import Image

from ca_export.report import ExportReport
from cli.main import cli

Exported = Callable[[str, bool], tuple[ExportReport, Path]]
SEED = ["--input-shape", "1,3,32,32"]

CORRUPT = """
import torch
from sample_models import build

def seed_corrupted():
    model = build("seed_ca")
    with torch.no_grad():
        model.stages[3].yfc.weight.mul_(1.5)
    return model
"""


def run(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), env=env)


@pytest.fixture(scope="module")
def seed_onnx(exported: Exported) -> Path:
    return exported("seed_ca", False)[1]


def test_good_artifact_passes_with_ci_reports(seed_onnx: Path, tmp_path: Path) -> None:
    junit, md, report = tmp_path / "v.xml", tmp_path / "v.md", tmp_path / "v.json"
    summary = tmp_path / "summary.md"
    result = run(
        "verify",
        "seed_ca",
        str(seed_onnx),
        *SEED,
        "--junit",
        str(junit),
        "--markdown",
        str(md),
        "--report",
        str(report),
        "--html",
        str(tmp_path / "v.html"),
        env={"GITHUB_STEP_SUMMARY": str(summary)},
    )
    assert result.exit_code == 0, result.output
    page = (tmp_path / "v.html").read_text()
    assert 'data-verdict="passed"' in page and page.count('data-figure="parity"') == 1
    suites = ET.fromstring(junit.read_text())
    suite = suites.find("testsuite")
    assert suite is not None
    assert suite.get("tests") == "3" and suite.get("failures") == "0"
    assert len(suite.findall("testcase")) == 3
    assert "— passed" in md.read_text() and summary.read_text() == md.read_text()
    data = json.loads(report.read_text())
    assert data["passed"] is True
    case = data["artifacts"][0]["cases"][0]["comparisons"][0]
    assert case["top1"] == 1.0 and case["psnr"] > 80


def test_corrupted_model_fails_and_names_the_block(seed_onnx: Path, tmp_path: Path) -> None:
    factory = tmp_path / "corrupt.py"
    factory.write_text(CORRUPT)
    junit = tmp_path / "v.xml"
    result = run(
        "verify", f"{factory}:seed_corrupted", str(seed_onnx), *SEED, "--junit", str(junit)
    )
    assert result.exit_code == 1, result.output
    assert "first divergence: module stages.3.yfc (inside a CA block)" in result.stdout
    suite = ET.fromstring(junit.read_text()).find("testsuite")
    assert suite is not None and suite.get("failures") == "3"
    failure = suite.find("testcase/failure")
    assert failure is not None and "stages.3.yfc" in (failure.text or "")


def test_dynamic_artifact_is_checked_at_several_shapes(exported: Exported) -> None:
    _, path = exported("ca_segnet", True)
    result = run("verify", "ca_segnet", str(path), "--input-shape", "1,3,64,64")
    assert result.exit_code == 0, result.output
    for shape in ("1x3x64x64", "2x3x96x128", "2x3x128x96"):
        assert f"ok   {shape}" in result.stdout


def test_static_artifact_skips_other_shapes_and_never_passes_on_skips(seed_onnx: Path) -> None:
    result = run("verify", "seed_ca", str(seed_onnx), *SEED, "--shapes", "1x3x64x64")
    assert result.exit_code == 1
    assert "skipped (artifact's input is static 1x3x32x32)" in result.stdout


def test_user_tolerance_is_honoured(seed_onnx: Path) -> None:
    """User bounds, not the table's: far below rounding fails, ten times the row passes."""
    assert run("verify", "seed_ca", str(seed_onnx), *SEED, "--rtol", "1e-12").exit_code == 1
    assert run("verify", "seed_ca", str(seed_onnx), *SEED, "--atol", "1e-12").exit_code == 1
    assert run("verify", "seed_ca", str(seed_onnx), *SEED, "--rtol", "1e-3").exit_code == 0


def test_user_inputs_arrays_and_images(seed_onnx: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    np.save(tmp_path / "a.npy", rng.normal(size=(3, 32, 32)).astype(np.float32))
    np.savez(tmp_path / "b.npz", first=rng.normal(size=(1, 3, 32, 32)))
    pixels = rng.integers(0, 255, size=(40, 50, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "c.png")
    files = [str(tmp_path / n) for n in ("a.npy", "b.npz", "c.png")]
    args = [a for f in files for a in ("--inputs", f)]
    result = run("verify", "seed_ca", str(seed_onnx), *SEED, *args)
    assert result.exit_code == 0, result.output
    for label in ("a.npy", "b.npz:first", "c.png"):
        assert f"1x3x32x32 {label} output" in result.stdout


@pytest.mark.parametrize("content", [b"not onnx at all", b"\x08\x07\x12\x04trun"])
def test_not_onnx_exits_2(tmp_path: Path, content: bytes) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(content)
    result = run("verify", "seed_ca", str(bad), *SEED)
    assert result.exit_code == 2
    assert "is not a valid ONNX model" in result.stderr


def test_truncated_artifact_exits_2(seed_onnx: Path, tmp_path: Path) -> None:
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(seed_onnx.read_bytes()[:5000])
    result = run("verify", "seed_ca", str(cut), *SEED)
    assert result.exit_code == 2 and "not a valid ONNX model" in result.stderr
