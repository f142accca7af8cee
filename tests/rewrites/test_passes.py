"""The pass manager: declared order, per-block results, skipping, failures named."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import fields, is_dataclass
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
from ca_export.rewrites import (
    DEFAULT_TARGET,
    FORMS,
    PASSES,
    form_of,
    passes_for,
    rewrite,
    rewrite_model,
)
from ca_export.rewrites.passes import Change, Pass, PassError, Skip, run
from ca_export.tracing import Traced, trace
from cli.main import cli

ZooTrace = Callable[..., Traced]
aten = torch.ops.aten


def _applied(results: list, block: str) -> list[str]:
    return [r.name for r in results if block in r.applied]


def _frozen(obj: object) -> object:
    """A dataclass's fields, recursively, with lists and dicts as tuples; ops and values stay
    themselves (fx nodes compare by identity), so equality says no field was re-pointed."""
    if is_dataclass(obj) and not isinstance(obj, type):
        return tuple((f.name, _frozen(getattr(obj, f.name))) for f in fields(obj))
    if isinstance(obj, (list, tuple)):
        return tuple(_frozen(v) for v in obj)
    if isinstance(obj, dict):
        return tuple((k, _frozen(v)) for k, v in obj.items())
    return obj


def _run_form(traced: Traced, form: str, static: bool) -> tuple[list, list, list]:
    """Run ``form``'s passes on a copy of ``traced``: the blocks handed in, their snapshots
    taken before, and the blocks ``run`` returns."""
    program = rewrite(traced.program, static, form, skip=FORMS[form]).program  # a copy
    view = AtenView(program.graph)
    blocks, _ = find(view)
    before = [_frozen(b) for b in blocks]
    results, after = run(view, blocks, passes_for(form), static)
    assert any(r.modified for r in results)
    return blocks, before, after


@pytest.mark.parametrize("form", sorted(FORMS))
@pytest.mark.parametrize("name", ["official", "seed", "hardsigmoid_expand"])
def test_passes_leave_the_blocks_they_are_handed_unchanged(
    zoo_trace: ZooTrace, form: str, name: str
) -> None:
    blocks, before, after = _run_form(zoo_trace(name), form, static=True)
    assert [_frozen(b) for b in blocks] == before
    # The twin: the blocks run returns name the replaced pools (an adaptive pool each).
    assert all(
        a.pool is not b.pool
        for new, old in zip(after, blocks, strict=True)
        for a, b in zip(new.branches, old.branches, strict=True)
    )


def test_a_dynamic_xnnpack_form_leaves_its_blocks_unchanged() -> None:
    """``global_strip_pool`` (batch 1, bounded H/W) and ``float_hardsigmoid`` re-point the
    pools and gates of the blocks they return, not of those they were handed."""
    case = next(c for c in POSITIVE if c.name == "hardsigmoid_expand")
    traced = trace(case.build(), case.input_shape, dynamic=True, bounded=True)
    blocks, before, after = _run_form(traced, "xnnpack", static=False)
    assert [_frozen(b) for b in blocks] == before
    (old,), (new,) = blocks, after
    for a, b in zip(new.branches, old.branches, strict=True):
        assert a.pool is not b.pool and a.gate_ops != b.gate_ops


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
    assert _applied(result.passes, block.id) == [
        "pool_to_reduce",
        "distribute_stem",
        "hardswish",
        "gate_once",
    ]
    (drop,) = (r for r in result.passes if r.name == "drop_expand")
    assert drop.skipped == {block.id: "no expand on the gates"}


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
    assert _applied(aten_side.passes, a.id) == _applied(onnx_side.passes, o.id)


def test_a_failing_pass_is_named_with_the_passes_before_it(zoo_trace: ZooTrace) -> None:
    def broken(view: GraphView, block: CABlock, static: bool) -> Change:
        raise KeyError("lost a node")

    def nothing(view: GraphView, block: CABlock, static: bool) -> Change:
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
    form = FORMS[form_of(DEFAULT_TARGET)]
    assert form[-1] == "resize_gate"
    assert any(n.op_type == "Resize" for n in onnx.load(out).graph.node)
    result = CliRunner().invoke(cli, [*args, "--skip-pass", "resize_gate", "--report", str(report)])
    assert result.exit_code == 0, result.output
    names = [p["name"] for p in json.loads(report.read_text())["passes"]]
    assert names == list(form[:-1])
    assert not any(n.op_type == "Resize" for n in onnx.load(out).graph.node)
    result = CliRunner().invoke(cli, [*args, "--skip-pass", "bogus"])
    assert result.exit_code == 2 and "bogus" in result.output


def test_two_blocks_in_one_module_are_rewritten_apart(zoo_trace: ZooTrace) -> None:
    result = rewrite(zoo_trace("two_in_one").program, static=True)
    first, second = result.blocks
    assert first.module == second.module and first.id != second.id
    for p in result.passes:
        assert set(p.applied) | set(p.skipped) == {first.id, second.id}
    assert _applied(result.passes, first.id) == _applied(result.passes, second.id)
    assert "pool_to_reduce" in _applied(result.passes, first.id)


def test_two_blocks_in_one_module_are_reported_apart(tmp_path: Path) -> None:
    factory = tmp_path / "net.py"
    factory.write_text(
        "from ca_zoo import POSITIVE\n\n\ndef two():\n"
        "    return next(c for c in POSITIVE if c.name == 'two_in_one').build()\n"
    )
    case = next(c for c in POSITIVE if c.name == "two_in_one")
    args = ["inspect", f"{factory}:two", "--input-shape", ",".join(map(str, case.input_shape))]
    result = CliRunner().invoke(cli, [*args, "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    ids = [b["id"] for b in data["ca_blocks"]]
    assert len(set(ids)) == 2 and len({b["module"] for b in data["ca_blocks"]}) == 1
    (pool,) = (p for p in data["passes"] if p["name"] == "pool_to_reduce")
    assert sorted(pool["applied"]) == sorted(ids)
    text = CliRunner().invoke(cli, args)
    assert text.exit_code == 0, text.output
    assert text.stdout.count("rewrite passes: pool_to_reduce") == 2
