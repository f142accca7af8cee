"""ExecuTorch target: the xnnpack form, lowering report, pipeline gates, verify, bench, CLI."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from ca_zoo import POSITIVE, ZooCase
from click.testing import CliRunner, Result
from torch.export import ExportedProgram

pytest.importorskip("executorch", reason="the executorch extra is not installed")

from ca_export.bench import BenchConfig, bench
from ca_export.export import executorch as et
from ca_export.patterns import find
from ca_export.pipeline.executorch import ExecutorchJob, export_executorch
from ca_export.pipeline.verify import VerifyJob, run_verify
from ca_export.report import ExportReport, load, to_json
from ca_export.rewrites import rewrite
from ca_export.tracing import trace
from cli.main import cli

aten = torch.ops.aten
SMALL = (1, 3, 64, 64)
TINY_MODELS = """
import torch
import torch.nn as nn

def tiny():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4)
    ).eval()
"""


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def _case(name: str) -> ZooCase:
    return next(c for c in POSITIVE if c.name == name)


def _xnnpack_form(case: ZooCase) -> tuple[torch.nn.Module, ExportedProgram, ExportedProgram]:
    model = case.build()
    before = trace(model, case.input_shape, dynamic=False).program
    return model, before, rewrite(before, static=True, form="xnnpack").program


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("models") / "tiny_models.py"
    path.write_text(TINY_MODELS)
    return path


@pytest.fixture(scope="session")
def seed_pte(tmp_path_factory: pytest.TempPathFactory) -> tuple[ExportReport, Path]:
    """seed_ca at 64x64 through the whole pipeline, once per session."""
    out = tmp_path_factory.mktemp("pte") / "seed_ca.pte"
    return export_executorch(ExecutorchJob("seed_ca", out, None, SMALL)), out


def test_xnnpack_form_lowers_into_one_delegate_where_the_onnx_form_splits() -> None:
    case = _case("official")
    _, before, after = _xnnpack_form(case)
    modules = [b.module for b in find(before.graph)[0]]
    lowered = et.lower(after, modules)
    assert (lowered.segments, lowered.outside) == (1, [])
    onnx_form = et.lower(rewrite(before, static=True, form="onnx").program, modules)
    assert onnx_form.segments == 2
    assert et.outside_counts(onnx_form.outside, 0) == {"aten.expand_copy.default": 2}
    assert {o.module for o in onnx_form.outside} == {modules[0]}


def test_seed_ca_pte_passes_its_gates_in_one_delegate(
    seed_pte: tuple[ExportReport, Path],
) -> None:
    report, out = seed_pte
    assert report.passed and report.artifact is not None and out.is_file()
    parity = report.parity.figures
    assert parity.backend == "executorch-xnnpack" and parity.inputs == 3
    assert parity.blocks is not None and not parity.blocks.failures
    assert (report.structure.figures.segments, report.structure.figures.outside) == (1, ())
    assert [b.ca_only_nodes_after for b in report.ca_blocks] == [{}, {}, {}]
    assert not any("outside XNNPACK" in w for w in report.warnings)
    text = to_json(report.to_dict())
    assert to_json(load(json.loads(text)).to_dict()) == text


def test_verify_runs_the_pte_in_executorch(seed_pte: tuple[ExportReport, Path]) -> None:
    _, out = seed_pte
    result = run_verify(VerifyJob("seed_ca", [out], input_shape=SMALL))
    (artifact,) = result.artifacts
    assert result.passed and artifact.backend == "executorch-xnnpack"
    assert [c.input_shape for c in artifact.cases] == [SMALL] * 3
    other = run_verify(VerifyJob("seed_ca", [out], input_shape=SMALL, shapes=[(1, 3, 32, 32)]))
    assert not other.passed and "static 1x3x64x64" in str(other.artifacts[0].cases[0].skipped)


def test_bench_times_pte_next_to_each_other(seed_pte: tuple[ExportReport, Path]) -> None:
    _, out = seed_pte
    config = BenchConfig(warmup=1, runs=3, threads=(1,), profile_runs=0)
    report = bench({"a": out, "b": out}, SMALL, config)
    assert [(t.name, t.runs) for t in report.timings] == [("a", 3), ("b", 3)]
    assert report.breakdown == {}


@pytest.mark.slow
def test_mobilenetv2_ca_lowers_into_one_delegate_and_passes(tmp_path: Path) -> None:
    out = tmp_path / "mnv2.pte"
    report = export_executorch(ExecutorchJob("mobilenetv2_ca", out, None, SMALL))
    assert report.passed and out.is_file()
    assert report.structure.figures.segments == 1 and report.structure.figures.outside == ()


def test_cli_writes_a_gated_pte_and_verify_passes_it(tmp_path: Path, tiny_models: Path) -> None:
    out, report = tmp_path / "tiny.pte", tmp_path / "r.json"
    shape = ["--input-shape", "1,3,16,16"]
    result = run(
        "executorch", f"{tiny_models}:tiny", *shape, "-o", str(out), "--report", str(report)
    )
    assert result.exit_code == 0, result.output
    assert "parity vs PyTorch (executorch-xnnpack, 3 inputs): passed" in result.stdout
    assert "XNNPACK delegate segments: 1" in result.stdout
    assert json.loads(report.read_text())["artifact"]["path"] == str(out)
    result = run("verify", f"{tiny_models}:tiny", str(out), *shape)
    assert result.exit_code == 0, result.output
    timing = ["--runs", "3", "--warmup", "1", "--threads", "1", "--json"]
    result = run("bench", "--pte", str(out), "--pte", str(out), *shape, *timing)
    assert result.exit_code == 0, result.output
    names = [t["name"] for t in json.loads(result.stdout)["timings"]]
    assert names == ["tiny.pte", "tiny.pte'"]


def test_cli_bench_executorch_needs_a_model(tmp_path: Path) -> None:
    result = run("bench", "--onnx", str(tmp_path / "a.onnx"), "--executorch")
    assert result.exit_code == 2 and "--executorch needs MODEL" in result.stderr


def test_cli_perturbed_program_fails_the_gate_and_writes_nothing(
    tmp_path: Path, tiny_models: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = et.lower

    def perturbed(program: ExportedProgram, modules: tuple[str, ...] = ()) -> et.Lowered:
        program = copy.deepcopy(program)
        with torch.no_grad():
            program.state_dict["4.bias"].add_(0.5)
        return original(program, modules)

    monkeypatch.setattr(et, "lower", perturbed)
    out = tmp_path / "tiny.pte"
    result = run("executorch", f"{tiny_models}:tiny", "--input-shape", "1,3,16,16", "-o", str(out))
    assert result.exit_code == 1, result.output
    assert "failed: output at 1x3x16x16" in result.stdout and "no artifact written" in result.stdout
    assert list(tmp_path.iterdir()) == []


def test_cli_help_lists_the_options() -> None:
    result = run("executorch", "--help")
    assert result.exit_code == 0
    for option in ("--output", "--dynamic", "--report", "--no-rewrite", "--input-shape"):
        assert option in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["seed_ca", "-o", "{tmp}/m.onnx"], "saved as .pte"),
        (["seed_ca", "-o", "{tmp}/no/m.pte"], "does not exist"),
        (["no_such_model", "-o", "{tmp}/m.pte"], "no_such_model"),
    ],
)
def test_cli_bad_input_exits_2(tmp_path: Path, args: list[str], message: str) -> None:
    result = run("executorch", *[a.replace("{tmp}", str(tmp_path)) for a in args])
    assert result.exit_code == 2, result.output
    assert message in result.stderr and "Traceback" not in result.output
    assert list(tmp_path.iterdir()) == []


def test_cli_does_not_replace_a_file_that_is_not_a_pte(tmp_path: Path) -> None:
    mine = tmp_path / "notes.pte"
    mine.write_text("my notes")
    result = run("executorch", "seed_ca", "-o", str(mine))
    assert result.exit_code == 2, result.output
    assert mine.read_text() == "my notes"
