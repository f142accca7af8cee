"""Dynamic-size strip pools and gates: which exact form of a CA block with symbolic H and W
is fastest in ONNX Runtime (issue 11, dynamic H/W).

Exports MobileNetV2-CA rewritten with dynamic H/W (strip pools are ``ReduceMean``) and
MobileNetV2 without CA, then writes variants of the CA file where every strip
``ReduceMean`` (one axis, 2 or 3, kept) is replaced by another form that is exact at
every size:

- ``reducesum``: ``ReduceSum`` times ``1 / size``, the size read by ``Shape``;
- ``matmul``: ``MatMul`` with a ones vector made by ``ConstantOfShape`` from ``Shape``,
  times ``1 / size``;
- ``gap``: for the pool over W, ``Reshape [B, C*H, 1, W]`` + ``GlobalAveragePool`` +
  ``Reshape [B, C, H, 1]`` (constant shapes, no ``Shape`` op); the pool over H stays a
  ``ReduceMean`` (no reshape brings H last without a transpose);
- ``two_stage``: an ``AveragePool`` with a fixed ``1 x 8`` (``8 x 1``) window and stride,
  ``ceil_mode`` (ONNX Runtime runs it in its blocked layout; the last window averages the
  valid elements only), then the small result summed, its last window re-weighted from the
  sizes read by ``Shape`` (``8 * sum - (8 n - W) * last``), divided by W;
- ``transpose_h``: on maps of at least 384 channels, the pool over H as ``Transpose`` +
  ``ReduceMean`` over the last axis + ``Transpose`` (ONNX Runtime's mean over axis 2 of a
  small map with many channels is its slow case).

variants where every gate ``x * MatMul(a_h, a_w)`` is rebuilt, exact at every size
(``GATES``: ``two_mul``, ``outer_mul``, ``add_blocked``), and ``if_bounded``: one model
whose ``If`` on the input size runs the ``oversize64`` network (below) for inputs up to
256x256 and the ``ReduceMean`` network beyond, so it is exact at every size, with the
weights stored twice; and two bounds that are *not* exact forms, to show where the
remaining cost is:

- ``oversize64``: each pool an ``AveragePool`` whose window (64) spans the pooled axis,
  ``ceil_mode``: exact only while the axis is at most 64 long (longer axes give several
  windows: a shape error in the gate, or, when H and W give as many windows, a silently
  wrong output: 7.8x the RMS at 512x320); it runs in the blocked layout, as a static pool;
- ``no_gate``: the block's output is its input (the gates stay computed, as extra graph
  outputs): what the pools, the strip convs and their reorders cost without the gate.

Every exact variant is checked against the ``ReduceMean`` file in ONNX Runtime at four
sizes (some pooled extents above 64 and not a multiple of 8; ``if_bounded`` also at
512x320, beyond its bound), ``oversize64`` at the traced size only; then all are timed
in one run, interleaved, in both layouts, against the no-CA net. ``--profile-runs N`` adds
ONNX Runtime's per-op time in the blocked layout.

    python -m benchmarks.dynamic_pools --cache /tmp/dyn-pools --runs 200 --profile-runs 50
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper

from benchmarks import harness
from ca_export.bench import BenchConfig, bench
from ca_export.pipeline import OnnxJob, export_onnx
from ca_export.report import render_bench

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


WINDOW = 8
"""``two_stage``'s fixed window along the pooled axis."""
WIDE = 384
"""``transpose_h`` rewrites the pool over H of maps with at least this many channels."""
OVERSIZE = 64
"""``oversize64``'s window: exact while the pooled axis is at most this long."""


def two_stage(graph: onnx.GraphProto, node: onnx.NodeProto, axis: int, c: int, tag: str) -> list:
    x, y = node.input[0], node.output[0]
    kernel = [1, WINDOW] if axis == 3 else [WINDOW, 1]
    k = _const(graph, f"{tag}_k", np.array(WINDOW, dtype=np.float32))
    k_int = _const(graph, f"{tag}_k_int", np.array([WINDOW], dtype=np.int64))
    axes = _const(graph, f"{tag}_axes", np.array([axis], dtype=np.int64))
    last = _const(graph, f"{tag}_last", np.array([-1], dtype=np.int64))
    end = _const(graph, f"{tag}_end", np.array([np.iinfo(np.int64).max], dtype=np.int64))
    pool = helper.make_node(
        "AveragePool", [x], [f"{tag}_a"], kernel_shape=kernel, strides=kernel, ceil_mode=1
    )
    return [
        pool,
        helper.make_node("Shape", [x], [f"{tag}_size"], start=axis, end=axis + 1),
        helper.make_node("Shape", [f"{tag}_a"], [f"{tag}_n"], start=axis, end=axis + 1),
        helper.make_node("Mul", [f"{tag}_n", k_int], [f"{tag}_span"]),
        helper.make_node("Sub", [f"{tag}_span", f"{tag}_size"], [f"{tag}_gap"]),
        helper.make_node("Cast", [f"{tag}_gap"], [f"{tag}_gap_f"], to=onnx.TensorProto.FLOAT),
        helper.make_node("Cast", [f"{tag}_size"], [f"{tag}_size_f"], to=onnx.TensorProto.FLOAT),
        helper.make_node("ReduceSum", [f"{tag}_a", axes], [f"{tag}_s"], keepdims=1),
        helper.make_node("Slice", [f"{tag}_a", last, end, axes], [f"{tag}_tail"]),
        helper.make_node("Mul", [f"{tag}_s", k], [f"{tag}_ks"]),
        helper.make_node("Mul", [f"{tag}_tail", f"{tag}_gap_f"], [f"{tag}_fix"]),
        helper.make_node("Sub", [f"{tag}_ks", f"{tag}_fix"], [f"{tag}_sum"]),
        helper.make_node("Div", [f"{tag}_sum", f"{tag}_size_f"], [y]),
    ]


def transpose_h(graph: onnx.GraphProto, node: onnx.NodeProto, axis: int, c: int, tag: str) -> list:
    if axis != 2 or c < WIDE:
        return [node]
    x, y = node.input[0], node.output[0]
    last = _const(graph, f"{tag}_axes", np.array([3], dtype=np.int64))
    return [
        helper.make_node("Transpose", [x], [f"{tag}_t"], perm=[0, 1, 3, 2]),
        helper.make_node("ReduceMean", [f"{tag}_t", last], [f"{tag}_m"], keepdims=1),
        helper.make_node("Transpose", [f"{tag}_m"], [y], perm=[0, 1, 3, 2]),
    ]


def oversize(graph: onnx.GraphProto, node: onnx.NodeProto, axis: int, c: int, tag: str) -> list:
    kernel = [1, OVERSIZE] if axis == 3 else [OVERSIZE, 1]
    attrs = {"kernel_shape": kernel, "strides": kernel, "ceil_mode": 1}
    return [helper.make_node("AveragePool", [node.input[0]], [node.output[0]], **attrs)]


VARIANTS: dict[str, Builder] = {
    "reducesum": reducesum,
    "matmul": matmul,
    "gap": gap,
    "two_stage": two_stage,
    "transpose_h": transpose_h,
}
BOUNDS: dict[str, Builder] = {"oversize64": oversize}
"""Pool forms that are not exact at every size, timed to bound what a blocked pool could give."""


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


GateBuilder = Callable[
    [onnx.ModelProto, onnx.NodeProto, onnx.NodeProto, int, str], list[onnx.NodeProto]
]
"""``(model, Mul(x, g), MatMul(a_h, a_w) making g, channels, tag) -> nodes making the Mul's
output``; the model is passed for new initializers and value_info."""
WIDE_GATE = 576
"""``outer_mul`` rewrites the gates of maps with at least this many channels."""


def _value_info(model: onnx.ModelProto, name: str, like: str) -> None:
    """Declare ``name`` with the type and (symbolic) shape of ``like``."""
    known = {v.name: v for v in model.graph.value_info}
    info = onnx.ValueInfoProto()
    info.CopyFrom(known[like])
    info.name = name
    model.graph.value_info.append(info)


def two_mul(
    model: onnx.ModelProto, mul: onnx.NodeProto, product: onnx.NodeProto, c: int, tag: str
) -> list[onnx.NodeProto]:
    x, (a_h, a_w), y = mul.input[0], product.input, mul.output[0]
    return [
        helper.make_node("Mul", [x, a_h], [f"{tag}_xh"]),
        helper.make_node("Mul", [f"{tag}_xh", a_w], [y]),
    ]


def outer_mul(
    model: onnx.ModelProto, mul: onnx.NodeProto, product: onnx.NodeProto, c: int, tag: str
) -> list[onnx.NodeProto]:
    if c < WIDE_GATE:
        return [product, mul]
    return [helper.make_node("Mul", list(product.input), list(product.output)), mul]


def add_blocked(
    model: onnx.ModelProto, mul: onnx.NodeProto, product: onnx.NodeProto, c: int, tag: str
) -> list[onnx.NodeProto]:
    x, (a_h, a_w), y = mul.input[0], product.input, mul.output[0]
    zero = _const(model.graph, f"{tag}_zero", np.zeros((c, 1, 1, 1), dtype=np.float32))
    for name in ("z", "gh", "gw", "xh"):
        _value_info(model, f"{tag}_{name}", y)
    return [
        helper.make_node("Conv", [x, zero], [f"{tag}_z"], group=c, kernel_shape=[1, 1]),
        helper.make_node("Add", [f"{tag}_z", a_h], [f"{tag}_gh"]),
        helper.make_node("Add", [f"{tag}_z", a_w], [f"{tag}_gw"]),
        helper.make_node("Mul", [x, f"{tag}_gh"], [f"{tag}_xh"]),
        helper.make_node("Mul", [f"{tag}_xh", f"{tag}_gw"], [y]),
    ]


GATES: dict[str, GateBuilder] = {
    "two_mul": two_mul,
    "outer_mul": outer_mul,
    "add_blocked": add_blocked,
}
"""Exact gate forms: ``x * a_h * a_w`` as two broadcasting ``Mul``; the outer product as a
broadcasting ``Mul`` instead of ``MatMul`` on maps of >= 576 channels; and a gate that ORT
keeps blocked: ``x`` times (a zero depthwise conv of ``x`` plus each strip), with
``same-shape`` multiplies (ORT runs a broadcasting ``Add`` blocked, through 5-D reshapes,
but never a broadcasting ``Mul``)."""


def _gates(model: onnx.ModelProto) -> dict[str, tuple[onnx.NodeProto, onnx.NodeProto]]:
    """Each CA gate by the output of its ``Mul(x, MatMul(a_h, a_w))``: (mul, matmul)."""
    made = {o: n for n in model.graph.node for o in n.output}
    return {
        n.output[0]: (n, made[n.input[1]])
        for n in model.graph.node
        if n.op_type == "Mul" and n.input[1] in made and made[n.input[1]].op_type == "MatMul"
    }


def gate_variant(model: onnx.ModelProto, build: GateBuilder) -> tuple[onnx.ModelProto, int]:
    """A copy of ``model`` with every CA gate rebuilt by ``build``."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    gates = _gates(out)
    products = {product.output[0] for _, product in gates.values()}
    channels = {v.name: v.type.tensor_type.shape.dim[1].dim_value for v in out.graph.value_info}
    nodes, count = [], 0
    for i, node in enumerate(out.graph.node):
        if node.output[0] in products:
            continue
        if node.output[0] not in gates:
            nodes.append(node)
            continue
        mul, product = gates[node.output[0]]
        built = build(out, mul, product, channels[mul.output[0]], f"gate{i}")
        count += built != [product, mul]
        nodes += built
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    onnx.checker.check_model(out)
    return out, count


def without_gate(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """A copy of ``model`` whose CA blocks output their input: each ``Mul(x, MatMul(a_h, a_w))``
    is dropped, its readers read ``x``, and ``a_h``, ``a_w`` become graph outputs (kept)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    gates = _gates(out)
    dropped = set(gates) | {product.output[0] for _, product in gates.values()}
    nodes = [n for n in out.graph.node if n.output[0] not in dropped]
    for node in nodes:
        for i, name in enumerate(node.input):
            if name in gates:
                node.input[i] = gates[name][0].input[0]
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    kept = [name for _, product in gates.values() for name in product.input]
    float_4d = (onnx.TensorProto.FLOAT, ["n", "c", "h", "w"])
    out.graph.output.extend(helper.make_tensor_value_info(name, *float_4d) for name in kept)
    onnx.checker.check_model(out)
    return out, len(gates)


BOUND_INPUT = 4 * OVERSIZE
"""``if_bounded`` takes the ``oversize64`` branch for inputs of at most this H and W:
MobileNetV2's first CA block is at stride 4, so every pooled length is then <= 64."""


def if_bounded(fast: onnx.ModelProto, slow: onnx.ModelProto) -> onnx.ModelProto:
    """One model, exact at every size: an ``If`` on the input's H and W that runs ``fast``
    within ``BOUND_INPUT`` and ``slow`` beyond. Each branch keeps its own weights: with
    weights read from the outer graph ORT's NCHWc transformer leaves every conv plain."""
    branches = []
    for model, name in ((fast, "within"), (slow, "beyond")):
        graph = onnx.GraphProto()
        graph.CopyFrom(model.graph)
        graph.name = name
        del graph.input[:]
        branches.append(graph)
    (image,), (output, *_) = slow.graph.input, slow.graph.output
    limit = numpy_helper.from_array(np.array([BOUND_INPUT] * 2, dtype=np.int64), "bound")
    nodes = [
        helper.make_node("Shape", [image.name], ["hw"], start=2, end=4),
        helper.make_node("LessOrEqual", ["hw", "bound"], ["hw_ok"]),
        helper.make_node("Cast", ["hw_ok"], ["hw_ok_i"], to=onnx.TensorProto.INT64),
        helper.make_node("ReduceMin", ["hw_ok_i"], ["ok_i"], keepdims=0),
        helper.make_node("Cast", ["ok_i"], ["ok"], to=onnx.TensorProto.BOOL),
        helper.make_node(
            "If", ["ok"], [output.name], then_branch=branches[0], else_branch=branches[1]
        ),
    ]
    graph = helper.make_graph(nodes, "if_bounded", [image], [output], [limit])
    out = helper.make_model(graph, opset_imports=slow.opset_import)
    out.ir_version = slow.ir_version
    onnx.checker.check_model(out)
    return out


SIZES = ((1, 3, 224, 224), (1, 3, 160, 256), (1, 3, 97, 131), (1, 3, 300, 260))
"""Where exact variants are checked: pooled extents from 4 to 75, many not a multiple of 8."""


def check(reference: Path, candidate: Path, sizes: tuple[tuple[int, ...], ...] = SIZES) -> float:
    """Max error of ``candidate``'s first output against ``reference``'s, over its RMS."""
    worst = 0.0
    for size in sizes:
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
    parser = harness.parser(__doc__, runs=200, what="exports")
    parser.add_argument("--profile-runs", type=int, default=0, help="ORT per-op profile runs")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    with harness.work_folder(args.cache) as folder:
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
        for name, build_gate in GATES.items():
            model, count = gate_variant(source, build_gate)
            paths[name] = folder / f"{name}-dyn.onnx"
            onnx.save(model, paths[name])
            err = check(paths["reducemean"], paths[name])
            print(f"{name}: {count} gates rebuilt, max error / RMS {err:.1e}")
        traced = ((1, 3, args.size, args.size),)
        for name, build in BOUNDS.items():
            model, count = variant(source, build)
            paths[name] = folder / f"{name}-dyn.onnx"
            onnx.save(model, paths[name])
            err = check(paths["reducemean"], paths[name], traced)
            print(f"{name} (bound): {count} pools rebuilt, error / RMS {err:.1e} at {args.size}")
        paths["if_bounded"] = folder / "if_bounded-dyn.onnx"
        onnx.save(if_bounded(onnx.load(paths["oversize64"]), source), paths["if_bounded"])
        err = check(paths["reducemean"], paths["if_bounded"], (*SIZES, (1, 3, 512, 320)))
        print(f"if_bounded: max error / RMS {err:.1e} (512x320 beyond the bound)")
        model, count = without_gate(source)
        paths["no_gate"] = folder / "no_gate-dyn.onnx"
        onnx.save(model, paths["no_gate"])
        print(f"no_gate (bound): {count} gates dropped")
        config = BenchConfig(20, args.runs, 0.0, (1,), profile_runs=args.profile_runs)
        report = bench(paths, (1, 3, args.size, args.size), config)
    print(render_bench(report))
    for layout in config.layouts:
        print(f"{layout} layout, x no-CA (dynamic exports, 1 thread):")
        for name in paths:
            print(f"  {name:13} {report.ratio(name, 'no-CA', 1, layout=layout):6.3f}")


if __name__ == "__main__":
    main()
