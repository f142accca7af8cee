"""Fault cases of issue 27 about odd-but-legal inputs and untrue messages: each gives exit
0, 1 or 2 with one true line, never a traceback or exit 3.

(The interrupt, output-file and npz cases of the same issue live in ``test_faults``.)
"""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
from conftest import ZOO_FACTORIES
from test_faults import run

PLAIN = """
import torch.nn as nn


def plain():
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 4, 1)).eval()
"""


# ------------------------------------------------------------ 5: pad_mip keeps graph order


@pytest.mark.parametrize("target", ["ort-x86", "ort-plain"])
def test_inline_sandglass_exports_on_every_target(
    target: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The default target pads the bottleneck (``pad_mip``) of a block that computes its W
    gate first; ``ort-plain`` (no ``pad_mip``) is the twin that always worked."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "zoo.py").write_text(ZOO_FACTORIES)
    args = ["onnx", "zoo.py:inline_sandglass", "--input-shape", "1,3,16,24", "-o", "s.onnx"]
    result = run(*args, "--target", target)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "s.onnx").exists()


# ------------------------------------------------------ 7: optimize --dynamic without blocks


@pytest.fixture
def plain_onnx(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A static ONNX file of a network without CA blocks, in the working folder."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "m.py").write_text(PLAIN)
    result = run("onnx", "m.py:plain", "--input-shape", "1,3,32,32", "-o", "plain.onnx")
    assert result.exit_code == 0, result.output
    return tmp_path / "plain.onnx"


@pytest.mark.parametrize("dynamic", [True, False], ids=["dynamic", "static"])
def test_optimize_without_blocks_exits_0_and_writes_nothing(
    plain_onnx: Path, dynamic: bool
) -> None:
    result = run("optimize", plain_onnx, "-o", "o.onnx", *(["--dynamic"] if dynamic else []))
    assert result.exit_code == 0, result.output
    assert "no CA block found" in result.output
    assert not (plain_onnx.parent / "o.onnx").exists()


def _dims(path: Path) -> list[str | int]:
    shape = onnx.load(str(path)).graph.input[0].type.tensor_type.shape
    return [d.dim_param or d.dim_value for d in shape.dim]


@pytest.mark.parametrize("dynamic", [True, False], ids=["dynamic", "static"])
def test_optimize_force_write_without_blocks_writes_what_was_asked(
    plain_onnx: Path, dynamic: bool
) -> None:
    """--force-write --dynamic writes IN with dynamic H/W, gated; without --dynamic, IN."""
    flag = ["--dynamic"] if dynamic else []
    result = run("optimize", plain_onnx, "-o", "o.onnx", "--force-write", *flag)
    assert result.exit_code == 0, result.output
    dims = _dims(plain_onnx.parent / "o.onnx")
    assert dims[2:] == (["height", "width"] if dynamic else [32, 32])
