"""The pass manager: declared order, per-block results, skipping, failures named."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import onnx
import pytest
import torch
from ca_zoo import POSITIVE
from click.testing import CliRunner

from ca_export.errors import BadInputError
from ca_export.patterns import CABlock, find
from ca_export.patterns.aten import AtenView
from ca_export.patterns.view import GraphView
from ca_export.rewrites import FORMS, PASSES, passes_for, rewrite, rewrite_model
from ca_export.rewrites.passes import Pass, PassError, Skip, run
from ca_export.tracing import Traced
from cli.main import cli

ZooTrace = Callable[..., Traced]
aten = torch.ops.aten


def _applied(results: list, block: str) -> list[str]:
    return [r.name for r in results if block in r.applied]


def test_forms_name_known_passes_and_bad_names_are_refused() -> None:
    assert all(name in PASSES for names in FORMS.values() for name in names)
    assert [p.name for p in passes_for("onnx", skip=("gate_once",))] == list(FORMS["onnx"][:-1])
    with pytest.raises(BadInputError, match="unknown rewrite pass 'nope'"):
        passes_for("onnx", skip=("nope",))
    with pytest.raises(BadInputError, match="unknown rewrite form"):
        passes_for("tflite")


def test_each_block_says_what_each_pass_did(zoo_trace: ZooTrace) -> None:
    result = rewrite(zoo_trace("official").program, static=True)
    (block,) = result.blocks
    assert [r.name for r in result.passes] == list(FORMS["onnx"])
    assert _applied(result.passes, block.name) == [
        "pool_to_reduce",
        "distribute_stem",
        "hardswish",
        "gate_once",
    ]
    (drop,) = (r for r in result.passes if r.name == "drop_expand")
    assert drop.skipped == {block.name: "no expand on the gates"}


def test_a_skipped_pass_leaves_its_form_out(zoo_trace: ZooTrace) -> None:
    result = rewrite(zoo_trace("official").program, static=True, skip=("gate_once",))
    targets = [n.target for n in result.program.graph.nodes]
    assert aten.matmul.default not in targets and aten.hardswish.default in targets
    assert "gate_once" not in [r.name for r in result.passes]


def test_the_same_passes_apply_on_both_graph_apis(zoo_trace: ZooTrace, tmp_path: Path) -> None:
    aten_side = rewrite(zoo_trace("official").program, static=True)
    case = next(c for c in POSITIVE if c.name == "official")
    path = tmp_path / "stock.onnx"
    x = torch.zeros(case.input_shape)
    torch.onnx.export(case.build(), (x,), path, dynamo=False, opset_version=17)
    onnx_side = rewrite_model(onnx.load(path), static=True)
    (a,), (o,) = aten_side.blocks, onnx_side.blocks
    assert _applied(aten_side.passes, a.name) == _applied(onnx_side.passes, o.name)


def test_a_failing_pass_is_named_with_the_passes_before_it(zoo_trace: ZooTrace) -> None:
    def broken(view: GraphView, block: CABlock, static: bool) -> str:
        raise KeyError("lost a node")

    def nothing(view: GraphView, block: CABlock, static: bool) -> str:
        raise Skip("nothing to do")

    view = AtenView(zoo_trace("official").program.graph)
    blocks, _ = find(view)
    passes = [Pass("first", nothing, ""), Pass("broken", broken, "")]
    with pytest.raises(PassError, match=r"rewrite 'broken' failed .*\(after: first\)"):
        run(view, blocks, passes, static=True)


def test_cli_skip_pass(tmp_path: Path) -> None:
    factory = tmp_path / "net.py"
    factory.write_text(
        "from ca_zoo import POSITIVE\n\n\ndef official():\n"
        "    return next(c for c in POSITIVE if c.name == 'official').build()\n"
    )
    case = next(c for c in POSITIVE if c.name == "official")
    shape = ",".join(map(str, case.input_shape))
    report = tmp_path / "r.json"
    out = tmp_path / "m.onnx"
    args = ["onnx", f"{factory}:official", "--input-shape", shape, "-o", str(out)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert any(n.op_type == "MatMul" for n in onnx.load(out).graph.node)
    result = CliRunner().invoke(cli, [*args, "--skip-pass", "gate_once", "--report", str(report)])
    assert result.exit_code == 0, result.output
    names = [p["name"] for p in json.loads(report.read_text())["passes"]]
    assert names == [n for n in FORMS["onnx"] if n != "gate_once"]
    assert not any(n.op_type == "MatMul" for n in onnx.load(out).graph.node)
    result = CliRunner().invoke(cli, [*args, "--skip-pass", "bogus"])
    assert result.exit_code == 2 and "bogus" in result.output
