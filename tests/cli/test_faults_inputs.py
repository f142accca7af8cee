"""Fault cases of issue 27 about odd-but-legal inputs and untrue messages: each gives exit
0, 1 or 2 with one true line, never a traceback or exit 3.

(The interrupt, output-file and npz cases of the same issue live in ``test_faults``.)
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import ZOO_FACTORIES
from PIL import Image
from test_faults import one_error, run

from ca_export.export import coreml as coreml_export
from ca_export.export.coreml import InputSpec
from ca_export.inputs import load_inputs

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


# ----------------------------------------------------------------- 8, 9: coreml --sizes

SEED = ["coreml", "seed_ca", "--input-shape", "1,3,32,32", "--dynamic"]


def test_sizes_in_any_order_pass_the_io_check(tmp_path: Path) -> None:
    """Core ML lists the default size first; the order --sizes gave is not a mismatch."""
    spec = InputSpec("input", (1, 3, 32, 32), None, ((64, 64), (32, 32)), None)
    expected = coreml_export.expected_io(spec, "mlprogram", ["out"], [(1, 10)])
    found = copy.deepcopy(expected)
    found["inputs"]["input"]["shapes"].reverse()
    assert coreml_export.io_mismatches(expected, found) == []
    found["inputs"]["input"]["shapes"][0] = [1, 3, 48, 48]  # the twin: another size
    assert coreml_export.io_mismatches(expected, found) != []


def test_coreml_sizes_not_in_input_order_exports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = run(*SEED, "--sizes", "64x64,32x32", "-o", "s.mlpackage")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "s.mlpackage").is_dir()


def test_repeated_sizes_exit_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    one_error(run(*SEED, "--sizes", "32x32,32x32", "-o", "s.mlpackage"), 2, "32x32 more than once")
    assert not (tmp_path / "s.mlpackage").exists()


def test_memory_guard_covers_every_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A size from --sizes, not only --input-shape, is refused with its estimate."""
    monkeypatch.chdir(tmp_path)
    result = run(*SEED, "--sizes", "32x32,99999x99999", "-o", "s.mlpackage")
    one_error(result, 2, "input shape 1,3,99999,99999 needs about")
    assert "use a smaller --sizes" in result.stderr
    assert not (tmp_path / "s.mlpackage").exists()


# ------------------------------------------- 10: verify of a dynamic file of another model


@pytest.mark.parametrize("model", ["m.py:plain", "seed_ca"], ids=["other-model", "own-model"])
def test_verify_dynamic_onnx_of_another_model_fails_the_check_quietly(
    model: str,
    exported: Callable,
    plain_onnx: Path,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """The seed's dynamic file cannot run the non-square sizes the plain network runs: exit
    1, one line, and nothing from ONNX Runtime's log on the real stderr; the twin verifies
    the seed's file against the seed."""
    _, seed_dynamic = exported("seed_ca", True)
    result = run("verify", model, seed_dynamic, "--input-shape", "1,3,32,32")
    logged = capfd.readouterr().err
    assert "onnxruntime" not in logged.lower() and "\x1b[" not in logged
    if model == "seed_ca":
        assert result.exit_code == 0, result.output
    else:
        one_error(result, 1, "not an artifact of this model")


# ------------------------------------------------------------------ 14: 16-bit PNG inputs


@pytest.mark.parametrize("bits", [16, 8])
def test_image_values_keep_their_range(bits: int, tmp_path: Path) -> None:
    """A 16-bit grey ramp reads as the same ramp in 0..255 (not clipped to 255), with a
    notice; the 8-bit twin reads as it is, without one."""
    ramp = np.linspace(0, 1, 32 * 32).reshape(32, 32)
    top = 65535 if bits == 16 else 255
    pixels = (ramp * top).round().astype(np.uint16 if bits == 16 else np.uint8)
    Image.fromarray(pixels).save(tmp_path / "ramp.png")
    notices: list[str] = []
    ((_, x),) = load_inputs([tmp_path / "ramp.png"], (1, 3, 32, 32), pixels=True, notices=notices)
    assert x.shape == (1, 3, 32, 32)
    np.testing.assert_allclose(x[0, 0], ramp * 255, atol=0.5)  # rounded to whole 8-bit levels
    assert (x[0, 1] == x[0, 0]).all()
    assert len(notices) == (1 if bits == 16 else 0)


# ------------------------------------------------------ 16: inspect --json with user prints

PRINTS = """
import torch.nn as nn


class Loud(nn.Sequential):
    def forward(self, x):
        print("forward called")
        return super().forward(x)


def loud():
    print("building the model")
    return Loud(nn.Conv2d(3, 8, 3), nn.ReLU()).eval()
"""


@pytest.mark.parametrize("factory", ["loud", "plain"])
def test_inspect_json_parses_when_the_model_prints(
    factory: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "m.py").write_text(PRINTS + PLAIN)
    result = run("inspect", f"m.py:{factory}", "--input-shape", "1,3,32,32", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["ca_blocks"] == []
    assert ("building the model" in result.stderr) == (factory == "loud")


# ------------------------------------------------------------------------ 17: messages


def test_a_folder_given_as_an_input_is_called_a_folder(
    tmp_path: Path, exported: Callable, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    _, seed = exported("seed_ca", False)
    (tmp_path / "sub.png").mkdir()
    args = ["verify", "seed_ca", seed, "--input-shape", "1,3,32,32", "--inputs"]
    one_error(run(*args, "sub.png"), 2, "'sub.png' is a folder")
    one_error(run(*args, "gone.png"), 2, "'gone.png' does not exist")  # the twin


@pytest.mark.parametrize("own", [False, True], ids=["other-model", "own-model"])
def test_a_failed_check_says_so_in_one_line_on_stderr(
    own: bool, plain_onnx: Path, exported: Callable
) -> None:
    """verify of the seed against a file of another model exits 1 with one stderr line
    naming the failed artifact; the twin (the seed's own file) passes with none."""
    _, seed = exported("seed_ca", False)
    result = run("verify", "seed_ca", seed if own else plain_onnx, "--input-shape", "1,3,32,32")
    if own:
        assert result.exit_code == 0, result.output
        assert "check failed" not in result.stderr
    else:
        one_error(result, 1, "check failed: ")
        assert result.stderr.rstrip().endswith("plain.onnx")
