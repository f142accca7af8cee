"""Per-target forms (issue 11): ``resize_gate``, ``pad_mip`` and ``matmul_pool`` on the ATen
side, exact and idempotent, with negative twins; ``--target`` on the commands."""

from __future__ import annotations

import pytest
import torch
from ca_zoo import seeded_input
from click.testing import CliRunner
from conftest import ZOO, ZooTrace
from test_rewrites import assert_same_interface

from ca_export.errors import BadInputError
from ca_export.rewrites import FORMS, TARGETS, form_of, rewrite
from ca_export.verify.metrics import compare
from ca_export.verify.tolerances import tolerance
from cli.main import cli

aten = torch.ops.aten
NEW_OPS = {
    "resize": {aten.upsample_nearest2d.vec},
    "resize_pad": {aten.upsample_nearest2d.vec, aten.constant_pad_nd.default},
    "matmul_pool": {aten.full.default, aten.matmul.default},
}
"""The ops each form adds to the official block's graph."""


def _targets(program: torch.export.ExportedProgram) -> set[object]:
    return {n.target for n in program.graph.nodes if n.op == "call_function"}


@pytest.mark.parametrize("form", sorted(NEW_OPS))
def test_form_is_exact_and_holds_its_ops(form: str, zoo_trace: ZooTrace) -> None:
    traced = zoo_trace("official")
    result = rewrite(traced.program, static=True, form=form)
    assert_same_interface(traced.program, result.program)
    assert NEW_OPS[form] <= _targets(result.program)
    assert aten.cat.default not in _targets(result.program)
    x = seeded_input(ZOO["official"].input_shape, 3)
    (want,) = traced.program.module()(x)
    (got,) = result.program.module()(x)
    check = compare("y", want.detach().numpy(), got.detach().numpy(), tolerance("float32", "torch"))
    assert check.passed, check
    assert not rewrite(result.program, static=True, form=form).modified


def test_pad_mip_pads_to_16_with_zero_channels(zoo_trace: ZooTrace) -> None:
    result = rewrite(zoo_trace("official").program, static=True, form="resize_pad")
    applied = next(p for p in result.passes if p.name == "pad_mip").applied
    assert list(applied.values()) == ["mip 8 padded to 16 with zero channels"]
    padded = [
        tuple(n.args[1].meta["val"].shape[:2])
        for n in result.program.graph.nodes
        if n.target == aten.conv2d.default and n.args[1].target == aten.constant_pad_nd.default
    ]
    assert sorted(padded) == [(16, 32), (16, 32), (32, 16), (32, 16)]


def test_twin_mip_already_16_and_non_strip_gates_are_left(zoo_trace: ZooTrace) -> None:
    result = rewrite(zoo_trace("seed").program, static=True, form="resize_pad")
    skipped = {p.name: list(p.skipped.values()) for p in result.passes}
    assert skipped["pad_mip"] == ["mip 16 already is a multiple of 16"]
    assert skipped["resize_gate"] == ["the gates are not [B, C, H, 1] and [B, C, 1, W] strips"]
    assert aten.upsample_nearest2d.vec not in _targets(result.program)


@pytest.mark.parametrize("form", ["resize", "matmul_pool"])
def test_dynamic_sizes_keep_the_onnx_form(form: str, zoo_trace: ZooTrace) -> None:
    result = rewrite(zoo_trace("official", dynamic=True).program, static=False, form=form)
    (skipped,) = [p.skipped for p in result.passes if p.name in ("resize_gate", "matmul_pool")]
    assert len(skipped) == 1
    assert all(reason.endswith("need a static H and W") for reason in skipped.values())
    ops = _targets(result.program)
    assert aten.upsample_nearest2d.vec not in ops and aten.full.default not in ops
    assert aten.matmul.default in ops and aten.mean.dim in ops


def test_targets_map_to_declared_forms() -> None:
    assert set(TARGETS.values()) <= set(FORMS)
    assert form_of("ort-plain") == "matmul_pool"
    with pytest.raises(BadInputError, match="unknown target 'tflite'"):
        form_of("tflite")


@pytest.mark.parametrize("command", ["onnx", "optimize"])
def test_cli_target_option(command: str) -> None:
    runner = CliRunner()
    assert "--target [ort-x86|ort-plain]" in runner.invoke(cli, [command, "--help"]).output
    args = ["seed_ca"] if command == "onnx" else ["in.onnx"]
    result = runner.invoke(cli, [command, *args, "-o", "out.onnx", "--target", "tflite"])
    assert result.exit_code == 2
    assert "'tflite' is not one of" in result.output
