"""Shared fixtures: sample-model exports are made once per session."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import pytest

from ca_export.pipeline import OnnxJob, export_onnx
from ca_export.report import ExportReport

SMALL_SHAPES = {
    "seed_ca": (1, 3, 32, 32),
    "mobilenetv2_ca": (1, 3, 64, 64),
    "mobilenext_ca": (1, 3, 64, 64),
    "ca_segnet": (1, 3, 64, 64),
}


@pytest.fixture(scope="session")
def exported(
    tmp_path_factory: pytest.TempPathFactory,
) -> Callable[[str, bool], tuple[ExportReport, Path]]:
    """Export a sample model (static or dynamic) once per session; returns report and path."""
    cache: dict[tuple[str, bool], tuple[ExportReport, Path]] = {}
    folder = tmp_path_factory.mktemp("exports")

    def get(name: str, dynamic: bool) -> tuple[ExportReport, Path]:
        if (name, dynamic) not in cache:
            path = folder / f"{name}{'_dyn' if dynamic else ''}.onnx"
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                report = export_onnx(OnnxJob(name, path, None, SMALL_SHAPES[name], dynamic=dynamic))
            cache[(name, dynamic)] = (report, path)
        return cache[(name, dynamic)]

    return get
