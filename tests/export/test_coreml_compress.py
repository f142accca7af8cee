"""``ca-export coreml --compress``: packages hold constexpr weight ops and pass their gates.

Tests use a tiny conv net with batch norms (its two large weights are compressed, its
small ones are not), converted once per mode for the module. The fast suite converts it
once (int8); palettes, the uncompressed twin and the sample models run with ``-m slow``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import EXACT

from ca_export.pipeline.coreml import CoreMLJob, export_coreml
from ca_export.report import ExportReport, load, to_json
from ca_export.tracing import example_input
from ca_export.verify.mil import ops
from ca_export.verify.mil.compressed import compressed_copy, weight_format
from ca_export.verify.mil.parity import mil_parity
from ca_export.verify.mil.program import MilProgram, load_program
from ca_export.verify.parity import GateResult
from cli.main import cli

TINY = """
import torch
from torch import nn


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 96, 3, padding=1, bias=False)  # 2592 weights: compressed
        self.bn = nn.BatchNorm2d(96)
        self.head = nn.Conv2d(96, 32, 1)  # 3072 weights: compressed
        self.gate = nn.Conv2d(32, 32, 1)  # 1024 weights: kept
        self.fc = nn.Linear(32, 10)
        with torch.no_grad():
            self.bn.weight.uniform_(0.5, 2.0)
            self.bn.bias.normal_()
            self.bn.running_mean.normal_()
            self.bn.running_var.uniform_(0.5, 2.0)
        self.eval()

    def forward(self, x):
        y = torch.relu(self.bn(self.conv(x)))
        y = torch.relu(self.head(y))
        y = y * torch.sigmoid(self.gate(y))
        return self.fc(y.mean(dim=(2, 3)))
"""
SHAPE = (1, 3, 16, 16)
MODES = [pytest.param("int8"), pytest.param("palette6", marks=pytest.mark.slow)]
PRECISION = {"int8": "fp32", "palette6": "fp16", None: "fp16"}
"""int8 (the fast suite's) is converted in fp32, which needs no fp32 twin; palette6 in fp16,
which is also checked in fp32 arithmetic."""
OPS = {"int8": "constexpr_affine_dequantize", "palette6": "constexpr_lut_to_dense"}


@pytest.fixture(scope="module")
def tiny(
    tmp_path_factory: pytest.TempPathFactory,
) -> Callable[[str | None], tuple[ExportReport, Path]]:
    """``tiny(mode)``: the tiny net converted with ``--compress mode`` (iOS16, ``PRECISION``)."""
    folder = tmp_path_factory.mktemp("compress")
    (folder / "tiny_net.py").write_text(TINY)
    cache: dict[str | None, tuple[ExportReport, Path]] = {}

    def get(mode: str | None) -> tuple[ExportReport, Path]:
        if mode not in cache:
            path = folder / f"tiny_{mode}.mlpackage"
            options = {"min_target": "iOS16", "precision": PRECISION[mode]}
            job = CoreMLJob(spec(folder), path, input_shape=SHAPE, compress=mode, **options)
            cache[mode] = (export_coreml(job), path)
        return cache[mode]

    get.folder = folder  # type: ignore[attr-defined]
    return get


def spec(folder: Path) -> str:
    """The tiny net as a ``file.py:factory`` model spec."""
    return f"{folder / 'tiny_net.py'}:Tiny"


def constexpr_types(path: Path) -> set[str]:
    """The op types of the saved program that decompress weights."""
    program = load_program(path)
    assert isinstance(program, MilProgram)
    return {op.op_type for op in program.function.operations if op.op_type.startswith("constexpr")}


@pytest.mark.parametrize("mode", MODES)
def test_compressed_package_holds_constexpr_ops_and_passes(mode: str, tiny: Any) -> None:
    report, path = tiny(mode)
    assert report.passed, report.checks
    assert report.artifact["path"] == str(path)
    assert constexpr_types(path) == {OPS[mode]}
    assert report.checks["compression"].figures.values["constexpr_ops"] == {OPS[mode]: 2}
    mil = report.checks["mil_parity"].to_dict()
    assert mil["passed"]
    # Against the PyTorch copy holding the package's own weights, the package is as close
    # as a rewrite must be to its forward (the exact row's figure, stricter than Core ML's).
    if PRECISION[mode] == "fp16":
        assert mil["fp32_arithmetic"]["passed"]
        assert mil["fp32_arithmetic"]["rel_err"] < EXACT.rel
    else:
        assert report.parity.figures.max_rel_err < EXACT.rel
    weights = report.checks["compressed_weights"].to_dict()
    assert weights["passed"] and weights["tolerance"] == f"{mode}-weights"
    assert (weights["weights_placed"], weights["factors_fitted"]) == (2, 0)
    assert weights["weights_unmatched"] == 0
    assert weights["max_rel_err"] > 0
    text = to_json(report.to_dict())
    assert to_json(load(json.loads(text)).to_dict()) == text


@pytest.mark.parametrize("mode", MODES)
def test_verify_passes_a_compressed_package(mode: str, tiny: Any) -> None:
    _, path = tiny(mode)
    args = ["verify", spec(tiny.folder), str(path), "--input-shape", "1,3,16,16"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    dtype = {"fp16": "float16", "fp32": "float32"}[PRECISION[mode]]
    assert f"({dtype}, coreml-mil-numpy): passed" in result.output
    assert f"output ({mode}-weights in PyTorch)" in result.output


def _wrong_lut(
    indices: np.ndarray, lut: np.ndarray, shape: Any = None, vector_axis: Any = None
) -> np.ndarray:
    return ops.constexpr_lut_to_dense(indices, np.roll(np.asarray(lut), 1), shape, vector_axis)


def _wrong_scale(quantized_data: Any, zero_point: Any, scale: Any, axis: Any) -> np.ndarray:
    return ops.constexpr_affine_dequantize(quantized_data, zero_point, 1.1 * scale, axis)


@pytest.mark.parametrize(
    ("mode", "broken"),
    [pytest.param("palette6", _wrong_lut, marks=pytest.mark.slow), ("int8", _wrong_scale)],
    ids=["wrong lut", "wrong scale"],
)
def test_broken_decompression_fails_the_gate(
    mode: str, broken: Callable[..., np.ndarray], tiny: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, path = tiny(mode)
    model = _load_tiny(tiny.folder)
    inputs = [(1, example_input(SHAPE, 1))]
    honest = mil_parity(path, model, inputs, PRECISION[mode])
    assert isinstance(honest, GateResult) and honest.passed
    monkeypatch.setitem(ops.OPS, OPS[mode], broken)
    result = mil_parity(path, model, inputs, PRECISION[mode])
    assert isinstance(result, GateResult)
    assert not result.passed
    assert result.failures()


def _load_tiny(folder: Path) -> Any:
    from ca_export.loading import load_model

    return load_model(spec(folder), None, False).module


@pytest.mark.slow
@pytest.mark.parametrize(("mode", "key"), [(None, None), ("palette6", "palette6-weights")])
def test_weight_format_of_a_package(mode: str | None, key: str | None, tiny: Any) -> None:
    """An uncompressed package has no weight format and no compressed copy."""
    report, path = tiny(mode)
    assert report.passed
    program = load_program(path)
    assert isinstance(program, MilProgram)
    assert weight_format(program) == key
    copy = compressed_copy(program, _load_tiny(tiny.folder), SHAPE)
    assert (copy is None) == (key is None)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--format", "neuralnetwork"], "--compress needs --format mlprogram"),
        (["--min-target", "iOS15"], "--compress needs --min-target iOS16 or later"),
    ],
)
def test_compress_refuses_what_cannot_hold_it(
    args: list[str], message: str, tmp_path: Path
) -> None:
    suffix = ".mlmodel" if "neuralnetwork" in args else ".mlpackage"
    out = tmp_path / f"m{suffix}"
    result = CliRunner().invoke(
        cli, ["coreml", "seed_ca", "-o", str(out), "--compress", "int8", *args]
    )
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not out.exists()


@pytest.mark.slow
@pytest.mark.parametrize("target", ["iOS16", "iOS18"])
@pytest.mark.parametrize("mode", ["int8", "palette6"])
def test_sample_package_converts_and_passes_verify(mode: str, target: str, tmp_path: Path) -> None:
    """The issue's done-when on seed_ca (fp16): both op forms (iOS16 and iOS18) of each mode."""
    out = tmp_path / f"seed_{mode}.mlpackage"
    shape = ["--input-shape", "1,3,32,32"]
    args = ["coreml", "seed_ca", "-o", str(out), "--compress", mode, "--min-target", target]
    result = CliRunner().invoke(cli, [*args, *shape])
    assert result.exit_code == 0, result.output
    expected = {
        ("int8", "iOS16"): "constexpr_affine_dequantize",
        ("int8", "iOS18"): "constexpr_blockwise_shift_scale",
    }.get((mode, target), "constexpr_lut_to_dense")
    assert constexpr_types(out) == {expected}
    result = CliRunner().invoke(cli, ["verify", "seed_ca", str(out), *shape])
    assert result.exit_code == 0, result.output
    assert "(float16, coreml-mil-numpy): passed" in result.output


@pytest.mark.slow
def test_a_model_that_falls_apart_exits_1(tmp_path: Path) -> None:
    """seed_ca's 4-bit palettes lose its top-1 in PyTorch already: exit 1, nothing written."""
    out = tmp_path / "seed_palette4.mlpackage"
    args = ["coreml", "seed_ca", "-o", str(out), "--compress", "palette4"]
    result = CliRunner().invoke(cli, [*args, "--input-shape", "1,3,32,32"])
    assert result.exit_code == 1, result.output
    assert "check compressed_weights: FAILED" in result.output
    assert "failed: output (palette4-weights in PyTorch)" in result.output
    assert "check mil_parity: passed" in result.output
    assert not out.exists()


SMALL_ONLY = """
import torch
from torch import nn


def small():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU()).eval()
"""


def test_a_model_with_only_small_weights_is_refused_before_converting(tmp_path: Path) -> None:
    (tmp_path / "small_net.py").write_text(SMALL_ONLY)
    out = tmp_path / "small.mlpackage"
    args = ["coreml", f"{tmp_path / 'small_net.py'}:small", "-o", str(out), "--compress", "int8"]
    result = CliRunner().invoke(cli, [*args, "--input-shape", "1,3,16,16"])
    assert result.exit_code == 2, result.output
    assert "no weight of 2048 elements or more" in result.output
    assert "[trace]" in result.output and "[convert]" not in result.output
    assert "Traceback" not in result.output
    assert not out.exists()
