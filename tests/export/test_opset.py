"""Opsets 11-23 and the ONNX Runtime Mobile format: ``ca_export.export.opset`` on small
hand-made graphs (each adapter with a look-alike it must refuse), and ``ca-export onnx
--opset 11/13 [--dynamic] [--ort-format]`` through Click on the ``official`` ca_zoo case
(h_swish written out, so HardSwish must be written out again below opset 14)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner, Result
from conftest import CPU_FP32, assert_within
from onnx import TensorProto, helper, numpy_helper

from ca_export.errors import BadInputError
from ca_export.export.opset import convert, model_opset
from ca_export.pipeline import ort_format as ort_pipeline
from ca_export.pipeline.verify import open_artifact
from ca_export.verify.artifacts import OrtArtifact
from cli.main import cli

X = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 6, 8])


def graph_model(
    nodes: list[onnx.NodeProto],
    out_shape: list[int | str] | None,
    inits: list[np.ndarray | tuple[str, np.ndarray]] = (),
    x: onnx.ValueInfoProto = X,
) -> onnx.ModelProto:
    """A one-input, one-output (``y``) model at opset 18; ``inits`` named c0, c1, ..."""
    tensors = [
        numpy_helper.from_array(*(t[::-1] if isinstance(t, tuple) else (t, f"c{i}")))
        for i, t in enumerate(inits)
    ]
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)
    graph = helper.make_graph(nodes, "g", [x], [y], tensors)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(["y"], {"x": x})[0]


def converted_same(model: onnx.ModelProto, opset: int) -> onnx.ModelProto:
    """Convert, check at full strength, and compare with the opset-18 model in ONNX Runtime."""
    out, change = convert(model, opset)
    onnx.checker.check_model(out, full_check=True)
    assert model_opset(out) == opset and change.exported_at == 18
    x = np.random.default_rng(0).standard_normal((1, 4, 6, 8)).astype(np.float32) * 4
    np.testing.assert_array_equal(run(out, x), run(model, x))
    return out


def ops(model: onnx.ModelProto) -> list[str]:
    return [n.op_type for n in model.graph.node]


def hardswish() -> onnx.ModelProto:
    return graph_model([helper.make_node("HardSwish", ["x"], ["y"], name="hs")], [1, 4, 6, 8])


def test_hardswish_is_written_out_below_opset_14() -> None:
    out = converted_same(hardswish(), 13)
    assert ops(out) == ["HardSigmoid", "Mul"]
    sigmoid = out.graph.node[0]
    assert {a.name: a.f for a in sigmoid.attribute} == pytest.approx({"alpha": 1 / 6, "beta": 0.5})
    assert out.graph.node[1].name == "hs" and out.graph.node[1].output[0] == "y"


def test_hardswish_stays_one_op_from_opset_14() -> None:
    assert ops(converted_same(hardswish(), 14)) == ["HardSwish"]


def reduce_mean(axes_from: str) -> onnx.ModelProto:
    nodes = [helper.make_node("ReduceMean", ["x", axes_from], ["y"], keepdims=1)]
    if axes_from == "computed":
        nodes.insert(0, helper.make_node("Identity", ["c0"], ["computed"]))
    return graph_model(nodes, [1, 4, 1, 8], [np.array([2], np.int64)])


def test_reduce_axes_input_becomes_an_attribute() -> None:
    out = converted_same(reduce_mean("c0"), 17)
    node = out.graph.node[0]
    assert list(node.input) == ["x"]
    assert [list(a.ints) for a in node.attribute if a.name == "axes"] == [[2]]
    assert not out.graph.initializer  # the axes tensor is no longer used


def test_reduce_axes_computed_in_the_graph_are_refused() -> None:
    with pytest.raises(BadInputError, match=r"ReduceMean .* not a constant"):
        convert(reduce_mean("computed"), 17)


def test_clip_keeps_its_bound_inputs_at_opset_11() -> None:
    """Clip has taken its bounds as inputs since opset 11; 12 and 13 only added types."""
    node = helper.make_node("Clip", ["x", "c0", "c1"], ["y"])
    model = graph_model([node], [1, 4, 6, 8], [np.array(0, np.float32), np.array(6, np.float32)])
    out = converted_same(model, 11)
    assert list(out.graph.node[0].input) == ["x", "c0", "c1"]


def test_squeeze_and_unsqueeze_axes_become_attributes_at_opset_12() -> None:
    nodes = [
        helper.make_node("Unsqueeze", ["x", "c0"], ["u"]),
        helper.make_node("Squeeze", ["u", "c0"], ["y"]),
    ]
    out = converted_same(graph_model(nodes, [1, 4, 6, 8], [np.array([2], np.int64)]), 12)
    assert [(list(n.input), [list(a.ints) for a in n.attribute]) for n in out.graph.node] == [
        (["x"], [[2]]),
        (["u"], [[2]]),
    ]


def batch_norm(training_mode: int) -> onnx.ModelProto:
    node = helper.make_node(
        "BatchNormalization", ["x", "c0", "c1", "c2", "c3"], ["y"], training_mode=training_mode
    )
    stats = [np.linspace(0.5, 2, 4, dtype=np.float32) for _ in range(4)]
    return graph_model([node], [1, 4, 6, 8], stats)


def test_batch_norm_in_inference_mode_drops_training_mode_below_opset_14() -> None:
    out = converted_same(batch_norm(0), 13)
    assert not out.graph.node[0].attribute


def test_batch_norm_in_training_mode_is_refused_below_opset_14() -> None:
    with pytest.raises(BadInputError, match="training_mode=1"):
        convert(batch_norm(1), 13)


def split(width: int | str) -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 6, width])
    nodes = [
        helper.make_node("Split", ["x"], ["a", "b"], axis=3, num_outputs=2),
        helper.make_node("Add", ["a", "b"], ["y"]),
    ]
    return graph_model(nodes, [1, 4, 6, 4], x=x)


def test_split_into_equal_parts_gets_its_sizes_as_an_attribute_at_opset_11() -> None:
    out = converted_same(split(8), 11)
    node = out.graph.node[0]
    assert list(node.input) == ["x"]
    assert {a.name: list(a.ints) for a in node.attribute if a.name == "split"} == {"split": [4, 4]}


def test_split_of_an_axis_of_unknown_size_is_refused() -> None:
    with pytest.raises(BadInputError, match=r"Split .* unknown size"):
        convert(split("W"), 13)


def resize(**attrs: object) -> onnx.ModelProto:
    node = helper.make_node("Resize", ["x", "", "c0"], ["y"], mode="nearest", **attrs)
    return graph_model([node], [1, 4, 12, 16], [np.array([1, 1, 2, 2], np.float32)])


def test_resize_gets_its_roi_input_back_at_opset_11() -> None:
    out = converted_same(resize(), 11)
    assert len(out.graph.node[0].input) == 3 and out.graph.node[0].input[1]


def test_resize_with_antialias_is_refused_below_18() -> None:
    with pytest.raises(BadInputError, match="antialias=1"):
        convert(resize(antialias=1), 17)


@pytest.mark.parametrize("axis", [-1, 3])
def test_softmax_over_the_last_axis_keeps_its_meaning_at_opset_11(axis: int) -> None:
    model = graph_model([helper.make_node("Softmax", ["x"], ["y"], axis=axis)], [1, 4, 6, 8])
    converted_same(model, 11)


def test_softmax_over_another_axis_is_refused_at_opset_11() -> None:
    """Softmax-11 flattens to 2-D around its axis; over channels it computes something else."""
    model = graph_model([helper.make_node("Softmax", ["x"], ["y"], axis=1)], [1, 4, 6, 8])
    with pytest.raises(BadInputError, match=r"Softmax .* not the last axis"):
        convert(model, 11)


def reshape(shape: list[int]) -> onnx.ModelProto:
    node = helper.make_node("Reshape", ["x", "c0"], ["y"], allowzero=1)
    return graph_model([node], [1, 4, 48], [np.array(shape, np.int64)])


def test_reshape_allowzero_is_dropped_where_the_shape_holds_no_zero() -> None:
    out = converted_same(reshape([1, 4, -1]), 13)
    assert not out.graph.node[0].attribute


def test_reshape_allowzero_with_a_zero_in_the_shape_is_refused() -> None:
    with pytest.raises(BadInputError, match="allowzero=1 with a 0"):
        convert(reshape([0, 4, -1]), 13)


def test_nodes_inside_subgraphs_are_converted_too() -> None:
    """A ReduceMean inside an If branch gets its axes attribute like one at the top level."""
    branch = helper.make_graph(
        [helper.make_node("ReduceMean", ["x", "c0"], ["m"], keepdims=1)],
        "branch",
        [],
        [helper.make_tensor_value_info("m", TensorProto.FLOAT, [1, 4, 1, 8])],
    )
    nodes = [
        helper.make_node("Constant", [], ["cond"], value=numpy_helper.from_array(np.array(True))),
        helper.make_node("If", ["cond"], ["y"], then_branch=branch, else_branch=branch),
    ]
    out = converted_same(graph_model(nodes, [1, 4, 1, 8], [np.array([2], np.int64)]), 13)
    inner = [a.g for a in out.graph.node[1].attribute]
    assert [[list(a.ints) for a in g.node[0].attribute if a.name == "axes"] for g in inner] == [
        [[2]],
        [[2]],
    ]


@pytest.mark.parametrize("opset", [10, 24])
def test_opsets_outside_11_to_23_are_refused(opset: int) -> None:
    with pytest.raises(BadInputError, match=f"opset {opset} is not supported"):
        convert(hardswish(), opset)


def test_the_input_model_is_left_as_it_is() -> None:
    model = hardswish()
    before = model.SerializeToString()
    convert(model, 11)
    assert model.SerializeToString() == before


# --- ca-export onnx --opset / --ort-format through Click --------------------------------

FACTORIES = "from ca_zoo import POSITIVE\n\nofficial = POSITIVE[0].build\n"
SHAPE = "1,3,16,24"
SMALL = "1,3,64,64"

CliExport = Callable[..., tuple[Result, Path]]


@pytest.fixture(scope="session")
def official(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The ``official`` zoo case as a ``file.py:factory`` model spec."""
    models = tmp_path_factory.mktemp("opset_models") / "zoo_official.py"
    models.write_text(FACTORIES)
    return f"{models}:official"


@pytest.fixture(scope="session")
def cli_export(tmp_path_factory: pytest.TempPathFactory, official: str) -> CliExport:
    """``cli_export(*flags)``: ``ca-export onnx`` on the ``official`` zoo case, once per
    session per flags, each in its own folder; the Click result and the output path."""
    cache: dict[tuple[str, ...], tuple[Result, Path]] = {}

    def get(*flags: str) -> tuple[Result, Path]:
        if flags not in cache:
            folder = tmp_path_factory.mktemp("opset")
            out = folder / "net.onnx"
            args = ["onnx", official, "--input-shape", SHAPE, "-o", str(out)]
            args += ["--report", str(folder / "report.json"), *flags]
            cache[flags] = (CliRunner().invoke(cli, args), out)
        return cache[flags]

    return get


def passed_export(result: Result, out: Path, opset: int) -> dict:
    """The run passed, wrote a file at ``opset`` and kept no CA-only node; its report."""
    assert result.exit_code == 0, result.output
    assert model_opset(onnx.load(out)) == opset
    report = json.loads((out.parent / "report.json").read_text())
    assert report["checks"]["opset"] | {"converted": None} == {
        "name": "opset",
        "verdict": "passed",
        "ran": True,
        "passed": True,
        "kind": "opset",
        "asked": opset,
        "written": opset,
        "exported_at": max(opset, 18),
        "converted": None,
    }
    assert report["structure"]["passed"] and report["structure"]["in_rewritten_blocks"] == 0
    assert report["parity"]["passed"] and report["parity"]["blocks"]["failures"] == []
    assert all(b["rewritten"] for b in report["ca_blocks"]) and report["ca_blocks"]
    return report


OPSET_11 = ("--opset", "11", "--dynamic", "--ort-format")


def test_opset_11_dynamic_with_ort_format(cli_export: CliExport) -> None:
    result, out = cli_export(*OPSET_11)
    report = passed_export(result, out, 11)
    model = onnx.load(out)
    assert "HardSwish" not in ops(model) and "HardSigmoid" in ops(model)
    assert report["checks"]["opset"]["converted"]["HardSwish written out"] >= 1
    assert "exported at 18, converted down" in result.output
    assert f"wrote {out.with_suffix('.ort')} (" in result.output
    ort_file, config = out.with_suffix(".ort"), out.with_suffix(".required_operators.config")
    assert report["checks"]["ort_format"]["passed"] and report["artifact"]["ort"] == str(ort_file)
    assert ort_file.read_bytes()[4:8] == b"ORTM"
    x = np.random.default_rng(5).standard_normal((1, 3, 16, 24)).astype(np.float32)
    onnx_out, ort_out = (
        ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": x})
        for path in (out, ort_file)
    )
    assert_within(onnx_out[0], ort_out[0], CPU_FP32)
    assert len(report["checks"]["ort_format"]["cases"]) == 5  # 3 seeds + 2 other sizes
    lines = config.read_text().splitlines()
    assert lines[:2] == ["# Generated from model/s:", "# - net.ort"]
    assert any(line.startswith("ai.onnx;") and "Conv" in line for line in lines)
    assert sorted(p.name for p in out.parent.iterdir()) == sorted(
        ["net.onnx", "net.ort", "net.required_operators.config", "report.json"]
    )


def test_opset_11_dynamic_file_takes_other_sizes(cli_export: CliExport) -> None:
    result, out = cli_export(*OPSET_11)
    report = passed_export(result, out, 11)
    dims = onnx.load(out).graph.input[0].type.tensor_type.shape.dim
    assert [d.HasField("dim_param") for d in dims] == [True, False, True, True]
    assert {tuple(c["input_shape"]) for c in report["parity"]["cases"]} > {(1, 3, 16, 24)}


def test_opset_13(cli_export: CliExport) -> None:
    result, out = cli_export("--opset", "13")
    passed_export(result, out, 13)
    assert "HardSwish" not in ops(onnx.load(out))
    assert not out.with_suffix(".ort").exists()


def test_an_ort_file_opens_as_a_verify_artifact(cli_export: CliExport) -> None:
    _, out = cli_export(*OPSET_11)
    artifact = open_artifact(out.with_suffix(".ort"))
    assert isinstance(artifact, OrtArtifact) and artifact.dynamic
    assert artifact.refuses((2, 3, 48, 40)) is None and artifact.refuses((1, 4, 16, 24))
    x = np.random.default_rng(5).standard_normal((2, 3, 48, 40)).astype(np.float32)
    assert artifact.run(x)[0].shape[0] == 2


@pytest.mark.slow
def test_verify_runs_an_ort_file(cli_export: CliExport, official: str) -> None:
    _, out = cli_export(*OPSET_11)
    args = ["verify", official, str(out.with_suffix(".ort")), "--input-shape", SHAPE]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "net.ort (float32, onnxruntime-cpu): passed" in result.output


def test_opset_10_is_refused() -> None:
    result = CliRunner().invoke(cli, ["onnx", "seed_ca", "-o", "x.onnx", "--opset", "10"])
    assert result.exit_code == 2 and "10 is not in the range 11<=x<=23" in result.output


def test_ort_format_leaves_a_foreign_file_alone(tmp_path: Path) -> None:
    mine = tmp_path / "net.ort"
    mine.write_text("my notes\n")
    out = tmp_path / "net.onnx"
    result = CliRunner().invoke(cli, ["onnx", "seed_ca", "-o", str(out), "--ort-format"])
    assert result.exit_code == 2, result.output
    assert "exists and is not a ort file" in result.stderr
    assert mine.read_text() == "my notes\n" and sorted(tmp_path.iterdir()) == [mine]


@pytest.mark.slow
def test_a_failing_ort_gate_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A .ort whose outputs are off fails the run (exit 1): no .onnx, .ort, config or scratch."""
    real = ort_pipeline.ort_format.runner

    def off_by_one(*args: object) -> Callable[[np.ndarray], list[np.ndarray]]:
        run = real(*args)
        return lambda x: [y + 1 for y in run(x)]

    monkeypatch.setattr(ort_pipeline.ort_format, "runner", off_by_one)
    models = tmp_path / "zoo_official.py"
    models.write_text(FACTORIES)
    out = tmp_path / "net.onnx"
    args = ["onnx", f"{models}:official", "--input-shape", SHAPE, "-o", str(out), "--ort-format"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1, result.output
    assert "check ort_format: FAILED" in result.output
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "__pycache__") == [
        "zoo_official.py"
    ]


def sweep_export(tmp_path: Path, model: str, shape: str, *flags: str) -> tuple[Result, Path]:
    out = tmp_path / "net.onnx"
    args = ["onnx", model, "--input-shape", shape, "-o", str(out), "--report"]
    args += [str(tmp_path / "report.json"), *flags]
    return CliRunner().invoke(cli, args), out


@pytest.mark.slow
@pytest.mark.parametrize("opset", [11, 13, 17, 18, 23])
@pytest.mark.parametrize(("model", "shape"), [("seed_ca", "1,3,32,32"), ("mobilenetv2_ca", SMALL)])
def test_opset_sweep(tmp_path: Path, model: str, shape: str, opset: int) -> None:
    result, out = sweep_export(tmp_path, model, shape, "--opset", str(opset))
    passed_export(result, out, opset)
    if opset < 14:
        assert "HardSwish" not in ops(onnx.load(out))


@pytest.mark.slow
@pytest.mark.parametrize("opset", [11, 13])
def test_opset_sweep_dynamic(tmp_path: Path, opset: int) -> None:
    flags = ("--opset", str(opset), "--dynamic")
    result, out = sweep_export(tmp_path, "mobilenetv2_ca", SMALL, *flags)
    passed_export(result, out, opset)


@pytest.mark.slow
@pytest.mark.parametrize("model", ["yolo_ca", "ca_segnet", "mobilenext_ca"])
def test_opset_11_on_split_resize_and_slicing_models(tmp_path: Path, model: str) -> None:
    """C2f's channel Split and the neck's Resize (yolo_ca), a segmentation head's Resize
    (ca_segnet) and slicing CA blocks (mobilenext_ca) at opset 11, with the .ort."""
    result, out = sweep_export(tmp_path, model, SMALL, "--opset", "11", "--ort-format")
    report = passed_export(result, out, 11)
    assert report["checks"]["ort_format"]["passed"]
