"""``--keep-fp32 auto`` (``pipeline.keep_auto``): candidates, the search, and the command."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner, Result
from onnx import helper

from ca_export.export.onnx import SCOPE_KEY
from ca_export.export.precision import calibration_inputs
from ca_export.pipeline import keep_auto
from ca_export.report.text import keep_auto_lines
from cli.main import cli
from sample_models.digits import CALIBRATION_DIR, EVAL_DIR, INPUT_SHAPE


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def _scoped(model_scopes: list[list[str]]) -> onnx.ModelProto:
    """A chain of Relu nodes, each with the given exporter scopes."""
    nodes = []
    for i, found in enumerate(model_scopes):
        node = helper.make_node("Relu", [f"t{i}"], [f"t{i + 1}"], name=f"n{i}")
        entry = node.metadata_props.add()
        entry.key, entry.value = SCOPE_KEY, repr(found)
        nodes.append(node)
    graph = helper.make_graph(nodes, "g", [], [])
    return helper.make_model(graph)


def test_candidates_split_large_containers_only() -> None:
    model = _scoped(
        [
            ["", "stem", "stem.0", "conv"],
            ["", "stem", "stem.1", "relu"],
            *[["", "features", f"features.{i}", f"features.{i}.conv", "c"] for i in range(5)],
            ["", "fc", "linear"],
            ["", "features", "features.4", "features.4.act", "relu"],
            [],
        ]
    )
    assert keep_auto.candidates(model) == ["stem", *[f"features.{i}" for i in range(5)], "fc"]


def _fake(good: set[str], needed: int) -> tuple[keep_auto.Quantize, keep_auto.Judge, list]:
    """A quantizer recording what it keeps, and a judge passing once ``needed`` modules of
    ``good`` are kept (each good module kept is worth one point of figure)."""
    calls: list[list[str]] = []

    def quantize(keep: Sequence[str]) -> onnx.ModelProto:
        calls.append(list(keep))
        model = onnx.ModelProto()
        model.doc_string = ",".join(keep)
        return model

    def judge(model: onnx.ModelProto) -> keep_auto.Score:
        kept = {m for m in model.doc_string.split(",") if m}
        value = len(kept & good) + 0.1 * len(kept)
        return keep_auto.Score(len(kept & good) >= needed, value, f"{value:.1f}")

    return quantize, judge, calls


def test_search_keeps_nothing_when_all_int8_passes() -> None:
    quantize, judge, calls = _fake(set(), 0)
    model = _scoped([["", "a", "x"], ["", "b", "y"]])
    found = keep_auto.search(model, quantize, judge)
    assert found.passed and found.kept == () and calls == [[]]


def test_search_keeps_the_most_sensitive_first_and_stops() -> None:
    quantize, judge, calls = _fake({"c", "a"}, 2)
    model = _scoped([["", name, "op"] for name in "abcd"])
    found = keep_auto.search(model, quantize, judge)
    assert found.passed and found.kept == ("a", "c")
    assert [s.module for s in found.sensitivity][:2] == ["a", "c"]
    only_int8 = [["b", "c", "d"], ["a", "c", "d"], ["a", "b", "d"], ["a", "b", "c"]]
    assert calls == [[], *only_int8, ["a"], ["a", "c"]]
    assert "kept fp32: a, c (within bounds)" in keep_auto_lines(found)[-1]


def test_search_fails_rather_than_keep_every_module() -> None:
    """Only fully fp32 would pass: the search stops one short of it and fails."""
    quantize, judge, _ = _fake({"a"}, 2)
    found = keep_auto.search(_scoped([["", n, "op"] for n in "ab"]), quantize, judge)
    assert not found.passed and found.kept == ("a",)
    assert "not within bounds" in keep_auto_lines(found)[-1]


def test_auto_takes_no_other_modules(tmp_path: Path) -> None:
    args = ["onnx", "seed_ca", "-o", str(tmp_path / "m.onnx"), "--precision", "int8"]
    result = run(*args, "--keep-fp32", "auto", "--keep-fp32", "stem")
    assert result.exit_code == 2
    assert "--keep-fp32 auto finds the modules itself" in result.output


@pytest.mark.slow
def test_auto_recovers_a_clipping_calibration(tmp_path: Path) -> None:
    """Calibrated on the digits scaled by 0.85, int8 ``digits_ca`` loses 30 points; auto
    finds the stem (whose input range was clipped) most sensitive, keeps it and is back
    within 1 point."""
    clipped = tmp_path / "clipped"
    clipped.mkdir()
    real = np.concatenate([x for _, x in calibration_inputs(CALIBRATION_DIR, INPUT_SHAPE)])
    np.save(clipped / "dim.npy", real * 0.85)
    report = tmp_path / "r.json"
    shape = ",".join(map(str, INPUT_SHAPE))
    args = ["onnx", "digits_ca", "--input-shape", shape, "-o", str(tmp_path / "m.onnx")]
    args += ["--precision", "int8", "--calibration", str(clipped), "--eval-data", str(EVAL_DIR)]
    plain = run(*args)
    assert plain.exit_code == 1
    result = run(*args, "--keep-fp32", "auto", "--report", str(report))
    assert result.exit_code == 0, result.output
    checks = json.loads(report.read_text())["checks"]
    assert checks["precision"]["kept_fp32"]["modules"] == ["stem"]
    assert checks["precision"]["keep_fp32_auto"]["sensitivity"][0]["module"] == "stem"
    assert checks["accuracy"]["drop"] <= 1.0
    assert "kept fp32: stem (within bounds)" in result.output


@pytest.mark.slow
def test_auto_brings_mobilenetv2_ca_within_bounds(tmp_path: Path) -> None:
    """Plain int8 fails on the calibrated-random ``mobilenetv2_ca`` (min cosine 0.898);
    auto finds its first stages most sensitive and keeps them (measured: features.0 to
    features.5, min cosine 0.9635, top-1 6/8)."""
    report = tmp_path / "r.json"
    out = tmp_path / "m.onnx"
    args = ["onnx", "mobilenetv2_ca", "-o", str(out), "--precision", "int8"]
    result = run(*args, "--keep-fp32", "auto", "--report", str(report))
    assert result.exit_code == 0, result.output
    precision = json.loads(report.read_text())["checks"]["precision"]
    kept = precision["kept_fp32"]["modules"]
    assert kept and set(kept) <= {f"features.{i}" for i in range(10)}
    assert precision["keep_fp32_auto"]["all_int8"].startswith("lossy gate failed")
    assert "kept fp32: features." in result.output
