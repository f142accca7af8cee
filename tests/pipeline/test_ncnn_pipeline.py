"""``ca-export ncnn`` end to end on seed_ca at 32: the size-safe default, --fixed-size, and
verify of both (needs the ncnn extra)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

pytest.importorskip("ncnn", reason='needs the ncnn extra: pip install -e ".[ncnn]"')
pytest.importorskip("pnnx", reason='needs the ncnn extra: pip install -e ".[ncnn]"')

from ca_export.export import ncnn
from ca_export.pipeline.common import Stages, quiet
from ca_export.pipeline.ncnn import FORM, NcnnJob, export_ncnn
from ca_export.report import ExportReport, load, render_export, to_json
from ca_export.report.figures import GateFigures, LossyFigures, NcnnFigures
from ca_export.report.html import Run, render_html
from ca_export.verify.ncnn_runtime import NcnnRunner
from ca_export.verify.parity import GateResult, gate_inputs, one_per_size
from cli.main import cli
from sample_models import CA_BLOCKS

SHAPE = (1, 3, 32, 32)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """seed_ca converted both ways, each with its report."""
    folder = tmp_path_factory.mktemp("ncnn")
    stems = {}
    for name, dynamic in (("safe", True), ("fixed", False)):
        report = export_ncnn(NcnnJob("seed_ca", folder / name, input_shape=SHAPE, dynamic=dynamic))
        assert report.passed, report.to_dict()
        stems[name] = folder / name
        stems[f"{name}_report"] = report
    return stems


def round_trip(report: ExportReport) -> ExportReport:
    """The report as loaded back from its JSON form, which it writes again unchanged."""
    text = to_json(report.to_dict())
    loaded = load(json.loads(text))
    assert isinstance(loaded, ExportReport)
    assert to_json(loaded.to_dict()) == text
    return loaded


def test_default_is_size_safe_and_gated_at_other_sizes(exported: dict) -> None:
    report = round_trip(exported["safe_report"])
    parity, structure = report.parity.figures, report.structure.figures
    assert isinstance(parity, GateFigures) and isinstance(structure, NcnnFigures)
    assert parity.inputs == 5  # 3 seeds at 32x32, then 2 other sizes
    assert len({case.input_shape for case in parity.cases}) == 3
    assert structure.baked_sizes == () and structure.valid_size is None
    assert "valid at every size" in render_export(report)
    page = render_html([Run("ncnn", report)])
    assert 'data-table="sizes"' in page and "1x3x32x32" in page
    pools = report.op_counts_after.get("Reduction")
    assert pools == 2 * CA_BLOCKS["seed_ca"]  # two mean strip pools per block
    assert "Slice" not in report.op_counts_after
    inside = parity.runtime_blocks
    assert inside is not None and inside.backend == "ncnn" and not inside.failures
    assert [len(case.comparisons) for case in inside.cases] == [CA_BLOCKS["seed_ca"]] * 3
    assert "per-block parity (ncnn): passed" in render_export(report)
    assert "ncnn: block" in page
    meta = json.loads(ncnn.metadata_path(exported["safe"]).read_text())
    assert meta["fixed_size"] is False and meta["valid_sizes"] == "any"


def test_fixed_size_records_its_one_size(exported: dict) -> None:
    report = round_trip(exported["fixed_report"])
    assert any("right only at 3x32x32" in w for w in report.warnings)
    structure = report.structure.figures
    assert isinstance(structure, NcnnFigures) and structure.valid_size == (32, 32)
    assert "valid at 32x32" in render_export(report)
    meta = json.loads(ncnn.metadata_path(exported["fixed"]).read_text())
    assert meta["fixed_size"] is True and meta["valid_sizes"] == [[32, 32]]


def test_verify_takes_both_and_refuses_other_sizes_for_fixed(exported: dict) -> None:
    runner = CliRunner()
    for name in ("safe", "fixed"):
        param = ncnn.files_of(exported[name])[0]
        done = runner.invoke(cli, ["verify", "seed_ca", str(param), "--input-shape", "1,3,32,32"])
        assert done.exit_code == 0, done.output
    param = ncnn.files_of(exported["fixed"])[0]
    done = runner.invoke(cli, ["verify", "seed_ca", str(param), "--shapes", "1x3x48x48"])
    assert done.exit_code == 1
    assert "valid only at 3x32x32" in done.output


def test_verify_fails_the_stock_conversion_at_another_size(exported: dict, tmp_path: Path) -> None:
    """The stock pnnx conversion pins the strip pools' lengths: right at 32, silently wrong
    at 48, which verify shows, naming the first CA block (each fed PyTorch's input to it)."""
    from ca_export.loading import load_model
    from ca_export.tracing import example_input

    converted = ncnn.convert(load_model("seed_ca").module, example_input(SHAPE))
    param, weights = ncnn.files_of(tmp_path / "stock")
    param.write_text(converted.param)
    weights.write_bytes(converted.weights)
    runner = CliRunner()
    done = runner.invoke(cli, ["verify", "seed_ca", str(param), "--shapes", "1x3x32x32"])
    assert done.exit_code == 0, done.output
    done = runner.invoke(cli, ["verify", "seed_ca", str(param), "--shapes", "1x3x48x48"])
    assert done.exit_code == 1, done.output
    assert "first divergence: module stages.1 (inside a CA block)" in done.output


def test_fp16_passes_the_lossy_gate_and_verify_runs_it(tmp_path: Path) -> None:
    stem = tmp_path / "half"
    report = export_ncnn(NcnnJob("seed_ca", stem, input_shape=SHAPE, precision="fp16"))
    assert report.passed, report.to_dict()
    lossy = round_trip(report).checks["precision"].figures
    assert isinstance(lossy, LossyFigures)
    assert (lossy.precision, lossy.backend, len(lossy.inputs)) == ("fp16", "ncnn", 8)
    assert json.loads(ncnn.metadata_path(stem).read_text())["precision"] == "fp16"
    param = ncnn.files_of(stem)[0]
    done = CliRunner().invoke(cli, ["verify", "seed_ca", str(param), "--input-shape", "1,3,32,32"])
    assert done.exit_code == 0, done.output
    assert "fp16" in done.output


def test_the_per_block_gate_in_ncnn_fails_the_wrong_block_only(exported: dict) -> None:
    """The second block's first gate conv without its sigmoid: that block fails inside
    ncnn, and the blocks around it, each fed PyTorch's input to it, pass."""
    param, weights = ncnn.files_of(exported["safe"])
    text = param.read_text()
    at = [i for i in range(len(text)) if text.startswith(" 9=4\n", i)][2]
    wrong = param.with_name("wrong.ncnn.param")
    wrong.write_text(text[:at] + " 9=0\n" + text[at + 5 :])
    job = NcnnJob("seed_ca", exported["safe"].parent / "unused", input_shape=SHAPE)
    report = ExportReport("seed_ca", "0", "ncnn", list(SHAPE), True, True)
    prepared = job.prepare(Stages(quiet), report, form=FORM)
    inputs = gate_inputs(prepared.traced, SHAPE, prepared.square_only)
    for path, failing in ((param, []), (wrong, [1])):
        runner = NcnnRunner(path, weights)
        gate = runner.block_gate(prepared.traced.program, prepared.blocks, one_per_size(inputs))
        assert isinstance(gate, GateResult)
        for case in gate.cases:
            assert [k for k, c in enumerate(case.comparisons) if not c.passed] == failing


HIDDEN = """
import torch
from torch import nn


class CA(nn.Module):
    def __init__(self, c, mip=8):
        super().__init__()
        self.pool_h, self.pool_w = nn.AdaptiveAvgPool2d((None, 1)), nn.AdaptiveAvgPool2d((1, None))
        self.conv1, self.bn1, self.act = nn.Conv2d(c, mip, 1), nn.BatchNorm2d(mip), nn.Hardswish()
        self.conv_h, self.conv_w = nn.Conv2d(mip, c, 1), nn.Conv2d(mip, c, 1)

    def forward(self, x):
        _, _, h, w = x.size()
        x_h, x_w = self.pool_h(x), self.pool_w(x).permute(0, 1, 3, 2)
        y = self.act(self.bn1(self.conv1(torch.cat([x_h, x_w], dim=2))))
        x_h, x_w = torch.split(y, [h, w], dim=2)
        return x * self.conv_h(x_h).sigmoid() * self.conv_w(x_w.permute(0, 1, 3, 2)).sigmoid()


def build():
    torch.manual_seed(0)
    layers = [nn.Conv2d(3, 16, 3, 2, 1), nn.ReLU(), CA(16), nn.Conv2d(16, 16, 3, 2, 1), CA(16)]
    head = [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10)]
    return nn.Sequential(*layers, *head).eval()
"""


def test_verify_fails_wrong_blocks_the_outputs_hide(tmp_path: Path) -> None:
    """A small random net's logits barely move with its CA gates: its stock pnnx file at
    96x64 (slices baked at 64x64) is within the output bound, and its blocks, each fed
    PyTorch's input to it, are not."""
    from ca_export.loading import load_model
    from ca_export.tracing import example_input

    (tmp_path / "hidden.py").write_text(HIDDEN)
    model = f"{tmp_path / 'hidden.py'}:build"
    converted = ncnn.convert(load_model(model).module, example_input((1, 3, 64, 64)))
    param, weights = ncnn.files_of(tmp_path / "stock")
    param.write_text(converted.param)
    weights.write_bytes(converted.weights)
    done = CliRunner().invoke(cli, ["verify", model, str(param), "--shapes", "1x3x96x64"])
    assert done.exit_code == 1, done.output
    assert "ok   1x3x96x64 seed 1 output" in done.output
    assert "FAIL 1x3x96x64 seed 1 block 2" in done.output
