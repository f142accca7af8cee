"""ExecuTorch --dynamic (bounded H/W) and the xnnpack form's last ops outside XNNPACK."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from ca_zoo import POSITIVE, ZooCase
from click.testing import CliRunner

pytest.importorskip("executorch", reason="the executorch extra is not installed")

from ca_export.export import executorch as et
from ca_export.patterns import find
from ca_export.pipeline.executorch import ExecutorchJob, export_executorch
from ca_export.rewrites import rewrite
from ca_export.tracing import Traced, trace
from ca_export.verify.parity import gate_inputs, runner_gate
from cli.main import cli

SMALL = (1, 3, 64, 64)


def _case(name: str) -> ZooCase:
    return next(c for c in POSITIVE if c.name == name)


def _lower_bounded(case: ZooCase, batch: int = 1) -> tuple[Traced, et.Lowered]:
    """A zoo case traced with bounded H/W, rewritten into the xnnpack form and lowered."""
    traced = trace(case.build(), (batch, *case.input_shape[1:]), dynamic=True, bounded=True)
    modules = [b.module for b in find(traced.program.graph)[0]]
    program = rewrite(traced.program, static=False, form="xnnpack").program
    return traced, et.lower(program, modules)


@pytest.fixture(scope="session")
def hardsigmoid_bounded() -> tuple[ZooCase, Traced, et.Lowered]:
    """The hard-sigmoid zoo block with bounded H/W, lowered once per session."""
    case = _case("hardsigmoid_expand")
    return case, *_lower_bounded(case)


@pytest.mark.slow
def test_a_bounded_hard_sigmoid_block_lowers_into_one_delegate_and_runs_at_three_sizes(
    hardsigmoid_bounded: tuple[ZooCase, Traced, et.Lowered],
) -> None:
    case, traced, lowered = hardsigmoid_bounded
    assert (lowered.segments, lowered.outside) == (1, [])
    inputs = gate_inputs(traced, case.input_shape, square_only=False)
    assert sorted({tuple(x.shape) for _, x in inputs}) == [
        (1, 3, 16, 24),
        (1, 3, 24, 48),
        (1, 3, 32, 36),
    ]
    runner = et.PteRunner(lowered.buffer)
    gate = runner_gate(case.build(), runner.run, ["output"], inputs, et.BACKEND)
    assert gate.passed, gate.failures()
    assert len(gate.cases) == 5


@pytest.mark.slow
def test_a_batch_of_two_keeps_both_strip_pools_outside_xnnpack() -> None:
    _, lowered = _lower_bounded(_case("hardsigmoid_expand"), batch=2)
    assert et.outside_counts(lowered.outside, 0) == {"aten.mean.dim": 2}
    assert lowered.segments == 2


@pytest.mark.slow
def test_ca_segnet_lowers_with_no_op_outside_xnnpack(tmp_path: Path) -> None:
    report = export_executorch(ExecutorchJob("ca_segnet", tmp_path / "seg.pte", None, SMALL))
    assert report.passed
    assert (report.structure.figures.segments, report.structure.figures.outside) == (1, ())


@pytest.mark.slow
def test_ca_segnet_dynamic_keeps_only_its_head_upsample_outside(tmp_path: Path) -> None:
    job = ExecutorchJob("ca_segnet", tmp_path / "seg.pte", None, SMALL, dynamic=True)
    report = export_executorch(job)
    assert report.passed and report.parity.figures.inputs == 5
    outside = report.structure.figures.outside
    assert all(o.block is None for o in outside)
    assert et.outside_counts(outside)["aten.upsample_bilinear2d.vec"] == 2
    assert report.structure.figures.ca_only_nodes_after == 0


@pytest.mark.slow
def test_mobilenetv2_ca_dynamic_lowers_into_one_delegate(tmp_path: Path) -> None:
    job = ExecutorchJob("mobilenetv2_ca", tmp_path / "m.pte", None, SMALL, dynamic=True)
    report = export_executorch(job)
    assert report.passed
    assert (report.structure.figures.segments, report.structure.figures.outside) == (1, ())


@pytest.mark.slow
def test_cli_dynamic_seed_ca_is_gated_at_three_square_sizes(tmp_path: Path) -> None:
    out, path = tmp_path / "seed.pte", tmp_path / "r.json"
    args = ["executorch", "seed_ca", "--input-shape", "1,3,64,64", "--dynamic", "-o", str(out)]
    result = CliRunner().invoke(cli, [*args, "--report", str(path)])
    assert result.exit_code == 0, result.output
    assert "dynamic H: 64 to 128" in result.stdout
    assert "XNNPACK delegate segments: 1" in result.stdout
    report = json.loads(path.read_text())
    assert report["structure"]["outside"] == []
    shapes = {tuple(c["input_shape"]) for c in report["parity"]["blocks"]["cases"]}
    assert shapes == {(1, 3, 64, 64), (1, 3, 128, 128), (1, 3, 96, 96)}
