"""LiteRT target: conversion in the litert form, inspection by CA block, the gate, verify."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ca_export.bench import BenchConfig, bench
from ca_export.export.litert import BACKEND, LiteRunner, _block_of
from ca_export.loading import load_model
from ca_export.pipeline.litert import LiteRTJob, export_litert
from ca_export.pipeline.verify import VerifyJob, run_verify
from ca_export.report import load, to_json
from ca_export.report.figures import StructureFigures
from ca_export.tracing import example_input
from ca_export.verify.parity import runner_gate

SMALL = (1, 3, 32, 32)
MNV2 = (1, 3, 64, 64)
BLOCK = (
    "sample_models.seed.SeedNet/torch.nn.modules.container.Sequential_features/"
    "sample_models.seed.CoordAtt_ca/torch.nn.modules.conv.Conv2d_conv1;"
)


def test_block_of_names_the_block_a_tensor_was_traced_in() -> None:
    assert _block_of(BLOCK, ["stem", "features.ca"]) == 1


def test_block_of_names_no_block_for_a_tensor_outside_every_block() -> None:
    other = BLOCK.replace("CoordAtt_ca", "CoordAtt_cab")
    assert _block_of(other, ["features.ca"]) is None
    assert _block_of("serving_default_args_0", ["features.ca"]) is None


@pytest.fixture(scope="module")
def litert_export(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    pytest.importorskip("litert_torch", reason="the litert extra is not installed")
    out = tmp_path_factory.mktemp("litert") / "mnv2.tflite"
    return out, export_litert(LiteRTJob("mobilenetv2_ca", out, input_shape=MNV2))


@pytest.mark.slow
def test_litert_form_is_exact_with_no_ca_transpose_in_one_partition(
    litert_export: tuple[Path, object],
) -> None:
    out, report = litert_export
    assert report.passed and out.is_file()
    structure = report.structure.figures
    assert structure.segments == 1
    assert structure.ca_only_nodes_after == 0
    assert all(t.module == "" and t.block is None for t in structure.transposes)
    assert report.parity.ok and report.parity.figures.blocks is not None


@pytest.mark.slow
def test_litert_gate_fails_an_output_off_by_a_thousandth(
    litert_export: tuple[Path, object],
) -> None:
    out, _ = litert_export
    model = load_model("mobilenetv2_ca").module
    runner = LiteRunner(out.read_bytes())

    def off(x: np.ndarray) -> list[np.ndarray]:
        return [y + 1e-3 * np.sqrt(np.mean(y * y)) for y in runner.run(x)]

    inputs = [(0, example_input(MNV2, 0))]
    assert runner_gate(model, runner.run, ["output"], inputs, BACKEND).passed
    assert not runner_gate(model, off, ["output"], inputs, BACKEND).passed


@pytest.mark.slow
def test_verify_takes_a_tflite(litert_export: tuple[Path, object]) -> None:
    out, _ = litert_export
    report = run_verify(VerifyJob("mobilenetv2_ca", [out], input_shape=MNV2))
    assert report.passed


@pytest.mark.slow
def test_stock_conversion_leaves_transposes_in_ca_blocks(tmp_path: Path) -> None:
    pytest.importorskip("litert_torch", reason="the litert extra is not installed")
    out = tmp_path / "stock.tflite"
    report = export_litert(LiteRTJob("seed_ca", out, input_shape=SMALL, rewrite=False))
    assert report.passed
    assert any(t.module for t in report.structure.figures.transposes)
    assert report.warnings


@pytest.mark.slow
def test_channels_last_io_leaves_no_transpose(tmp_path: Path) -> None:
    pytest.importorskip("litert_torch", reason="the litert extra is not installed")
    out = tmp_path / "nhwc.tflite"
    job = LiteRTJob("mobilenetv2_ca", out, input_shape=MNV2, channels_last_io=True)
    report = export_litert(job)
    assert report.passed
    assert report.structure.figures.transposes == ()
    assert report.structure.figures.segments == 1


@pytest.mark.slow
def test_bench_times_a_tflite(litert_export: tuple[Path, object]) -> None:
    out, _ = litert_export
    report = bench({"litert": out}, MNV2, BenchConfig(1, 2, 0.0, (1,), profile_runs=0))
    timing = report.timing("litert", 1)
    assert timing.runs == 2 and timing.p50_ms > 0


@pytest.mark.slow
def test_a_litert_report_round_trips_through_json(litert_export: tuple[Path, object]) -> None:
    _, report = litert_export
    text = to_json(report.to_dict())
    loaded = load(json.loads(text))
    assert isinstance(loaded.structure.figures, StructureFigures)
    assert to_json(loaded.to_dict()) == text


@pytest.mark.slow
def test_static_int8_keeps_float_io_and_passes_its_lossy_gate(tmp_path: Path) -> None:
    pytest.importorskip("litert_torch", reason="the litert extra is not installed")
    out = tmp_path / "digits.int8.tflite"
    calibration = Path(__file__).parents[2] / "sample_models" / "data" / "digits_calibration"
    job = LiteRTJob("digits_ca", out, input_shape=SMALL, precision="int8", calibration=calibration)
    report = export_litert(job)
    assert report.passed and out.is_file()
    runner = LiteRunner(out.read_bytes())
    assert runner.input["dtype"] == np.float32
    assert all(o["dtype"] == np.float32 for o in runner.outputs)
