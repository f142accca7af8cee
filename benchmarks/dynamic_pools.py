"""Dynamic-size strip pools: which exact form of ``mean over one spatial axis`` is fastest in
ONNX Runtime (issue 11, dynamic H/W).

Exports MobileNetV2-CA rewritten with dynamic H/W (strip pools are ``ReduceMean``) and
MobileNetV2 without CA, then writes variants of the CA file where every strip
``ReduceMean`` (one axis, 2 or 3, kept) is replaced by another exact form that holds at
every size:

- ``reducesum``: ``ReduceSum`` times ``1 / size``, the size read by ``Shape``;
- ``matmul``: ``MatMul`` with a ones vector made by ``ConstantOfShape`` from ``Shape``,
  times ``1 / size``;
- ``gap``: for the pool over W, ``Reshape [B, C*H, 1, W]`` + ``GlobalAveragePool`` +
  ``Reshape [B, C, H, 1]`` (constant shapes, no ``Shape`` op); the pool over H stays a
  ``ReduceMean`` (no reshape brings H last without a transpose).

Every variant is checked against the ``ReduceMean`` file in ONNX Runtime at two sizes,
then all are timed in one run, interleaved, in both layouts, against the no-CA net.

    python -m benchmarks.dynamic_pools --cache /tmp/dyn-pools --runs 200
"""

from __future__ import annotations

import sys
import tempfile
import warnings
from argparse import ArgumentParser
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper

from ca_export.bench import BenchConfig, bench, render_bench
from ca_export.pipeline import OnnxJob, export_onnx

MODEL, BASELINE = "mobilenetv2_ca", "mobilenetv2"
Builder = Callable[[onnx.GraphProto, onnx.NodeProto, int, int, str], list[onnx.NodeProto]]


def _const(graph: onnx.GraphProto, name: str, value: np.ndarray) -> str:
    graph.initializer.append(numpy_helper.from_array(value, name))
    return name


def _inv_size(graph: onnx.GraphProto, x: str, axis: int, tag: str) -> tuple[list, str]:
    """Nodes computing ``1 / x.shape[axis]`` as a float scalar tensor."""
    start = _const(graph, f"{tag}_start", np.array([axis], dtype=np.int64))
    end = _const(graph, f"{tag}_end", np.array([axis + 1], dtype=np.int64))
    nodes = [
        helper.make_node("Shape", [x], [f"{tag}_shape"]),
        helper.make_node("Slice", [f"{tag}_shape", start, end], [f"{tag}_n"]),
        helper.make_node("Cast", [f"{tag}_n"], [f"{tag}_nf"], to=onnx.TensorProto.FLOAT),
        helper.make_node("Reciprocal", [f"{tag}_nf"], [f"{tag}_inv"]),
    ]
    return nodes, f"{tag}_inv"


def reducesum(graph: onnx.GraphProto, node: onnx.NodeProto, axis: int, c: int, tag: str) -> list:
    x, y = node.input[0], node.output[0]
    inv_nodes, inv = _inv_size(graph, x, axis, tag)
    axes = _const(graph, f"{tag}_axes", np.array([axis], dtype=np.int64))
    return [
        *inv_nodes,
        helper.make_node("ReduceSum", [x, axes], [f"{tag}_sum"], keepdims=1),
        helper.make_node("Mul", [f"{tag}_sum", inv], [y]),
    ]


def matmul(graph: onnx.GraphProto, node: onnx.NodeProto, axis: int, c: int, tag: str) -> list:
    x, y = node.input[0], node.output[0]
    inv_nodes, inv = _inv_size(graph, x, axis, tag)
    one = _const(graph, f"{tag}_one", np.array([1], dtype=np.int64))
    dims = [inv_nodes[1].output[0], one] if axis == 3 else [one, inv_nodes[1].output[0]]
    ones = helper.make_tensor("v", onnx.TensorProto.FLOAT, [1], [1.0])
    operands = [x, f"{tag}_ones"] if axis == 3 else [f"{tag}_ones", x]
    return [
        *inv_nodes,
        helper.make_node("Concat", dims, [f"{tag}_oshape"], axis=0),
        helper.make_node("ConstantOfShape", [f"{tag}_oshape"], [f"{tag}_ones"], value=ones),
        helper.make_node("MatMul", operands, [f"{tag}_sum"]),
        helper.make_node("Mul", [f"{tag}_sum", inv], [y]),
    ]


def gap(graph: onnx.GraphProto, node: onnx.NodeProto, axis: int, c: int, tag: str) -> list:
    if axis != 3:
        return [node]
    x, y = node.input[0], node.output[0]
    rows = _const(graph, f"{tag}_rows", np.array([0, -1, 1, 0], dtype=np.int64))
    back = _const(graph, f"{tag}_back", np.array([0, c, -1, 1], dtype=np.int64))
    return [
        helper.make_node("Reshape", [x, rows], [f"{tag}_rows_out"]),
        helper.make_node("GlobalAveragePool", [f"{tag}_rows_out"], [f"{tag}_gap"]),
        helper.make_node("Reshape", [f"{tag}_gap", back], [y]),
    ]


VARIANTS: dict[str, Builder] = {"reducesum": reducesum, "matmul": matmul, "gap": gap}


def strip_axis(model: onnx.ModelProto, node: onnx.NodeProto) -> int | None:
    """The one spatial axis a 4-D ReduceMean with kept dims averages, else None."""
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    keep = next((a.i for a in node.attribute if a.name == "keepdims"), 1)
    axes = inits.get(node.input[1]) if len(node.input) > 1 else None
    if axes is None:
        axes = next((list(a.ints) for a in node.attribute if a.name == "axes"), None)
    axes = [int(a) % 4 for a in np.ravel(axes)] if axes is not None else []
    return axes[0] if keep and len(axes) == 1 and axes[0] in (2, 3) else None


def variant(model: onnx.ModelProto, build: Builder) -> tuple[onnx.ModelProto, int]:
    """A copy of ``model`` with every strip ReduceMean rebuilt by ``build``."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    shapes = {
        v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
        for v in onnx.shape_inference.infer_shapes(model).graph.value_info
    }
    nodes, count = [], 0
    for i, node in enumerate(out.graph.node):
        axis = strip_axis(out, node) if node.op_type == "ReduceMean" else None
        if axis is None:
            nodes.append(node)
            continue
        built = build(out.graph, node, axis, shapes[node.input[0]][1], f"strip{i}")
        count += built != [node]
        nodes += built
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    onnx.checker.check_model(out)
    return out, count


def check(reference: Path, candidate: Path) -> float:
    """Max relative error of ``candidate`` against ``reference`` at two sizes."""
    worst = 0.0
    for size in ((1, 3, 224, 224), (1, 3, 160, 256)):
        x = np.random.default_rng(0).standard_normal(size).astype(np.float32)
        outs = []
        options = ort.SessionOptions()
        options.log_severity_level = 3
        for path in (reference, candidate):
            sess = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            outs.append(sess.run(None, {sess.get_inputs()[0].name: x})[0])
        rms = float(np.sqrt(np.mean(outs[0].astype(np.float64) ** 2)))
        worst = max(worst, float(np.max(np.abs(outs[0] - outs[1]))) / rms)
    return worst


def main() -> None:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", type=Path, help="reuse/keep exports in this folder")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    with tempfile.TemporaryDirectory() as temp:
        folder = args.cache or Path(temp)
        folder.mkdir(parents=True, exist_ok=True)
        paths: dict[str, Path] = {}
        for name, spec in (("no-CA", BASELINE), ("reducemean", MODEL)):
            path = folder / f"{name}-dyn.onnx"
            if not path.is_file():
                print(f"exporting {name} ...", file=sys.stderr, flush=True)
                job = OnnxJob(spec, path, None, (1, 3, args.size, args.size), dynamic=True)
                if not export_onnx(job).passed:
                    raise SystemExit(f"{name}: the export did not pass its gates")
            paths[name] = path
        source = onnx.load(paths["reducemean"])
        for name, build in VARIANTS.items():
            model, count = variant(source, build)
            path = folder / f"{name}-dyn.onnx"
            onnx.save(model, path)
            err = check(paths["reducemean"], path)
            print(f"{name}: {count} strip pools rebuilt, max error / RMS {err:.1e}")
            paths[name] = path
        config = BenchConfig(20, args.runs, 0.0, (1,), profile_runs=0)
        report = bench(paths, (1, 3, args.size, args.size), config)
    print(render_bench(report))
    for layout in config.layouts:
        print(f"{layout} layout, x no-CA (dynamic exports, 1 thread):")
        for name in paths:
            print(f"  {name:12} {report.ratio(name, 'no-CA', 1, layout=layout):6.3f}")


if __name__ == "__main__":
    main()
