"""The command line: help, success, and every error path, through Click's CliRunner."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner, Result
from conftest import CPU_FP32

import ca_export.rewrites as rewrites
from ca_export.patterns import CABlock, GraphView
from ca_export.rewrites.passes import Change, Pass
from cli.main import cli
from sample_models import CA_BLOCKS

SMALL = ["--input-shape", "1,3,32,32"]

USER_MODELS = """
import torch
import torch.nn as nn

class Noisy(nn.Module):
    def forward(self, x):
        return x + torch.rand_like(x)

def noisy():
    return Noisy()

def broken():
    raise RuntimeError("no weights here")

def not_a_module():
    return 42
"""


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


@pytest.fixture
def user_models(tmp_path: Path) -> Path:
    path = tmp_path / "user_models.py"
    path.write_text(USER_MODELS)
    return path


@pytest.mark.parametrize("command", [[], ["inspect"], ["onnx"]])
def test_help(command: list[str]) -> None:
    result = run(*command, "--help")
    assert result.exit_code == 0
    assert "Usage:" in result.output


def test_inspect_json() -> None:
    result = run("inspect", "seed_ca", *SMALL, "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert [b["module"] for b in data["ca_blocks"]] == ["stages.1", "stages.3", "stages.5"]
    assert all(b["channels"] and b["mip"] and b["variant"] for b in data["ca_blocks"])
    assert all("square inputs only" in b["findings"][0] for b in data["ca_blocks"])


def test_inspect_text_lists_blocks() -> None:
    result = run("inspect", "ca_segnet", "--input-shape", "1,3,64,64")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"{CA_BLOCKS['ca_segnet']} CA block(s) in ca_segnet")


def test_onnx_writes_file_report_and_summary(tmp_path: Path) -> None:
    out, report = tmp_path / "seed.onnx", tmp_path / "report.json"
    result = run("onnx", "seed_ca", *SMALL, "-o", str(out), "--report", str(report))
    assert result.exit_code == 0, result.output
    assert out.is_file()
    data = json.loads(report.read_text())
    assert data["parity"]["passed"] is True
    assert data["parity"]["bounds"] == dataclasses.asdict(CPU_FP32)
    assert data["artifact"]["path"] == str(out)
    assert all(b["rewritten"] for b in data["ca_blocks"])
    assert len(data["ca_blocks"]) == CA_BLOCKS["seed_ca"]
    assert set(data["stages"]) >= {"load", "trace", "detect", "rewrite", "export", "gate"}
    for stage in ("[trace]", "[detect]", "[rewrite]", "[export]", "[simplify]", "[gate]"):
        assert stage in result.stderr
    blocks = CA_BLOCKS["seed_ca"]
    assert f"CA blocks: {blocks} found, {blocks} rewritten" in result.stdout
    assert "nodes: " in result.stdout and "CA-only nodes (Transpose" in result.stdout


def _bad(result: Result, message: str) -> None:
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert "Traceback" not in result.output
    assert len(result.stderr.strip().splitlines()) <= 4


def test_bad_inputs_exit_2(tmp_path: Path, user_models: Path) -> None:
    out = str(tmp_path / "m.onnx")
    _bad(run("onnx", "nope", "-o", out), "unknown model 'nope'")
    _bad(run("onnx", "missing.py:build", "-o", out), "does not exist")
    _bad(run("onnx", f"{user_models}:broken", "-o", out), "RuntimeError: no weights here")
    _bad(run("onnx", f"{user_models}:not_a_module", "-o", out), "not a torch.nn.Module")
    _bad(run("onnx", "seed_ca", "--input-shape", "1,3,x", "-o", out), "four comma-separated")
    _bad(run("onnx", "seed_ca", *SMALL, "-o", str(tmp_path / "no" / "m.onnx")), "does not exist")
    _bad(run("onnx", "seed_ca", *SMALL, "-o", str(tmp_path)), "is a folder")
    ckpt = tmp_path / "ckpt.pt"
    torch.save({"stem.weight": torch.zeros(1)}, ckpt)
    _bad(run("onnx", "seed_ca", *SMALL, "--weights", str(ckpt), "-o", out), "does not fit")
    _bad(run("inspect", "seed_ca", "--input-shape", "1,3,32,48"), "runs on square inputs only")
    assert list(tmp_path.glob("*.onnx")) == []


def test_failed_gate_exits_1_and_writes_nothing(tmp_path: Path, user_models: Path) -> None:
    out, report = tmp_path / "noisy.onnx", tmp_path / "r.json"
    result = run("onnx", f"{user_models}:noisy", *SMALL, "-o", str(out), "--report", str(report))
    assert result.exit_code == 1, result.output
    assert "failed: output at 1x3x32x32" in result.stdout
    assert not out.exists() and list(tmp_path.glob(".noisy*")) == []
    assert json.loads(report.read_text())["parity"]["passed"] is False


def test_wrong_rewrite_is_caught_per_block(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    original = rewrites.PASSES["distribute_stem"]

    def swapped_gates(view: GraphView, block: CABlock, static: bool) -> Change:
        done = original.rewrite(view, block, static)
        conv_h, conv_w = (b.gate_conv for b in block.branches)
        in_h, in_w = view.data(conv_h), view.data(conv_w)
        view.replace_input(conv_h, in_h, in_w)
        view.replace_input(conv_w, in_w, in_h)
        return done

    wrong = Pass("distribute_stem", swapped_gates, "swaps the gates")
    monkeypatch.setitem(rewrites.PASSES, "distribute_stem", wrong)
    out = tmp_path / "wrong.onnx"
    result = run("onnx", "seed_ca", *SMALL, "-o", str(out))
    assert result.exit_code == 1, result.output
    assert "failed: block stages.1" in result.stdout
    assert not out.exists()


def test_user_bounds_on_export_are_applied_and_recorded(tmp_path: Path) -> None:
    """``--rtol`` replaces the bound (a bound below rounding fails a correct export) and
    ``--atol`` adds one; the report records both and that the user set them."""
    report = tmp_path / "r.json"
    strict = run(
        "onnx",
        "seed_ca",
        *SMALL,
        "-o",
        str(tmp_path / "a.onnx"),
        "--rtol",
        "1e-12",
        "--report",
        str(report),
    )
    assert strict.exit_code == 1 and not (tmp_path / "a.onnx").exists()
    bounds = json.loads(report.read_text())["parity"]["bounds"]
    assert bounds["rel"] == 1e-12 and bounds["noise_factor"] == 0 and bounds["user"]
    loose = run(
        "onnx",
        "seed_ca",
        *SMALL,
        "-o",
        str(tmp_path / "b.onnx"),
        "--atol",
        "1",
        "--report",
        str(report),
    )
    assert loose.exit_code == 0, loose.output
    bounds = json.loads(report.read_text())["parity"]["bounds"]
    assert bounds["atol"] == 1 and bounds["user"] and bounds["rel"] == CPU_FP32.rel
    lossy = run(
        "onnx",
        "seed_ca",
        *SMALL,
        "-o",
        str(tmp_path / "c.onnx"),
        "--precision",
        "fp16",
        "--rtol",
        "1e-9",
    )
    assert lossy.exit_code == 1 and "rel err" in lossy.output
