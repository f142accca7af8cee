"""``optimize``: ONNX-level CA matching, exact rewrites, the file gate and the CLI.

Inputs are made here: the CA zoo and the sample models exported by both stock torch
exporters (TorchScript-based at opset 17 and dynamo-based), plus small hand-built
graphs for forms those exporters do not write (separate BatchNormalization, Slice
bounds from Shape, HardSigmoid*Mul activation, gate-first Mul, Expand). Each form has
a negative twin.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import warnings
from collections.abc import Callable
from functools import cache
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from ca_zoo import NEGATIVE, POSITIVE, ZooCase, seeded_input
from click.testing import CliRunner
from conftest import SMALL_SHAPES
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.capi.onnxruntime_pybind11_state import Fail, InvalidArgument, RuntimeException
from torch import nn

from ca_export.errors import BadInputError
from ca_export.patterns import find
from ca_export.patterns.coordatt import CA_ONLY_OPS
from ca_export.pipeline.optimize import (
    OptimizeJob,
    ca_only_left,
    file_gate,
    input_shapes,
    optimize_onnx,
)
from ca_export.report.results import SCHEMA
from ca_export.rewrites import ModelRewrite, rewrite_model
from ca_export.verify.metrics import compare
from ca_export.verify.tolerances import tolerance
from cli.main import cli
from sample_models import CA_BLOCKS, build

EXPORTERS = ("torchscript", "dynamo")
ZOO: dict[str, ZooCase] = {c.name: c for c in POSITIVE + NEGATIVE}
SAMPLES = {n: SMALL_SHAPES[n] for n in ("seed_ca", "mobilenetv2_ca", "mobilenext_ca", "ca_segnet")}
"""Per sample model: the export size."""

Exported = Callable[[str, str], Path]


@cache
def _module(name: str) -> nn.Module:
    """A zoo case or sample model, built once."""
    return ZOO[name].build() if name in ZOO else build(name)


def _shape(name: str) -> tuple[int, int, int, int]:
    return ZOO[name].input_shape if name in ZOO else SAMPLES[name]


@pytest.fixture(scope="session")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Exported:
    """``exported(name, exporter)``: the path of a static stock export, made once."""
    root = tmp_path_factory.mktemp("stock")
    done: dict[tuple[str, str], Path] = {}

    def get(name: str, exporter: str) -> Path:
        if (name, exporter) not in done:
            path = root / f"{name}_{exporter}.onnx"
            x = seeded_input(_shape(name), 0)
            sink = io.StringIO()
            with warnings.catch_warnings(), contextlib.redirect_stdout(sink):
                warnings.simplefilter("ignore")
                if exporter == "torchscript":
                    torch.onnx.export(_module(name), (x,), path, dynamo=False, opset_version=17)
                else:
                    torch.onnx.export(_module(name), (x,), path, dynamo=True)
            done[(name, exporter)] = path
        return done[(name, exporter)]

    return get


def _ca_only(model: onnx.ModelProto) -> int:
    return sum(n.op_type in CA_ONLY_OPS for n in model.graph.node)


def _run(model: onnx.ModelProto, x: np.ndarray) -> list[np.ndarray]:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})


def _gate_passes(before: onnx.ModelProto, after: onnx.ModelProto) -> bool:
    return file_gate(before, after, input_shapes(before)).passed


# ----------------------------------------------------------------- zoo, both exporters


@pytest.mark.parametrize("exporter", EXPORTERS)
@pytest.mark.parametrize("case", POSITIVE, ids=lambda c: c.name)
def test_zoo_positive_rewritten_exactly(case: ZooCase, exporter: str, exported: Exported) -> None:
    model = onnx.load(exported(case.name, exporter))
    result = rewrite_model(model, static=True)
    assert [b.channels for b in result.blocks] == list(case.channels)
    assert [b.mip for b in result.blocks] == list(case.mip)
    assert all(not ca_only_left(result.model, b) for b in result.blocks)
    assert _ca_only(result.model) == _ca_only(model) - sum(
        sum(b.ca_only_nodes().values()) for b in result.blocks
    )
    onnx.checker.check_model(result.model, full_check=True)
    assert [o.name for o in result.model.graph.output] == [o.name for o in model.graph.output]
    assert result.model.opset_import == model.opset_import
    assert _gate_passes(model, result.model)
    assert not find(result.model)[0], "a second pass must find nothing"


NEGATIVE_REASONS = {
    "mean_max_w_pool": "concat axis is channels",
    "same_axis_pools": "both pools keep the same axis",
    "conv1_3x3": "not 1x1",
    "softmax_before_split": "'Softmax' reads the concatenated tensor",
    "gates_added": "not multiplied into the pooled input",
    "gate_product_added": "not multiplied into the pooled input",
    "batch_stats_bn": "reads the concatenated tensor but is not spatially pointwise",
}
"""The one rejection each look-alike with a pooled concat gets; the others (CBAM, SE, ELA)
have no pooled concat, so nothing is considered and nothing is rejected."""


@pytest.mark.parametrize("exporter", EXPORTERS)
@pytest.mark.parametrize("case", NEGATIVE, ids=lambda c: c.name)
def test_zoo_negative_not_matched(case: ZooCase, exporter: str, exported: Exported) -> None:
    blocks, rejections = find(onnx.load(exported(case.name, exporter)))
    assert blocks == []
    reasons = [r.reason for r in rejections]
    if case.name in NEGATIVE_REASONS:
        assert len(reasons) == 1 and NEGATIVE_REASONS[case.name] in reasons[0], reasons
    else:
        assert reasons == []


FORMS = {
    ("official", "torchscript"): {"pool": "AveragePool", "split": "Slice", "gate": "sigmoid"},
    ("official", "dynamo"): {"split": "Split", "stem": "Conv+Add+Clip+Mul+Div"},
    ("timm", "torchscript"): {"pool": "ReduceMean", "stem": "Conv+HardSwish"},
    ("timm", "dynamo"): {"pool": "ReduceMean", "split": "Split"},
    ("hardsigmoid_expand", "torchscript"): {"gate": "hardsigmoid", "expand": "yes"},
    ("hardsigmoid_expand", "dynamo"): {"stem": "Conv+Sigmoid+Mul", "expand": "yes"},
    ("slicing", "torchscript"): {"stem": "Conv+Clip", "split": "Slice"},
}
"""Which ONNX form each export is written in, as the matcher reports it."""


@pytest.mark.parametrize(("name", "exporter"), sorted(FORMS))
def test_zoo_forms(name: str, exporter: str, exported: Exported) -> None:
    (block,) = find(onnx.load(exported(name, exporter)))[0]
    assert FORMS[(name, exporter)].items() <= block.variant.items()


# ----------------------------------------------------------------- hand-built forms

C, MIP, H, W = 8, 4, 6, 10


def _const(name: str, value: object, dtype: type = np.float32) -> TensorProto:
    return numpy_helper.from_array(np.asarray(value, dtype=dtype), name)


def _hand_model(
    *,
    bn: str = "separate",
    bounds: str = "shape",
    act: str = "hardsigmoid_mul",
    gate: str = "h_sigmoid",
    order: str = "gate_first",
    expand: bool = True,
) -> onnx.ModelProto:
    """A CA block written the way some exporters do; each keyword picks one form or its twin.

    ``bn``: "separate" or "training" (3 outputs); ``bounds``: "shape" (Slice ends from
    Shape/Gather) or "off_by_one"; ``act``: "hardsigmoid_mul" or "softmax";
    ``gate``: "h_sigmoid" (Add 3/Clip/Div 6) or "add_2"; ``order``: "gate_first" or "add".
    """
    rng = np.random.default_rng(0)
    inits = [
        _const("w1", rng.standard_normal((MIP, C, 1, 1)) * 0.3),
        _const("b1", rng.standard_normal(MIP) * 0.1),
        _const("scale", 1 + 0.1 * rng.standard_normal(MIP)),
        _const("bias", 0.1 * rng.standard_normal(MIP)),
        _const("mean", 0.1 * rng.standard_normal(MIP)),
        _const("var", 1 + 0.1 * rng.random(MIP)),
        _const("wh", rng.standard_normal((C, MIP, 1, 1)) * 0.5),
        _const("ww", rng.standard_normal((C, MIP, 1, 1)) * 0.5),
        _const("three", 3.0 if gate == "h_sigmoid" else 2.0),
        _const("zero", 0.0),
        _const("six", 6.0),
        _const("ax2", [2], np.int64),
        _const("idx2", 2, np.int64),
        _const("zero_i", [0], np.int64),
        _const("big", [2**62], np.int64),
        _const("one_i", [1], np.int64),
    ]
    n = helper.make_node
    nodes = [
        n("Relu", ["x"], ["xr"]),
        n("AveragePool", ["xr"], ["ph"], kernel_shape=[1, W], strides=[1, W]),
        n("AveragePool", ["xr"], ["pw"], kernel_shape=[H, 1], strides=[H, 1]),
        n("Transpose", ["pw"], ["pwt"], perm=[0, 1, 3, 2]),
        n("Concat", ["ph", "pwt"], ["cat"], axis=2),
        n("Conv", ["cat", "w1", "b1"], ["c1"]),
    ]
    bn_out = ["y"] if bn == "separate" else ["y", "rm", "rv"]
    nodes.append(
        n(
            "BatchNormalization",
            ["c1", "scale", "bias", "mean", "var"],
            bn_out,
            training_mode=int(bn != "separate"),
        )
    )
    if act == "hardsigmoid_mul":
        nodes += [n("HardSigmoid", ["y"], ["hs"], alpha=1 / 6), n("Mul", ["y", "hs"], ["a"])]
    else:
        nodes.append(n("Softmax", ["y"], ["a"], axis=2))
    nodes += [
        n("Shape", ["xr"], ["shp"]),
        n("Gather", ["shp", "idx2"], ["hh"], axis=0),
        n("Unsqueeze", ["hh", "zero_i"], ["h1"]),
        n("Add", ["h1", "one_i"], ["hend"]),
        n("Sub", ["hend", "one_i"], ["hcut"])
        if bounds == "shape"
        else n("Identity", ["hend"], ["hcut"]),
        n("Slice", ["a", "zero_i", "hcut", "ax2"], ["sh"]),
        n("Slice", ["a", "hcut", "big", "ax2"], ["sw0"]),
        n("Transpose", ["sw0"], ["sw"], perm=[0, 1, 3, 2]),
    ]
    leaves = {}
    for axis, piece, weight in (("h", "sh", "wh"), ("w", "sw", "ww")):
        nodes += [
            n("Conv", [piece, weight], [f"g{axis}"]),
            n("Add", [f"g{axis}", "three"], [f"a{axis}"]),
            n("Clip", [f"a{axis}", "zero", "six"], [f"k{axis}"]),
            n("Div", [f"k{axis}", "six"], [f"sig{axis}"]),
        ]
        leaves[axis] = f"sig{axis}"
        if expand:
            nodes += [
                n("Shape", ["xr"], [f"xs{axis}"]),
                n("Expand", [f"sig{axis}", f"xs{axis}"], [f"e{axis}"]),
            ]
            leaves[axis] = f"e{axis}"
    combine = "Mul" if order == "gate_first" else "Add"
    nodes += [
        n(combine, [leaves["h"], leaves["w"]], ["gg"]),
        n("Mul", ["gg", "xr"], ["out"]),
    ]
    graph = helper.make_graph(
        nodes,
        "ca",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, C, H, W])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, C, H, W])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.metadata_props.add(key="author", value="hand")
    return model


TWINS = {
    "bn": ("training", "a BatchNormalization on the shared branch is in training mode"),
    "bounds": ("off_by_one", "the slices do not undo the concat"),
    "act": ("softmax", "'Softmax' reads the concatenated tensor"),
    "gate": ("add_2", "not followed by Sigmoid or HardSigmoid"),
    "order": ("add", "not multiplied into the pooled input"),
}


@pytest.mark.parametrize("expand", [True, False])
def test_hand_built_form_rewritten(expand: bool) -> None:
    model = _hand_model(expand=expand)
    onnx.checker.check_model(model, full_check=True)
    result = rewrite_model(model, static=True)
    (block,) = result.blocks
    assert block.variant["stem"] == "Conv+BatchNormalization+HardSigmoid+Mul"
    assert block.variant["gate"] == "h_sigmoid"
    assert block.variant["expand"] == ("yes" if expand else "no")
    assert block.ca_only_nodes()["Shape"] == (3 if expand else 1)
    ops = {n.op_type for n in result.model.graph.node}
    assert not ops & ({"Expand"} | set(CA_ONLY_OPS))
    assert result.model.metadata_props == model.metadata_props
    onnx.checker.check_model(result.model, full_check=True)
    assert _gate_passes(model, result.model)


@pytest.mark.parametrize("form", sorted(TWINS))
def test_hand_built_twin_rejected(form: str) -> None:
    value, reason = TWINS[form]
    blocks, rejections = find(_hand_model(**{form: value}))
    assert blocks == []
    assert [reason in r.reason for r in rejections] == [True]


# ----------------------------------------------------------------- the pipeline


SAMPLE_CASES = [
    pytest.param(name, exporter, id=f"{name}-{exporter}", marks=() if fast else pytest.mark.slow)
    for name in sorted(SAMPLES)
    for exporter in EXPORTERS
    for fast in [name == "seed_ca"]
]
"""seed_ca (3 blocks, the cheapest sample) in the fast suite; every CA form of the other
samples is covered in it by the zoo tests above (both exporters) and by the CLI runs on
``two_blocks`` below. The full sweep runs with ``-m slow``."""


@pytest.mark.parametrize(("name", "exporter"), SAMPLE_CASES)
def test_sample_models_optimized(
    name: str, exporter: str, exported: Exported, tmp_path: Path
) -> None:
    source = exported(name, exporter)
    out = tmp_path / "out.onnx"
    report = optimize_onnx(OptimizeJob(source, out))
    assert report.passed, report.parity.figures
    assert len(report.ca_blocks) == CA_BLOCKS[name]
    assert all(b.rewritten and not b.ca_only_nodes_after for b in report.ca_blocks)
    assert all(sum(b.ca_only_nodes_before.values()) >= 3 for b in report.ca_blocks)
    assert report.parity.figures.inputs == 3
    before, after = onnx.load(source), onnx.load(out)
    assert [i.name for i in after.graph.input] == [i.name for i in before.graph.input]
    assert [o.name for o in after.graph.output] == [o.name for o in before.graph.output]
    assert after.opset_import == before.opset_import
    meta = {p.key: p.value for p in after.metadata_props}
    assert meta["ca_export.blocks_rewritten"] == str(CA_BLOCKS[name])


def test_gate_failure_writes_nothing(
    exported: Exported, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def wrong(model: onnx.ModelProto, static: bool, **kwargs: object) -> ModelRewrite:
        result = rewrite_model(model, static, **kwargs)  # type: ignore[arg-type]
        nodes = result.model.graph.node
        convs = {n.output[0]: n for n in nodes if n.op_type == "Conv"}
        sigmoids = [n for n in nodes if n.op_type == "Sigmoid" and n.input[0] in convs]
        gate = convs[sigmoids[0].input[0]]
        weight = gate.input[1]  # a gate conv as rewritten (the blocks are as matched)
        init = next(i for i in result.model.graph.initializer if i.name == weight)
        init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * 1.01, weight))
        return result

    monkeypatch.setattr("ca_export.pipeline.optimize.rewrite_model", wrong)
    out = tmp_path / "out.onnx"
    source = exported("official", "torchscript")
    result = CliRunner().invoke(cli, ["optimize", str(source), "-o", str(out)])
    assert result.exit_code == 1
    assert "FAILED" in result.output
    assert not out.exists()


@pytest.mark.parametrize("force", [False, True])
def test_no_ca_left_alone(force: bool, exported: Exported, tmp_path: Path) -> None:
    out = tmp_path / "out.onnx"
    report = optimize_onnx(OptimizeJob(exported("se", "torchscript"), out, force_write=force))
    assert report.ca_blocks == [] and report.passed
    assert out.exists() == force
    if force:
        assert onnx.load(out) == onnx.load(exported("se", "torchscript"))


def test_idempotent(exported: Exported, tmp_path: Path) -> None:
    first, second = tmp_path / "a.onnx", tmp_path / "b.onnx"
    optimize_onnx(OptimizeJob(exported("two_blocks", "dynamo"), first))
    report = optimize_onnx(OptimizeJob(first, second))
    assert report.ca_blocks == [] and not second.exists()


# ----------------------------------------------------------------- dynamic H/W


def _torch_check(name: str, out: Path, shape: tuple[int, int, int, int]) -> bool:
    """ONNX Runtime on ``out`` against the PyTorch model at ``shape`` (fp64 reference)."""
    x = seeded_input(shape, 7)
    module = _module(name)
    with torch.no_grad():
        expected = module(x).numpy()
        exact = copy.deepcopy(module).double()(x.double()).numpy()
    (got,) = _run(onnx.load(out), x.numpy())
    return compare(name, exact, got, tolerance("float32", "onnxruntime-cpu"), [expected]).passed


ORT_ERRORS = (InvalidArgument, RuntimeException, Fail)
"""What ONNX Runtime raises when a baked size meets another one inside the graph."""


def _baked_wrong(name: str, source: Path, shape: tuple[int, int, int, int], tmp: Path) -> bool:
    """Whether a file baked for one size fails in ONNX Runtime or is wrong at ``shape`` once
    its input H/W are made symbolic (the static input alone would refuse any other size)."""
    model = onnx.load(source)
    for axis, dim in zip("hw", model.graph.input[0].type.tensor_type.shape.dim[2:], strict=True):
        dim.dim_param = axis
    del model.graph.value_info[:]
    for output in model.graph.output:
        output.type.tensor_type.ClearField("shape")
    freed = tmp / "freed.onnx"
    onnx.save(model, freed)
    try:
        return not _torch_check(name, freed, shape)
    except ORT_ERRORS:
        return True


@pytest.mark.parametrize(
    ("name", "exporter", "other"),
    [
        ("official", "torchscript", (1, 3, 24, 30)),
        ("timm", "dynamo", (1, 3, 20, 12)),
        pytest.param("mobilenetv2_ca", "torchscript", (1, 3, 96, 64), marks=pytest.mark.slow),
    ],
)
def test_dynamic_right_at_other_size(
    name: str, exporter: str, other: tuple[int, int, int, int], exported: Exported, tmp_path: Path
) -> None:
    source = exported(name, exporter)
    baked = onnx.load(source)
    assert _baked_wrong(name, source, other, tmp_path)
    dyn = tmp_path / "dyn.onnx"
    report = optimize_onnx(OptimizeJob(source, dyn, dynamic=True))
    assert report.passed and report.dynamic["applied"] and report.dynamic["passed"]
    assert _torch_check(name, dyn, other)
    assert not onnx.load(dyn).graph.value_info
    assert baked.graph.input[0].type.tensor_type.shape.dim[2].dim_value == _shape(name)[2]


def test_dynamic_square_only_for_seed(exported: Exported, tmp_path: Path) -> None:
    out = tmp_path / "seed.onnx"
    report = optimize_onnx(OptimizeJob(exported("seed_ca", "dynamo"), out, dynamic=True))
    assert report.dynamic["dims"] == {"x": ["size", "size"]}
    assert _torch_check("seed_ca", out, (1, 3, 48, 48))


def test_dynamic_refused_when_rest_is_baked(tmp_path: Path) -> None:
    model = _hand_model()
    model.graph.node.append(
        helper.make_node("AveragePool", ["out"], ["pooled"], kernel_shape=[H, W])
    )
    model.graph.output.append(
        helper.make_tensor_value_info("pooled", TensorProto.FLOAT, [1, C, 1, 1])
    )
    source = tmp_path / "baked.onnx"
    onnx.save(model, source)
    report = optimize_onnx(OptimizeJob(source, tmp_path / "out.onnx", dynamic=True))
    assert report.passed and not report.dynamic["applied"]
    assert "baked for HxW" in report.dynamic["reason"]
    assert (
        onnx.load(tmp_path / "out.onnx").graph.input[0].type.tensor_type.shape.dim[3].dim_value == W
    )


# ----------------------------------------------------------------- CLI and bad input


def test_cli_help_has_examples() -> None:
    result = CliRunner().invoke(cli, ["optimize", "--help"])
    assert result.exit_code == 0 and "Examples:" in result.output


def test_cli_report(exported: Exported, tmp_path: Path) -> None:
    out, report = tmp_path / "out.onnx", tmp_path / "r.json"
    args = [
        "optimize",
        str(exported("two_blocks", "torchscript")),
        "-o",
        str(out),
        "--report",
        str(report),
    ]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    data = json.loads(report.read_text())
    assert [b["rewritten"] for b in data["ca_blocks"]] == [True, True]
    assert data["schema"] == SCHEMA
    assert data["structure"] | {"ops": None} == {
        "name": "structure",
        "verdict": "passed",
        "ran": True,
        "passed": True,
        "kind": "structure",
        "ca_only_nodes_after": 0,
        "ops": None,
        "in_rewritten_blocks": 0,
        "in_blocks_not_rewritten": 0,
        "in_unmatched_concats": {},
        "segments": None,
        "outside": [],
        "dynamic_sizes": {},
    }
    assert data["parity"]["passed"] and out.exists()


def test_cli_report_lists_skipped(exported: Exported, tmp_path: Path) -> None:
    report = tmp_path / "r.json"
    args = [
        "optimize",
        str(exported("softmax_before_split", "dynamo")),
        "-o",
        str(tmp_path / "o.onnx"),
        "--report",
        str(report),
    ]
    assert CliRunner().invoke(cli, args).exit_code == 0
    (skipped,) = json.loads(report.read_text())["skipped"]
    assert "Softmax" in skipped["reason"]


@pytest.mark.parametrize("damage", ["truncated", "text", "missing"])
def test_bad_input_exits_2(damage: str, exported: Exported, tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    data = exported("official", "torchscript").read_bytes()
    if damage == "truncated":
        bad.write_bytes(data[: len(data) // 2])
    elif damage == "text":
        bad.write_text("not a model\n")
    result = CliRunner().invoke(cli, ["optimize", str(bad), "-o", str(tmp_path / "o.onnx")])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if not line.startswith("[")]
    assert len(lines) == 1 and lines[0].startswith("error:")
    assert not (tmp_path / "o.onnx").exists()


def test_symbolic_spatial_dims_are_bad_input() -> None:
    model = _hand_model()
    model.graph.input[0].type.tensor_type.shape.dim[2].dim_param = "h"
    with pytest.raises(BadInputError, match="symbolic dim 2"):
        input_shapes(model)
