"""Core ML conversion: every sample converts, loads back from disk and keeps no CA-only op.

Conversions run on Linux; prediction needs macOS and is skipped elsewhere, visibly.
Programs are traced once per module and shared; inputs are small.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from ca_export.errors import BadInputError
from ca_export.export import coreml as coreml_export
from ca_export.export.coreml import ImageInput, InputSpec, Reloaded, Target
from ca_export.pipeline.common import Front, Prepared, Stages, prepare
from ca_export.pipeline.coreml import CoreMLJob, export_coreml
from ca_export.report import ExportReport
from ca_export.verify.tolerances import tolerance
from cli.main import cli

SMALL = {
    "seed_ca": (1, 3, 32, 32),
    "mobilenetv2_ca": (1, 3, 64, 64),
    "mobilenext_ca": (1, 3, 64, 64),
    "ca_segnet": (1, 3, 64, 64),
}
ZOO_SHAPE = (1, 3, 16, 24)
ZOO_FACTORY = """
from torch import nn
from ca_zoo import POSITIVE


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = next(c for c in POSITIVE if c.name == "two_blocks").build()

    def forward(self, x):
        return self.net(x)
"""


Prepare = Callable[..., Prepared]
"""The session's ``prepared(model, shape, dynamic)`` (tests/conftest.py), shared with
test_mil_eval."""


def convert(
    prep: Prepared, spec: InputSpec, target: Target, folder: Path, labels: tuple[str, ...] = ()
) -> tuple[Reloaded, list[dict[str, int]]]:
    """Convert, save, load back; the CA-only op counts of every block."""
    blocks = coreml_export.tag(prep.program, [b.module for b in prep.blocks])
    model = coreml_export.convert(prep.program, spec, target, prep.traced.output_names, labels)
    owner = coreml_export.owners(model, blocks)
    path = folder / f"model{coreml_export.EXTENSIONS[target.format]}"
    coreml_export.save(model, path)
    reloaded = coreml_export.reload(path, target.format)
    counts = [
        coreml_export.ca_only_ops(reloaded, target.format, owner, i)
        for i in range(len(prep.blocks))
    ]
    return reloaded, counts


def run(*args: str) -> tuple[int, str]:
    """The CLI's exit code and its stdout+stderr."""
    result = CliRunner().invoke(cli, ["coreml", *args])
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A two-block CA net that runs on any H and W, as a ``file.py:factory`` spec."""
    path = tmp_path_factory.mktemp("zoo") / "zoo_net.py"
    path.write_text(ZOO_FACTORY)
    return f"{path}:Net"


@pytest.mark.parametrize(
    ("model", "precision"),
    [
        pytest.param(
            model,
            precision,
            marks=pytest.mark.slow if model in {"mobilenetv2_ca", "mobilenext_ca"} else (),
        )
        for model in SMALL
        for precision in ["fp16", "fp32"]
    ],
)
def test_every_sample_converts_and_keeps_no_ca_only_op(
    model: str, precision: str, tmp_path: Path, prepared: Prepare
) -> None:
    shape = SMALL[model]
    prep = prepared(model, shape, False)
    spec = InputSpec(prep.traced.input_names[0], shape)
    reloaded, counts = convert(prep, spec, Target("mlprogram", precision), tmp_path)
    assert prep.blocks
    assert counts == [{}] * len(prep.blocks)
    assert reloaded.spec.WhichOneof("Type") == "mlProgram"
    names = prep.traced.output_names
    expected = coreml_export.expected_io(spec, "mlprogram", names, [prep_output_shape(model)])
    assert coreml_export.io_mismatches(expected, coreml_export.describe(reloaded.spec)) == []


def prep_output_shape(model: str) -> tuple[int, ...]:
    """The sample's output shape at its small input."""
    n, _, h, w = SMALL[model]
    return {"seed_ca": (n, 10), "ca_segnet": (n, 5, h, w)}.get(model, (n, 1000))


def test_stock_conversion_keeps_ca_only_ops_per_block(tmp_path: Path) -> None:
    shape = SMALL["seed_ca"]
    report = ExportReport("seed_ca", "test", "coreml", list(shape), False, False, 0)
    prep = prepare(Front("seed_ca", None, shape, False, False), Stages(lambda _: None), report)
    spec = InputSpec(prep.traced.input_names[0], shape)
    _, counts = convert(prep, spec, Target(), tmp_path)
    assert counts == [{"transpose": 1, "concat": 1, "split": 2}] * 3


@pytest.mark.parametrize("kind", ["range", "enumerated"])
def test_flexible_sizes_convert_without_ca_only_ops(
    zoo: str, kind: str, tmp_path: Path, prepared: Prepare
) -> None:
    prep = prepared(zoo, ZOO_SHAPE, True)
    name = prep.traced.input_names[0]
    if kind == "range":
        spec = InputSpec(name, ZOO_SHAPE, hw_range=(8, 256))
        want = {"range": [[1, 1], [3, 3], [8, 256], [8, 256]]}
    else:
        spec = InputSpec(name, ZOO_SHAPE, shapes=((16, 24), (32, 16)))
        want = {"shapes": [[1, 3, 16, 24], [1, 3, 32, 16]]}
    reloaded, counts = convert(prep, spec, Target(), tmp_path)
    assert counts == [{}, {}]
    found = coreml_export.describe(reloaded.spec)["inputs"][name]
    assert {key: found.get(key) for key in want} == want


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["range", "enumerated"])
def test_mobilenetv2_flexible_sizes(kind: str, tmp_path: Path, prepared: Prepare) -> None:
    shape = SMALL["mobilenetv2_ca"]
    prep = prepared("mobilenetv2_ca", shape, True)
    name = prep.traced.input_names[0]
    if kind == "range":
        spec = InputSpec(name, shape, hw_range=(32, 512))
    else:
        spec = InputSpec(name, shape, shapes=((64, 64), (96, 128)))
    _, counts = convert(prep, spec, Target(), tmp_path)
    assert counts == [{}] * 16


def test_image_input_and_labels_make_an_image_classifier(tmp_path: Path, prepared: Prepare) -> None:
    shape = SMALL["seed_ca"]
    prep = prepared("seed_ca", shape, False)
    name = prep.traced.input_names[0]
    spec = InputSpec(name, shape, image=ImageInput(1 / 255, (-0.5, -0.4, -0.3)))
    labels = tuple(f"class{i}" for i in range(10))
    reloaded, counts = convert(prep, spec, Target(), tmp_path, labels)
    assert counts == [{}] * 3
    names = prep.traced.output_names
    expected = coreml_export.expected_io(spec, "mlprogram", names, [(1, 10)], labels)
    found = coreml_export.describe(reloaded.spec)
    assert coreml_export.io_mismatches(expected, found) == []
    assert found["inputs"][name] == {"kind": "image", "size": [32, 32]}
    assert reloaded.spec.description.predictedFeatureName == "classLabel"
    assert ("classify", "classLabel") in reloaded.ops


def test_io_check_names_a_mismatch() -> None:
    spec = InputSpec("x", (1, 3, 32, 32))
    expected = coreml_export.expected_io(spec, "mlprogram", ["output"], [(1, 10)])
    found = {
        "inputs": {"x": {"kind": "tensor", "shape": [1, 3, 32, 32]}},
        "outputs": {"output": {"kind": "tensor", "shape": [1, 12]}},
    }
    assert coreml_export.io_mismatches(expected, found) == [
        "output: shape is [1, 12], expected [1, 10]"
    ]


def test_per_channel_scale_is_refused() -> None:
    with pytest.raises(BadInputError, match="one --scale"):
        ImageInput.of((0.1, 0.2, 0.3), (0.0, 0.0, 0.0))
    assert ImageInput.of((0.5,), (1.0, 2.0, 3.0)) == ImageInput(0.5, (1.0, 2.0, 3.0))


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[int, str, Path]:
    """One successful CLI run over an existing package it must replace."""
    folder = tmp_path_factory.mktemp("cli")
    output = folder / "seed.mlpackage"
    output.mkdir()
    (output / "Manifest.json").write_text("{}")
    (output / "stale").write_text("old")
    code, text = run(
        "seed_ca", "-o", str(output), "--input-shape", "1,3,32,32", "--report",
        str(folder / "report.json"), "--author", "A. Author", "--license", "MIT",
        "--version", "1.2", "--description", "seed CA",
    )  # fmt: skip
    return code, text, folder


def test_cli_writes_a_checked_package_with_metadata(cli_run: tuple[int, str, Path]) -> None:
    code, text, folder = cli_run
    assert code == 0, text
    output = folder / "seed.mlpackage"
    assert not (output / "stale").exists()
    assert sorted(p.name for p in folder.iterdir()) == ["report.json", "seed.mlpackage"]
    spec = coreml_export.coremltools().utils.load_spec(str(output))
    meta = spec.description.metadata
    assert (meta.author, meta.license, meta.versionString) == ("A. Author", "MIT", "1.2")
    assert meta.shortDescription == "seed CA"
    assert meta.userDefined["ca_export.source_model"] == "seed_ca"
    assert meta.userDefined["ca_export.blocks_rewritten"] == "3"
    assert meta.userDefined["ca_export.input_shape"] == "1,3,32,32"
    assert meta.userDefined["ca_export.tool_version"].startswith("ca-export ")


@pytest.mark.skipif(sys.platform == "darwin", reason="off macOS only: prediction cannot run")
@pytest.mark.skipif(sys.platform == "darwin", reason="macOS runs Core ML's own prediction")
def test_cli_report_says_prediction_did_not_run(cli_run: tuple[int, str, Path]) -> None:
    _, text, folder = cli_run
    report = json.loads((folder / "report.json").read_text())
    assert report["checks"]["prediction"] == {
        "name": "prediction",
        "verdict": "not run",
        "ran": False,
        "passed": True,
        "accepted": True,
        "reason": "coremltools cannot predict off macOS",
    }
    assert report["parity"]["backend"] == "coreml-mil-numpy" and report["parity"]["passed"]
    checks = ("load", "io", "structure", "mil_parity")
    assert {k: report["checks"][k]["passed"] for k in checks} == dict.fromkeys(checks, True)
    arithmetic = report["checks"]["mil_parity"]["fp32_arithmetic"]
    assert arithmetic["passed"] and 0 < arithmetic["rel_err"] <= tolerance("float32", "coreml").rel
    assert "  fp32 arithmetic: passed; rel err " in text
    assert report["op_counts_after"]["conv"] > 0
    assert "check prediction: not run (coremltools cannot predict off macOS)" in text


@pytest.mark.skipif(sys.platform != "darwin", reason="coremltools can predict on macOS only")
@pytest.mark.parametrize("precision", ["fp16", "fp32"])
def test_prediction_matches_pytorch(precision: str, tmp_path: Path) -> None:
    shape = (1, 3, 32, 32)
    job = CoreMLJob("seed_ca", tmp_path / "seed.mlpackage", input_shape=shape, precision=precision)
    report = export_coreml(job)
    assert report.parity.ran and report.parity.ok, report.parity
    assert report.passed and report.artifact is not None


def test_cli_no_rewrite_fails_the_structural_check(tmp_path: Path) -> None:
    output = tmp_path / "seed.mlpackage"
    code, text = run("seed_ca", "-o", str(output), "--input-shape", "1,3,32,32", "--no-rewrite")
    assert code == 1, text
    assert "check structure: FAILED" in text
    assert "CA-only nodes (transpose/concat/split/slice_by_index/slice_by_size) left: 12" in text
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_cli_neuralnetwork_writes_an_mlmodel(tmp_path: Path, precision: str) -> None:
    output = tmp_path / "seed.mlmodel"
    code, text = run(
        "seed_ca",
        "-o",
        str(output),
        "--input-shape",
        "1,3,32,32",
        "--format",
        "neuralnetwork",
        "--precision",
        precision,
    )
    assert code == 0, text
    assert "check structure: passed" in text
    spec = coreml_export.coremltools().utils.load_spec(str(output))
    assert spec.WhichOneof("Type") == "neuralNetwork"
    weights = spec.neuralNetwork.layers[0].convolution.weights
    assert bool(weights.float16Value) == (precision == "fp16")
    assert list(tmp_path.iterdir()) == [output]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["no_such_model", "-o", "{dir}/m.mlpackage"], "unknown model"),
        (["seed_ca", "-o", "{dir}/missing/m.mlpackage"], "does not exist"),
        (["seed_ca", "-o", "{dir}/m.mlmodel"], "saved as .mlpackage"),
        (["seed_ca", "-o", "{dir}/m.mlpackage", "--min-target", "iOS14"], "iOS15 or later"),
        (["seed_ca", "-o", "{dir}/m.mlpackage", "--hw-range", "32:64"], "need --dynamic"),
        (["seed_ca", "-o", "{dir}/m.mlpackage", "--dynamic", "--sizes", "32x32"], "input size"),
        (
            ["seed_ca", "-o", "{dir}/m.mlpackage", "--image-input", "--scale", "1,2,3"],
            "one --scale",
        ),
        (["seed_ca", "-o", "{dir}/m.mlpackage", "--labels", "{dir}/none.txt"], "cannot read"),
    ],
)
def test_cli_bad_input_exits_2(args: list[str], message: str, tmp_path: Path) -> None:
    code, text = run(*[a.format(dir=tmp_path) for a in args])
    assert code == 2, text
    assert message in text
    assert list(tmp_path.iterdir()) == []


def test_cli_labels_that_do_not_fit_exit_2(tmp_path: Path) -> None:
    labels = tmp_path / "labels.txt"
    labels.write_text("cat\ndog\n")
    output = tmp_path / "m.mlpackage"
    code, text = run(
        "seed_ca", "-o", str(output), "--input-shape", "1,3,32,32", "--labels", str(labels)
    )
    assert code == 2, text
    assert "a classifier needs one output of shape (N, 2)" in text
    assert list(tmp_path.iterdir()) == [labels]


SINE = """
import torch


class Sine(torch.nn.Module):
    def forward(self, x):
        return torch.sin(x)


def build():
    return Sine()
"""


@pytest.mark.parametrize("precision", [pytest.param("fp32", marks=pytest.mark.slow), "fp16"])
def test_a_package_the_evaluator_cannot_judge_exits_1_unless_allowed(
    tmp_path: Path, precision: str
) -> None:
    """``sin`` is not in the NumPy MIL evaluator: not verified is no pass (exit 1, nothing
    written) unless ``--allow-unverified``, and the report says which."""
    (tmp_path / "sine.py").write_text(SINE)
    model, out = f"{tmp_path / 'sine.py'}:build", tmp_path / "sine.mlpackage"
    args = [model, "-o", str(out), "--input-shape", "1,3,8,8", "--precision", precision]
    code, output = run(*args)
    assert code == 1 and "not verified" in output and not out.exists(), output
    report = tmp_path / "r.json"
    code, output = run(*args, "--allow-unverified", "--report", str(report))
    assert code == 0 and out.exists(), output
    check = json.loads(report.read_text())["checks"]["mil_parity"]
    assert check["passed"] and "allowed by --allow-unverified" in check["reason"]
