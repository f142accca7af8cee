"""Shared fixtures: traces, rewrites and exports are made once per session and reused by
every test file that needs the same one (keyed by model and options)."""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from ca_zoo import NEGATIVE, POSITIVE, ZooCase

from ca_export.bench import bench
from ca_export.pipeline import OnnxJob, export_onnx
from ca_export.pipeline.common import Front, Prepared, Stages, prepare
from ca_export.pipeline.optimize import OptimizeJob, optimize_onnx
from ca_export.pipeline.verify import VerifyJob, run_verify
from ca_export.report import ExportReport
from ca_export.report.results import BenchConfig
from ca_export.rewrites import DEFAULT_TARGET, RewriteResult, rewrite
from ca_export.tracing import Traced, trace
from ca_export.verify.metrics import Comparison, compare
from ca_export.verify.tolerances import Tolerance, tolerance

# One torch thread per xdist worker: two workers already use both cores, and torch's thread
# pool spins when its threads find the cores busy (8 small forwards: 3.4 s with two threads
# against 0.02 s with one, measured at load 7).
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)

SMALL_SHAPES = {
    "seed_ca": (1, 3, 32, 32),
    "mobilenetv2_ca": (1, 3, 64, 64),
    "mobilenext_ca": (1, 3, 64, 64),
    "ca_segnet": (1, 3, 64, 64),
    "mobilenetv2": (1, 3, 64, 64),
    "yolov5_ca": (1, 3, 64, 64),
}
"""The small input each sample model is exported at in the fast tests."""

ZOO: dict[str, ZooCase] = {c.name: c for c in POSITIVE + NEGATIVE}

EXACT = tolerance("float32", "torch")
"""The per-block gate's row: a rewritten PyTorch program against the forward it replaces."""
CPU_FP32 = tolerance("float32", "onnxruntime-cpu")
"""An fp32 runtime on this CPU (ONNX Runtime, the NumPy MIL evaluator) against PyTorch. The
gate judges the evaluator with the Core ML row, whose extra room is for Core ML's GPU."""


def _arrays(value: object) -> list[np.ndarray]:
    if isinstance(value, torch.Tensor):
        return [value.detach().numpy()]
    if isinstance(value, (tuple, list)):
        return [a for item in value for a in _arrays(item)]
    return [np.asarray(value)]


def comparisons(want: object, got: object, tol: Tolerance = EXACT) -> list[Comparison]:
    """``got`` judged against ``want`` under ``tol``, output by output (tensors, arrays, or
    tuples and lists of them, flattened in order)."""
    wants, gots = _arrays(want), _arrays(got)
    assert len(wants) == len(gots), f"{len(gots)} outputs where {len(wants)} are expected"
    return [
        compare(f"output {i}", w, g, tol) for i, (w, g) in enumerate(zip(wants, gots, strict=True))
    ]


def assert_within(want: object, got: object, tol: Tolerance = EXACT) -> None:
    """Every output of ``got`` meets ``tol`` against ``want``."""
    failed = [c for c in comparisons(want, got, tol) if not c.passed]
    assert not failed, failed


ZOO_FACTORIES = """
from ca_zoo import POSITIVE

for _case in POSITIVE:
    globals()[_case.name] = _case.build
"""
"""A ``file.py:factory`` module with one factory per positive ca_zoo case."""


@pytest.fixture(scope="session")
def exported(
    tmp_path_factory: pytest.TempPathFactory,
) -> Callable[..., tuple[ExportReport, Path]]:
    """``exported(name, dynamic, target=DEFAULT_TARGET)``: the ONNX pipeline run once per
    session on a sample model (at its small shape) or a positive ca_zoo case (at its own
    shape); report and path."""
    cache: dict[tuple[str, bool, str], tuple[ExportReport, Path]] = {}
    folder = tmp_path_factory.mktemp("exports")
    factories = folder / "zoo_factories.py"
    factories.write_text(ZOO_FACTORIES)

    def get(name: str, dynamic: bool, target: str = DEFAULT_TARGET) -> tuple[ExportReport, Path]:
        if (name, dynamic, target) not in cache:
            path = folder / f"{name}{'_dyn' if dynamic else ''}_{target}.onnx"
            if name in ZOO:
                spec, shape = f"{factories}:{name}", ZOO[name].input_shape
            else:
                spec, shape = name, SMALL_SHAPES[name]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                job = OnnxJob(spec, path, None, shape, dynamic=dynamic, target=target)
                report = export_onnx(job)
            cache[(name, dynamic, target)] = (report, path)
        return cache[(name, dynamic, target)]

    return get


ZooTrace = Callable[..., Traced]
ZooRewrite = Callable[..., RewriteResult]
Prepare = Callable[..., Prepared]


@pytest.fixture(scope="session")
def zoo_trace() -> ZooTrace:
    """``zoo_trace(name, dynamic=False, shape=None, decompose=True)``: the trace of a ca_zoo
    case (at its own input shape unless ``shape``; decomposed, or in torch.export's IR as the
    ONNX pipeline traces), made once per session.

    Shared by test_patterns, test_rewrites and test_gate_once; ``find`` and ``rewrite`` leave
    the program untouched (test_input_program_is_left_untouched checks it).
    """
    cache: dict[tuple[str, tuple[int, ...], bool, bool], Traced] = {}

    def get(
        name: str,
        dynamic: bool = False,
        shape: tuple[int, ...] | None = None,
        decompose: bool = True,
    ) -> Traced:
        key = (name, shape or ZOO[name].input_shape, dynamic, decompose)
        if key not in cache:
            cache[key] = trace(ZOO[name].build(), key[1], dynamic, decompose=decompose)
        return cache[key]

    return get


@pytest.fixture(scope="session")
def zoo_rewrite(zoo_trace: ZooTrace) -> ZooRewrite:
    """``zoo_rewrite(name, dynamic=False)``: ``rewrite`` of a zoo case's trace (static pools
    unless ``dynamic``), made once per session."""
    cache: dict[tuple[str, bool], RewriteResult] = {}

    def get(name: str, dynamic: bool = False) -> RewriteResult:
        if (name, dynamic) not in cache:
            cache[(name, dynamic)] = rewrite(zoo_trace(name, dynamic).program, static=not dynamic)
        return cache[(name, dynamic)]

    return get


@pytest.fixture(scope="session")
def prepared() -> Prepare:
    """``prepared(model, shape, dynamic=False, do_rewrite=True)``: a model loaded, traced,
    searched and rewritten as the Core ML pipeline does it, once per session; shared by
    test_coreml and test_mil_eval."""
    cache: dict[tuple[str, tuple[int, ...], bool, bool], Prepared] = {}

    def get(
        model: str, shape: tuple[int, ...], dynamic: bool = False, do_rewrite: bool = True
    ) -> Prepared:
        key = (model, tuple(shape), dynamic, do_rewrite)
        if key not in cache:
            report = ExportReport(model, "test", "coreml", list(shape), dynamic, do_rewrite, 0)
            stages = Stages(lambda _: None)
            cache[key] = prepare(Front(model, None, key[1], dynamic, do_rewrite), stages, report)
        return cache[key]

    return get


@pytest.fixture(scope="session")
def run_reports(
    exported: Callable[..., tuple[ExportReport, Path]], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """One small report of each kind, made once: ``export`` (seed_ca to ONNX), ``optimize``
    (that file, whose blocks are rewritten already), ``verify`` (that file under a bound
    it cannot meet, so that it fails and localises) and ``bench`` (that file, a few runs)."""
    report, path = exported("seed_ca", False)
    folder = tmp_path_factory.mktemp("run_reports")
    job = OptimizeJob(path, folder / "optimized.onnx")
    verify = VerifyJob("seed_ca", [path], input_shape=SMALL_SHAPES["seed_ca"], rtol=1e-12)
    config = BenchConfig(warmup=1, runs=5, threads=(1,), profile_runs=2, layouts=("blocked",))
    return {
        "export": report,
        "optimize": optimize_onnx(job),
        "verify": run_verify(verify),
        "bench": bench({"stock": path, "baseline": path}, None, config),
    }
