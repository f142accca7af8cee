"""Where the blocked-layout CA form's time goes, and exact variants of it (issue 11).

Exports (or reuses, with ``--cache``, the files of ``benchmarks.target_forms``) MobileNetV2
without CA, MobileNetV2-CA in the ``onnx`` form and in ``resize_pad`` (form B, what
``--target ort-x86`` emits), then writes exact variants of B at the ONNX level:

- ``B copy``: B's file, byte for byte (how far noise and the order the sessions are made
  in move a time: 0.99-1.00x B when measured);
- ``hand B``: the issue's hand trial B rebuilt literally from the ``onnx`` file: each
  ``MatMul`` gate replaced by two nearest ``Resize`` (asymmetric, floor, constant scales)
  and ``x * a_w * a_h``, the mip zero-padded to a multiple of 16;
- ``gate first``: B with the gate built first, ``x * (up(a_h) * up(a_w))``;
- ``a_w first``: B with the multiplies in the model's order, ``(x * up(a_w)) * up(a_h)``;
- ``hand B, mip<16 unpadded``: ``hand B`` padding only a mip above 16 (a gate conv with
  fewer than 16 input channels runs blocked too, reading its input in plain NCHW);
- ``stacked stem``: B with one stem conv per block instead of two (square maps): the W
  strip transposed to ``[C, W, 1]``, stacked on the H strip along channels, one grouped
  conv (the stem's weights twice), each gate conv reading its half through zero weights,
  the W gate transposed back; an identity ``AveragePool`` (1x1) after each transpose
  brings the strip back into the blocked layout.

Each variant is checked against B in ONNX Runtime (max error / RMS, at most the fp32 ONNX
Runtime row of ``ca_export/verify/tolerances.py``, or the script stops), its blocked-layout
graph (``ORT_ENABLE_ALL``, as ORT optimises it) is summarised (NCHWc ops, reorders), then
all are timed in one run, interleaved, blocked layout, one thread. Last, ORT's profiler
splits B's CA ops by kind and by feature-map size, next to the no-CA net's total: the
cost of each op that is left.

    python -m benchmarks.blocked_floor --cache /tmp/forms-bench --runs 300
"""

from __future__ import annotations

import json
import shutil
import tempfile
import warnings
from argparse import ArgumentParser, Namespace
from collections import Counter, defaultdict
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper

from benchmarks.dynamic_pools import check
from benchmarks.target_forms import VARIANTS, export
from ca_export.bench import BenchConfig, bench
from ca_export.rewrites.pad_mip import BLOCK
from ca_export.verify.tolerances import tolerance

Variant = Callable[[onnx.ModelProto], onnx.ModelProto]


def _producers(graph: onnx.GraphProto) -> dict[str, onnx.NodeProto]:
    return {out: node for node in graph.node for out in node.output}


def _resize_gates(graph: onnx.GraphProto) -> list[tuple[onnx.NodeProto, onnx.NodeProto]]:
    """B's gate multiplies: ``inner = x * up_1`` and ``out = inner * up_2``, ups from Resize."""
    made = _producers(graph)

    def up(name: str) -> bool:
        return name in made and made[name].op_type == "Resize"

    pairs = []
    for node in graph.node:
        inner = made.get(node.input[0])
        if node.op_type != "Mul" or not up(node.input[1]) or inner is None:
            continue
        if inner.op_type == "Mul" and up(inner.input[1]):
            pairs.append((inner, node))
    return pairs


def gate_first(model: onnx.ModelProto) -> onnx.ModelProto:
    """``x * (up_1 * up_2)``: the H x W gate built before it meets ``x``."""
    for inner, outer in _resize_gates(model.graph):
        x, up_1, up_2 = inner.input[0], inner.input[1], outer.input[1]
        inner.input[0], inner.input[1] = up_1, up_2
        outer.input[0], outer.input[1] = x, inner.output[0]
    return model


def a_w_first(model: onnx.ModelProto) -> onnx.ModelProto:
    """``(x * up_2) * up_1``: the other gate multiplied first."""
    for inner, outer in _resize_gates(model.graph):
        inner.input[1], outer.input[1] = outer.input[1], inner.input[1]
    return model


def stacked_stem(model: onnx.ModelProto) -> onnx.ModelProto:
    """One grouped stem conv over the channel-stacked H strip and transposed W strip."""
    graph = model.graph
    made = _producers(graph)
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}

    def const(name: str, value: np.ndarray) -> str:
        graph.initializer.append(numpy_helper.from_array(value.astype(np.float32), name))
        return name

    swap = [0, 1, 3, 2]
    dropped: set[str] = set()
    before: dict[str, list[onnx.NodeProto]] = {}
    for inner, outer in _resize_gates(graph):
        chains = {}
        for resize in (made[inner.input[1]], made[outer.input[1]]):
            sig = made[resize.input[0]]
            gate = made[sig.input[0]]
            act = made[gate.input[0]]
            stem = made[act.input[0]]
            pool = made[stem.input[0]]
            kernel = next(a.ints for a in pool.attribute if a.name == "kernel_shape")
            chains["w" if kernel[1] == 1 else "h"] = (resize, sig, gate, act, stem, pool)
        (up_h, *ops_h, pool_h), (up_w, *ops_w, pool_w) = chains["h"], chains["w"]
        stem_w, stem_b = inits[ops_h[3].input[1]], inits[ops_h[3].input[2]]
        gate_h, gate_w = inits[ops_h[1].input[1]], inits[ops_w[1].input[1]]
        zero = np.zeros_like(gate_h)
        t = up_h.output[0]
        before[up_h.output[0]] = [
            helper.make_node("Transpose", [pool_w.output[0]], [f"{t}_pt"], perm=swap),
            helper.make_node("AveragePool", [f"{t}_pt"], [f"{t}_ptb"], kernel_shape=[1, 1]),
            helper.make_node("Concat", [pool_h.output[0], f"{t}_ptb"], [f"{t}_s"], axis=1),
            helper.make_node(
                "Conv",
                [
                    f"{t}_s",
                    const(f"{t}_sw", np.concatenate([stem_w, stem_w])),
                    const(f"{t}_sb", np.concatenate([stem_b, stem_b])),
                ],
                [f"{t}_c"],
                group=2,
            ),
            helper.make_node(ops_h[2].op_type, [f"{t}_c"], [f"{t}_a"]),
            helper.make_node(
                "Conv",
                [f"{t}_a", const(f"{t}_hw", np.concatenate([gate_h, zero], 1)), ops_h[1].input[2]],
                [f"{t}_gh"],
            ),
            helper.make_node("Sigmoid", [f"{t}_gh"], [f"{t}_ah"]),
            helper.make_node(
                "Conv",
                [f"{t}_a", const(f"{t}_ww", np.concatenate([zero, gate_w], 1)), ops_w[1].input[2]],
                [f"{t}_gw"],
            ),
            helper.make_node("Sigmoid", [f"{t}_gw"], [f"{t}_awt"]),
            helper.make_node("Transpose", [f"{t}_awt"], [f"{t}_awp"], perm=swap),
            helper.make_node("AveragePool", [f"{t}_awp"], [f"{t}_aw"], kernel_shape=[1, 1]),
        ]
        up_h.input[0], up_w.input[0] = f"{t}_ah", f"{t}_aw"
        dropped |= {op.output[0] for op in (*ops_h, *ops_w)}
    nodes = []
    for node in graph.node:
        if node.output[0] not in dropped:
            nodes += [*before.get(node.output[0], []), node]
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.value_info[:]
    onnx.checker.check_model(model)
    return model


def hand_b(model: onnx.ModelProto, least: int = 0) -> onnx.ModelProto:
    """The ``onnx`` file's ``x * MatMul(a_h, a_w)`` gates as nearest Resizes and
    ``x * a_w * a_h``; a mip above ``least`` (the gate convs' input channels, the stem
    convs' output channels) zero-padded to a multiple of ``BLOCK``."""
    graph = model.graph
    made = _producers(graph)
    inits = {i.name: i for i in graph.initializer}
    shapes = {
        v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
        for v in onnx.shape_inference.infer_shapes(model).graph.value_info
    }

    def padded(name: str, axis: int, size: int) -> str:
        new = f"{name}_pad{size}"
        if new not in inits:
            array = numpy_helper.to_array(inits[name])
            width = [(0, 0)] * array.ndim
            width[axis] = (0, size - array.shape[axis])
            inits[new] = numpy_helper.from_array(np.pad(array, width), new)
            graph.initializer.append(inits[new])
        return new

    nodes, dropped = [], set()
    for node in graph.node:
        matmul = made.get(node.input[1]) if node.op_type == "Mul" else None
        if matmul is None or matmul.op_type != "MatMul":
            nodes.append(node)
            continue
        dropped.add(matmul.output[0])
        for gate in matmul.input:
            conv = made[made[gate].input[0]]
            stem = made[made[conv.input[0]].input[0]]
            mip = numpy_helper.to_array(inits[conv.input[1]]).shape[1]
            size = -(-mip // BLOCK) * BLOCK
            if size != mip and mip > least:
                conv.input[1] = padded(conv.input[1], 1, size)
                for i in range(1, len(stem.input)):
                    stem.input[i] = padded(stem.input[i], 0, size)
        a_h, a_w = matmul.input
        height, width = shapes[node.input[0]][2:]
        out = node.output[0]
        scales = {
            a_h: numpy_helper.from_array(np.array([1, 1, 1, width], np.float32), f"{out}_sh"),
            a_w: numpy_helper.from_array(np.array([1, 1, height, 1], np.float32), f"{out}_sw"),
        }
        graph.initializer.extend(scales.values())
        for gate, scale in scales.items():
            nodes.append(
                helper.make_node(
                    "Resize",
                    [gate, "", scale.name],
                    [f"{gate}_up"],
                    mode="nearest",
                    coordinate_transformation_mode="asymmetric",
                    nearest_mode="floor",
                )
            )
        nodes.append(helper.make_node("Mul", [node.input[0], f"{a_w}_up"], [f"{out}_w"]))
        nodes.append(helper.make_node("Mul", [f"{out}_w", f"{a_h}_up"], [out]))
    kept = [n for n in nodes if not set(n.output) & dropped]
    del graph.node[:]
    graph.node.extend(kept)
    used = {name for n in graph.node for name in n.input}
    live = [i for i in graph.initializer if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(live)
    del graph.value_info[:]
    onnx.checker.check_model(model)
    return model


def _session(path: Path, optimized: Path | None = None, profile: str = "") -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if optimized is not None:
        options.optimized_model_filepath = str(optimized)
    if profile:
        options.enable_profiling = True
        options.profile_file_prefix = profile
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _input(size: int) -> np.ndarray:
    return np.random.default_rng(0).standard_normal((1, 3, size, size)).astype(np.float32)


def blocked_ops(path: Path, folder: Path) -> Counter[str]:
    """Op types of the graph ORT runs in the blocked layout (``nchwc.`` marks NCHWc ops,
    ``+Name`` an activation fused into an NCHWc conv)."""
    optimized = folder / f"{path.stem}.ort-optimized.onnx"
    _session(path, optimized)
    graph = onnx.load(optimized, load_external_data=False).graph
    ops = Counter(("nchwc." if "nchwc" in n.domain else "") + n.op_type for n in graph.node)
    for node in graph.node:
        for a in node.attribute:
            if a.name == "activation":
                ops["+" + a.s.decode()] += 1
    return ops


def _role(op: str, shape_in: list[int], shape_out: list[int]) -> tuple[str, int] | None:
    """A profiled CA op's kind and the feature-map size it serves; None for the rest."""
    if op in ("Mul", "Upsample") and len(shape_out) == 4:
        return op, shape_out[2]
    if op == "AveragePool" and len(shape_in) == 4:
        return op, shape_in[2]
    if op == "Conv" and len(shape_in) == 4 and 1 in shape_in[2:] and max(shape_in[2:]) > 1:
        return "strip Conv", max(shape_in[2:])
    return None


def profile(path: Path, size: int, runs: int, folder: Path) -> tuple[float, dict]:
    """Median ms per run of all ops, and of the CA ops by (kind, map size), in ORT's profile."""
    sess = _session(path, profile=str(folder / f"prof-{path.stem}"))
    feed = {sess.get_inputs()[0].name: _input(size)}
    for _ in range(runs):
        sess.run(None, feed)
    events = json.loads(Path(sess.end_profiling()).read_text())
    per_node: dict[str, list[float]] = defaultdict(list)
    roles: dict[str, tuple[str, int] | None] = {}
    for e in events:
        if e.get("cat") != "Node" or not e["name"].endswith("_kernel_time"):
            continue
        per_node[e["name"]].append(e["dur"] / 1000)
        first_in = e["args"].get("input_type_shape") or [{"": []}]
        first_out = e["args"].get("output_type_shape") or [{"": []}]
        shape_in, shape_out = (next(iter(v[0].values())) for v in (first_in, first_out))
        roles[e["name"]] = _role(e["args"]["op_name"], shape_in, shape_out)
    medians = {name: float(np.median(v)) for name, v in per_node.items()}
    split: dict[tuple[str, int], float] = defaultdict(float)
    for name, ms in medians.items():
        role = roles[name]
        if role is not None:
            split[role] += ms
    return sum(medians.values()), dict(split)


def main() -> None:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", type=Path, help="reuse/keep exports in this folder")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--profile-runs", type=int, default=200)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    spec = Namespace(dynamic=False, size=args.size)
    with tempfile.TemporaryDirectory() as temp:
        folder = args.cache or Path(temp)
        folder.mkdir(parents=True, exist_ok=True)
        work = Path(temp)
        named = {"no-CA": "no-CA", "onnx": "onnx (gate_once)", "B": "B resize+pad"}
        source = {key: export(name, VARIANTS[name], folder, spec) for key, name in named.items()}
        paths = {"no-CA": source["no-CA"], "B": source["B"], "B copy": work / "B-copy.onnx"}
        shutil.copyfile(source["B"], paths["B copy"])
        builds: dict[str, tuple[Path, Variant]] = {
            "hand B": (source["onnx"], hand_b),
            "gate first": (source["B"], gate_first),
            "a_w first": (source["B"], a_w_first),
            "hand B, mip<16 unpadded": (source["onnx"], partial(hand_b, least=BLOCK)),
            "stacked stem": (source["B"], stacked_stem),
        }
        for name, (origin, build) in builds.items():
            paths[name] = work / f"{name.replace(' ', '-')}.onnx"
            onnx.save(build(onnx.load(origin)), paths[name])
        bound = tolerance("float32", "onnxruntime-cpu").rel
        print(f"{'variant':26} err/RMS  blocked-layout graph (ORT_ENABLE_ALL) vs B")
        for name, path in paths.items():
            ops = blocked_ops(path, work)
            nchwc = sum(n for op, n in ops.items() if op.startswith("nchwc."))
            reorders = sum(n for op, n in ops.items() if "Reorder" in op)
            err = (
                ""
                if name == "no-CA"
                else f"{check(source['B'], path, ((1, 3, args.size, args.size),)):.1e}"
            )
            if err and float(err) > bound:
                raise SystemExit(f"{name}: max error / RMS {err} against B, above {bound}")
            fused = ", ".join(f"{op[1:]} {n}" for op, n in sorted(ops.items()) if op[0] == "+")
            count = sum(n for op, n in ops.items() if op[0] != "+")
            print(
                f"  {name:24} {err:>7}  {count} ops, {nchwc} NCHWc, {reorders} reorders, "
                f"{ops['Mul']} Mul, {ops['nchwc.Upsample']} Upsample; fused: {fused}"
            )
        config = BenchConfig(20, args.runs, 0.0, (1,), profile_runs=0, layouts=("blocked",))
        report = bench(paths, (1, 3, args.size, args.size), config)
        print(f"\nblocked layout, 1 thread, {report.timings[0].runs} rounds, interleaved:")
        for name in paths:
            t = report.timing(name, 1, "blocked")
            ratio, over_b = report.ratio(name, "no-CA", 1), report.ratio(name, "B", 1)
            print(f"  {name:24} p50 {t.p50_ms:6.2f} ms  x no-CA {ratio:6.3f}  x B {over_b:6.3f}")
        base, _ = profile(source["no-CA"], args.size, args.profile_runs, work)
        total, split = profile(source["B"], args.size, args.profile_runs, work)
    kinds = sorted({kind for kind, _ in split})
    sizes = sorted({s for _, s in split}, reverse=True)
    print(f"\nORT profile, blocked, 1 thread: no-CA {base:.2f} ms, B {total:.2f} ms of op time")
    print("B's CA ops, ms per run:  " + "".join(f"{f'{s}x{s}':>9}" for s in sizes) + "    total")
    for kind in kinds:
        row = [split.get((kind, s), 0.0) for s in sizes]
        print(f"  {kind:22}" + "".join(f"{v:9.3f}" for v in row) + f"{sum(row):9.3f}")
    cols = [sum(split.get((k, s), 0.0) for k in kinds) for s in sizes]
    print(f"  {'all':22}" + "".join(f"{v:9.3f}" for v in cols) + f"{sum(cols):9.3f}")


if __name__ == "__main__":
    main()
